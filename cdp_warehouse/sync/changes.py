"""What the engine hands a destination, and what a destination answers, per row."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from cdp_warehouse.errors import CdpError

Kind = Literal["added", "changed", "removed"]


@dataclass(frozen=True)
class Change:
    """One row to send: a profile that entered (``added``), whose mapped fields changed
    (``changed``), or that exited (``removed``, only rows this engine synced before)."""

    kind: Kind
    key_type: str  # how the destination identifies the person: user_id | email
    row_key: str
    profile_id: str
    user_id: str | None
    email: str | None
    fields: dict[str, Any] = field(default_factory=dict)  # every mapped field's new value
    changed: frozenset[str] = frozenset()  # fields whose value differs from what was accepted
    payload: str | None = None  # the mapped fields as JSON, kept in sync_state once accepted
    payload_hash: str | None = None
    in_state: bool = False  # sync_state has a row for it (changed, removed, or a re-entry)

    def values_to_send(self, null_handling: str) -> dict[str, Any]:
        """Fields for the destination: all of them for a new row, only the changed ones
        otherwise, none on exit (spec: on exit only the membership changes); nulls are
        left out unless ``null_handling: clear``."""
        if self.kind == "removed":
            return {}
        names = self.fields if self.kind == "added" else [n for n in self.fields if n in self.changed]
        return {n: self.fields[n] for n in names if self.fields[n] is not None or null_handling == "clear"}


@dataclass(frozen=True)
class RowResult:
    row_key: str
    key_type: str
    accepted: bool
    reason: str | None = None


class SyncError(CdpError):
    """A destination error that stops one (audience, destination) sync."""


class FatalError(SyncError):
    """Retrying will not help (bad credentials, a limit for the day, a request we built wrong)."""


class RetriableError(SyncError):
    """The destination kept failing (5xx, timeouts, rate limits) past the retry budget; the
    rows stay pending for the next run."""
