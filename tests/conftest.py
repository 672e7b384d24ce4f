"""Fixtures that build a project from inline YAML and land events from inline rows, so each
test reads like a story."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cdp_warehouse.collect.loader import land_messages
from cdp_warehouse.runner import run
from cdp_warehouse.specs import ResolvedProject, load_project
from cdp_warehouse.warehouses import connect

REPO = Path(__file__).resolve().parent.parent
AS_OF = datetime(2026, 6, 30, tzinfo=UTC)

MINIMAL_CDP_YAML = """\
name: test
warehouse:
  type: duckdb
  path: data/test.duckdb
"""


def write_project(root: Path, audiences_yaml: str, cdp_yaml: str = MINIMAL_CDP_YAML, **files: str) -> Path:
    """A project folder: cdp.yaml, audiences/main.yaml and any other audiences/<name>.yaml."""
    (root / "audiences").mkdir(parents=True, exist_ok=True)
    (root / "cdp.yaml").write_text(textwrap.dedent(cdp_yaml))
    (root / "audiences" / "main.yaml").write_text(textwrap.dedent(audiences_yaml))
    for name, text in files.items():
        (root / "audiences" / f"{name}.yaml").write_text(textwrap.dedent(text))
    return root


class Workspace:
    """A project plus its DuckDB warehouse: land events, run, and query results."""

    def __init__(self, project: ResolvedProject) -> None:
        self.project = project
        self.warehouse = connect(project)

    def land(self, *messages: dict) -> None:
        land_messages(self.project, self.warehouse, list(messages))

    def run(self, as_of: datetime = AS_OF, select: list[str] | None = None, *, full_refresh: bool = False):
        return run(self.project, self.warehouse, as_of, select, full_refresh=full_refresh)

    def query(self, sql: str, *params) -> list[tuple]:
        return self.warehouse.fetch(sql, list(params) if params else None)

    def traits(self) -> dict[str, dict]:
        """profile_id → {trait: value}."""
        return {row["profile_id"]: row for row in self.warehouse.fetch_dicts("SELECT * FROM cdp.profile_traits")}

    def members(self, audience: str) -> set[str]:
        rows = self.query("SELECT profile_id FROM cdp.audience_members WHERE audience = ?", audience)
        return {row[0] for row in rows}


@pytest.fixture
def workspace(tmp_path: Path) -> Callable[..., Workspace]:
    """``workspace(audiences_yaml, cdp_yaml=...)`` → a Workspace on a fresh DuckDB file."""
    opened: list[Workspace] = []

    def make(audiences_yaml: str, cdp_yaml: str = MINIMAL_CDP_YAML, **files: str) -> Workspace:
        root = write_project(tmp_path / f"project{len(opened)}", audiences_yaml, cdp_yaml, **files)
        ws = Workspace(load_project(root, environ={}))
        opened.append(ws)
        return ws

    yield make
    for ws in opened:
        ws.warehouse.close()


def track(user: str | None, event: str, at: str, anonymous: str | None = None, **properties) -> dict:
    """A track message at ``at`` (ISO 8601) with properties; ids are unique per call."""
    track.counter += 1
    return {"type": "track", "messageId": f"t{track.counter}", "userId": user, "anonymousId": anonymous,
            "event": event, "properties": properties, "timestamp": at}


track.counter = 0


def identify(user: str | None, at: str, anonymous: str | None = None, **traits) -> dict:
    identify.counter += 1
    return {"type": "identify", "messageId": f"i{identify.counter}", "userId": user, "anonymousId": anonymous,
            "traits": traits, "timestamp": at}


identify.counter = 0


def page(user: str | None, name: str, at: str, anonymous: str | None = None, **properties) -> dict:
    page.counter += 1
    return {"type": "page", "messageId": f"p{page.counter}", "userId": user, "anonymousId": anonymous,
            "name": name, "properties": properties, "timestamp": at}


page.counter = 0


@pytest.fixture(scope="module")
def app_key():
    """A Salesforce connected app's RSA key and certificate (tests/fakes/salesforce.py)."""
    from tests.fakes.salesforce import ConnectedAppKey

    return ConnectedAppKey.generate()


@pytest.fixture(scope="module")
def other_key():
    """A second key, which the connected app does not know."""
    from tests.fakes.salesforce import ConnectedAppKey

    return ConnectedAppKey.generate()
