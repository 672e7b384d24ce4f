"""`cdp plan check`: the ingest validation, run over events already landed.

It reports what the current plan thinks of the data, whatever each source's mode was when it
landed, grouped by event and violation type with one example each. Nothing is written.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.tracking.landed import landed_batches
from cdp_warehouse.tracking.models import TrackingPlan
from cdp_warehouse.tracking.validator import PlanValidator, Violation
from cdp_warehouse.warehouses.base import Warehouse

IDENTIFY_LABEL = "(identify)"


@dataclass
class ViolationGroup:
    """All violations of one type on one event (``(identify)`` for identify calls)."""

    event: str
    violation_type: str
    count: int = 0
    paths: Counter[str] = field(default_factory=Counter)
    example_message_id: str | None = None
    example: Violation | None = None


@dataclass
class CheckReport:
    checked: int = 0  # track and identify events read
    with_violations: int = 0  # of which broke the plan
    seconds: float = 0.0
    groups: dict[tuple[str, str], ViolationGroup] = field(default_factory=dict)

    @property
    def violations(self) -> int:
        return sum(group.count for group in self.groups.values())

    def sorted_groups(self) -> list[ViolationGroup]:
        return sorted(self.groups.values(), key=lambda g: (-g.count, g.event, g.violation_type))


def check_landed(project: ResolvedProject, warehouse: Warehouse, plan: TrackingPlan,
                 since: datetime | None = None) -> CheckReport:
    """Validate every landed track/identify event (``timestamp >= since`` when given)."""
    started = time.perf_counter()
    validator = PlanValidator(plan)
    report = CheckReport()
    groups = report.groups
    for batch in landed_batches(project, warehouse, since):
        ids, types, events, payloads = batch["message_id"], batch["type"], batch["event"], batch["payload"]
        report.checked += len(ids)
        check = validator.check
        for index, message_type in enumerate(types):
            violations = check(message_type, events[index], payloads[index])
            if violations:
                report.with_violations += 1
                label = events[index] if message_type == "track" else IDENTIFY_LABEL
                for violation in violations:
                    _add(groups, label, ids[index], violation)
    report.seconds = time.perf_counter() - started
    return report


def _add(groups: dict[tuple[str, str], ViolationGroup], label: Any, message_id: str, violation: Violation) -> None:
    key = (label, violation.violation_type)
    group = groups.get(key)
    if group is None:
        group = groups[key] = ViolationGroup(label, violation.violation_type,
                                             example_message_id=message_id, example=violation)
    group.count += 1
    group.paths[violation.path] += 1
