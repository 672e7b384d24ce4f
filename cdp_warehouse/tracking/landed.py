"""Stream landed track and identify events in Arrow batches, for `cdp plan check` and
`cdp plan infer`: a million rows never sit in Python as one list."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlglot import exp

from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.tracking.validator import CHECKED_TYPES
from cdp_warehouse.warehouses.base import Warehouse

BATCH_ROWS = 100_000
COLUMNS = ("message_id", "type", "event", "source", "payload")


def _column(name: str) -> exp.Column:
    return exp.column(name, quoted=True)


def landed_query(project: ResolvedProject, since: datetime | None) -> exp.Select:
    """``message_id, type, event, source, payload`` of landed track/identify events, payload
    being properties (track) or traits (identify) as JSON text; ``since`` filters on the
    event's ``timestamp`` (naive UTC), as every time window of the project does."""
    payload = exp.Case(ifs=[exp.If(this=_column("type").eq(exp.Literal.string("track")),
                                   true=exp.cast(_column("properties"), "text"))],
                       default=exp.cast(_column("traits"), "text"))
    query = (exp.select(_column("message_id"), _column("type"), _column("event"), _column("source"),
                        exp.alias_(payload, "payload", quoted=True))
             .from_(exp.table_("events", db=project.raw_schema, quoted=True))
             .where(_column("type").isin(*(exp.Literal.string(kind) for kind in CHECKED_TYPES))))
    if since is not None:
        query = query.where(_column("timestamp") >= exp.cast(exp.Literal.string(since.isoformat(sep=" ")),
                                                            "timestamp"))
    return query


def landed_batches(project: ResolvedProject, warehouse: Warehouse,
                   since: datetime | None = None) -> Iterator[dict[str, list[Any]]]:
    """Column lists (``COLUMNS``) of landed track/identify events, one batch at a time."""
    if not warehouse.table_exists(project.raw_schema, "events"):
        return
    query = landed_query(project, since)
    connection = getattr(warehouse, "connection", None)
    if connection is not None and hasattr(connection, "sql"):
        # DuckDB: a streaming Arrow reader (the Warehouse base class has no Arrow fetch yet).
        reader = connection.sql(warehouse.render(query)).to_arrow_reader(BATCH_ROWS)
        for batch in reader:
            yield {name: batch.column(name).to_pylist() for name in COLUMNS}
        return
    rows = warehouse.fetch(query)
    for start in range(0, len(rows), BATCH_ROWS):
        chunk = rows[start:start + BATCH_ROWS]
        yield {name: [row[index] for row in chunk] for index, name in enumerate(COLUMNS)}
