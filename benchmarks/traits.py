"""Benchmark: computing 20 traits and 5 audiences with `cdp run` vs hand-written baselines.

    .venv/bin/python benchmarks/traits.py --events 10000000

1. Generates N synthetic Segment-like events straight into ``raw.events`` of a DuckDB file
   with one INSERT ... SELECT over ``range(N)`` (hash-based pseudo-randomness, so the data
   is the same on every machine). The file is cached per (N, users) under
   ``benchmarks/.data/``; ``--regenerate`` rebuilds it.
2. Loads the project in ``benchmarks/traits_project/`` (20 traits, 5 audiences).
3. Times, interleaved in one process and on one DuckDB connection (same ``memory_limit``),
   each ``--repeat`` times (median reported):
     (a) ``cdp_warehouse.runner.run`` — the traits-and-audiences steps
         (``_profile_aggregates`` + ``profile_traits`` + ``audiences``) and the whole run;
     (b) one GROUP BY query per trait, each materialised, then joined on profile id;
     (c) the floor: ``GROUP BY coalesce(user_id, anonymous_id)`` + ``count(*)``;
     (d) a hand-written fused query: one GROUP BY with FILTER aggregates (mode() for
         most_frequent).
   (b) and (d) are generated from the same trait specs the project loads.

See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import duckdb
from bench_data import with_duckdb_settings  # benchmarks/bench_data.py
from memory import gb, peak_rss_since_reset, reset_peak_rss  # benchmarks/memory.py
from rich.console import Console
from rich.table import Table

from cdp_warehouse.compiler.plan import AGGREGATES, compile_project
from cdp_warehouse.runner import run
from cdp_warehouse.specs import ResolvedProject, ResolvedTrait, load_project
from cdp_warehouse.warehouses import connect

PROJECT_DIR = HERE / "traits_project"
DATA_DIR = HERE / ".data"
GENERATOR_VERSION = 2  # bump when the generated data changes, to invalidate caches

AS_OF = datetime(2026, 6, 30, tzinfo=UTC)  # every generated event is before this instant
DAYS = 180
START = AS_OF - timedelta(days=DAYS)  # 2026-01-01
EVENT_TYPES = ("track", "page", "screen")
STEPS_A = (AGGREGATES, "profile_traits", "audiences")

# 50 track event names, most to least frequent (Zipf-like: P(rank k) = ln((k+1)/k) / ln 51).
EVENT_NAMES = [
    "Product Viewed", "Product List Viewed", "Product Clicked", "Products Searched", "Product Added",
    "Cart Viewed", "Checkout Started", "Order Completed", "Promotion Viewed", "Product Removed",
    "Coupon Applied", "Checkout Step Viewed", "Checkout Step Completed", "Payment Info Entered",
    "Product Shared", "Product Reviewed", "Wishlist Product Added", "Promotion Clicked", "Coupon Entered",
    "Coupon Denied", "Cart Shared", "Product List Filtered", "Wishlist Product Removed",
    "Wishlist Product Added to Cart", "Order Updated", "Order Refunded", "Order Cancelled", "Coupon Removed",
    "Email Opened", "Email Link Clicked", "Push Notification Received", "Push Notification Tapped",
    "Signed Up", "Signed In", "Signed Out", "Account Updated", "Password Reset", "Subscription Started",
    "Subscription Upgraded", "Subscription Downgraded", "Subscription Cancelled", "Trial Started",
    "Trial Ended", "Invite Sent", "Referral Completed", "Support Ticket Opened", "Support Ticket Closed",
    "Feedback Submitted", "Video Playback Started", "Video Playback Completed",
]
PAGE_NAMES = ["Home", "Category", "Product", "Cart", "Account"]
KINDS = ["standard"] * 5 + ["sale"] * 2 + ["promo", "gift", "bundle"]  # 50/20/10/10/10 %
PLANS = ["free"] * 10 + ["starter"] * 5 + ["pro"] * 4 + ["enterprise"]  # 50/25/20/5 %


def sql_list(values: list[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def ts_literal(value: datetime) -> str:
    return "TIMESTAMP '" + value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ") + "'"


# --------------------------------------------------------------------------- generation


def generation_sql(n: int, users: int) -> str:
    """One INSERT ... SELECT producing ``n`` time-ordered events for ``users`` users.

    Uniform doubles come from ``hash(i * 16 + stream)`` (53 high bits), so the data is
    deterministic and the streams independent.
    """
    span_us = DAYS * 86_400_000_000

    salts: dict[str, int] = {}

    def uniform(column: str, stream: str) -> str:
        # hash() of one distinct integer per (row, stream): hash(i, 'a') and hash(i, 'b')
        # are correlated in DuckDB (the hashes are combined), so never combine them.
        salt = salts.setdefault(stream, len(salts) + 1)
        return f"((hash({column} * 16 + {salt}) >> 11)::DOUBLE / 9007199254740992.0)"

    return f"""
