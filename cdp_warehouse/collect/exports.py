"""`cdp load --format segment-warehouse|rudderstack-warehouse`: a Parquet or CSV export of one
table of Segment's or RudderStack's warehouse schema, mapped onto the landing table.

Teams moving off Segment or RudderStack already hold years of events in those vendors'
warehouse tables (``tracks``, ``identifies``, ``pages``, ``screens``, ``groups``, ``aliases``
and one table per track event, e.g. ``order_completed``). Each row of an export is turned back
into the Segment-spec message it came from and landed through ``land_messages``, so the
landing rules (spec section 1), the tracking plan and idempotence are the same as for any
``cdp load``. Files are read in batches (pyarrow), never all in memory.

Vendor references: https://segment.com/docs/connections/storage/warehouses/schema/ and
https://www.rudderstack.com/docs/destinations/warehouse-destinations/warehouse-schema/ (the
column rules are rudder-transformer's ``src/warehouse``).

Mapping (one row → one message):

- The table gives the type: ``tracks`` → track, ``identifies`` → identify, ``pages`` → page,
  ``screens`` → screen, ``groups`` → group, ``aliases`` → alias; any other name is a per-event
  track table. The table is the file's name without its extensions (``tracks.parquet``,
  ``identifies.csv``, ``order_completed.csv.gz``) unless ``--table`` says otherwise (split
  exports such as ``tracks-000000000000.csv`` need it). ``users`` and ``accounts`` hold the
  latest state per user/group, not messages, and are refused.
- ``id`` → ``messageId`` (loads are idempotent on it; a file without an ``id`` column is an
  error naming the file and the column), ``user_id``, ``anonymous_id``; ``group_id`` for
  groups; ``previous_id`` for aliases; for tracks the event name is ``event_text`` (the name as
  sent; ``event`` is its snake_case slug), else ``event``, else (a per-event table) the table
  name; for pages/screens ``name`` (also kept in ``properties.name``, as analytics.js does).
- Time: the export's ``timestamp`` is already clock-skew corrected
  (``received_at - (sent_at - original_timestamp)``), so it lands as given with
  ``receivedAt = received_at`` and no ``sentAt`` — no second correction. The export's
  ``sent_at`` is then written into the landing row's ``sent_at`` as it is (``amend_row`` of
  ``land_messages``, after ``landing_row``), so nothing is lost. Only when a row has no
  ``timestamp`` are ``original_timestamp`` and ``sent_at`` passed as ``timestamp``/``sentAt``:
  the landing rules then apply the vendors' own correction. Naive instants are UTC.
- ``context_*`` columns are rebuilt into ``context``. The vendors flatten nested objects with
  ``_`` and snake_case every key, which cannot be inverted in general, so the rules are:
  a column whose remainder starts with a known sub-object (``app_``, ``campaign_``,
  ``consent_management_``, ``device_``, ``library_``, ``location_``, ``network_``, ``os_``,
  ``page_``, ``protocols_``, ``referrer_``, ``screen_``, ``sources_``, ``traits_``,
  ``user_agent_data_``) goes one level down (``context_page_url`` → ``context.page.url``,
  ``context_traits_email`` → ``context.traits.email``); anything else stays one key
  (``context_ip`` → ``context.ip``). Keys the Segment/RudderStack spec spells in camelCase get
  it back (``user_agent`` → ``userAgent``, ``group_id`` → ``groupId``, ``session_id`` →
  ``sessionId``, ``device_advertising_id`` → ``device.advertisingId``, ...); every other key
  keeps the warehouse's spelling (``context.traits.first_name``; deeper nesting stays flat:
  ``context.app.foo_bar``). RudderStack's ``context_request_ip`` / ``context_passed_ip`` become
  ``context.request_ip`` / ``context.passed_ip`` (``context.ip`` is ``context_ip``: the ip the
  SDK passed, else the request's — what Segment's ``context.ip`` means too), and its top-level
  ``channel`` column becomes ``context.channel``.
- Every other column is payload: ``traits`` for identifies, groups and aliases (RudderStack
  renames a trait called ``user_id`` to ``_user_id``; it lands as ``traits.user_id``),
  ``properties`` for per-event tables, pages and screens. Segment's and RudderStack's
  ``tracks`` table has no properties (they live in the per-event tables), so a track landed
  from ``tracks`` has none; within one ``cdp load``, per-event tables are landed before
  ``tracks`` so that an event present in both keeps its properties (the first copy of an id
  wins, also across loads: load per-event tables first). Payload keys are the column names
  (properties and traits were snake_cased and flattened by the vendor: ``address_street``);
  arrays the vendor stringified stay strings.
- Not payload (the vendors' own columns): ``id``, ``anonymous_id``, ``user_id``,
  ``received_at``, ``sent_at``, ``timestamp``, ``original_timestamp``, ``uuid``, ``uuid_ts``,
  ``loaded_at``, ``event``, ``event_text``, the type's own id columns, page/screen ``name``,
  and for RudderStack also ``channel``, ``record_id`` and ``rudder_event``.
- Null values are left out (a missing trait is not a null trait). Column names are read
  case-insensitively (Snowflake exports upper-case them). Parquet keeps its types (decimals
  become JSON numbers, timestamps ISO 8601 UTC strings); CSV carries none, so every CSV value is
  text (numeric text still counts as a number in traits and SQL, spec section 4), and an empty
  field or ``\\N`` is null.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from cdp_warehouse.collect.loader import BATCH_ROWS, LoadResult, land_messages
from cdp_warehouse.collect.messages import parse_instant
from cdp_warehouse.errors import LoadError
from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.warehouses.base import Warehouse

# The vendors' message tables, by the name users write; any other table is a per-event table.
TABLE_TYPES = {"tracks": "track", "identifies": "identify", "pages": "page", "screens": "screen",
               "groups": "group", "aliases": "alias"}
STATE_TABLES = {"users": "identifies", "accounts": "groups"}  # one row per user/group: not messages
CSV_NULLS = ["", "\\N"]  # empty (BigQuery, Redshift UNLOAD) and \N (Snowflake, MySQL)
_INSTANTS = ("timestamp", "original_timestamp", "sent_at", "received_at")
_COMMON_METADATA = frozenset({"id", "anonymous_id", "user_id", "received_at", "sent_at", "timestamp",
                              "original_timestamp", "uuid", "uuid_ts", "loaded_at", "event", "event_text"})
_TYPE_METADATA = {"group": {"group_id"}, "alias": {"previous_id"}, "page": {"name"}, "screen": {"name"}}

# Known context sub-objects: flattened prefix → (key in context, snake_case → camelCase for the
# keys the Segment/RudderStack spec spells in camelCase). Longest prefix first when matching.
_CONTEXT_OBJECTS: dict[str, tuple[str, dict[str, str]]] = {
    "app": ("app", {}),
    "campaign": ("campaign", {}),
    "consent_management": ("consentManagement", {"denied_consent_ids": "deniedConsentIds",
                                                 "allowed_consent_ids": "allowedConsentIds",
                                                 "resolution_strategy": "resolutionStrategy"}),
    "device": ("device", {"advertising_id": "advertisingId", "ad_tracking_enabled": "adTrackingEnabled",
                          "att_tracking_status": "attTrackingStatus"}),
    "library": ("library", {}),
    "location": ("location", {}),
    "network": ("network", {}),
    "os": ("os", {}),
    "page": ("page", {}),
    "protocols": ("protocols", {"source_id": "sourceId"}),
    "referrer": ("referrer", {}),
    "screen": ("screen", {"inner_width": "innerWidth", "inner_height": "innerHeight"}),
    "sources": ("sources", {}),  # RudderStack cloud sources: job_id, task_run_id, ...
    "traits": ("traits", {}),  # the user's own keys: kept as the warehouse spells them
    "user_agent_data": ("userAgentData", {}),
}
_CONTEXT_PREFIXES = sorted(_CONTEXT_OBJECTS, key=len, reverse=True)
_CONTEXT_KEYS = {"user_agent": "userAgent", "group_id": "groupId", "session_id": "sessionId",
                 "session_start": "sessionStart", "instance_id": "instanceId", "source_id": "sourceId",
                 "source_type": "sourceType", "destination_id": "destinationId",
                 "destination_type": "destinationType"}


@dataclass(frozen=True)
class Layout:
    """What differs between the vendors' schemas."""

    name: str
    title: str
    metadata: frozenset[str]  # columns that are neither properties nor traits
    renamed_traits: dict[str, str]  # identifies: warehouse column → trait key
    channel_to_context: bool  # a top-level `channel` column → context.channel


