"""Sensors: start a run when new events have landed; report failed syncs."""

# no `from __future__ import annotations`: Dagster reads these annotations at definition time
import json
from datetime import UTC, datetime

import dagster as dg
from sqlglot import exp

from cdp_warehouse.errors import CdpError
from cdp_warehouse.orchestration.keys import RAW_EVENTS
from cdp_warehouse.orchestration.resources import CdpWarehouse
from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.sync.diff import RUNS
from cdp_warehouse.compiler.plan import models_table
from cdp_warehouse.sync.destinations.slack import post_notice


def new_events_sensor(project: ResolvedProject, job) -> dg.SensorDefinition:
    @dg.sensor(name="new_events", job=job, minimum_interval_seconds=60,
               description="Runs every audience and sync when events have landed since the last run")
    def _new_events(context: dg.SensorEvaluationContext, warehouse: CdpWarehouse):
        events = exp.table_("events", db=project.raw_schema, quoted=True)
        try:
            with warehouse.connect() as connection:
                connection.ensure_landing(project)
                [(count, latest)] = connection.fetch(exp.select(
                    exp.Count(this=exp.Star()), exp.Max(this=exp.column("received_at"))).from_(events))
        except CdpError as error:  # e.g. the DuckDB file is held by a run: try next tick
            return dg.SkipReason(f"warehouse busy: {error}")
        cursor = json.dumps({"count": count, "latest": latest.isoformat() if latest else None})
        if count == 0 or cursor == context.cursor:
            return dg.SkipReason("no new events")
        context.update_cursor(cursor)
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=cursor)],
            asset_events=[dg.AssetMaterialization(RAW_EVENTS, metadata={
                "dagster/row_count": count, "latest_received_at": latest.isoformat() if latest else "none"})])

    return _new_events


def failed_sync_sensor(project: ResolvedProject) -> dg.SensorDefinition:
    """When a run fails, list the syncs that failed in it (from sync_runs) in the log and,
    when cdp.yaml has a Slack destination whose webhook is set, in Slack."""
    @dg.run_failure_sensor(name="failed_syncs", description="Reports failed syncs (log, and Slack when configured)")
    def _failed(context: dg.RunFailureSensorContext, warehouse: CdpWarehouse) -> None:
        record = context.instance.get_run_record_by_id(context.dagster_run.run_id)
        started = record.start_time if record else None  # epoch seconds
        runs = models_table(project, RUNS)
        query = (exp.select("audience", "destination", "status", "failed", "error").from_(runs)
                 .where(exp.column("status").neq(exp.Literal.string("success"))))
        if started:
            since = datetime.fromtimestamp(started, UTC).replace(tzinfo=None).isoformat()
            query = query.where(exp.column("started_at") >= exp.cast(exp.Literal.string(since), "timestamp"))
        try:
            with warehouse.connect() as connection:
                if not connection.table_exists(project.models_schema, RUNS):
                    return
                rows = connection.fetch(query)
        except CdpError as error:
            context.log.warning(f"cannot read {RUNS}: {error}")
            return
        if not rows:
            return
        lines = [f"{a} → {d}: {s}, {f} failed" + (f" ({e})" if e else "") for a, d, s, f, e in rows]
        text = "cdp sync failures in run " + context.dagster_run.run_id[:8] + ":\n" + "\n".join(lines)
        context.log.error(text)
        problem = post_notice(project, text)
        if problem is not None:
            context.log.info(f"not posted to Slack: {problem}")

    return _failed
