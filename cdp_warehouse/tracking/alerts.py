"""Alerts for new kinds of tracking-plan violations: the first time an (event, violation
type, path) is seen, one Slack message says so — not one per event.

Kinds are remembered in ``tracking_plan_alerts`` (raw schema). A kind is recorded in the
same run that finds it and marked ``alerted_at`` only once Slack accepted the message, so an
alert that could not be posted (no Slack destination, its webhook variable unset, Slack
down) is posted by a later load instead of being lost. Array positions are dropped from
paths (``properties.items[3].sku`` → ``properties.items[].sku``): one bad field in a list of
a hundred items is one kind, not a hundred.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from sqlglot import exp

from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.tracking.store import VIOLATIONS_TABLE, table
from cdp_warehouse.warehouses.base import Warehouse, create_table

ALERTS_TABLE = "tracking_plan_alerts"
ALERT_COLUMNS = (
    ("event", "text"), ("violation_type", "text"), ("path", "text"), ("first_seen_at", "timestamp"),
    ("example_message_id", "text"), ("alerted_at", "timestamp"),
)
SHOWN = 20  # kinds listed in one message
log = logging.getLogger(__name__)


def kind_path(path: exp.Expression) -> exp.Expression:
    """The path without array positions (every occurrence: sqlglot writes each dialect's
    replace-all form)."""
    return exp.RegexpReplace(this=path, expression=exp.Literal.string(r"\[[0-9]+\]"),
                             replacement=exp.Literal.string("[]"))


def record_new_kinds(project: ResolvedProject, warehouse: Warehouse, since: datetime) -> int:
    """Remember the kinds of violations detected since ``since`` that were never seen;
    returns how many are new."""
    alerts = table(project, ALERTS_TABLE)
    warehouse.execute(create_table(alerts.copy(), ALERT_COLUMNS))
    path = kind_path(exp.column("path", quoted=True))
    key = ["event", "violation_type"]
    found = (
        exp.select(*(exp.column(k, quoted=True) for k in key), exp.alias_(path, "path", quoted=True),
                   exp.alias_(exp.Min(this=exp.column("detected_at", quoted=True)), "first_seen_at", quoted=True),
                   exp.alias_(exp.Min(this=exp.column("message_id", quoted=True)), "example_message_id", quoted=True),
                   exp.alias_(exp.cast(exp.null(), "timestamp"), "alerted_at", quoted=True))
        .from_(table(project, VIOLATIONS_TABLE))
        .where(exp.column("detected_at", quoted=True) >= exp.cast(exp.Literal.string(since.isoformat()), "timestamp"))
        .group_by(*(exp.column(k, quoted=True) for k in key), path.copy())
    )
    same = exp.and_(*(exp.func("COALESCE", exp.column(k, table="a", quoted=True), exp.Literal.string("")).eq(
        exp.func("COALESCE", exp.column(k, table="f", quoted=True), exp.Literal.string(""))) for k in (*key, "path")))
    new = exp.select("*").from_(exp.alias_(found.subquery(), "f")).where(
        exp.Not(this=exp.Exists(this=exp.select(exp.Literal.number(1)).from_(exp.alias_(alerts.copy(), "a")).where(same))))
    count = warehouse.fetch(exp.select(exp.Count(this=exp.Star())).from_(new.subquery("n")))[0][0]
    if count:
        warehouse.execute(exp.insert(new, alerts.copy()))
    return count


def post_pending(project: ResolvedProject, warehouse: Warehouse, environ: Mapping[str, str] | None = None) -> int:
    """Post the kinds not alerted yet to the project's first Slack destination; returns how
    many were posted (0 when there is no Slack destination or its webhook is not set)."""
    from cdp_warehouse.sync.destinations.slack import post_notice  # noqa: PLC0415 (keeps ingest light)

    alerts = table(project, ALERTS_TABLE)
    if not warehouse.table_exists(project.raw_schema, ALERTS_TABLE):
        return 0
    pending = warehouse.fetch(
        exp.select("event", "violation_type", "path", "example_message_id").from_(alerts.copy())
        .where(exp.column("alerted_at").is_(exp.null())).order_by("event", "violation_type", "path"))
    if not pending:
        return 0
    lines = [f"• {event or '(identify)'} — {kind} at `{path}` (e.g. message {example})"
             for event, kind, path, example in pending[:SHOWN]]
    more = f"\nand {len(pending) - SHOWN} more" if len(pending) > SHOWN else ""
    text = f"*Tracking plan*: {len(pending)} new kind(s) of violation\n" + "\n".join(lines) + more
    problem = post_notice(project, text, environ)
    if problem is not None:  # kept pending: a later load posts it
        log.warning("tracking-plan alert not posted: %s", problem)
        return 0
    now = datetime.now(UTC).replace(tzinfo=None).isoformat()
    warehouse.execute(exp.update(alerts.copy(), {"alerted_at": exp.cast(exp.Literal.string(now), "timestamp")},
                                 where=exp.column("alerted_at").is_(exp.null())))
    return len(pending)