LAYOUTS: dict[str, Layout] = {
    "segment-warehouse": Layout("segment-warehouse", "Segment warehouse", _COMMON_METADATA, {}, False),
    "rudderstack-warehouse": Layout(
        "rudderstack-warehouse", "RudderStack warehouse",
        _COMMON_METADATA | {"channel", "record_id", "rudder_event"},
        {"_user_id": "user_id"},  # rudder-transformer escapes a `user_id` trait as `_user_id`
        True,
    ),
}


class ExportMessage(dict):
    """A Segment-spec message rebuilt from an export row. ``sent_at`` rides alongside, out of
    the message, so that ``landing_row`` does not correct the export's (already corrected)
    ``timestamp`` a second time; ``keep_sent_at`` writes it into the landing row."""

    sent_at: Any = None


def keep_sent_at(row: dict[str, Any], message: Any) -> None:
    """``amend_row`` for ``land_messages``: the export's ``sent_at`` into the landing row."""
    sent_at = getattr(message, "sent_at", None)
    if sent_at is not None:
        row["sent_at"] = parse_instant(_instant(sent_at), "sent_at")


def _instant(value: Any) -> Any:
    """Warehouse spellings of an instant → ISO 8601 (`... UTC` from BigQuery, `... +0000`)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.upper().endswith(" UTC"):
        text = text[:-4] + "+00:00"
    return re.sub(r"\s+(?=[+-]\d{2}(:?\d{2})?$)", "", text)


def _plain(value: Any) -> Any:
    """An Arrow value as JSON (None for a null, NaN included)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return str(value)


