"""Compiled plans → SQL files for one dialect (`cdp compile`, and the committed ``sql/``)."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlglot import exp

from cdp_warehouse.compiler.plan import CompiledPlan

DIALECTS = ("duckdb", "snowflake", "bigquery", "postgres")


def render_plan(plan: CompiledPlan, schema: str) -> dict[str, str]:
    """``{file name: SQL}``: one file per model, numbered in run order, in the plan's dialect."""
    dialect = plan.dialect
    files: dict[str, str] = {}
    # sqlglot warns about constructs it renders approximately for a dialect (e.g. NULLS
    # ordering in BigQuery aggregates); the output is still what we want, so keep it quiet.
    logger = logging.getLogger("sqlglot")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        for index, model in enumerate(plan.models, start=1):
            table = exp.table_(model.table, db=schema, quoted=True).sql(dialect=dialect)
            header = (
                f"-- {table}: {model.description}\n"
                f"-- compiled by cdp_warehouse for {dialect}; do not edit (run `cdp compile`)\n"
            )
            files[f"{index:02d}_{model.table.lstrip('_')}.sql"] = header + model.select.sql(dialect=dialect, pretty=True) + ";\n"
    finally:
        logger.setLevel(level)
    return files


def write_plan(plan: CompiledPlan, schema: str, out: Path) -> list[Path]:
    """Write the files of ``render_plan`` under ``out/<dialect>/``, removing stale ones."""
    folder = out / plan.dialect
    folder.mkdir(parents=True, exist_ok=True)
    files = render_plan(plan, schema)
    for stale in folder.glob("*.sql"):
        if stale.name not in files:
            stale.unlink()
    written = []
    for name, text in files.items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
