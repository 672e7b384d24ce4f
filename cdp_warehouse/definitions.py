"""The Dagster code location: `dagster dev -m cdp_warehouse.definitions`.

The project is found as `cdp` finds it ($CDP_PROJECT, else the current directory);
$CDP_AS_OF pins the as-of of every run.
"""

from __future__ import annotations

from cdp_warehouse.orchestration.definitions import build_definitions
from cdp_warehouse.specs.loader import find_project_dir

defs = build_definitions(find_project_dir())
