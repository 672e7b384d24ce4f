-- `cdp`.`audience_members`: members of every audience at as-of, with their split
-- compiled by cdp_warehouse for bigquery; do not edit (run `cdp compile`)
SELECT
  'high_value_user' AS `audience`,
  `profile_id`,
  CAST(NULL AS STRING) AS `split`,
  CAST(TIMESTAMP(DATETIME(CURRENT_TIMESTAMP(), 'UTC')) AS DATETIME) AS `as_of`
FROM (
  SELECT
    `a`.`profile_id`
  FROM `cdp`.`_profile_aggregates` AS a
  WHERE
    COALESCE(
      (
        (
          COALESCE(`a`.`reports_30d`, 0)
        ) >= 10 AND (
          `a`.`plan`
        ) = 'enterprise'
      ),
      FALSE
    )
) AS members
UNION ALL
SELECT
  'churn_risk' AS `audience`,
  `profile_id`,
  CASE WHEN `bucket` < 90 THEN 'treatment' WHEN `bucket` < 100 THEN 'holdout' END AS `split`,
  CAST(TIMESTAMP(DATETIME(CURRENT_TIMESTAMP(), 'UTC')) AS DATETIME) AS `as_of`
FROM (
  SELECT
    `profile_id`,
    MOD(
      (
        INSTR('0123456789abcdef', SUBSTRING(`digest`, 1, 1)) - 1
      ) * 1048576 + (
        INSTR('0123456789abcdef', SUBSTRING(`digest`, 2, 1)) - 1
      ) * 65536 + (
        INSTR('0123456789abcdef', SUBSTRING(`digest`, 3, 1)) - 1
      ) * 4096 + (
        INSTR('0123456789abcdef', SUBSTRING(`digest`, 4, 1)) - 1
      ) * 256 + (
        INSTR('0123456789abcdef', SUBSTRING(`digest`, 5, 1)) - 1
      ) * 16 + (
        INSTR('0123456789abcdef', SUBSTRING(`digest`, 6, 1)) - 1
      ) * 1,
      100
    ) AS `bucket`
  FROM (
    SELECT
      `a`.`profile_id`,
      TO_HEX(MD5('churn_risk:' || CAST(`a`.`profile_id` AS STRING))) AS `digest`
    FROM `cdp`.`_profile_aggregates` AS a
    WHERE
      COALESCE(
        (
          COALESCE(`a`.`_events_ed9df972`, 0) > 0
          AND COALESCE(`a`.`_events_a5de02d2`, 0) = 0
          AND (
            `a`.`plan`
          ) <> 'free'
          AND COALESCE(`a`.`_events_17129424`, 0) = 0
        ),
        FALSE
      )
  ) AS members
) AS bucketed;
