"""`cdp load`: JSONL or Parquet files of Segment-spec messages into the landing table.

Idempotent on ``message_id``: the first copy landed wins (within a file and across loads).
Invalid messages never fail the load; they go to ``rejected_messages`` with their reason.
With a tracking plan, each source's mode applies here, so ``cdp load`` and ``cdp serve`` agree:
``flag`` records violations, ``block`` quarantines violating messages (cdp_warehouse.tracking).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlglot import exp

from cdp_warehouse.collect.messages import InvalidMessage, landing_row
from cdp_warehouse.errors import LoadError
from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.tracking import alerts
from cdp_warehouse.tracking.guard import IngestGuard
from cdp_warehouse.tracking.models import TrackingPlan
from cdp_warehouse.warehouses.base import LANDING_COLUMNS, REJECTED_COLUMNS, Warehouse

BATCH_ROWS = 200_000
_ARROW_TYPES = {"text": pa.string(), "json": pa.string(), "timestamp": pa.timestamp("us")}


@dataclass
class LoadResult:
    read: int = 0
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    flagged: int = 0  # landed, with tracking-plan violations recorded
    blocked: int = 0  # held back by a `block` source, in quarantined_messages
    violations: int = 0  # tracking_plan_violations rows written
    rejections: list[tuple[str, str]] = field(default_factory=list)  # (origin, reason), first few


def _arrow(rows: list[dict[str, Any]], columns: tuple[tuple[str, str], ...]) -> pa.Table:
    return pa.table({name: pa.array([row[name] for row in rows], type=_ARROW_TYPES[kind])
                     for name, kind in columns})


class Unreadable(ValueError):
    """A line that is not a JSON message; keeps its text for ``rejected_messages``."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(reason)
        self.text = text


def _read_messages(path: Path) -> Iterator[tuple[str, Any]]:
    """(origin 'file:line', message or Unreadable) for each message in the file."""
    if path.suffix.lower() == ".parquet":
        try:
            batches = pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS)
            index = 0
            for record_batch in batches:  # streamed: a large export is never all in memory
                for row in record_batch.to_pylist():
                    index += 1
                    yield f"{path}:{index}", row
        except (OSError, pa.ArrowException) as error:
            raise LoadError(f"{path}: not a readable Parquet file: {error}") from error
        return
    try:
        handle = open(path, encoding="utf-8")
    except OSError as error:
        raise LoadError(f"cannot read {path}: {error.strerror}") from error
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                message = json.loads(line)
            except ValueError as error:
                message = Unreadable(f"invalid JSON: {error}", line.rstrip("\n"))
            yield f"{path}:{number}", message


def load_files(
    project: ResolvedProject,
    warehouse: Warehouse,
    paths: list[Path],
    *,
    source: str = "load",
    on_progress: Callable[[int], None] | None = None,
) -> LoadResult:
    """Land every message of ``paths``; returns counts. Each batch commits on its own, so an
    interrupted load keeps what it landed and a re-run skips it."""
    for path in paths:
        if not path.exists():
            raise LoadError(f"no such file: {path}")
    messages = ((origin, message) for path in paths for origin, message in _read_messages(path))
    return land_messages(project, warehouse, messages, source=source, on_progress=on_progress)


def land_messages(
    project: ResolvedProject,
    warehouse: Warehouse,
    messages: Iterable[tuple[str, Any]] | Iterable[dict[str, Any]],
    *,
    source: str = "load",
    now: datetime | None = None,
    on_progress: Callable[[int], None] | None = None,
    tracking_plan: TrackingPlan | None = None,
    amend_row: Callable[[dict[str, Any], Any], None] | None = None,
) -> LoadResult:
    """Land messages (dicts, or ``(origin, dict)`` pairs); invalid ones go to
    ``rejected_messages`` with their reason. The source's tracking-plan mode is enforced with
    ``tracking_plan``, by default the project's plan file (a bad plan raises SpecError before
    anything is written). ``amend_row(row, message)``, when given, may adjust each landing row
    after ``landing_row`` (warehouse exports keep their ``sent_at`` this way without a second
    clock-skew correction, cdp_warehouse.collect.exports); an InvalidMessage it raises rejects
    the message."""
    warehouse.ensure_landing(project)
    guard = IngestGuard.for_source(project, warehouse, source, tracking_plan)
    events = exp.table_("events", db=project.raw_schema, quoted=True)
    rejected_table = exp.table_("rejected_messages", db=project.raw_schema, quoted=True)
    result = LoadResult()
    now = now or datetime.now(UTC)
    batch: dict[str, dict[str, Any]] = {}
    rejected: dict[str, dict[str, Any]] = {}

    def flush() -> None:
        # Messages and rejections of a batch commit together; both skip what an earlier load
        # of the same input already wrote, so re-loading a file is a no-op.
        with warehouse.transaction():
            if guard is not None:
                settled = guard.settle(warehouse, batch, now.astimezone(UTC).replace(tzinfo=None))
                result.flagged += settled.flagged
                result.blocked += settled.blocked
                result.violations += settled.violations
            if batch:
                inserted = warehouse.insert_arrow(events, _arrow(list(batch.values()), LANDING_COLUMNS),
                                                  skip_existing_key="message_id")
                result.inserted += inserted
                result.duplicates += len(batch) - inserted  # blocked rows left the batch
            if rejected:
                warehouse.insert_arrow(rejected_table, _arrow(list(rejected.values()), REJECTED_COLUMNS),
                                       skip_existing_key="rejection_id")
        batch.clear()
        rejected.clear()
        if on_progress:
            on_progress(result.read)

    for index, item in enumerate(messages, start=1):
        origin, message = item if isinstance(item, tuple) else (f"message {index}", item)
        result.read += 1
        try:
            if isinstance(message, Unreadable):
                raise InvalidMessage(str(message))
            row = landing_row(message, source=source, now=now)
            if amend_row is not None:
                amend_row(row, message)
        except InvalidMessage as error:
            result.rejected += 1
            if len(result.rejections) < 20:
                result.rejections.append((origin, str(error)))
            text = message.text if isinstance(message, Unreadable) else json.dumps(message, default=str)
            rejection_id = hashlib.sha256(f"{error}\0{text}".encode()).hexdigest()[:32]
            rejected.setdefault(rejection_id, {
                "rejection_id": rejection_id, "received_at": now.astimezone(UTC).replace(tzinfo=None),
                "source": source, "reason": str(error), "message": text, "origin": origin,
            })
            continue
        if row["message_id"] in batch:
            result.duplicates += 1  # first copy wins
        else:
            batch[row["message_id"]] = row
            if guard is not None:
                guard.inspect(row, message, origin)
        if len(batch) >= BATCH_ROWS:
            flush()
    flush()
    if guard is not None and result.violations:
        # a new kind of violation is posted once (to Slack), not once per event
        with warehouse.transaction():
            alerts.record_new_kinds(project, warehouse, now.astimezone(UTC).replace(tzinfo=None))
        alerts.post_pending(project, warehouse)
    return result
