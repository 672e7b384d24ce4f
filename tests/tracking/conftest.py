"""A project with a tracking plan, on a real DuckDB file: ``planned(plan_yaml, sources=...)``."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from cdp_warehouse.specs import load_project
from tests.conftest import MINIMAL_CDP_YAML, Workspace, write_project

PLAN = """\
mode: flag
events:
  Payment Processed:
    properties:
      revenue: {type: number, required: true}
      currency: {type: string, enum: [USD, EUR], required: true}
      coupon: {type: [string, null]}
  Login:
identify:
  traits:
    email: {type: string, format: email}
    plan: {type: string, enum: [free, pro]}
"""


def cdp_yaml(sources: dict[str, str | None] | None = None, plan_file: str | None = "tracking_plan.yaml") -> str:
    """MINIMAL_CDP_YAML plus ``tracking_plan`` and sources {name: tracking_plan_mode or None}."""
    text = MINIMAL_CDP_YAML + (f"tracking_plan: {plan_file}\n" if plan_file else "")
    if sources:
        text += "sources:\n"
        for name, mode in sources.items():
            text += f"  {name}:\n    write_key: {name}-key\n"
            text += f"    tracking_plan_mode: {mode}\n" if mode else ""
    return text


def write_plan_project(root: Path, plan_yaml: str, sources: dict[str, str | None] | None = None) -> Path:
    write_project(root, "traits: []\n", cdp_yaml(sources))
    (root / "tracking_plan.yaml").write_text(textwrap.dedent(plan_yaml))
    return root


class PlannedWorkspace(Workspace):
    def plan(self, plan_yaml: str) -> None:
        """Rewrite the plan file (the loaders re-read it when it changes)."""
        path = self.project.root / "tracking_plan.yaml"
        path.write_text(textwrap.dedent(plan_yaml))

    def violations(self, *columns: str) -> list[tuple]:
        wanted = ", ".join(columns or ("message_id", "violation_type", "path", "action"))
        return self.query(f"SELECT {wanted} FROM raw.tracking_plan_violations ORDER BY ALL")

    def quarantined(self) -> dict[str, dict]:
        rows = self.warehouse.fetch_dicts("SELECT * FROM raw.quarantined_messages")
        return {row["message_id"]: row for row in rows}

    def landed(self) -> set[str]:
        return {row[0] for row in self.query("SELECT message_id FROM raw.events")}


@pytest.fixture
def planned(tmp_path: Path) -> Callable[..., PlannedWorkspace]:
    """``planned(plan_yaml=PLAN, sources={"web": "block"})`` → a workspace whose project has the plan."""
    opened: list[PlannedWorkspace] = []

    def make(plan_yaml: str = PLAN, sources: dict[str, str | None] | None = None) -> PlannedWorkspace:
        root = write_plan_project(tmp_path / f"planned{len(opened)}", plan_yaml, sources)
        ws = PlannedWorkspace(load_project(root, environ={}))
        opened.append(ws)
        return ws

    yield make
    for ws in opened:
        ws.warehouse.close()


def jsonl(path: Path, *messages: dict) -> Path:
    path.write_text("".join(json.dumps(message) + "\n" for message in messages))
    return path


def payment(message_id: str, user: str = "u1", **properties) -> dict:
    return {"type": "track", "messageId": message_id, "userId": user, "event": "Payment Processed",
            "properties": properties, "timestamp": "2026-06-01T10:00:00Z"}


def tracked(message_id: str, event: str, user: str = "u1", **properties) -> dict:
    return {"type": "track", "messageId": message_id, "userId": user, "event": event,
            "properties": properties, "timestamp": "2026-06-01T10:00:00Z"}


def identified(message_id: str, user: str = "u1", **traits) -> dict:
    return {"type": "identify", "messageId": message_id, "userId": user, "traits": traits,
            "timestamp": "2026-06-01T10:00:00Z"}