def rebuild_context(columns: dict[str, Any]) -> dict[str, Any]:
    """``{"page_url": ..., "user_agent": ...}`` (``context_`` stripped, nulls left out) →
    the nested context object, by the rules in the module docstring."""
    context: dict[str, Any] = {}
    nested: list[tuple[str, str, str, Any]] = []
    for name, value in columns.items():
        prefix = next((p for p in _CONTEXT_PREFIXES if name.startswith(p + "_") and len(name) > len(p) + 1), None)
        if prefix is None:
            context[_CONTEXT_KEYS.get(name, name)] = value
        else:
            nested.append((name, prefix, name[len(prefix) + 1:], value))
    for name, prefix, inner, value in nested:
        key, renames = _CONTEXT_OBJECTS[prefix]
        slot = context.setdefault(key, {})
        if isinstance(slot, dict):
            slot[renames.get(inner, inner)] = value
        else:  # a scalar context_<key> column too: keep this one flat rather than lose either
            context[name] = value
    return context


def to_message(values: dict[str, Any], kind: str, table: str, layout: Layout) -> ExportMessage:
    """One export row (lower-cased column names) → the Segment-spec message it came from."""
    present = {name: value for name, value in values.items() if value is not None}
    message = ExportMessage(type=kind)
    for field, column in (("messageId", "id"), ("userId", "user_id"), ("anonymousId", "anonymous_id")):
        if column in present:
            message[field] = present[column]
    timestamp = present.get("timestamp")
    if timestamp is not None:
        message["timestamp"] = _instant(timestamp)  # already skew-corrected: no sentAt
    elif present.get("original_timestamp") is not None:
        message["timestamp"] = _instant(present["original_timestamp"])
        if present.get("sent_at") is not None:
            message["sentAt"] = _instant(present["sent_at"])  # the landing rules correct it
    if present.get("received_at") is not None:
        message["receivedAt"] = _instant(present["received_at"])
    message.sent_at = present.get("sent_at")

    metadata = layout.metadata | _TYPE_METADATA.get(kind, set())
    context_columns = {name[len("context_"):]: _plain(value) for name, value in present.items()
                       if name.startswith("context_") and len(name) > len("context_")}
    context = rebuild_context({name: value for name, value in context_columns.items() if value is not None})
    if layout.channel_to_context and present.get("channel") is not None:
        context.setdefault("channel", _plain(present["channel"]))
    payload = {}
    for name, value in present.items():
        if name in metadata or name.startswith("context_"):
            continue
        value = _plain(value)
        if value is not None:
            payload[layout.renamed_traits.get(name, name) if kind == "identify" else name] = value

    if kind == "track":
        message["event"] = present.get("event_text") or present.get("event") or (
            table if table not in TABLE_TYPES else None)
        if payload:
            message["properties"] = payload
    elif kind in ("page", "screen"):
        name = present.get("name")
        if name is not None:
            message["name"] = name
            payload = {"name": _plain(name), **payload}
        if payload:
            message["properties"] = payload
    else:
        if kind == "group" and "group_id" in present:
            message["groupId"] = present["group_id"]
        if kind == "alias" and "previous_id" in present:
            message["previousId"] = present["previous_id"]
        if payload:
            message["traits"] = payload
    if context:
        message["context"] = context
    return message


