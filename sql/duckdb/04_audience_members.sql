-- cdp.audience_members: members of every audience at as-of, with their split
-- compiled by cdp_warehouse for duckdb; do not edit (run `cdp compile`)
SELECT
  'high_value_user' AS "audience",
  "profile_id",
  CAST(NULL AS TEXT) AS "split",
  CAST(CURRENT_TIMESTAMP AT TIME ZONE 'UTC' AS TIMESTAMP) AS "as_of"
FROM (
  SELECT
    "t"."profile_id"
  FROM "cdp"."profile_traits" AS t
  JOIN "cdp"."profiles" AS p
    ON "p"."profile_id" = "t"."profile_id"
  LEFT JOIN "cdp"."_profile_aggregates" AS a
    ON "a"."profile_id" = "t"."profile_id"
  WHERE
    COALESCE((
      "t"."reports_30d" >= 10 AND "t"."plan" = 'enterprise'
    ), FALSE)
) AS members
UNION ALL
SELECT
  'churn_risk' AS "audience",
  "profile_id",
  CASE WHEN "bucket" < 90 THEN 'treatment' WHEN "bucket" < 100 THEN 'holdout' END AS "split",
  CAST(CURRENT_TIMESTAMP AT TIME ZONE 'UTC' AS TIMESTAMP) AS "as_of"
FROM (
  SELECT
    "profile_id",
    (
      (
        STRPOS('0123456789abcdef', SUBSTRING("digest", 1, 1)) - 1
      ) * 1048576 + (
        STRPOS('0123456789abcdef', SUBSTRING("digest", 2, 1)) - 1
      ) * 65536 + (
        STRPOS('0123456789abcdef', SUBSTRING("digest", 3, 1)) - 1
      ) * 4096 + (
        STRPOS('0123456789abcdef', SUBSTRING("digest", 4, 1)) - 1
      ) * 256 + (
        STRPOS('0123456789abcdef', SUBSTRING("digest", 5, 1)) - 1
      ) * 16 + (
        STRPOS('0123456789abcdef', SUBSTRING("digest", 6, 1)) - 1
      ) * 1
    ) % 100 AS "bucket"
  FROM (
    SELECT
      "t"."profile_id",
      MD5('churn_risk:' || CAST("t"."profile_id" AS TEXT)) AS "digest"
    FROM "cdp"."profile_traits" AS t
    JOIN "cdp"."profiles" AS p
      ON "p"."profile_id" = "t"."profile_id"
    LEFT JOIN "cdp"."_profile_aggregates" AS a
      ON "a"."profile_id" = "t"."profile_id"
    WHERE
      COALESCE(
        (
          COALESCE("a"."_events_ed9df972", 0) > 0
          AND COALESCE("a"."_events_a5de02d2", 0) = 0
          AND "t"."plan" <> 'free'
          AND COALESCE("a"."_events_17129424", 0) = 0
        ),
        FALSE
      )
  ) AS members
) AS bucketed;
