"""Benchmark: the example project on DuckDB and on PostgreSQL, side by side.

    .venv/bin/python benchmarks/warehouses.py --events 1000000
    .venv/bin/python benchmarks/warehouses.py --events 100000 --repeat 1      # quick

1. Data (cached under ``benchmarks/.data/``): ``python -m cdp_warehouse.demo`` messages with
   a fixed end instant (2026-06-30), so every run computes the same thing.
2. Per warehouse, in this process: a fresh copy of the example project (``cdp.yaml``,
   ``audiences/``, ``tracking_plan.yaml`` of the repository, so the tracking plan's checks
   are part of the load) pointed at a new DuckDB file or at new PostgreSQL schemas:
     load: ``collect.loader.load_files`` of the JSONL file (what ``cdp load`` does);
     run:  ``runner.run(as_of=end)`` ``--repeat`` times (what ``cdp run`` does), median.
   With ``--stitch``, also the example project with ``identity: {stitch: true}``:
   ``runner.run(..., full_refresh=True)`` on the same landed events.
3. The results are compared (profile count and audience sizes equal on both warehouses).

PostgreSQL: ``--dsn`` (default ``$CDP_TEST_POSTGRES_DSN``, else the role and database of
``.ci/postgres.sh``); the schemas are dropped at the end. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table

from cdp_warehouse.collect.loader import load_files
from cdp_warehouse.demo.generator import write_jsonl
from cdp_warehouse.runner import run
from cdp_warehouse.specs import ResolvedProject, load_project
from cdp_warehouse.warehouses import connect

END = datetime(2026, 6, 30, tzinfo=UTC)
DEFAULT_DSN = "host=127.0.0.1 port=5432 user=cdp password=cdp dbname=cdp_test"
console = Console()


def data_file(events: int) -> Path:
    path = HERE / ".data" / f"demo_{events}_20260630.jsonl"
    if not path.exists():
        started = time.perf_counter()
        with console.status(f"generating {events:,} demo events (cached in {path})"):
            write_jsonl(path.with_suffix(".tmp"), events, end=END)
            path.with_suffix(".tmp").rename(path)
        console.print(f"generated {events:,} events in {time.perf_counter() - started:.0f} s")
    return path


def project(root: Path, warehouse: str, raw: str, models: str, *, stitch: bool) -> Path:
    root.mkdir(parents=True)
    shutil.copytree(REPO / "audiences", root / "audiences")
    shutil.copy(REPO / "tracking_plan.yaml", root / "tracking_plan.yaml")
    text = (REPO / "cdp.yaml").read_text()
    start, end = text.index("warehouse:\n"), text.index("schemas:\n")
    text = text[:start] + "warehouse:\n" + warehouse + text[end:]
    start, end = text.index("schemas:\n"), text.index("identity:\n")
    text = text[:start] + f"schemas: {{raw: {raw}, models: {models}}}\n" + text[end:]
    if stitch:
        text = text.replace("identity:\n", "identity:\n  stitch: true\n", 1)
    (root / "cdp.yaml").write_text(text)
    return root


def measure(resolved: ResolvedProject, events: Path, repeat: int, stitched: ResolvedProject | None) -> dict:
    figures: dict = {}
    with connect(resolved) as warehouse:
        started = time.perf_counter()
        loaded = load_files(resolved, warehouse, [events])
        figures["load"] = time.perf_counter() - started
        figures["landed"] = loaded.inserted
        runs, steps = [], []
        for _ in range(repeat):
            started = time.perf_counter()
            result = run(resolved, warehouse, END)
            runs.append(time.perf_counter() - started)
            steps.append(result.seconds)
        figures["run"] = statistics.median(runs)
        figures["steps"] = {name: statistics.median(s.get(name, 0.0) for s in steps) for name in steps[0]}
        figures["profiles"], figures["audiences"] = result.profiles, result.audience_sizes
    if stitched is not None:
        with connect(stitched) as warehouse:
            runs = []
            for _ in range(repeat):
                started = time.perf_counter()
                result = run(stitched, warehouse, END, full_refresh=True)
                runs.append(time.perf_counter() - started)
            figures["stitched run"] = statistics.median(runs)
            figures["stitched profiles"] = result.profiles
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="demo events (default 1M)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per warehouse (median reported)")
    parser.add_argument("--stitch", action="store_true", help="also time a stitched run (identity: {stitch: true})")
    parser.add_argument("--dsn", default=os.environ.get("CDP_TEST_POSTGRES_DSN", DEFAULT_DSN),
                        help="PostgreSQL connection string")
    args = parser.parse_args()
    events = data_file(args.events)
    suffix = uuid.uuid4().hex[:8]
    environ = {"BENCH_POSTGRES_DSN": args.dsn}
    postgres_yaml = "  type: postgres\n  dsn: ${BENCH_POSTGRES_DSN}\n"
    schemas = [f"raw_bench_{suffix}", f"cdp_bench_{suffix}", f"cdp_bench_stitched_{suffix}"]
    results = {}
    with tempfile.TemporaryDirectory(prefix="cdp-bench-") as scratch:
        folder = Path(scratch)
        try:
            for kind, warehouse_yaml, raw, models, stitched_models in (
                ("duckdb", "  type: duckdb\n  path: data/bench.duckdb\n", "raw", "cdp", "cdp_stitched"),
                ("postgres", postgres_yaml, *schemas),
            ):
                plain = load_project(project(folder / kind, warehouse_yaml, raw, models, stitch=False), environ=environ)
                stitched = None
                if args.stitch:
                    # Same landed events (same raw schema), its own models schema.
                    stitched = load_project(project(folder / f"{kind}_stitched", warehouse_yaml.replace(
                        "data/bench.duckdb", str(folder / kind / "data" / "bench.duckdb")), raw, stitched_models,
                        stitch=True), environ=environ)
                with console.status(f"{kind}: load + {args.repeat} run(s)"):
                    results[kind] = measure(plain, events, args.repeat, stitched)
                console.print(f"{kind}: {results[kind]}", highlight=False)
        finally:
            with psycopg.connect(args.dsn, autocommit=True) as connection:
                for name in schemas:
                    connection.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
    duckdb, postgres = results["duckdb"], results["postgres"]
    table = Table(f"{args.events:,} demo events", "DuckDB s", "PostgreSQL s", "PostgreSQL / DuckDB")
    rows = [("load (cdp load)", "load"), (f"run (cdp run, median of {args.repeat})", "run")]
    rows += [(f"  step {name}", name) for name in duckdb["steps"]]
    if args.stitch:
        rows.append(("stitched run (full refresh)", "stitched run"))
    for label, key in rows:
        d, p = (duckdb["steps"][key], postgres["steps"][key]) if key in duckdb["steps"] else (duckdb[key], postgres[key])
        table.add_row(label, f"{d:.2f}", f"{p:.2f}", f"{p / d:.1f}×" if d else "-")
    console.print(table)
    same = all(duckdb[k] == postgres[k] for k in ("landed", "profiles", "audiences"))
    console.print(f"landed {duckdb['landed']:,}; profiles {duckdb['profiles']:,}; audiences {duckdb['audiences']}; "
                  f"same on both warehouses: {'yes' if same else 'NO'}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