INSERT INTO raw.events
WITH draws AS (
    SELECT
        i,
        -- mildly skewed activity: low user numbers are heavier (power users)
        least({users - 1}, floor({users} * pow({uniform('i', "user")}, 1.5)))::BIGINT AS u,
        {uniform('i', "type")} AS r_type,
        least(50, floor(pow(51.0, {uniform('i', "event")})))::INTEGER AS event_rank,
        {uniform('i', "amount")} AS r_amount,
        {uniform('i', "kind")} AS r_kind,
        {uniform('i', "plan")} AS r_plan,
        {uniform('i', "lag")} AS r_lag,
        TIMESTAMP '{START.replace(tzinfo=None).isoformat(sep=" ")}'
            + to_microseconds((i::HUGEINT * {span_us} // {n})::BIGINT) AS ts
    FROM range({n}) AS r(i)
), typed AS (
    SELECT
        *,
        ({uniform('u', "identified")} < 0.7) AS identified,
        CASE
            WHEN r_type < 0.05 AND {uniform('u', "identified")} < 0.7 THEN 'identify'
            WHEN r_type < 0.20 THEN 'page'
            ELSE 'track'
        END AS type
    FROM draws
)
SELECT
    'msg-' || i::VARCHAR AS message_id,
    type,
    CASE type
        WHEN 'track' THEN {sql_list(EVENT_NAMES)}[event_rank]
        WHEN 'page' THEN {sql_list(PAGE_NAMES)}[1 + (event_rank % {len(PAGE_NAMES)})::INTEGER]
    END AS event,
    CASE WHEN identified THEN 'user-' || lpad(u::VARCHAR, 8, '0') END AS user_id,
    md5('anon' || u::VARCHAR) AS anonymous_id,
    NULL AS group_id,
    NULL AS previous_id,
    ts AS "timestamp",
    ts + to_milliseconds((r_lag * 2000)::BIGINT) AS received_at,
    ts AS sent_at,
    CASE type
        WHEN 'track' THEN CASE
            WHEN r_kind < 0.9 THEN json_object('amount', round(5 + 295 * r_amount * r_amount, 2),
                                               'kind', {sql_list(KINDS)}[1 + floor(r_kind / 0.9 * {len(KINDS)})::INTEGER])
            ELSE json_object('amount', round(5 + 295 * r_amount * r_amount, 2))
        END
        WHEN 'page' THEN json_object('name', {sql_list(PAGE_NAMES)}[1 + (event_rank % {len(PAGE_NAMES)})::INTEGER])
    END AS properties,
    CASE WHEN type = 'identify' THEN json_object(
        'plan', {sql_list(PLANS)}[1 + floor(r_plan * {len(PLANS)})::INTEGER],
        'email', 'user' || u::VARCHAR || '@example.com')
    END AS traits,
    '{{"library":{{"name":"analytics.js","version":"5.2.0"}}}}'::JSON AS context,
    CASE WHEN type = 'page' THEN 'web' ELSE 'server' END AS source
FROM typed
"""


def default_users(n: int) -> int:
    """~1M users at 10M+ events, ~10 events per user below that."""
    return max(1_000, min(1_000_000, n // 10))


def data_file(n: int, users: int) -> Path:
    return DATA_DIR / f"events_{n}_u{users}.duckdb"


def cached(path: Path, n: int, users: int) -> bool:
    if not path.exists():
        return False
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            row = con.execute("SELECT version, events, users FROM main.bench_meta").fetchone()
    except duckdb.Error:
        return False
    return row == (GENERATOR_VERSION, n, users)


def generate(path: Path, n: int, users: int, memory_limit: str) -> None:
    """Write the events file (to a temporary name first, so an interrupted run leaves none)."""
    from cdp_warehouse.warehouses.base import LANDING_COLUMNS

    tmp = path.with_suffix(".tmp.duckdb")
    for stale in (tmp, Path(str(tmp) + ".wal")):
        stale.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(tmp), config={"memory_limit": memory_limit}) as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("CREATE SCHEMA raw")
        columns = ", ".join(f'"{name}" {kind}' for name, kind in LANDING_COLUMNS)
        con.execute(f"CREATE TABLE raw.events ({columns})")  # same DDL as ensure_landing
        con.execute(generation_sql(n, users)).fetchall()
        con.execute("CREATE TABLE main.bench_meta AS SELECT ? AS version, ?::BIGINT AS events, ?::BIGINT AS users",
                    [GENERATOR_VERSION, n, users])
        con.execute("CHECKPOINT")
    for stale in (path, Path(str(path) + ".wal")):
        stale.unlink(missing_ok=True)
    tmp.rename(path)


def ensure_data(args) -> Path:
    path = data_file(args.events, args.users)
    if not args.regenerate and cached(path, args.events, args.users):
        return path
    console.print(f"generating {args.events:,} events for {args.users:,} users → {path.relative_to(REPO)} …")
    started = time.perf_counter()
    # In a child process, so the peak RSS reported below is the benchmark's alone.
    subprocess.run([sys.executable, __file__, "--generate-only", "--events", str(args.events),
                    "--users", str(args.users), "--memory-limit", args.memory_limit], check=True)
    console.print(f"generated in {time.perf_counter() - started:.1f} s "
                  f"({path.stat().st_size / 1e9:.2f} GB on disk)")
    return path


# --------------------------------------------------------------------------- baselines

PROFILE_KEY = "coalesce(user_id, anonymous_id)"


def json_text(path: str, root: str = "properties") -> str:
    keys = path.split(".")
    if keys[0] in ("properties", "context", "traits") and len(keys) > 1:
        root, keys = keys[0], keys[1:]
    return f"{root} ->> '$.{'.'.join(keys)}'"


def event_condition(trait: ResolvedTrait) -> str:
    """WHERE of an event-level trait: event messages, the event name(s), the window."""
    params = trait.spec.params
    parts = ["type IN ('track', 'page', 'screen')"]
    names = [params.event] if isinstance(params.event, str) else list(params.event)
    if "*" not in names:
        parts.append("event IN (" + ", ".join("'" + n.replace("'", "''") + "'" for n in names) + ")")
    if trait.window is not None:
        parts.append(f'"timestamp" >= {ts_literal(AS_OF - trait.window.start)}')
        if trait.window.end:
            parts.append(f'"timestamp" < {ts_literal(AS_OF - trait.window.end)}')
    if trait.where is not None:
        raise NotImplementedError("the baselines do not translate `where:` fragments")
    return " AND ".join(parts)


def plain_aggregate(trait: ResolvedTrait, value: str | None = None) -> tuple[str, str]:
    """(aggregate, extra WHERE) for one trait, the extra WHERE being NULL-property filtering.

    ``value``: the property expression (defaults to the JSON extraction).
    """
    kind, params = trait.kind, trait.spec.params
    if kind == "count":
        return "count(*)", ""
    if kind == "first_seen":
        return 'min("timestamp")', ""
    if kind == "last_seen":
        return 'max("timestamp")', ""
    if kind == "days_active":
        return 'count(DISTINCT "timestamp"::DATE)', ""
    if kind == "trait":
        text = value or json_text(params.trait, "traits")
        return f'arg_max({text}, "timestamp")', f"{text} IS NOT NULL"
    text = value or json_text(params.property)
    if kind in ("sum", "avg", "min", "max"):
        number = text if value else f"TRY_CAST({text} AS DOUBLE)"
        return f"{kind}({number})", ""
    if kind == "first":
        return f'arg_min({text}, "timestamp")', f"{text} IS NOT NULL"
    if kind == "last":
        return f'arg_max({text}, "timestamp")', f"{text} IS NOT NULL"
    if kind == "most_frequent":
        return f"mode({text})", f"{text} IS NOT NULL"
    raise NotImplementedError(f"no baseline for trait kind {kind!r}")


def trait_condition(trait: ResolvedTrait, extra: str) -> str:
    if trait.kind == "trait":
        condition = "type = 'identify'"
    else:
        condition = event_condition(trait)
    return f"{condition} AND {extra}" if extra else condition


def expression_sql(project: ResolvedProject, trait: ResolvedTrait, columns: dict[str, str]) -> str:
    """An expression trait over the other traits' columns (the analyst's SQL, names swapped)."""
    text = trait.spec.params.sql
    for name, column in sorted(columns.items(), key=lambda item: -len(item[0])):
        text = re.sub(rf"\b{re.escape(name)}\b", column, text)
    return text


def zero_default(trait: ResolvedTrait, column: str) -> str:
    return f"coalesce({column}, 0)" if trait.kind in ("count", "days_active", "count_distinct") else column


def per_trait_statements(project: ResolvedProject) -> list[str]:
    """(b): one CREATE TEMP TABLE ... GROUP BY per trait, a profile spine, then one join."""
    before = f'"timestamp" < {ts_literal(AS_OF)}'
    spine = (f"CREATE OR REPLACE TEMP TABLE b_spine AS SELECT {PROFILE_KEY} AS profile_id "
             f"FROM raw.events WHERE {before} GROUP BY 1")
    statements = [spine]
    aggregated = [t for t in project.traits.values() if t.kind != "expression"]
    for index, trait in enumerate(aggregated):
        aggregate, extra = plain_aggregate(trait)
        statements.append(
            f"CREATE OR REPLACE TEMP TABLE b_{index} AS SELECT {PROFILE_KEY} AS profile_id, {aggregate} AS value "
            f"FROM raw.events WHERE {before} AND {trait_condition(trait, extra)} GROUP BY 1"
        )
    columns = {t.name: zero_default(t, f"b_{i}.value") for i, t in enumerate(aggregated)}
    select = ["s.profile_id"]
    for trait in project.traits.values():
        if trait.kind == "expression":
            select.append(f"({expression_sql(project, trait, columns)}) AS {trait.name}")
        else:
            select.append(f"{columns[trait.name]} AS {trait.name}")
    joins = " ".join(f"LEFT JOIN b_{i} USING (profile_id)" for i in range(len(aggregated)))
    statements.append(f"CREATE TABLE bench.per_trait AS SELECT {', '.join(select)} FROM b_spine AS s {joins}")
    statements += [f"DROP TABLE b_{i}" for i in range(len(aggregated))] + ["DROP TABLE b_spine"]
    return statements


def fused_statement(project: ResolvedProject) -> str:
    """(d): the hand-written fused query — JSON extracted once, FILTER aggregates, mode()."""
    aggregates, outer = [], ["profile_id"]
    for trait in project.traits.values():
        if trait.kind == "expression":
            continue
        params = trait.spec.params
        if trait.kind == "trait":
            value = "plan_trait" if params.trait == "plan" else json_text(params.trait, "traits")
        elif hasattr(params, "property"):
            value = {"amount": "amount", "kind": "kind"}.get(params.property)
        else:
            value = None
        aggregate, extra = plain_aggregate(trait, value)
        aggregates.append(f"{aggregate} FILTER (WHERE {trait_condition(trait, extra)}) AS {trait.name}")
    columns = {t.name: t.name for t in project.traits.values() if t.kind != "expression"}
    for trait in project.traits.values():
        if trait.kind == "expression":
            outer.append(f"({expression_sql(project, trait, columns)}) AS {trait.name}")
        else:
            outer.append(trait.name)
    return f"""
CREATE TABLE bench.fused AS
SELECT {', '.join(outer)}
FROM (
    SELECT profile_id,
        {(',' + chr(10) + '        ').join(aggregates)}
    FROM (
        SELECT {PROFILE_KEY} AS profile_id, type, event, "timestamp",
               TRY_CAST(properties ->> '$.amount' AS DOUBLE) AS amount,
               properties ->> '$.kind' AS kind,
               traits ->> '$.plan' AS plan_trait
        FROM raw.events
        WHERE "timestamp" < {ts_literal(AS_OF)}
    ) AS e
    GROUP BY profile_id
) AS a
"""


FLOOR_STATEMENT = f"CREATE TABLE bench.floor AS SELECT {PROFILE_KEY} AS profile_id, count(*) AS n FROM raw.events GROUP BY 1"


# --------------------------------------------------------------------------- measuring


class Bench:
    def __init__(self, project: ResolvedProject, warehouse, events: int) -> None:
        self.project = project
        self.warehouse = warehouse
        self.con: duckdb.DuckDBPyConnection = warehouse.connection
        self.events = events
        self.times: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}
        self.rss: dict[str, list[float]] = {}
        self.steps: list[dict[str, float]] = []
        self.step_cpu: list[dict[str, float]] = []

    def sql(self, statement: str) -> list[tuple]:
        return self.con.execute(statement).fetchall()

    def record(self, name: str, seconds: float, rss: float | None, cpu: float) -> None:
        self.times.setdefault(name, []).append(seconds)
        self.cpu.setdefault(name, []).append(cpu)
        if rss is not None:
            self.rss.setdefault(name, []).append(rss)

    def timed(self, name: str, statements: list[str]) -> None:
        reset_peak_rss()
        started, cpu = time.perf_counter(), time.process_time()
        for statement in statements:
            self.sql(statement)
        self.record(name, time.perf_counter() - started, peak_rss_since_reset(), time.process_time() - cpu)

    def clean(self) -> None:
        self.sql("DROP SCHEMA IF EXISTS bench CASCADE")
        self.sql("CREATE SCHEMA bench")
        self.sql(f"DROP SCHEMA IF EXISTS {self.project.models_schema} CASCADE")

    # (a)
    def cdp_run(self) -> None:
        # A fresh run each time (no history, no previous tables), so every repetition does
        # the same work; dropping is not timed.
        self.sql(f"DROP SCHEMA IF EXISTS {self.project.models_schema} CASCADE")
        # CPU seconds per step: every statement the runner executes goes through
        # warehouse.execute; wrap it (on this instance only) and attribute its process CPU
        # time to the step announced by on_step. Wall seconds per step come from RunResult.
        current, cpu_by_step = ["setup"], {}
        execute = self.warehouse.execute

        def measured(statement, parameters=None):
            cpu = time.process_time()
            try:
                return execute(statement, parameters)
            finally:
                cpu_by_step[current[0]] = cpu_by_step.get(current[0], 0.0) + time.process_time() - cpu

        self.warehouse.execute = measured
        reset_peak_rss()
        started, cpu = time.perf_counter(), time.process_time()
        try:
            result = run(self.project, self.warehouse, AS_OF, on_step=lambda name: current.__setitem__(0, name))
        finally:
            del self.warehouse.execute  # back to the class's method
        whole, whole_cpu = time.perf_counter() - started, time.process_time() - cpu
        rss = peak_rss_since_reset()
        self.record("a_run", whole, rss, whole_cpu)
        self.record("a", sum(result.seconds.get(step, 0.0) for step in STEPS_A), rss,
                    sum(cpu_by_step.get(step, 0.0) for step in STEPS_A))
        self.steps.append(dict(result.seconds))
        self.step_cpu.append(cpu_by_step)
        self.audience_sizes = result.audience_sizes
        self.profiles = result.profiles

    def median(self, name: str, cpu: bool = False) -> float:
        return statistics.median((self.cpu if cpu else self.times)[name])


def agreement(bench: Bench, project: ResolvedProject) -> list[tuple[str, int, int]]:
    """Per trait: rows where (b) and (d) differ from cdp.profile_traits (doubles to 1e-6)."""
    rows = []
    traits_table = f"{project.models_schema}.profile_traits"
    for trait in project.traits.values():
        counts = []
        for other in ("bench.per_trait", "bench.fused"):
            left, right = f"t.{trait.name}", f"o.{trait.name}"
            if trait.kind in ("sum", "avg", "expression"):
                differs = f"(abs({left} - {right}) > 1e-6 * greatest(1, abs({left})) OR ({left} IS NULL) <> ({right} IS NULL))"
            else:
                differs = f"{left}::VARCHAR IS DISTINCT FROM {right}::VARCHAR"
            counts.append(bench.sql(
                f"SELECT count(*) FROM {traits_table} AS t FULL JOIN {other} AS o USING (profile_id) WHERE {differs}"
            )[0][0])
        rows.append((trait.name, *counts))
    return rows


# --------------------------------------------------------------------------- main

# Wide enough for the tables when piped to a file (rich defaults to 80 columns there).
console = Console(width=max(132, Console().width))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="number of events (default 10M)")
    parser.add_argument("--users", type=int, default=None, help="number of users (default ~events/10, at most 1M)")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per method (median reported)")
    parser.add_argument("--memory-limit", default=None, help="DuckDB memory_limit (default: the project's)")
    parser.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")
    parser.add_argument("--regenerate", action="store_true", help="rebuild the cached events file")
    parser.add_argument("--methods", default="a,b,c,d", help="subset of a,b,c,d to run")
    parser.add_argument("--explain", action="store_true",
                        help="print EXPLAIN ANALYZE of the compiled _profile_aggregates query and exit")
    parser.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.users = args.users or default_users(args.events)
    return args


def load_benchmark_project(path: Path, memory_limit: str | None, threads: int | None) -> ResolvedProject:
    return with_duckdb_settings(load_project(PROJECT_DIR, environ={}), memory_limit, threads, path)


def main() -> None:
    args = parse_args()
    if args.memory_limit is None:
        args.memory_limit = load_project(PROJECT_DIR, environ={}).config.warehouse.memory_limit or "8GB"
    if args.generate_only:
        generate(data_file(args.events, args.users), args.events, args.users, args.memory_limit)
        return

    path = ensure_data(args)
    project = load_benchmark_project(path, args.memory_limit, args.threads)
    warehouse = connect(project)
    bench = Bench(project, warehouse, args.events)
    con = bench.con
    settings = dict(con.execute(
        "SELECT name, value FROM duckdb_settings() WHERE name IN ('memory_limit', 'threads')").fetchall())
    console.print(f"duckdb {duckdb.__version__}, memory_limit={settings['memory_limit']}, "
                  f"threads={settings['threads']}, cpus={os.cpu_count()}, "
                  f"{args.events:,} events, {args.users:,} users, as of {AS_OF:%Y-%m-%d}")

    if args.explain:
        plan = compile_project(project, AS_OF)
        sql = warehouse.render(plan.model(AGGREGATES).select)
        for row in con.execute("EXPLAIN ANALYZE " + sql).fetchall():
            console.print(row[-1], markup=False, highlight=False)
        warehouse.close()
        return

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    per_trait = per_trait_statements(project)
    fused = fused_statement(project)
    # Warm up DuckDB's buffer pool with every column the methods read (not timed).
    con.execute("SELECT count(*), max(length(properties::VARCHAR)), max(length(traits::VARCHAR)), "
                "max(event), max(type), max(\"timestamp\"), max(user_id), max(anonymous_id) FROM raw.events").fetchall()
    bench.clean()

    # Interleaved: rep 1 of every method, then rep 2, ... so drift hits all methods alike.
    runners = {
        "c": lambda: bench.timed("c", [FLOOR_STATEMENT]),
        "d": lambda: bench.timed("d", [fused]),
        "a": bench.cdp_run,
        "b": lambda: bench.timed("b", per_trait),
    }
    for rep in range(args.repeat):
        for method in "cdab":
            if method not in methods:
                continue
            if method != "a":  # each repetition replaces the table; the last one is kept for checks
                table = {"b": "per_trait", "c": "floor", "d": "fused"}[method]
                con.execute(f"DROP TABLE IF EXISTS bench.{table}").fetchall()
            started = time.perf_counter()
            runners[method]()
            console.print(f"  rep {rep + 1}/{args.repeat} ({method}) {time.perf_counter() - started:6.2f} s",
                          highlight=False)

    report(bench, args, methods)
    if set("abd") <= set(methods):
        rows = [row for row in agreement(bench, project) if row[1] or row[2]]
        if rows:
            table = Table(title="rows differing from cdp.profile_traits (expected: most_frequent ties only)")
            table.add_column("trait")
            table.add_column("(b) per trait", justify="right")
            table.add_column("(d) fused", justify="right")
            for name, b_count, d_count in rows:
                table.add_row(name, f"{b_count:,}", f"{d_count:,}")
            console.print(table)
        else:
            console.print("(b) and (d) agree with cdp.profile_traits on every trait and profile")
    bench.sql("DROP SCHEMA IF EXISTS bench CASCADE")
    warehouse.close()
    # ru_maxrss is reset along with VmHWM by clear_refs, so take the max of both.
    peak = max([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # KiB on Linux
                *(value for values in bench.rss.values() for value in values)])
    console.print(f"peak RSS of this process: {gb(peak)} (data generation runs in a child process, not counted)")


def report(bench: Bench, args, methods: list[str]) -> None:
    n = args.events
    rows = [
        ("a", "(a) cdp run: traits + audiences steps", "_profile_aggregates + profile_traits + audiences"),
        ("a_run", "    cdp run: whole run", "adds profiles, history, counts"),
        ("b", "(b) one query per trait + join", "20 GROUP BYs (19 traits + spine), 1 join"),
        ("c", "(c) floor: GROUP BY profile, count(*)", "one scan, one hash aggregate"),
        ("d", "(d) hand-written fused query", "1 GROUP BY, 19 FILTER aggregates, mode(), count(DISTINCT)"),
    ]
    table = Table(title=f"{n:,} events, {args.users:,} users — median of {args.repeat} "
                        f"(shared 2-core machine: wall times are noisy, CPU s = process user+sys, steadier)")
    table.add_column("method")
    table.add_column("median s", justify="right")
    table.add_column("min–max s", justify="right")
    table.add_column("CPU s", justify="right")
    table.add_column("events/s", justify="right")
    table.add_column("peak RSS", justify="right")
    table.add_column("what", style="dim")
    for key, label, what in rows:
        if key not in bench.times:
            continue
        times = bench.times[key]
        median = statistics.median(times)
        rss = max(bench.rss[key]) if bench.rss.get(key) else None
        table.add_row(label, f"{median:.2f}", f"{min(times):.2f}–{max(times):.2f}",
                      f"{bench.median(key, cpu=True):.2f}", f"{n / median / 1e6:.2f} M/s", gb(rss), what)
    console.print(table)

    if bench.steps:
        steps = Table(title="cdp run: per-step seconds (median; wall from RunResult.seconds, CPU of the step's statements)")
        names = list(dict.fromkeys(name for run_steps in bench.steps for name in run_steps))
        steps.add_column("")
        for name in names:
            steps.add_column(name + (" *" if name in STEPS_A else ""), justify="right")
        steps.add_row("wall s", *(f"{statistics.median(s.get(name, 0.0) for s in bench.steps):.2f}" for name in names))
        steps.add_row("CPU s", *(f"{statistics.median(s.get(name, 0.0) for s in bench.step_cpu):.2f}" for name in names))
        console.print(steps)
        console.print(f"  * counted in (a); {bench.profiles:,} profiles; audience sizes: "
                      + ", ".join(f"{k} {v:,}" for k, v in bench.audience_sizes.items()), highlight=False)

    ratios = Table(title="ratios of medians")
    ratios.add_column("ratio")
    ratios.add_column("wall", justify="right")
    ratios.add_column("CPU", justify="right")
    ratios.add_column("meaning", style="dim")

    def ratio(label: str, top: str, bottom: str, meaning: str) -> None:
        if top in bench.times and bottom in bench.times:
            ratios.add_row(label, f"{bench.median(top) / bench.median(bottom):.2f}×",
                           f"{bench.median(top, True) / bench.median(bottom, True):.2f}×", meaning)

    ratio("(a) / (d)", "a", "d", "cdp run vs the hand-written fused query (1.0 = as good as by hand)")
    ratio("(b) / (a)", "b", "a", "how much faster cdp run is than one query per trait")
    ratio("(a) / (c)", "a", "c", "cdp run vs the floor (scan + group by)")
    if bench.steps and "d" in bench.times:
        aggregates = statistics.median(s[AGGREGATES] for s in bench.steps)
        aggregates_cpu = statistics.median(s[AGGREGATES] for s in bench.step_cpu)
        ratios.add_row(f"{AGGREGATES} / (d)", f"{aggregates / bench.median('d'):.2f}×",
                       f"{aggregates_cpu / bench.median('d', True):.2f}×",
                       "the fused step alone vs (d) (same traits + 4 audience event counts)")
    console.print(ratios)


if __name__ == "__main__":
    main()
