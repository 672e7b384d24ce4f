"""The one small interface every destination implements: rows → batched requests →
per-row results. The engine does the rest (diffs, state, retries of rejected rows, logs)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
import threading
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar

from cdp_warehouse.specs.models import SyncSpec
from cdp_warehouse.sync.changes import Change, RowResult
from cdp_warehouse.sync.http import HttpClient


@dataclass(frozen=True)
class Request:
    """One planned API call and the rows it carries (what `--dry-run` prints)."""

    method: str
    url: str
    body: Any
    rows: tuple[Change, ...]


class RemoteIds:
    """The destination's own ids of the people it holds (an Intercom contact id, a
    Salesforce record id), kept in ``sync_remote_ids`` so a lagging search never makes a
    duplicate. Loaded for the rows of a run; new ids are saved with the batch results."""

    def __init__(self, known: dict[tuple[str, str], str] | None = None) -> None:
        self._known = dict(known or {})
        self._new: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def preload(self, known: dict[tuple[str, str], str]) -> None:
        with self._lock:
            self._known.update(known)

    def get(self, key_type: str, row_key: str) -> str | None:
        with self._lock:
            return self._known.get((key_type, row_key))

    def put(self, key_type: str, row_key: str, remote_id: str) -> None:
        with self._lock:
            if self._known.get((key_type, row_key)) != remote_id:
                self._known[(key_type, row_key)] = remote_id
                self._new[(key_type, row_key)] = remote_id

    def drain(self) -> dict[tuple[str, str], str]:
        """Ids learned since the last call (the engine saves them)."""
        with self._lock:
            new, self._new = self._new, {}
            return new


@dataclass(frozen=True)
class SyncContext:
    """What a destination knows about the sync it serves."""

    audience: str
    title: str  # the audience's title, else its name
    destination: str  # its name in cdp.yaml
    sync: SyncSpec
    remote_ids: RemoteIds = field(default_factory=RemoteIds)


class Destination(ABC):
    """A destination type. Subclasses set ``type``, ``modes`` and implement the three steps."""

    type: ClassVar[str]
    modes: ClassVar[frozenset[str]] = frozenset({"upsert", "mirror"})
    # whether exits are computed even under `upsert` (Slack reports them; it removes nothing)
    always_removals: ClassVar[bool] = False
    # Slack posts one message per run: every change in one request
    one_request_per_run: ClassVar[bool] = False

    def __init__(self, settings: Any, context: SyncContext) -> None:
        self.settings = settings
        self.context = context
        self._http: HttpClient | None = None

    @classmethod
    def check(cls, sync: SyncSpec) -> list[tuple[tuple[str, ...], str]]:
        """Problems of a ``sync:`` entry for this destination, as (key path, message); checked
        by `cdp validate`, so a sync that could only do nothing never gets to run."""
        problems: list[tuple[tuple[str, ...], str]] = []
        if sync.mode not in cls.modes:
            problems.append((("mode",), f"{cls.type} does not support mode {sync.mode!r} "
                                        f"(supported: {', '.join(sorted(cls.modes))})"))
        return problems

    @property
    def http(self) -> HttpClient:
        """Created on first use: a run with nothing to send opens no connection."""
        if self._http is None:
            self._http = self.connect()
        return self._http

    @abstractmethod
    def connect(self) -> HttpClient: ...

    @abstractmethod
    def batch_size(self, total: int) -> int:
        """Rows per batch, knowing ``total`` rows are to be sent this run (a destination may
        switch to a bulk API for large runs)."""

    @abstractmethod
    def requests(self, rows: Sequence[Change]) -> list[Request]:
        """The calls that carry ``rows`` (a batch of at most ``batch_size``); pure."""

    @abstractmethod
    def send(self, request: Request) -> list[RowResult]:
        """Make the call; a result for every row it carries. Raises FatalError or
        RetriableError when the call as a whole fails."""

    def close(self) -> None:
        if self._http is not None:
            self._http.close()


def json_value(value: Any) -> Any:
    """A warehouse value as JSON: numbers stay numbers, instants become ISO 8601 UTC."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if value.tzinfo is None else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    return value


def accepted(rows: Sequence[Change]) -> list[RowResult]:
    return [RowResult(row.row_key, row.key_type, True) for row in rows]


def rejected(rows: Sequence[Change], reason: str) -> list[RowResult]:
    return [RowResult(row.row_key, row.key_type, False, reason) for row in rows]
