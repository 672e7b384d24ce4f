-- "cdp"."profile_traits": one row per profile, one column per trait
-- compiled by cdp_warehouse for postgres; do not edit (run `cdp compile`)
SELECT
  "a"."profile_id",
  "a"."plan" AS "plan",
  "a"."last_name" AS "last_name",
  COALESCE("a"."reports_30d", 0) AS "reports_30d",
  "a"."lifetime_revenue" AS "lifetime_revenue",
  "a"."favorite_report_type" AS "favorite_report_type",
  "a"."last_seen_at" AS "last_seen_at",
  COALESCE("a"."days_active_30d", 0) AS "days_active_30d",
  COALESCE("a"."upgrades", 0) AS "upgrades",
  CAST((
    "a"."lifetime_revenue"
  ) AS DOUBLE PRECISION) / NULLIF((
    COALESCE("a"."days_active_30d", 0)
  ), 0) AS "revenue_per_active_day"
FROM "cdp"."_profile_aggregates" AS a;
