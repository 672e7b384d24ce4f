"""Tracking-plan enforcement at ingest, one guard per ``land_messages`` call (one source).

``allow`` needs no guard. ``flag`` lands every message and records its violations. ``block``
keeps a message with violations out of ``events`` and puts it, unchanged, in
``quarantined_messages``. Messages are checked as they are read; what to write is decided
when the batch is flushed, inside the batch's transaction, so events, violations and
quarantine commit together. Only messages that are new to ``events`` are recorded: a
re-loaded file, or a later copy of a landed id (the first copy wins), adds nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.tracking import store
from cdp_warehouse.tracking.models import TrackingPlan
from cdp_warehouse.tracking.plan import load_plan, mode_for
from cdp_warehouse.tracking.validator import PlanValidator, Violation
from cdp_warehouse.warehouses.base import Warehouse


@dataclass
class _Suspect:
    violations: list[Violation]
    origin: str
    message: Any  # serialised only if it goes to quarantine


@dataclass
class Settled:
    """What a flush did with the batch's violating messages."""

    flagged: int = 0  # landed with violations recorded
    blocked: int = 0  # quarantined instead of landed
    violations: int = 0  # violation rows written


@dataclass
class IngestGuard:
    project: ResolvedProject
    source: str
    mode: str  # flag | block
    validator: PlanValidator
    suspects: dict[str, _Suspect] = field(default_factory=dict)

    @classmethod
    def for_source(cls, project: ResolvedProject, warehouse: Warehouse, source: str,
                   plan: TrackingPlan | None = None) -> IngestGuard | None:
        """The guard for ``source``, or None when nothing is to be checked (no plan, or
        ``allow``). ``plan`` defaults to the project's plan file."""
        plan = plan if plan is not None else load_plan(project)
        mode = mode_for(project, plan, source)
        if plan is None or mode == "allow":
            return None
        store.ensure_tables(project, warehouse)
        return cls(project, source, mode, compiled_validator(plan))

    def inspect(self, row: dict[str, Any], message: Any, origin: str) -> None:
        """Check one accepted message (the first copy of its id in this batch)."""
        kind = row["type"]
        if kind == "track":
            data = message.get("properties") if isinstance(message, dict) else row["properties"]
        elif kind == "identify":
            data = message.get("traits") if isinstance(message, dict) else row["traits"]
        else:
            return
        violations = self.validator.check(kind, row["event"], data)
        if violations:
            self.suspects[row["message_id"]] = _Suspect(violations, origin, message)

    def settle(self, warehouse: Warehouse, batch: dict[str, dict[str, Any]], now: datetime) -> Settled:
        """Inside the batch's transaction, before its events are inserted: record violations,
        and for ``block`` move violating messages from ``batch`` to the quarantine."""
        settled = Settled()
        if not self.suspects:
            return settled
        # An id already landed is a duplicate: its first copy's verdict stands. An id already
        # in quarantine (a re-loaded file) had its message and violations written then.
        already = store.existing_ids(self.project, warehouse, "events", self.suspects)
        held = (store.existing_ids(self.project, warehouse, store.QUARANTINE_TABLE, self.suspects)
                if self.mode == "block" else set())
        violation_rows: list[dict[str, Any]] = []
        quarantined: list[dict[str, Any]] = []
        action = "blocked" if self.mode == "block" else "flagged"
        for message_id, suspect in self.suspects.items():
            if message_id in already:
                continue
            row = batch[message_id]
            if self.mode == "block":
                del batch[message_id]
                settled.blocked += 1
                if message_id in held:
                    continue
            else:
                settled.flagged += 1
            rows = store.violation_rows(message_id, self.source, row["type"], row["event"],
                                        suspect.violations, action, now)
            violation_rows += rows
            if self.mode == "block":
                quarantined.append({
                    "message_id": message_id, "source": self.source, "message_type": row["type"],
                    "event": row["event"], "received_at": row["received_at"], "quarantined_at": now,
                    "reasons": store.reasons_json(rows), "origin": suspect.origin,
                    "message": json.dumps(suspect.message, ensure_ascii=False, default=str),
                })
        store.insert_quarantined(self.project, warehouse, quarantined)
        settled.violations = store.insert_violations(self.project, warehouse, violation_rows)
        self.suspects.clear()
        return settled


_VALIDATORS: dict[int, tuple[TrackingPlan, PlanValidator]] = {}


def compiled_validator(plan: TrackingPlan) -> PlanValidator:
    """Compile each plan once (the collector builds a guard per flush)."""
    cached = _VALIDATORS.get(id(plan))
    if cached is None or cached[0] is not plan:
        cached = (plan, PlanValidator(plan))
        _VALIDATORS.clear()  # one live plan at a time; an edited plan replaces it
        _VALIDATORS[id(plan)] = cached
    return cached[1]
