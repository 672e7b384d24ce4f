-- "cdp"."_profile_aggregates": the fused aggregate pass: event-level traits and audience event counts
-- compiled by cdp_warehouse for postgres; do not edit (run `cdp compile`)
WITH events AS NOT MATERIALIZED (
  SELECT
    COALESCE("user_id", "anonymous_id") AS "profile_id",
    *
  FROM "raw"."events"
  WHERE
    "timestamp" < CAST(CURRENT_TIMESTAMP AT TIME ZONE 'UTC' AS TIMESTAMP)
), most_frequent_values AS (
  SELECT
    "profile_id",
    'favorite_report_type' AS "trait",
    (
      "properties" ->> 'report_type'
    ) AS "value",
    "timestamp"
  FROM events
  WHERE
    (
      "type" IN ('track', 'page', 'screen')
      AND "event" = 'Report Generated'
      AND "timestamp" >= (
        CAST(CURRENT_TIMESTAMP AT TIME ZONE 'UTC' AS TIMESTAMP) - INTERVAL '90 DAY'
      )
    )
    AND NOT (
      "properties" ->> 'report_type'
    ) IS NULL
), most_frequent_counts AS (
  SELECT
    "profile_id",
    "trait",
    "value",
    COUNT(*) AS "n",
    MAX("timestamp") AS "last_at"
  FROM most_frequent_values
  GROUP BY
    "profile_id",
    "trait",
    "value"
), most_frequent AS (
  SELECT
    "profile_id",
    MAX(CASE WHEN "trait" = 'favorite_report_type' THEN "value" END) AS "favorite_report_type"
  FROM (
    SELECT
      "profile_id",
      "trait",
      "value",
      ROW_NUMBER() OVER (
        PARTITION BY "profile_id", "trait"
        ORDER BY "n" DESC NULLS LAST, "last_at" DESC NULLS LAST, (
          "value"
        ) COLLATE "C" NULLS FIRST
      ) AS "rank"
    FROM most_frequent_counts
  ) AS ranked
  WHERE
    "rank" = 1
  GROUP BY
    "profile_id"
), aggregates AS (
  SELECT
    "profile_id",
    (
      ARRAY_AGG(
        CASE WHEN "type" = 'identify' THEN (
          "traits" ->> 'plan'
        ) END ORDER BY "timestamp" DESC NULLS LAST
      ) FILTER(WHERE
        (
          "type" = 'identify' AND NOT (
            "traits" ->> 'plan'
          ) IS NULL
        ))
    )[1] AS "plan",
    (
      ARRAY_AGG(
        CASE WHEN "type" = 'identify' THEN (
          "traits" ->> 'last_name'
        ) END ORDER BY "timestamp" DESC NULLS LAST
      ) FILTER(WHERE
        (
          "type" = 'identify' AND NOT (
            "traits" ->> 'last_name'
          ) IS NULL
        ))
    )[1] AS "last_name",
    COUNT(*) FILTER(WHERE
      "type" IN ('track', 'page', 'screen')
      AND "event" = 'Report Generated'
      AND "timestamp" >= (
        CAST(CURRENT_TIMESTAMP AT TIME ZONE 'UTC' AS TIMESTAMP) - INTERVAL '30 DAY'
      )) AS "reports_30d",
    SUM(
      CASE
        WHEN "type" IN ('track', 'page', 'screen') AND "event" = 'Payment Processed'
        THEN CASE
          WHEN (
            "properties" ->> 'revenue'
          ) ~ '^\s*[+-]?([0-9]{1,200}(\.[0-9]{0,200})?|\.[0-9]{1,200})([eE][+-]?[0-9]{1,2})?\s*$'
          THEN CAST((
            "properties" ->> 'revenue'
          ) AS DOUBLE PRECISION)
        END
      END
    ) FILTER(WHERE
      "type" IN ('track', 'page', 'screen') AND "event" = 'Payment Processed') AS "lifetime_revenue",
    MAX("timestamp") FILTER(WHERE
      "type" IN ('track', 'page', 'screen')) AS "last_seen_at",
    COUNT(
      DISTINCT CASE
        WHEN "type" IN ('track', 'page', 'screen')
        AND "timestamp" >= (
          CAST(CURRENT_TIMESTAMP AT TIME ZONE 'UTC' AS TIMESTAMP) - INTERVAL '30 DAY'
        )
        THEN CAST("timestamp" AS DATE)
      END
    ) AS "days_active_30d",
    COUNT(*) FILTER(WHERE
      "type" IN ('track', 'page', 'screen')
      AND "event" = 'Subscription Upgraded'
      AND (
        (
          "properties" ->> 'triggered_by'
        ) = 'self-service'
      )) AS "upgrades",
    COUNT(*) FILTER(WHERE
      "type" IN ('track', 'page', 'screen')
      AND "event" = 'Support Contacted'
      AND "timestamp" >= (
        CAST(CURRENT_TIMESTAMP AT TIME ZONE 'UTC' AS TIMESTAMP) - INTERVAL '30 DAY'
      )) AS "_events_17129424",
    COUNT(*) FILTER(WHERE
      "type" IN ('track', 'page', 'screen')
      AND (
        "timestamp" >= (
          CAST(CURRENT_TIMESTAMP AT TIME ZONE 'UTC' AS TIMESTAMP) - INTERVAL '60 DAY'
        )
        AND "timestamp" < (
          CAST(CURRENT_TIMESTAMP AT TIME ZONE 'UTC' AS TIMESTAMP) - INTERVAL '30 DAY'
        )
      )) AS "_events_ed9df972",
    COUNT(*) FILTER(WHERE
      "type" IN ('track', 'page', 'screen')
      AND "timestamp" >= (
        CAST(CURRENT_TIMESTAMP AT TIME ZONE 'UTC' AS TIMESTAMP) - INTERVAL '30 DAY'
      )) AS "_events_a5de02d2"
  FROM events
  GROUP BY
    "profile_id"
)
SELECT
  aggregates.*,
  "most_frequent"."favorite_report_type"
FROM aggregates
LEFT JOIN most_frequent
  USING (profile_id);
