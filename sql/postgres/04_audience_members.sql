-- "cdp"."audience_members": members of every audience at as-of, with their split
-- compiled by cdp_warehouse for postgres; do not edit (run `cdp compile`)
SELECT
  'high_value_user' AS "audience",
  "profile_id",
  CAST(NULL AS TEXT) AS "split",
  CAST(CURRENT_TIMESTAMP AT TIME ZONE 'UTC' AS TIMESTAMP) AS "as_of"
FROM (
  SELECT
    "a"."profile_id"
  FROM "cdp"."_profile_aggregates" AS a
  WHERE
    COALESCE(
      (
        (
          COALESCE("a"."reports_30d", 0)
        ) >= 10 AND (
          "a"."plan"
        ) = 'enterprise'
      ),
      FALSE
    )
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
        POSITION(SUBSTRING("digest" FROM 1 FOR 1) IN '0123456789abcdef') - 1
      ) * 1048576 + (
        POSITION(SUBSTRING("digest" FROM 2 FOR 1) IN '0123456789abcdef') - 1
      ) * 65536 + (
        POSITION(SUBSTRING("digest" FROM 3 FOR 1) IN '0123456789abcdef') - 1
      ) * 4096 + (
        POSITION(SUBSTRING("digest" FROM 4 FOR 1) IN '0123456789abcdef') - 1
      ) * 256 + (
        POSITION(SUBSTRING("digest" FROM 5 FOR 1) IN '0123456789abcdef') - 1
      ) * 16 + (
        POSITION(SUBSTRING("digest" FROM 6 FOR 1) IN '0123456789abcdef') - 1
      ) * 1
    ) % 100 AS "bucket"
  FROM (
    SELECT
      "a"."profile_id",
      MD5('churn_risk:' || CAST("a"."profile_id" AS TEXT)) AS "digest"
    FROM "cdp"."_profile_aggregates" AS a
    WHERE
      COALESCE(
        (
          COALESCE("a"."_events_ed9df972", 0) > 0
          AND COALESCE("a"."_events_a5de02d2", 0) = 0
          AND (
            "a"."plan"
          ) <> 'free'
          AND COALESCE("a"."_events_17129424", 0) = 0
        ),
        FALSE
      )
  ) AS members
) AS bucketed;