@dataclass(frozen=True)
class Export:
    """One export file: which vendor table it holds and how to read it."""

    path: Path
    table: str
    type: str
    layout: Layout
    columns: tuple[str, ...]  # lower-cased, in file order
    raw_columns: tuple[str, ...]  # as the file spells them
    is_csv: bool

    def batches(self) -> Iterator[pa.RecordBatch]:
        try:
            if self.is_csv:
                reader = pa_csv.open_csv(
                    self.path,
                    read_options=pa_csv.ReadOptions(block_size=16 << 20),
                    # all text: inference per block would fail mid-file on a column whose type
                    # drifts, and would turn ids like 0042 into numbers
                    convert_options=pa_csv.ConvertOptions(
                        column_types={name: pa.string() for name in self.raw_columns},
                        null_values=CSV_NULLS, strings_can_be_null=True),
                )
                for batch in reader:
                    yield batch.rename_columns(list(self.columns))
            else:
                for batch in pq.ParquetFile(self.path).iter_batches(batch_size=BATCH_ROWS):
                    yield _microseconds(batch.rename_columns(list(self.columns)))
        except (OSError, pa.ArrowException) as error:
            kind = "CSV" if self.is_csv else "Parquet"
            raise LoadError(f"{self.path}: not a readable {kind} file: {error}") from error

    def messages(self) -> Iterator[tuple[str, ExportMessage]]:
        """(origin 'file:row', message) for every row, streamed batch by batch."""
        index = 0
        for batch in self.batches():
            for values in batch.to_pylist():
                index += 1
                yield f"{self.path}:{index}", to_message(values, self.type, self.table, self.layout)


