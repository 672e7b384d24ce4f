-- `cdp`.`profiles`: one row per profile
-- compiled by cdp_warehouse for bigquery; do not edit (run `cdp compile`)
SELECT
  `profile_id`,
  MIN_BY(`user_id`, CASE WHEN NOT `user_id` IS NULL THEN `timestamp` END) AS `user_id`,
  MAX_BY(
    LOWER(
      TRIM(
        COALESCE(
          CASE WHEN `type` = 'identify' THEN JSON_EXTRACT_SCALAR(`traits`, '$.email') END,
          JSON_EXTRACT_SCALAR(`context`, '$.traits.email')
        )
      )
    ),
    CASE
      WHEN NOT LOWER(
        TRIM(
          COALESCE(
            CASE WHEN `type` = 'identify' THEN JSON_EXTRACT_SCALAR(`traits`, '$.email') END,
            JSON_EXTRACT_SCALAR(`context`, '$.traits.email')
          )
        )
      ) IS NULL
      THEN `timestamp`
    END
  ) AS `email`,
  ARRAY_AGG(
    DISTINCT IF(NOT `anonymous_id` IS NULL, `anonymous_id`, NULL) IGNORE NULLS ORDER BY `anonymous_id`
  ) AS `anonymous_ids`,
  MIN(`timestamp`) AS `first_seen`,
  MAX(`timestamp`) AS `last_seen`
FROM (
  SELECT
    COALESCE(`user_id`, `anonymous_id`) AS `profile_id`,
    *
  FROM `raw`.`events`
  WHERE
    `timestamp` < CAST(TIMESTAMP(DATETIME(CURRENT_TIMESTAMP(), 'UTC')) AS DATETIME)
) AS e
GROUP BY
  `profile_id`;
