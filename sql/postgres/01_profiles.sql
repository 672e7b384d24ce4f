-- "cdp"."profiles": one row per profile
-- compiled by cdp_warehouse for postgres; do not edit (run `cdp compile`)
SELECT
  "profile_id",
  (
    ARRAY_AGG("user_id" ORDER BY "timestamp" ASC, "message_id" ASC) FILTER(WHERE
      (
        NOT "user_id" IS NULL
      ))
  )[1] AS "user_id",
  (
    ARRAY_AGG(
      LOWER(
        TRIM(
          COALESCE(
            CASE WHEN "type" = 'identify' THEN (
              "traits" ->> 'email'
            ) END,
            (
              "context" -> 'traits' ->> 'email'
            )
          )
        )
      ) ORDER BY "timestamp" DESC NULLS LAST, "message_id" DESC NULLS LAST
    ) FILTER(WHERE
      (
        NOT LOWER(
          TRIM(
            COALESCE(
              CASE WHEN "type" = 'identify' THEN (
                "traits" ->> 'email'
              ) END,
              (
                "context" -> 'traits' ->> 'email'
              )
            )
          )
        ) IS NULL
      ))
  )[1] AS "email",
  ARRAY_AGG(
    DISTINCT (
      "anonymous_id"
    ) COLLATE "C" ORDER BY (
      "anonymous_id"
    ) COLLATE "C" NULLS FIRST
  ) FILTER(WHERE
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