def _microseconds(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Nanosecond timestamps (Spark, pandas) → microseconds, the landing table's precision."""
    fields = [field.with_type(pa.timestamp("us", field.type.tz))
              if pa.types.is_timestamp(field.type) and field.type.unit == "ns" else field for field in batch.schema]
    if all(a.type == b.type for a, b in zip(fields, batch.schema, strict=True)):
        return batch
    return batch.cast(pa.schema(fields), safe=False)


def _csv_header(path: Path) -> list[str]:
    try:
        with pa.input_stream(str(path), compression="detect") as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
            return next(csv.reader(text), [])
    except (OSError, pa.ArrowException, UnicodeDecodeError, csv.Error) as error:
        raise LoadError(f"{path}: not a readable CSV file: {error}") from error


def _table_name(path: Path) -> tuple[str, bool]:
    """``order_completed.csv.gz`` → ("order_completed", is_csv=True)."""
    name = path.name.lower()
    for compression in (".gz", ".bz2", ".zst", ".lz4"):
        if name.endswith(compression):
            name = name[: -len(compression)]
            break
    for suffix, is_csv in ((".parquet", False), (".pq", False), (".csv", True)):
        if name.endswith(suffix):
            return name[: -len(suffix)], is_csv
    raise LoadError(f"{path}: not a Parquet (.parquet) or CSV (.csv, .csv.gz) file",
                    hint="warehouse exports are read from Parquet or CSV files")


def open_export(path: Path, layout: str | Layout, table: str | None = None) -> Export:
    """Check one export file (its name, its columns) before anything is landed."""
    layout = layout if isinstance(layout, Layout) else LAYOUTS[layout]
    if not path.exists():
        raise LoadError(f"no such file: {path}")
    stem, is_csv = _table_name(path)
    table = (table or stem).strip().lower()
    if table in STATE_TABLES:
        raise LoadError(f"{path}: `{table}` holds the latest state per {table[:-1]}, not messages",
                        hint=f"load the `{STATE_TABLES[table]}` table instead")
    if is_csv:
        raw = _csv_header(path)
    else:
        try:
            raw = pq.read_schema(path).names
        except (OSError, pa.ArrowException) as error:
            raise LoadError(f"{path}: not a readable Parquet file: {error}") from error
    columns = tuple(name.strip().lower() for name in raw)
    kind = TABLE_TYPES.get(table, "track")
    what = f"a {layout.title} export of `{table}`"

    def missing(column: str, meaning: str) -> LoadError:
        shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "") or "none"
        return LoadError(f"{path}: no `{column}` column: {what} needs {meaning} (columns found: {shown})",
                         hint="export the table with all its columns; with a file named after something "
                              "else, say which table it holds with --table")

    if "id" not in columns:
        raise missing("id", "the message id (loads are idempotent on it)")
    if kind == "alias":
        for column in ("user_id", "previous_id"):
            if column not in columns:
                raise missing(column, "`user_id` and `previous_id`")
    elif "user_id" not in columns and "anonymous_id" not in columns:
        raise missing("user_id", "`user_id` or `anonymous_id`")
    if kind == "group" and "group_id" not in columns:
        raise missing("group_id", "the group id")
    return Export(path, table, kind, layout, columns, tuple(raw), is_csv)


def load_exports(
    project: ResolvedProject,
    warehouse: Warehouse,
    paths: list[Path],
    *,
    layout: str,
    table: str | None = None,
    source: str = "load",
    on_progress: Callable[[int], None] | None = None,
) -> LoadResult:
    """Land Segment/RudderStack warehouse exports (``layout``: ``segment-warehouse`` or
    ``rudderstack-warehouse``); ``table`` names the table every file holds (default: each
    file's name). Every file is checked before anything lands; per-event tables land before
    ``tracks`` so that their properties win (first copy of an id wins)."""
    if layout not in LAYOUTS:
        raise LoadError(f"unknown export format {layout!r}", hint=f"one of: {', '.join(LAYOUTS)}")
    exports = [open_export(path, layout, table) for path in paths]
    exports.sort(key=lambda export: export.table == "tracks")  # stable: otherwise in the given order
    messages = (item for export in exports for item in export.messages())
    return land_messages(project, warehouse, messages, source=source, on_progress=on_progress,
                         amend_row=keep_sent_at)
