-- "cdp"."profiles": one row per profile
-- compiled by cdp_warehouse for duckdb; do not edit (run `cdp compile`)
SELECT
  "profile_id",
  ARG_MIN("user_id", CASE WHEN NOT "user_id" IS NULL THEN "timestamp" END) AS "user_id",
  ARG_MAX(
    LOWER(
      TRIM(
        COALESCE(
          CASE WHEN "type" = 'identify' THEN "traits" ->> '$.email' END,
          "context" ->> '$.traits.email'
        )
      )
    ),
    CASE
      WHEN NOT LOWER(
        TRIM(
          COALESCE(
            CASE WHEN "type" = 'identify' THEN "traits" ->> '$.email' END,
            "context" ->> '$.traits.email'
          )
        )
      ) IS NULL
      THEN "timestamp"
    END
  ) AS "email",
  ARRAY_AGG(DISTINCT "anonymous_id" ORDER BY "anonymous_id" NULLS FIRST) FILTER(WHERE
    NOT "anonymous_id" IS NULL) AS "anonymous_ids",
  MIN("timestamp") AS "first_seen",
  MAX("timestamp") AS "last_seen"
FROM (
  SELECT
    COALESCE("user_id", "anonymous_id") AS "profile_id",
    *
  FROM "raw"."events"
  WHERE
    "timestamp" < CAST(CURRENT_TIMESTAMP AT TIME ZONE 'UTC' AS TIMESTAMP)
) AS e
GROUP BY
  "profile_id";
