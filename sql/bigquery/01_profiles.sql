-- `cdp`.`profiles`: one row per profile
-- compiled by cdp_warehouse for bigquery; do not edit (run `cdp compile`)
SELECT
  `profile_id`,
  MIN_BY(`user_id`, `user_at`) AS `user_id`,
  MAX_BY(`email`, `email_at`) AS `email`,
  ARRAY_AGG(
    IF(NOT `anonymous_id` IS NULL, `anonymous_id`, NULL) IGNORE NULLS ORDER BY `anonymous_id`
  ) AS `anonymous_ids`,
  MIN(`first_seen`) AS `first_seen`,
  MAX(`last_seen`) AS `last_seen`
FROM (
  SELECT
    `profile_id`,
    `anonymous_id`,
    MIN_BY(
      `user_id`,
      CASE
        WHEN NOT `user_id` IS NULL
        THEN LPAD(
          CAST((
            UNIX_MICROS(TIMESTAMP(`timestamp`)) + 62135596800000000
          ) AS STRING),
          20,
          '0'
        ) || CAST(`message_id` AS STRING)
      END
    ) AS `user_id`,
    MIN(
      CASE
        WHEN NOT `user_id` IS NULL
        THEN LPAD(
          CAST((
            UNIX_MICROS(TIMESTAMP(`timestamp`)) + 62135596800000000
          ) AS STRING),
          20,
          '0'
        ) || CAST(`message_id` AS STRING)
      END
    ) AS `user_at`,
    MAX_BY(
      LOWER(
        TRIM(
          COALESCE(
            CASE WHEN `type` = 'identify' THEN JSON_VALUE(`traits`, '$.email') END,
            JSON_VALUE(`context`, '$.traits.email')
          )
        )
      ),
      CASE
        WHEN NOT LOWER(
          TRIM(
            COALESCE(
              CASE WHEN `type` = 'identify' THEN JSON_VALUE(`traits`, '$.email') END,
              JSON_VALUE(`context`, '$.traits.email')
            )
          )
        ) IS NULL
        THEN LPAD(
          CAST((
            UNIX_MICROS(TIMESTAMP(`timestamp`)) + 62135596800000000
          ) AS STRING),
          20,
          '0'
        ) || CAST(`message_id` AS STRING)
      END
    ) AS `email`,
    MAX(
      CASE
        WHEN NOT LOWER(
          TRIM(
            COALESCE(
              CASE WHEN `type` = 'identify' THEN JSON_VALUE(`traits`, '$.email') END,
              JSON_VALUE(`context`, '$.traits.email')
            )
          )
        ) IS NULL
        THEN LPAD(
          CAST((
            UNIX_MICROS(TIMESTAMP(`timestamp`)) + 62135596800000000
          ) AS STRING),
          20,
          '0'
        ) || CAST(`message_id` AS STRING)
      END
    ) AS `email_at`,
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
    `profile_id`,
    `anonymous_id`
) AS per_device
GROUP BY
  `profile_id`;
