"""What the benchmarks share about their cached data (``benchmarks/.data/``) and projects."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import duckdb

from cdp_warehouse.specs import ResolvedProject


def read_meta_on(con: duckdb.DuckDBPyConnection) -> dict:
    """The one row of ``main.bench_meta`` a data file was generated with."""
    cursor = con.execute("SELECT * FROM main.bench_meta")
    names = [c[0] for c in cursor.description]
    return dict(zip(names, cursor.fetchone(), strict=True))


def read_meta(path: Path) -> dict | None:
    """``bench_meta`` of a cached data file; None when it is missing or unreadable (regenerate)."""
    if not path.exists():
        return None
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            return read_meta_on(con)
    except duckdb.Error:
        return None


def with_duckdb_settings(project: ResolvedProject, memory_limit: str | None, threads: int | None,
                         path: Path | None = None) -> ResolvedProject:
    """The project with its DuckDB warehouse's memory limit, threads (and file) overridden."""
    update: dict = {"path": str(path)} if path is not None else {}
    if memory_limit:
        update["memory_limit"] = memory_limit
    if threads:
        update["threads"] = threads
    config = project.config.model_copy(update={"warehouse": project.config.warehouse.model_copy(update=update)})
    return dataclasses.replace(project, config=config)
