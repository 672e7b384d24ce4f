-- `cdp`.`_profile_aggregates`: the fused aggregate pass: event-level traits and audience event counts
-- compiled by cdp_warehouse for bigquery; do not edit (run `cdp compile`)
WITH events AS (
  SELECT
    COALESCE(`user_id`, `anonymous_id`) AS `profile_id`,
    *
  FROM `raw`.`events`
  WHERE
    `timestamp` < CAST(TIMESTAMP(DATETIME(CURRENT_TIMESTAMP(), 'UTC')) AS DATETIME)
), most_frequent_values AS (
  SELECT
    `profile_id`,
    'favorite_report_type' AS `trait`,
    JSON_VALUE(`properties`, '$.report_type') AS `value`,
    `timestamp`
  FROM events
  WHERE
    (
      `type` IN ('track', 'page', 'screen')
      AND `event` = 'Report Generated'
      AND `timestamp` >= (
        CAST(TIMESTAMP(DATETIME(CURRENT_TIMESTAMP(), 'UTC')) AS DATETIME) - INTERVAL '90' DAY
      )
    )
    AND NOT JSON_VALUE(`properties`, '$.report_type') IS NULL
), most_frequent_counts AS (
  SELECT
    `profile_id`,
    `trait`,
    `value`,
    COUNT(*) AS `n`,
    MAX(`timestamp`) AS `last_at`
  FROM most_frequent_values
  GROUP BY
    `profile_id`,
    `trait`,
    `value`
), most_frequent AS (
  SELECT
    `profile_id`,
    MAX(CASE WHEN `trait` = 'favorite_report_type' THEN `value` END) AS `favorite_report_type`
  FROM (
    SELECT
      `profile_id`,
      `trait`,
      `value`,
      ROW_NUMBER() OVER (PARTITION BY `profile_id`, `trait` ORDER BY `n` DESC, `last_at` DESC, `value`) AS `rank`
    FROM most_frequent_counts
  ) AS ranked
  WHERE
    `rank` = 1
  GROUP BY
    `profile_id`
), aggregates AS (
  SELECT
    `profile_id`,
    MAX_BY(
      CASE WHEN `type` = 'identify' THEN JSON_VALUE(`traits`, '$.plan') END,
      CASE
        WHEN `type` = 'identify' AND NOT JSON_VALUE(`traits`, '$.plan') IS NULL
        THEN `timestamp`
      END
    ) AS `plan`,
    MAX_BY(
      CASE WHEN `type` = 'identify' THEN JSON_VALUE(`traits`, '$.last_name') END,
      CASE
        WHEN `type` = 'identify' AND NOT JSON_VALUE(`traits`, '$.last_name') IS NULL
        THEN `timestamp`
      END
    ) AS `last_name`,
    COUNTIF(
      `type` IN ('track', 'page', 'screen')
      AND `event` = 'Report Generated'
      AND `timestamp` >= (
        CAST(TIMESTAMP(DATETIME(CURRENT_TIMESTAMP(), 'UTC')) AS DATETIME) - INTERVAL '30' DAY
      )
    ) AS `reports_30d`,
    SUM(
      IF(
        `type` IN ('track', 'page', 'screen') AND `event` = 'Payment Processed',
        CASE
          WHEN `type` IN ('track', 'page', 'screen') AND `event` = 'Payment Processed'
          THEN SAFE_CAST(CAST(JSON_VALUE(`properties`, '$.revenue') AS STRING) AS FLOAT64)
        END,
        NULL
      )
    ) AS `lifetime_revenue`,
    MAX(IF(`type` IN ('track', 'page', 'screen'), `timestamp`, NULL)) AS `last_seen_at`,
    COUNT(
      DISTINCT CASE
        WHEN `type` IN ('track', 'page', 'screen')
        AND `timestamp` >= (
          CAST(TIMESTAMP(DATETIME(CURRENT_TIMESTAMP(), 'UTC')) AS DATETIME) - INTERVAL '30' DAY
        )
        THEN CAST(`timestamp` AS DATE)
      END
    ) AS `days_active_30d`,
    COUNTIF(
      `type` IN ('track', 'page', 'screen')
      AND `event` = 'Subscription Upgraded'
      AND (
        JSON_VALUE(`properties`, '$.triggered_by') = 'self-service'
      )
    ) AS `upgrades`,
    COUNTIF(
      `type` IN ('track', 'page', 'screen')
      AND `event` = 'Support Contacted'
      AND `timestamp` >= (
        CAST(TIMESTAMP(DATETIME(CURRENT_TIMESTAMP(), 'UTC')) AS DATETIME) - INTERVAL '30' DAY
      )
    ) AS `_events_17129424`,
    COUNTIF(
      `type` IN ('track', 'page', 'screen')
      AND (
        `timestamp` >= (
          CAST(TIMESTAMP(DATETIME(CURRENT_TIMESTAMP(), 'UTC')) AS DATETIME) - INTERVAL '60' DAY
        )
        AND `timestamp` < (
          CAST(TIMESTAMP(DATETIME(CURRENT_TIMESTAMP(), 'UTC')) AS DATETIME) - INTERVAL '30' DAY
        )
      )
    ) AS `_events_ed9df972`,
    COUNTIF(
      `type` IN ('track', 'page', 'screen')
      AND `timestamp` >= (
        CAST(TIMESTAMP(DATETIME(CURRENT_TIMESTAMP(), 'UTC')) AS DATETIME) - INTERVAL '30' DAY
      )
    ) AS `_events_a5de02d2`
  FROM events
  GROUP BY
    `profile_id`
)
SELECT
  aggregates.*,
  `most_frequent`.`favorite_report_type`
FROM aggregates
LEFT JOIN most_frequent
  USING (profile_id);
