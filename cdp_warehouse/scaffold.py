"""`cdp init DIR`: a new project with one trait, one audience and a local DuckDB warehouse."""

from __future__ import annotations

from pathlib import Path

from cdp_warehouse.errors import CdpError

CDP_YAML = """\
# Project file: where data lives and where audiences go. See README for every key.
name: {name}
warehouse:
  type: duckdb
  path: data/{name}.duckdb
schemas:
  raw: raw        # landing table raw.events
  models: cdp     # profiles, traits, audiences
schedule: "0 * * * *"
"""

AUDIENCES_YAML = """\
traits:
  - name: events_30d
    description: Events of any kind in the last 30 days
    count: {event: "*", window: 30d}

  - name: plan
    description: Current plan from identify calls
    trait: {trait: plan}

audiences:
  - name: active_users
    description: Did something in the last 30 days
    where: events_30d > 0
"""


def init_project(directory: Path) -> list[Path]:
    """Write the starter files; refuses to overwrite an existing project."""
    target = directory.resolve()
    if (target / "cdp.yaml").exists():
        raise CdpError(f"{target / 'cdp.yaml'} already exists", hint="choose an empty folder")
    (target / "audiences").mkdir(parents=True, exist_ok=True)
    name = "".join(c if c.isalnum() else "_" for c in target.name.lower()) or "project"
    files = {target / "cdp.yaml": CDP_YAML.format(name=name), target / "audiences" / "main.yaml": AUDIENCES_YAML}
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    return list(files)
