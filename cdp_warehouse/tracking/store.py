"""The two tables tracking-plan enforcement writes, both in the raw schema next to
``events`` and ``rejected_messages``: they are facts about ingest, written in the same
transaction as the events, and no ``cdp run`` may rebuild them.

``tracking_plan_violations``: one row per violation found at ingest. ``action`` says what
happened to the message: ``flagged`` (it landed) or ``blocked`` (it is in quarantine). A
replayed message that lands adds ``flagged`` rows only if it still violates the plan; its
``blocked`` rows stay as the history of what ingest did.

``quarantined_messages``: messages a ``block`` source held back, with the original message
(as received, JSON text) and the reasons, until ``cdp plan replay`` lands them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
from sqlglot import exp

from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.tracking.validator import Violation
from cdp_warehouse.warehouses.base import Warehouse, create_table

VIOLATIONS_TABLE = "tracking_plan_violations"
QUARANTINE_TABLE = "quarantined_messages"
VIOLATION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("violation_id", "text"),  # hash of message, action, type and path: re-loads add nothing
    ("message_id", "text"),
    ("source", "text"),
    ("message_type", "text"),  # track or identify (identify has no event)
    ("event", "text"),
    ("violation_type", "text"),
    ("path", "text"),  # properties.revenue, traits.email, properties.items[0].sku
    ("value", "json"),  # the offending value as JSON; null for missing_required
    ("action", "text"),  # flagged | blocked
    ("detected_at", "timestamp"),
)
QUARANTINE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("message_id", "text"),  # the landing table's id: replay lands the message under it
    ("source", "text"),
    ("message_type", "text"),
    ("event", "text"),
    ("received_at", "timestamp"),  # the loader's stamp; replay reuses it, so the row is unchanged
    ("quarantined_at", "timestamp"),
    ("reasons", "json"),  # [{"violation_type", "path", "value"}, ...]
    ("message", "text"),  # the original message, exactly as it was read
    ("origin", "text"),  # file:line or the collector's batch
)
SCRATCH_IDS = "_cdp_tracking_ids"
_MAX_VALUE_CHARS = 2_000  # an offending 1 MB blob is not worth keeping whole in every row
_ARROW_TYPES = {"text": pa.string(), "json": pa.string(), "timestamp": pa.timestamp("us")}


def table(project: ResolvedProject, name: str) -> exp.Table:
    return exp.table_(name, db=project.raw_schema, quoted=True)


def ensure_tables(project: ResolvedProject, warehouse: Warehouse) -> None:
    """Create the landing tables and both tracking-plan tables if missing."""
    warehouse.ensure_landing(project)
    warehouse.execute(create_table(table(project, VIOLATIONS_TABLE), VIOLATION_COLUMNS))
    warehouse.execute(create_table(table(project, QUARANTINE_TABLE), QUARANTINE_COLUMNS))


def _json_text(value: Any) -> str:
    """Strict JSON: Python's ``NaN`` would make the warehouse refuse the whole batch."""
    try:
        return json.dumps(value, ensure_ascii=False, default=str, allow_nan=False)
    except ValueError:
        return json.dumps(str(value), ensure_ascii=False)


def value_json(value: Any) -> str | None:
    """The offending value as JSON text (valid JSON even when cut short)."""
    if value is None:
        return None
    text = _json_text(value)
    if len(text) > _MAX_VALUE_CHARS:
        text = json.dumps(text[:_MAX_VALUE_CHARS] + "…")
    return text


def violation_rows(message_id: str, source: str, message_type: str, event: str | None,
                   violations: Iterable[Violation], action: str, now: datetime) -> list[dict[str, Any]]:
    rows = []
    for violation in violations:
        key = f"{message_id}\0{action}\0{violation.violation_type}\0{violation.path}"
        rows.append({
            "violation_id": hashlib.sha256(key.encode()).hexdigest()[:32],
            "message_id": message_id, "source": source, "message_type": message_type, "event": event,
            "violation_type": violation.violation_type, "path": violation.path,
            "value": value_json(violation.value), "action": action, "detected_at": now,
        })
    return rows


