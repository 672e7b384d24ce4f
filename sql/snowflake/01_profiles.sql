-- "cdp"."profiles": one row per profile
-- compiled by cdp_warehouse for snowflake; do not edit (run `cdp compile`)
SELECT
  "profile_id",
  MIN_BY("user_id", CASE WHEN NOT "user_id" IS NULL THEN "timestamp" END) AS "user_id",
  MAX_BY(
    LOWER(
      TRIM(
        COALESCE(
          CASE WHEN "type" = 'identify' THEN JSON_EXTRACT_PATH_TEXT("traits", 'email') END,
          JSON_EXTRACT_PATH_TEXT("context", 'traits.email')
        )
      )
    ),
    CASE
      WHEN NOT LOWER(
        TRIM(
          COALESCE(
            CASE WHEN "type" = 'identify' THEN JSON_EXTRACT_PATH_TEXT("traits", 'email') END,
            JSON_EXTRACT_PATH_TEXT("context", 'traits.email')
          )
        )
      ) IS NULL
      THEN "timestamp"
    END
  ) AS "email",
  ARRAY_AGG(DISTINCT IFF(NOT "anonymous_id" IS NULL, "anonymous_id", NULL)) WITHIN GROUP (ORDER BY
    "anonymous_id" NULLS FIRST) AS "anonymous_ids",
  MIN("timestamp") AS "first_seen",
  MAX("timestamp") AS "last_seen"
FROM (
  SELECT
    COALESCE("user_id", "anonymous_id") AS "profile_id",
    *
  FROM "raw"."events"
  WHERE
    "timestamp" < CAST(CONVERT_TIMEZONE('UTC', CURRENT_TIMESTAMP()) AS TIMESTAMP)
) AS e
GROUP BY
  "profile_id";
