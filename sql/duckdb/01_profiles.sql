-- "cdp"."profiles": one row per profile
-- compiled by cdp_warehouse for duckdb; do not edit (run `cdp compile`)
SELECT
  "profile_id",
  ARG_MIN("user_id", "user_at") AS "user_id",
  ARG_MAX("email", "email_at") AS "email",
  ARRAY_AGG("anonymous_id" ORDER BY "anonymous_id" NULLS FIRST) FILTER(WHERE
    NOT "anonymous_id" IS NULL) AS "anonymous_ids",
  MIN("first_seen") AS "first_seen",
  MAX("last_seen") AS "last_seen"
FROM (
  SELECT
    "profile_id",
    "anonymous_id",
    ARG_MIN(
      "user_id",
      CASE WHEN NOT "user_id" IS NULL THEN {'ts': "timestamp", 'm': "message_id"} END
    ) AS "user_id",
    MIN(CASE WHEN NOT "user_id" IS NULL THEN {'ts': "timestamp", 'm': "message_id"} END) AS "user_at",
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
        THEN {'ts': "timestamp", 'm': "message_id"}
      END
    ) AS "email",
    MAX(
      CASE
        WHEN NOT LOWER(
          TRIM(
            COALESCE(
              CASE WHEN "type" = 'identify' THEN "traits" ->> '$.email' END,
              "context" ->> '$.traits.email'
            )
          )
        ) IS NULL
        THEN {'ts': "timestamp", 'm': "message_id"}
      END
    ) AS "email_at",
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
    "profile_id",
    "anonymous_id"
) AS per_device
GROUP BY
  "profile_id";
