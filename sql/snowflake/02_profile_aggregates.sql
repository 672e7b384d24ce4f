-- "cdp"."_profile_aggregates": the fused aggregate pass: event-level traits and audience event counts
-- compiled by cdp_warehouse for snowflake; do not edit (run `cdp compile`)
WITH events AS (
  SELECT
    COALESCE("user_id", "anonymous_id") AS "profile_id",
    *
  FROM "raw"."events"
  WHERE
    "timestamp" < CAST(CONVERT_TIMEZONE('UTC', CURRENT_TIMESTAMP()) AS TIMESTAMP)
), most_frequent_values AS (
  SELECT
    "profile_id",
    'favorite_report_type' AS "trait",
    CAST(GET_PATH("properties", '"report_type"') AS VARCHAR) AS "value",
    "timestamp"
  FROM events
  WHERE
    (
      "type" IN ('track', 'page', 'screen')
      AND "event" = 'Report Generated'
      AND "timestamp" >= (
        CAST(CONVERT_TIMEZONE('UTC', CURRENT_TIMESTAMP()) AS TIMESTAMP) - INTERVAL '90 DAY'
      )
    )
    AND NOT CAST(GET_PATH("properties", '"report_type"') AS VARCHAR) IS NULL
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
        ORDER BY "n" DESC NULLS LAST, "last_at" DESC NULLS LAST, "value" NULLS FIRST
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
    MAX_BY(
      CASE
        WHEN "type" = 'identify'
        THEN CAST(GET_PATH("traits", '"plan"') AS VARCHAR)
      END,
      CASE
        WHEN "type" = 'identify' AND NOT CAST(GET_PATH("traits", '"plan"') AS VARCHAR) IS NULL
        THEN "timestamp"
      END
    ) AS "plan",
    MAX_BY(
      CASE
        WHEN "type" = 'identify'
        THEN CAST(GET_PATH("traits", '"last_name"') AS VARCHAR)
      END,
      CASE
        WHEN "type" = 'identify'
        AND NOT CAST(GET_PATH("traits", '"last_name"') AS VARCHAR) IS NULL
        THEN "timestamp"
      END
    ) AS "last_name",
    COUNT_IF(
      "type" IN ('track', 'page', 'screen')
      AND "event" = 'Report Generated'
      AND "timestamp" >= (
        CAST(CONVERT_TIMEZONE('UTC', CURRENT_TIMESTAMP()) AS TIMESTAMP) - INTERVAL '30 DAY'
      )
    ) AS "reports_30d",
    SUM(
      IFF(
        "type" IN ('track', 'page', 'screen') AND "event" = 'Payment Processed',
        CASE
          WHEN "type" IN ('track', 'page', 'screen') AND "event" = 'Payment Processed'
          THEN TRY_CAST(CAST(GET_PATH("properties", '"revenue"') AS VARCHAR) AS DOUBLE)
        END,
        NULL
      )
    ) AS "lifetime_revenue",
    MAX(IFF("type" IN ('track', 'page', 'screen'), "timestamp", NULL)) AS "last_seen_at",
    COUNT(
      DISTINCT CASE
        WHEN "type" IN ('track', 'page', 'screen')
        AND "timestamp" >= (
          CAST(CONVERT_TIMEZONE('UTC', CURRENT_TIMESTAMP()) AS TIMESTAMP) - INTERVAL '30 DAY'
        )
        THEN CAST("timestamp" AS DATE)
      END
    ) AS "days_active_30d",
    COUNT_IF(
      "type" IN ('track', 'page', 'screen')
      AND "event" = 'Subscription Upgraded'
      AND (
        CAST(GET_PATH("properties", '"triggered_by"') AS VARCHAR) = 'self-service'
      )
    ) AS "upgrades",
    COUNT_IF(
      "type" IN ('track', 'page', 'screen')
      AND "event" = 'Support Contacted'
      AND "timestamp" >= (
        CAST(CONVERT_TIMEZONE('UTC', CURRENT_TIMESTAMP()) AS TIMESTAMP) - INTERVAL '30 DAY'
      )
    ) AS "_events_17129424",
    COUNT_IF(
      "type" IN ('track', 'page', 'screen')
      AND (
        "timestamp" >= (
          CAST(CONVERT_TIMEZONE('UTC', CURRENT_TIMESTAMP()) AS TIMESTAMP) - INTERVAL '60 DAY'
        )
        AND "timestamp" < (
          CAST(CONVERT_TIMEZONE('UTC', CURRENT_TIMESTAMP()) AS TIMESTAMP) - INTERVAL '30 DAY'
        )
      )
    ) AS "_events_ed9df972",
    COUNT_IF(
      "type" IN ('track', 'page', 'screen')
      AND "timestamp" >= (
        CAST(CONVERT_TIMEZONE('UTC', CURRENT_TIMESTAMP()) AS TIMESTAMP) - INTERVAL '30 DAY'
      )
    ) AS "_events_a5de02d2"
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
