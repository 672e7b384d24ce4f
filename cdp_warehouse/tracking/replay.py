"""`cdp plan replay`: give quarantined messages another chance under the current plan.

Each message is re-ingested as if it arrived again from its source, with the same landing row
it would have had (same id, same ``received_at`` stamp): under the source's current mode it
lands when it passes the plan (or when the source now ``flag``s or ``allow``s, recording its
violations as ``flagged``), and otherwise stays in quarantine untouched. A message leaves the
quarantine in the same transaction that lands it, and only once its id is in ``events``, so a
crash in between loses nothing. A message whose id landed meanwhile (a fixed re-send) is a
duplicate: it leaves the quarantine and the landed copy stays.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlglot import exp

from cdp_warehouse.collect.messages import InvalidMessage, landing_row
from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.tracking import store
from cdp_warehouse.tracking.guard import compiled_validator
from cdp_warehouse.tracking.models import TrackingPlan
from cdp_warehouse.tracking.plan import mode_for
from cdp_warehouse.tracking.validator import PlanValidator, Violation
from cdp_warehouse.warehouses.base import LANDING_COLUMNS, Warehouse

BATCH_ROWS = 50_000  # quarantined messages per page and transaction


@dataclass
class ReplayResult:
    read: int = 0
    landed: int = 0  # now in events, out of quarantine
    flagged: int = 0  # of which landed with violations (their source flags now)
    duplicates: int = 0  # their id had landed meanwhile; removed from quarantine
    kept: int = 0  # still violating a blocking source's plan, left in quarantine
    reasons: Counter[tuple[str, str]] = field(default_factory=Counter)  # (type, path) of kept ones


def _column(name: str) -> exp.Column:
    return exp.column(name, quoted=True)


def replay_quarantine(project: ResolvedProject, warehouse: Warehouse, plan: TrackingPlan,
                      *, now: datetime | None = None) -> ReplayResult:
    """Re-validate every quarantined message and land those the current plan lets through."""
    store.ensure_tables(project, warehouse)
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    validator = compiled_validator(plan)
    result = ReplayResult()
    quarantine = store.table(project, store.QUARANTINE_TABLE)
    columns = [_column(name) for name in ("message_id", "source", "received_at", "message")]
    first_page = exp.select(*columns).from_(quarantine).order_by(_column("message_id")).limit(BATCH_ROWS)
    # Pages by id (keyset): a page's landed messages leave the table while the next is read.
    next_page = first_page.where(_column("message_id") > exp.Placeholder())
    last_id: str | None = None
    while True:
        chunk = (warehouse.fetch_dicts(first_page) if last_id is None
                 else warehouse.fetch_dicts(next_page, [last_id]))
        if not chunk:
            break
        last_id = chunk[-1]["message_id"]
        result.read += len(chunk)
        with warehouse.transaction():
            # A quarantined id that landed meanwhile is a duplicate whatever the plan says now.
            already = store.existing_ids(project, warehouse, "events", [row["message_id"] for row in chunk])
            to_land, violation_rows = _judge([q for q in chunk if q["message_id"] not in already],
                                             project, plan, validator, result, now)
            if to_land:
                events = exp.table_("events", db=project.raw_schema, quoted=True)
                warehouse.insert_arrow(events, store.arrow(to_land, LANDING_COLUMNS), skip_existing_key="message_id")
            store.insert_violations(project, warehouse, violation_rows)
            store.remove_landed_from_quarantine(project, warehouse,
                                                [*already, *(row["message_id"] for row in to_land)])
        result.landed += len(to_land)
        result.duplicates += len(already)
    return result


def _judge(chunk: list[dict[str, Any]], project: ResolvedProject, plan: TrackingPlan, validator: PlanValidator,
           result: ReplayResult, now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The landing rows to land now and the violation rows to record with them."""
    to_land: list[dict[str, Any]] = []
    violation_rows: list[dict[str, Any]] = []
    for quarantined in chunk:
        row, violations = _revalidate(quarantined, validator)
        if row is None:  # unreadable now (should not happen): keep it, never drop it
            result.kept += 1
            result.reasons[("unreadable", "message")] += 1
            continue
        mode = mode_for(project, plan, quarantined["source"])
        if violations and mode == "block":
            result.kept += 1
            result.reasons.update((v.violation_type, v.path) for v in violations)
            continue
        to_land.append(row)
        if violations and mode == "flag":
            result.flagged += 1
            violation_rows += store.violation_rows(row["message_id"], row["source"], row["type"], row["event"],
                                                   violations, "flagged", now)
    return to_land, violation_rows


def _revalidate(quarantined: dict[str, Any], validator: PlanValidator) -> tuple[dict[str, Any] | None, list[Violation]]:
    """The landing row the message had at ingest, and its violations under the plan now."""
    try:
        message = json.loads(quarantined["message"])
        received_at = quarantined["received_at"]
        stamp = received_at.replace(tzinfo=UTC) if received_at is not None else datetime.now(UTC)
        row = landing_row(message, source=quarantined["source"], now=stamp)
    except (ValueError, InvalidMessage):
        return None, []
    row["message_id"] = quarantined["message_id"]  # the id it was quarantined under, always
    data = message.get("properties") if row["type"] == "track" else message.get("traits")
    return row, validator.check(row["type"], row["event"], data)