def reasons_json(rows: Iterable[dict[str, Any]]) -> str:
    """The reasons of a quarantined message from its violation rows, each value as
    ``tracking_plan_violations`` has it (already JSON text, so it is spliced, not re-encoded)."""
    return "[" + ", ".join(
        f'{{"violation_type": {json.dumps(row["violation_type"])}, "path": {json.dumps(row["path"])}, '
        f'"value": {row["value"] or "null"}}}' for row in rows) + "]"


def arrow(rows: Sequence[dict[str, Any]], columns: tuple[tuple[str, str], ...]) -> pa.Table:
    return pa.table({name: pa.array([row[name] for row in rows], type=_ARROW_TYPES[kind])
                     for name, kind in columns})


def insert_violations(project: ResolvedProject, warehouse: Warehouse, rows: Sequence[dict[str, Any]]) -> int:
    if not rows:
        return 0
    return warehouse.insert_arrow(table(project, VIOLATIONS_TABLE), arrow(rows, VIOLATION_COLUMNS),
                                  skip_existing_key="violation_id")


def insert_quarantined(project: ResolvedProject, warehouse: Warehouse, rows: Sequence[dict[str, Any]]) -> int:
    """Quarantine messages; one already quarantined under the same id keeps its first copy."""
    if not rows:
        return 0
    return warehouse.insert_arrow(table(project, QUARANTINE_TABLE), arrow(rows, QUARANTINE_COLUMNS),
                                  skip_existing_key="message_id")


def scratch_ids(warehouse: Warehouse, ids: Iterable[str]) -> exp.Table:
    """A temporary one-column table of ``ids`` to join against (so that ids never become SQL
    text, and a 100k-id batch is not 100k parameters)."""
    scratch = exp.to_table(SCRATCH_IDS, quoted=True)
    schema = exp.Schema(this=scratch.copy(), expressions=[
        exp.ColumnDef(this=exp.to_identifier("message_id", quoted=True), kind=exp.DataType.build("text"))])
    warehouse.execute(exp.Create(this=schema, kind="TABLE", replace=True,
                                 properties=exp.Properties(expressions=[exp.TemporaryProperty()])))
    warehouse.insert_arrow(scratch, pa.table({"message_id": pa.array(list(ids), type=pa.string())}))
    return scratch


def _ids_in(project: ResolvedProject, scratch: exp.Table, table_name: str = "events") -> exp.Select:
    """``SELECT s.message_id FROM scratch s`` where the id is in ``<raw>.table_name``."""
    events = exp.alias_(exp.table_(table_name, db=project.raw_schema, quoted=True), "e")
    landed = (exp.select(exp.Literal.number(1)).from_(events)
              .where(exp.column("message_id", table="e", quoted=True)
                     .eq(exp.column("message_id", table="s", quoted=True))))
    return (exp.select(exp.column("message_id", table="s", quoted=True))
            .from_(exp.alias_(scratch, "s")).where(exp.Exists(this=landed)))


def existing_ids(project: ResolvedProject, warehouse: Warehouse, table_name: str, ids: Iterable[str]) -> set[str]:
    """Which of ``ids`` are already in ``<raw>.table_name`` (events or the quarantine)."""
    ids = list(ids)
    if not ids:
        return set()
    return {row[0] for row in warehouse.fetch(_ids_in(project, scratch_ids(warehouse, ids), table_name))}


def remove_landed_from_quarantine(project: ResolvedProject, warehouse: Warehouse, ids: Iterable[str]) -> int:
    """Delete quarantined messages among ``ids`` whose id is now in the landing table; a message
    is only ever removed once its landed copy exists, so nothing is lost. Returns rows removed."""
    ids = list(ids)
    if not ids:
        return 0
    landed = _ids_in(project, scratch_ids(warehouse, ids))
    quarantine = table(project, QUARANTINE_TABLE)
    count = exp.select(exp.Count(this=exp.Star())).from_(quarantine.copy())
    before = warehouse.fetch(count)[0][0]
    warehouse.execute(exp.delete(quarantine.copy(), where=exp.In(
        this=exp.column("message_id", quoted=True), query=exp.Subquery(this=landed))))
    return before - warehouse.fetch(count)[0][0]
