"""YAML → typed models (shape), then resolution (names, SQL, cycles). Entry point: load_project()."""

from __future__ import annotations

from cdp_warehouse.specs.loader import find_project_dir, load_project
from cdp_warehouse.specs.resolved import ResolvedAudience, ResolvedProject, ResolvedTrait

__all__ = ["ResolvedAudience", "ResolvedProject", "ResolvedTrait", "find_project_dir", "load_project"]
