"""Benchmark: connected components for identity stitching, SQL (large-star/small-star) vs networkx.

    .venv/bin/python benchmarks/identity.py --edges 5000000     # needs `pip install networkx`

1. Generates a synthetic identifier graph of ~N edges (~0.6 N identifiers) straight into
   ``main.edges(a BIGINT, b BIGINT)`` of a DuckDB file with SQL over ``range()`` and
   ``hash()`` (deterministic: the same graph on every machine). It is shaped like identity
   data: persons with one or more user_ids joined by alias chains (user_id -> user_id; a
   few chains are long, up to ``--max-chain`` user_ids), anonymous_id <-> user_id edges
   (1-3 devices per user_id, devices shared between a person's user_ids, and some shared
   between neighbouring persons: households), email <-> user_id edges. Node ids are a
   random permutation of 0..nodes-1 (what mapping identifiers to dense integers gives).
   The file is cached per (N, max chain) under ``benchmarks/.data/``.
2. Times, each run in a fresh child process (so that peak RSS is the method's own) and
   interleaved (SQL rep 1, networkx rep 1, SQL rep 2, ...):
     (a) ``cdp_warehouse.graph.connected_components`` on DuckDB, ``--repeat`` times;
     (b) networkx: ``nx.Graph`` built from the same edges (fetched as Arrow first, not
         timed) + ``nx.connected_components`` + the (node, min id) labels, ``--nx-repeat``
         times.
     (c) incremental: ``cdp_warehouse.graph.merge_components`` adding ~1% new edges (new
         persons, new identifiers of known ones, edges between known components, a few
         alias-like joins of the biggest components) to the labels of the full run, vs a
         full ``connected_components`` over all edges (old + new), ``--repeat`` times each.
3. Checks that (a) and (b) give the same partition (component count, size histogram, and
   every node's component min id), that (c)'s merged labels equal the full run over all
   edges (every node), and the issue's targets.

See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import duckdb
from bench_data import read_meta, read_meta_on  # benchmarks/bench_data.py
from memory import current_rss, gb, peak_rss_since_reset, reset_peak_rss  # benchmarks/memory.py
from rich.console import Console
from rich.table import Table
from sqlglot import exp

from cdp_warehouse.compiler import components
from cdp_warehouse.graph import connected_components, merge_components
from cdp_warehouse.warehouses.duckdb import DuckDBWarehouse

DATA_DIR = HERE / ".data"
GENERATOR_VERSION = 1  # bump when the generated graph changes, to invalidate caches

# Targets from the issue.
TARGET_SECONDS_5M = 15.0
TARGET_SPEEDUP = 2.5
TARGET_INCREMENTAL_SPEEDUP = 10.0  # full run / incremental run on 1% new edges

# Graph shape (see generation_sql). Edges per person ≈ 12.5 with these settings.
EDGES_PER_PERSON = 12.5
LONG_CHAIN_SHARE = 0.0004  # persons with an alias chain of 65..max_chain user_ids (Pareto, alpha 1)
SHORT_CHAIN_ALPHA = 1.0  # other persons: 1..64 user_ids (truncated Pareto, alpha 1)
HOUSEHOLD_SHARE = 0.25  # persons sharing a device with the previous person
SLOT = 128  # local id stride per person for its devices / emails
DEVICE, EMAIL, LONG_DEVICE = 10_000_000_000, 20_000_000_000, 30_000_000_000  # local id ranges

EDGES = exp.table_("edges", db="main")
LABELS = exp.table_("cc_labels", db="main")

# (c) incremental: tables kept in the graph file next to main.edges.
INCREMENT_VERSION = 1  # bump when the new edges change, to invalidate them
BASE_LABELS = exp.table_("inc_base_labels", db="main")  # full run over main.edges (every node)
NEW_EDGES = exp.table_("inc_new_edges", db="main")  # the ~1% new edges
INC_LABELS = exp.table_("inc_labels", db="main")  # base labels + new nodes, then merged
ALL_LABELS = exp.table_("inc_all_labels", db="main")  # full run over old + new edges
# Mix of the new edges (shares of their number): new persons (a new user_id with a new
# device, and a new email half the time), a new identifier of a known node (a second
# device, a new email), and an edge between two known nodes (a known visitor signs in to a
# known account, a shared device); plus --big-joins alias-like edges chaining the biggest
# components together.
NEW_PERSONS_SHARE, NEW_ON_KNOWN_SHARE, KNOWN_KNOWN_SHARE = 0.55, 0.30, 0.15


# --------------------------------------------------------------------------- generation


def generation_sql(n: int, max_chain: int) -> list[str]:
    """Statements building ``main.edges`` (~``n`` distinct edges) and ``main.bench_meta``.

    Uniform doubles come from ``hash(i * 64 + stream)`` (53 high bits): deterministic,
    independent streams (never ``hash(i, 'x')``: DuckDB combines the hashes, correlated).
    """
    persons = max(100, round(n / EDGES_PER_PERSON))
    salts: dict[str, int] = {}

    def uniform(column: str, stream: str) -> str:
        salt = salts.setdefault(stream, len(salts) + 1)
        return f"((hash({column} * 64 + {salt}) >> 11)::DOUBLE / 9007199254740992.0)"

    # 1. Persons: how many user_ids each has (an alias chain of that length), the size of
    #    its device and email pools. One person (in the middle) has the longest chain.
    persons_sql = f"""
CREATE TEMP TABLE persons AS
WITH p AS (
    SELECT
        p,
        CASE
            WHEN p = {persons // 2} THEN {max_chain}
            WHEN {uniform('p', 'long')} < {LONG_CHAIN_SHARE}
                THEN floor(65 / (1 - {uniform('p', 'chain')} * (1 - 65 / {max_chain + 1})))::BIGINT
            ELSE floor(pow(1 - {uniform('p', 'chain')} * (1 - pow(65, -{SHORT_CHAIN_ALPHA})), -1 / {SHORT_CHAIN_ALPHA}))::BIGINT
        END AS l
    FROM range({persons}) AS r(p)
)
SELECT
    p, l, l > 64 AS long,
    sum(l) OVER (ORDER BY p ROWS UNBOUNDED PRECEDING) - l AS start,  -- user_ids are start .. start + l - 1
    1 + floor({uniform('p', 'devices')} * 3)::BIGINT + l // 4 AS d,  -- device pool
    1 + ({uniform('p', 'emails')} < 0.3)::BIGINT + l // 6 AS m       -- email pool
FROM p
"""
    users_sql = """
CREATE TEMP TABLE users AS
SELECT p, l, long, d, m, start + pos AS u, pos FROM (SELECT *, unnest(range(l)) AS pos FROM persons)
"""
    # 2. Edges on local ids (user u = u; devices, emails in their own ranges).
    devices_of_user = f"(1 + ({uniform('u', 'devices')} < 0.45)::INT + ({uniform('u', 'devices')} < 0.15)::INT)"
    first_device = f"CASE WHEN pos = 0 THEN 0 ELSE floor({uniform('u', 'pick_device')} * d)::BIGINT END"
    parts = [
        # short chains: each user_id uses 1-3 (55/30/15 %) distinct devices of its person's
        # pool (the head uses device 0, the one neighbours share)
        *(f"SELECT {DEVICE} + p * {SLOT} + ({first_device} + {j}) % d AS a, u AS b, 'anonymous_id-user_id' AS kind "
          f"FROM users WHERE NOT long AND least({devices_of_user}, d) > {j}" for j in range(3)),
        # 90 % of user_ids have an email, from the person's pool of 1-2 (+1 per 6 user_ids)
        (f"SELECT {EMAIL} + p * {SLOT} + floor({uniform('u', 'pick_email')} * m)::BIGINT, u, 'email-user_id' "
         f"FROM users WHERE NOT long AND {uniform('u', 'email')} < 0.9"),
        # long chains (scripted re-aliasing): half the user_ids have one own device, the
        # head an email, the last one the device 0 neighbours share; no shortcut, so the
        # chain is a path as long as the chain
        f"SELECT {LONG_DEVICE} + u, u, 'anonymous_id-user_id' FROM users WHERE long AND {uniform('u', 'long_device')} < 0.5",
        f"SELECT {DEVICE} + p * {SLOT}, u, 'anonymous_id-user_id' FROM users WHERE long AND pos = l - 1",
        f"SELECT {EMAIL} + p * {SLOT}, u, 'email-user_id' FROM users WHERE long AND pos = 0 AND {uniform('u', 'email')} < 0.9",
        # alias chains
        "SELECT u - 1, u, 'user_id-user_id (alias)' FROM users WHERE pos > 0",
        # households: a person's first user_id also uses the previous person's device 0
        (f"SELECT {DEVICE} + (p - 1) * {SLOT}, u, 'anonymous_id-user_id (shared device)' "
         f"FROM users WHERE pos = 0 AND p > 0 AND {uniform('u', 'shared')} < {HOUSEHOLD_SHARE}"),
    ]
    local_sql = "CREATE TEMP TABLE local_edges AS\n" + "\nUNION ALL\n".join(parts)
    # 3. Dense integer ids in random order (as if identifiers were mapped to integers), and
    #    the edges in random order.
    ids_sql = """
CREATE TEMP TABLE ids AS
SELECT n, row_number() OVER (ORDER BY hash(n), n) - 1 AS id
FROM (SELECT a AS n FROM local_edges UNION SELECT b FROM local_edges)
"""
    edges_sql = """
CREATE TABLE main.edges AS
SELECT ia.id AS a, ib.id AS b
FROM local_edges AS e JOIN ids AS ia ON ia.n = e.a JOIN ids AS ib ON ib.n = e.b
ORDER BY hash(ia.id * 4294967296 + ib.id)
"""
    meta_sql = f"""
CREATE TABLE main.bench_meta AS
SELECT {GENERATOR_VERSION} AS version, {n}::BIGINT AS target_edges, {max_chain}::BIGINT AS max_chain,
       (SELECT count(*) FROM main.edges) AS edges,
       (SELECT count(*) FROM ids) AS nodes,
       (SELECT count(*) FROM persons) AS persons,
       (SELECT count(*) FROM users) AS user_ids,
       (SELECT max(l) FROM persons) AS longest_chain,
       (SELECT count(*) FROM persons WHERE long) AS long_chains,
       (SELECT count(*) FROM persons WHERE l = 1) AS single_user_id_persons,
       (SELECT map(list(kind ORDER BY kind), list(c ORDER BY kind))
        FROM (SELECT kind, count(*) AS c FROM local_edges GROUP BY kind)) AS edges_by_kind
"""
    return [persons_sql, users_sql, local_sql, ids_sql, edges_sql, meta_sql]


def data_file(n: int, max_chain: int) -> Path:
    return DATA_DIR / f"identity_{n}_c{max_chain}.duckdb"


def generate(path: Path, n: int, max_chain: int, memory_limit: str) -> None:
    """Write the graph file (to a temporary name first, so an interrupted run leaves none)."""
    tmp = path.with_suffix(".tmp.duckdb")
    for stale in (tmp, Path(str(tmp) + ".wal")):
        stale.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(tmp), config={"memory_limit": memory_limit}) as con:
        for statement in generation_sql(n, max_chain):
            con.execute(statement).fetchall()
        con.execute("CHECKPOINT")
    for stale in (path, Path(str(path) + ".wal")):
        stale.unlink(missing_ok=True)
    tmp.rename(path)


def ensure_data(args) -> Path:
    path = data_file(args.edges, args.max_chain)
    meta = read_meta(path)
    if not args.regenerate and meta and meta["version"] == GENERATOR_VERSION:
        return path
    console.print(f"generating a graph of ~{args.edges:,} edges → {path.relative_to(REPO)} …")
    started = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--generate-only", "--edges", str(args.edges),
                    "--max-chain", str(args.max_chain), "--memory-limit", args.memory_limit], check=True)
    console.print(f"generated in {time.perf_counter() - started:.1f} s "
                  f"({path.stat().st_size / 1e6:.0f} MB on disk)")
    return path


# --------------------------------------------------------------------------- measuring


def open_warehouse(path: Path, args, read_only: bool = False) -> DuckDBWarehouse:
    config = {"memory_limit": args.memory_limit}
    if args.threads:
        config["threads"] = args.threads
    return DuckDBWarehouse(duckdb.connect(str(path), read_only=read_only, config=config), str(path))


def phase_of(statement, seen: set[str]) -> str:
    """Which step of connected_components a statement belongs to (for the per-step table)."""
    if isinstance(statement, exp.Create):
        name = statement.this.name
        if name == "_cc_edges":
            phase = "copy small → edges" if "_cc_edges" in seen else "normalise input"
            seen.add(name)
            return phase
        return {"_cc_large": "large-star", "_cc_small": "small-star", "_cc_roots": "set finished aside",
                "_cc_done": "normalise input"}.get(name, "labels")
    if isinstance(statement, exp.Drop):
        return "drop scratch"
    if isinstance(statement, exp.Insert):
        return "set finished aside"
    return "count edges"


PHASES = ("normalise input", "count edges", "large-star", "small-star", "set finished aside",
          "copy small → edges", "labels", "drop scratch")


def sql_worker(args, path: Path) -> dict:
    """(a): one connected_components run, in this (fresh) process."""
    warehouse = open_warehouse(path, args)
    con = warehouse.connection
    con.execute("SELECT count(*), min(a), max(b) FROM main.edges").fetchall()  # warm-up, not timed
    con.execute("DROP TABLE IF EXISTS main.cc_labels").fetchall()
    phases = measure_phases(warehouse, phase_of)
    reset_peak_rss()
    started, cpu = time.perf_counter(), time.process_time()
    result = connected_components(warehouse, exp.select("a", "b").from_(EDGES.copy()), LABELS.copy())
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    rss = peak_rss_since_reset() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    warehouse.close()
    return {"wall": wall, "cpu": cpu, "rss": rss, "rounds": result.rounds, "edges": result.edges,
            "phases": phases}


def nx_worker(args, path: Path, labels_file: Path) -> dict:
    """(b): nx.Graph from the edges + nx.connected_components, in this (fresh) process."""
    import networkx as nx
    import pyarrow as pa
    import pyarrow.parquet as pq

    with duckdb.connect(str(path), read_only=True) as con:
        edges = con.sql("SELECT a, b FROM main.edges").to_arrow_table()  # fetch: not timed
    gc.collect()
    reset_peak_rss()
    before = current_rss()
    started, cpu = time.perf_counter(), time.process_time()
    a, b = edges.column("a").to_pylist(), edges.column("b").to_pylist()
    del edges
    converted = time.perf_counter()
    graph = nx.Graph()
    graph.add_edges_from(zip(a, b, strict=True))
    del a, b
    built, built_cpu = time.perf_counter(), time.process_time()
    nodes: list[int] = []
    labels: list[int] = []
    for component in nx.connected_components(graph):
        nodes.extend(component)
        labels.extend([min(component)] * len(component))
    wall, cpu_total = time.perf_counter() - started, time.process_time() - cpu
    rss = peak_rss_since_reset() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = {"wall": wall, "cpu": cpu_total, "rss": rss, "rss_before": before,
              "build": built - started, "build_cpu": built_cpu - cpu, "convert": converted - started,
              "components": wall - (built - started), "components_cpu": cpu_total - (built_cpu - cpu),
              "graph_nodes": graph.number_of_nodes(), "graph_edges": graph.number_of_edges()}
    del graph
    pq.write_table(pa.table({"node": pa.array(nodes, pa.int64()), "component": pa.array(labels, pa.int64())}),
                   labels_file)
    return result


def busy_seconds() -> float:
    """CPU seconds all processes have used on this machine (every core), from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return math.nan
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def child_command(args, worker: str) -> list[str]:
    command = [sys.executable, __file__, "--worker", worker, "--edges", str(args.edges),
               "--max-chain", str(args.max_chain), "--memory-limit", args.memory_limit,
               "--new-share", str(args.new_share), "--big-joins", str(args.big_joins)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    return command


def run_child(args, worker: str, result_file: Path, labels_file: Path | None = None) -> dict:
    command = [*child_command(args, worker), "--result-file", str(result_file)]
    if labels_file:
        command += ["--labels-file", str(labels_file)]
    # Noise: CPU that *other* processes used meanwhile = machine busy time - the child's own.
    busy, own, started = busy_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(command, check=True)
    elapsed, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    own_cpu = (after.ru_utime - own.ru_utime) + (after.ru_stime - own.ru_stime)
    result = json.loads(result_file.read_text())
    result["others"] = max(0.0, busy_seconds() - busy - own_cpu) / (elapsed * (os.cpu_count() or 1))
    return result


# --------------------------------------------------------------------------- (c) incremental


def increment_sql(meta: dict, share: float, big_joins: int) -> list[str]:
    """Statements building ``main.inc_new_edges`` (~``share`` × edges) from ``main.edges``
    and ``main.inc_base_labels``, and ``main.inc_meta``. Deterministic like the graph.

    New node ids continue after the existing ones (``nodes .. ``), as numbering new
    identifiers gives in stitching; existing endpoints are uniform over the existing ids
    (so big components are hit more often, as they would be by real traffic).
    """
    nodes = meta["nodes"]
    k = max(10, round(meta["edges"] * share))
    persons = max(1, round(k * NEW_PERSONS_SHARE / 1.5))  # 1.5 edges per new person
    on_known = max(1, round(k * NEW_ON_KNOWN_SHARE))
    known = max(1, round(k * KNOWN_KNOWN_SHARE) - big_joins)
    salts: dict[str, int] = {}

    def uniform(column: str, stream: str) -> str:
        salt = salts.setdefault(stream, 40 + len(salts))  # streams apart from generation_sql's
        return f"((hash({column} * 64 + {salt}) >> 11)::DOUBLE / 9007199254740992.0)"

    def existing(column: str, stream: str) -> str:
        return f"least({nodes - 1}, floor({uniform(column, stream)} * {nodes})::BIGINT)"

    new_on_known_base = nodes + 3 * persons
    parts = [
        # new persons: user {nodes + 3i}, device {+1}, email {+2} half the time
        f"SELECT {nodes} + 3 * i + 1 AS a, {nodes} + 3 * i AS b, 'new device-new user' AS kind FROM range({persons}) AS r(i)",
        (f"SELECT {nodes} + 3 * i + 2, {nodes} + 3 * i, 'new email-new user' FROM range({persons}) AS r(i) "
         f"WHERE {uniform('i', 'email')} < 0.5"),
        # a new identifier of a known node
        (f"SELECT {new_on_known_base} + i, {existing('i', 'on_known')}, 'new-known' "
         f"FROM range({on_known}) AS r(i)"),
        # two known nodes (mostly of two different components)
        (f"SELECT {existing('i', 'known_a')}, {existing('i', 'known_b')}, 'known-known' "
         f"FROM range({known}) AS r(i)"),
        # alias-like joins: the biggest components, chained (one node of each, not the root)
        f"""SELECT node AS a, lag(node) OVER (ORDER BY size DESC, component) AS b, 'alias join of big components'
            FROM (SELECT component, count(*) AS size, arg_max(node, hash(node)) AS node
                  FROM {BASE_LABELS.sql('duckdb')} GROUP BY component ORDER BY size DESC, component
                  LIMIT {big_joins + 1}) QUALIFY b IS NOT NULL""" if big_joins else None,
    ]
    union = "\nUNION ALL\n".join(part for part in parts if part)
    return [
        f"""CREATE OR REPLACE TABLE {NEW_EDGES.sql('duckdb')} AS
SELECT a, b, any_value(kind) AS kind FROM ({union}) WHERE a <> b GROUP BY a, b
ORDER BY hash(a * 4294967296 + b)""",
        f"""CREATE OR REPLACE TABLE main.inc_meta AS
SELECT {INCREMENT_VERSION} AS version, {share}::DOUBLE AS share, {big_joins} AS big_joins,
       (SELECT count(*) FROM {NEW_EDGES.sql('duckdb')}) AS new_edges,
       (SELECT count(*) FROM (SELECT a FROM {NEW_EDGES.sql('duckdb')} UNION SELECT b FROM {NEW_EDGES.sql('duckdb')})
        WHERE a >= {nodes}) AS new_nodes,
       (SELECT max(size) FROM (SELECT count(*) AS size FROM {BASE_LABELS.sql('duckdb')} GROUP BY component)
        ) AS base_largest,
       (SELECT map(list(kind ORDER BY kind), list(c ORDER BY kind))
        FROM (SELECT kind, count(*) AS c FROM {NEW_EDGES.sql('duckdb')} GROUP BY kind)) AS new_edges_by_kind""",
    ]


def read_increment_meta(path: Path) -> dict | None:
    try:
        with duckdb.connect(str(path), read_only=True) as con:
            cursor = con.execute("SELECT * FROM main.inc_meta")
            names = [c[0] for c in cursor.description]
            return dict(zip(names, cursor.fetchone(), strict=True))
    except duckdb.Error:
        return None


def ensure_increment(args, path: Path) -> dict:
    """The base labels and the new edges in the graph file (prepared once, in a child)."""
    meta = read_increment_meta(path)
    if (args.regenerate or not meta or meta["version"] != INCREMENT_VERSION or meta["share"] != args.new_share
            or meta["big_joins"] != args.big_joins):
        console.print(f"preparing (c): labels of the full run and {args.new_share:.1%} new edges …")
        started = time.perf_counter()
        subprocess.run([*child_command(args, "inc-prepare")], check=True)
        console.print(f"prepared in {time.perf_counter() - started:.1f} s")
        meta = read_increment_meta(path)
    return meta


def inc_prepare_worker(args, path: Path) -> None:
    warehouse = open_warehouse(path, args)
    # The labels of a full run over the existing edges: every node (the generated graph has
    # no isolated node, so this is every identifier).
    connected_components(warehouse, exp.select("a", "b").from_(EDGES.copy()), BASE_LABELS.copy())
    meta = read_meta_on(warehouse.connection)
    for statement in increment_sql(meta, args.new_share, args.big_joins):
        warehouse.connection.execute(statement).fetchall()
    warehouse.connection.execute("CHECKPOINT")
    warehouse.close()


INC_PHASES = ("lift new edges", *PHASES[:-1], "update labels", "drop scratch")


def inc_phase_of(statement, seen: set[str]) -> str:
    if isinstance(statement, exp.Create) and statement.this.name == "_cc_merge_edges":
        return "lift new edges"
    if isinstance(statement, exp.Update):
        return "update labels"
    return phase_of(statement, seen)


def measure_phases(warehouse: DuckDBWarehouse, classify) -> dict[str, list[float]]:
    """Wrap execute/fetch on this instance: wall and CPU seconds per phase."""
    phases: dict[str, list[float]] = {}
    seen: set[str] = set()
    execute, fetch = warehouse.execute, warehouse.fetch

    def measured(method):
        def wrapper(statement, parameters=None):
            phase = classify(statement, seen)
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return method(statement, parameters)
            finally:
                totals = phases.setdefault(phase, [0.0, 0.0])
                totals[0] += time.perf_counter() - wall
                totals[1] += time.process_time() - cpu
        return wrapper

    warehouse.execute, warehouse.fetch = measured(execute), measured(fetch)
    return phases


def inc_worker(args, path: Path) -> dict:
    """(c) incremental: merge_components of the new edges into the full run's labels."""
    warehouse = open_warehouse(path, args)
    con = warehouse.connection
    nodes = read_meta_on(con)["nodes"]
    # The state an incremental run starts from (not timed): every known node with its
    # component, and the new nodes as their own component (stitching inserts them so).
    con.execute(f"""CREATE OR REPLACE TABLE {INC_LABELS.sql('duckdb')} AS
        SELECT node, component FROM {BASE_LABELS.sql('duckdb')}
        UNION ALL
        SELECT n, n FROM (SELECT a AS n FROM {NEW_EDGES.sql('duckdb')} UNION SELECT b FROM {NEW_EDGES.sql('duckdb')})
        WHERE n >= {nodes}""").fetchall()
    con.execute("CHECKPOINT")
    con.execute(f"SELECT count(*), min(node), max(component) FROM {INC_LABELS.sql('duckdb')}").fetchall()  # warm-up
    con.execute(f"SELECT count(*), min(a), max(b) FROM {NEW_EDGES.sql('duckdb')}").fetchall()
    phases = measure_phases(warehouse, inc_phase_of)
    reset_peak_rss()
    started, cpu = time.perf_counter(), time.process_time()
    result = merge_components(warehouse, INC_LABELS.copy(), exp.select("a", "b").from_(NEW_EDGES.copy()))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    rss = peak_rss_since_reset() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    changed = con.execute(f"SELECT count(*) FROM {INC_LABELS.sql('duckdb')} AS l "
                          f"JOIN {BASE_LABELS.sql('duckdb')} AS b USING (node) WHERE l.component <> b.component"
                          ).fetchone()[0]
    warehouse.close()
    return {"wall": wall, "cpu": cpu, "rss": rss, "rounds": result.rounds, "edges": result.edges,
            "phases": phases, "relabelled": changed}


def full_all_worker(args, path: Path) -> dict:
    """(c) reference: a full connected_components over the old and the new edges."""
    warehouse = open_warehouse(path, args)
    con = warehouse.connection
    con.execute(f"SELECT count(*), min(a), max(b) FROM (SELECT a, b FROM main.edges UNION ALL "
                f"SELECT a, b FROM {NEW_EDGES.sql('duckdb')})").fetchall()  # warm-up, not timed
    con.execute(f"DROP TABLE IF EXISTS {ALL_LABELS.sql('duckdb')}").fetchall()
    phases = measure_phases(warehouse, phase_of)
    everything = exp.union(exp.select("a", "b").from_(EDGES.copy()), exp.select("a", "b").from_(NEW_EDGES.copy()),
                           distinct=False)
    reset_peak_rss()
    started, cpu = time.perf_counter(), time.process_time()
    result = connected_components(warehouse, everything, ALL_LABELS.copy())
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    rss = peak_rss_since_reset() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    warehouse.close()
    return {"wall": wall, "cpu": cpu, "rss": rss, "rounds": result.rounds, "edges": result.edges, "phases": phases}


def compare_incremental(path: Path) -> bool:
    """(c)'s merged labels vs the full run over all edges: every node's component."""
    with duckdb.connect(str(path), read_only=True) as con:
        inc = partition_summary(con, INC_LABELS.sql("duckdb"))
        full = partition_summary(con, ALL_LABELS.sql("duckdb"))
        differing = con.execute(
            f"SELECT count(*) FROM {INC_LABELS.sql('duckdb')} AS i FULL JOIN {ALL_LABELS.sql('duckdb')} AS f "
            f"USING (node) WHERE i.component IS DISTINCT FROM f.component").fetchone()[0]
        base = partition_summary(con, BASE_LABELS.sql("duckdb"))
    table = Table(title="partition: (c) incremental (merge_components) vs full run over all edges")
    table.add_column("")
    table.add_column("before (full run, old edges)", justify="right")
    table.add_column("(c) incremental", justify="right")
    table.add_column("full, old + new edges", justify="right")
    for key in ("nodes", "components", "largest"):
        table.add_row(key, f"{base[key]:,}", f"{inc[key]:,}", f"{full[key]:,}")
    console.print(table)
    same = differing == 0 and inc == full
    console.print(("[green]same partition[/green]" if same else "[red]PARTITIONS DIFFER[/red]")
                  + f": every one of {full['nodes']:,} nodes checked, {differing:,} with a different "
                    f"component (min id)")
    return same


def report_incremental(args, meta: dict, inc_meta: dict, runs: dict[str, list[dict]]) -> None:
    c, full = runs["c"], runs["c_full"]
    table = Table(title=f"(c) incremental: {inc_meta['new_edges']:,} new edges ({inc_meta['new_edges'] / meta['edges']:.2%}; "
                        f"{inc_meta['new_nodes']:,} new nodes) on {meta['edges']:,} edges — median of {len(c)}, "
                        f"each run in a fresh process")
    table.add_column("method")
    table.add_column("median s", justify="right")
    table.add_column("min–max s", justify="right")
    table.add_column("CPU s", justify="right")
    table.add_column("peak RSS", justify="right")
    table.add_column("rounds", justify="right")
    table.add_column("edges in", justify="right")
    for label, runs_ in (("full connected_components, old + new edges", full),
                         ("(c) merge_components(labels, new edges)", c)):
        table.add_row(label, f"{med(runs_, 'wall'):.2f}",
                      f"{min(r['wall'] for r in runs_):.2f}–{max(r['wall'] for r in runs_):.2f}",
                      f"{med(runs_, 'cpu'):.2f}", gb(max(r["rss"] for r in runs_)),
                      "/".join(map(str, sorted({r["rounds"] for r in runs_}))), f"{runs_[0]['edges']:,}")
    console.print(table)
    console.print("  new edges by kind: " + ", ".join(f"{k} {v:,}" for k, v in inc_meta["new_edges_by_kind"].items())
                  + f"; labels changed by the merge: {c[0]['relabelled']:,} of "
                    f"{meta['nodes'] + inc_meta['new_nodes']:,}", highlight=False)
    steps = Table(title="(c) merge_components per step (median over runs, summed over rounds)")
    steps.add_column("")
    names = [p for p in INC_PHASES if any(p in r["phases"] for r in c)]
    for name in names:
        steps.add_column(name, justify="right")
    for label, index in (("wall s", 0), ("CPU s", 1)):
        steps.add_row(label, *(f"{statistics.median(r['phases'].get(name, [0.0, 0.0])[index] for r in c):.3f}"
                               for name in names))
    console.print(steps)
    ratio, ratio_cpu = med(full, "wall") / med(c, "wall"), med(full, "cpu") / med(c, "cpu")
    ok = ratio >= TARGET_INCREMENTAL_SPEEDUP
    console.print(f"full / incremental: {ratio:.1f}× wall, {ratio_cpu:.1f}× CPU (target ≥ "
                  f"{TARGET_INCREMENTAL_SPEEDUP:.0f}×) " + ("[green]ok[/green]" if ok else "[red]MISSED[/red]"))


# --------------------------------------------------------------------------- checks


def partition_summary(con: duckdb.DuckDBPyConnection, relation: str) -> dict:
    nodes, components_, largest = con.execute(
        f"SELECT count(*), count(DISTINCT component), max(n) FROM {relation} "
        f"JOIN (SELECT component, count(*) AS n FROM {relation} GROUP BY 1) USING (component)").fetchone()
    histogram = dict(con.execute(
        f"SELECT floor(log2(n))::INT AS bucket, count(*) FROM (SELECT component, count(*) AS n FROM {relation} "
        f"GROUP BY 1) GROUP BY 1 ORDER BY 1").fetchall())
    return {"nodes": nodes, "components": components_, "largest": largest, "histogram": histogram}


def explain(path: Path, args) -> None:
    """EXPLAIN ANALYZE of the normalisation and of round 1's large-star and small-star."""
    warehouse = open_warehouse(path, args)
    con = warehouse.connection
    edges, large = exp.to_table("_cc_edges"), exp.to_table("_cc_large")
    from cdp_warehouse.warehouses.base import create_as

    steps = [
        ("normalise input → _cc_edges", edges, components.normalised_edges(exp.select("a", "b").from_(EDGES.copy()))),
        ("large_star(_cc_edges) → _cc_large", large, components.large_star(edges)),
        ("small_star(_cc_large) (round 1)", None, components.small_star(large)),
    ]
    for title, target, select in steps:
        sql = warehouse.render(select)
        console.rule(title)
        print(sql)
        for row in con.execute("EXPLAIN ANALYZE " + sql).fetchall():
            print(row[-1])  # plain print: rich would wrap the plan's box drawing
        if target is not None:
            warehouse.execute(create_as(target.copy(), select, temporary=True))
    warehouse.close()


# --------------------------------------------------------------------------- main

console = Console(width=max(132, Console().width))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=5_000_000, help="~number of edges (default 5M)")
    parser.add_argument("--max-chain", type=int, default=2000, help="user_ids in the longest alias chain (default 2000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the SQL method (median reported)")
    parser.add_argument("--nx-repeat", type=int, default=1, help="runs of networkx (default 1: it is slow)")
    parser.add_argument("--memory-limit", default="8GB", help="DuckDB memory_limit (default 8GB)")
    parser.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")
    parser.add_argument("--methods", default="a,b,c",
                        help="subset of a (SQL), b (networkx), c (incremental: merge_components vs full)")
    parser.add_argument("--new-share", type=float, default=0.01,
                        help="(c): new edges as a share of the existing ones (default 0.01)")
    parser.add_argument("--big-joins", type=int, default=20,
                        help="(c): alias-like edges chaining the biggest components (default 20)")
    parser.add_argument("--regenerate", action="store_true", help="rebuild the cached graph file")
    parser.add_argument("--explain", action="store_true",
                        help="print EXPLAIN ANALYZE of the normalisation and round 1's large/small-star, and exit")
    parser.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=("sql", "nx", "inc-prepare", "inc", "full-all"), help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    parser.add_argument("--labels-file", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.generate_only:
        generate(data_file(args.edges, args.max_chain), args.edges, args.max_chain, args.memory_limit)
        return
    if args.worker:
        path = data_file(args.edges, args.max_chain)
        if args.worker == "inc-prepare":
            inc_prepare_worker(args, path)
            return
        if args.worker == "sql":
            result = sql_worker(args, path)
        elif args.worker == "inc":
            result = inc_worker(args, path)
        elif args.worker == "full-all":
            result = full_all_worker(args, path)
        else:
            result = nx_worker(args, path, Path(args.labels_file))
        Path(args.result_file).write_text(json.dumps(result))
        return

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if "b" in methods:
        try:
            import networkx  # noqa: F401
        except ImportError:
            sys.exit("method (b) needs networkx: .venv/bin/pip install networkx (or --methods a)")
    path = ensure_data(args)
    meta = read_meta(path)
    console.print(f"duckdb {duckdb.__version__}, memory_limit={args.memory_limit}, "
                  f"threads={args.threads or 'default'}, cpus={os.cpu_count()}, load average "
                  f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())}", highlight=False)
    console.print(
        f"graph: {meta['edges']:,} edges, {meta['nodes']:,} identifiers; {meta['persons']:,} persons with "
        f"{meta['user_ids']:,} user_ids ({meta['single_user_id_persons']:,} with one), {meta['long_chains']:,} alias "
        f"chains of > 64 user_ids, longest {meta['longest_chain']:,}; edges by kind: "
        + ", ".join(f"{k} {v:,}" for k, v in meta["edges_by_kind"].items()), highlight=False)
    if args.explain:
        explain(path, args)
        return

    inc_meta = ensure_increment(args, path) if "c" in methods else None
    scratch = Path(tempfile.mkdtemp(prefix="identity_bench_"))
    nx_labels = scratch / "nx_labels.parquet"
    runs: dict[str, list[dict]] = {"a": [], "b": [], "c": [], "c_full": []}
    for rep in range(max(args.repeat if {"a", "c"} & set(methods) else 0, args.nx_repeat if "b" in methods else 0)):
        if "a" in methods and rep < args.repeat:
            r = run_child(args, "sql", scratch / f"a{rep}.json")
            runs["a"].append(r)
            console.print(f"  rep {rep + 1}/{args.repeat} (a) SQL       {r['wall']:6.2f} s  CPU {r['cpu']:6.2f} s  "
                          f"rounds {r['rounds']}  peak RSS {gb(r['rss'])}  others' CPU {r['others']:.0%}", highlight=False)
        if "b" in methods and rep < args.nx_repeat:
            r = run_child(args, "nx", scratch / f"b{rep}.json", nx_labels)
            runs["b"].append(r)
            console.print(f"  rep {rep + 1}/{args.nx_repeat} (b) networkx  {r['wall']:6.2f} s  CPU {r['cpu']:6.2f} s  "
                          f"(build {r['build']:.2f} s, components {r['components']:.2f} s)  "
                          f"peak RSS {gb(r['rss'])}  others' CPU {r['others']:.0%}", highlight=False)
        if "c" in methods and rep < args.repeat:
            r = run_child(args, "full-all", scratch / f"cf{rep}.json")
            runs["c_full"].append(r)
            console.print(f"  rep {rep + 1}/{args.repeat} (c) full, old + new edges  {r['wall']:6.2f} s  "
                          f"CPU {r['cpu']:6.2f} s  rounds {r['rounds']}  peak RSS {gb(r['rss'])}  "
                          f"others' CPU {r['others']:.0%}", highlight=False)
            r = run_child(args, "inc", scratch / f"c{rep}.json")
            runs["c"].append(r)
            console.print(f"  rep {rep + 1}/{args.repeat} (c) incremental          {r['wall']:6.2f} s  "
                          f"CPU {r['cpu']:6.2f} s  rounds {r['rounds']}  peak RSS {gb(r['rss'])}  "
                          f"others' CPU {r['others']:.0%}", highlight=False)

    if runs["a"] or runs["b"]:
        report(args, meta, runs)
    shares = [r["others"] for rs in runs.values() for r in rs]
    console.print(f"noise: other processes used {min(shares):.0%}–{max(shares):.0%} of the machine's "
                  f"{os.cpu_count()} cores during the runs (0% = quiet; this machine is shared)", highlight=False)
    if runs["a"] and runs["b"]:
        compare(path, nx_labels, meta)
    if runs["c"]:
        report_incremental(args, meta, inc_meta, runs)
        compare_incremental(path)
    for file in scratch.iterdir():
        file.unlink()
    scratch.rmdir()


def med(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def report(args, meta: dict, runs: dict[str, list[dict]]) -> None:
    n = meta["edges"]
    a, b = runs["a"], runs["b"]
    table = Table(title=f"connected components of {n:,} edges, {meta['nodes']:,} identifiers — median of "
                        f"{len(a)} (a) / {len(b)} (b), each run in a fresh process "
                        f"(shared 2-core machine: wall times are noisy, CPU s = process user+sys, steadier)")
    table.add_column("method")
    table.add_column("median s", justify="right")
    table.add_column("min–max s", justify="right")
    table.add_column("CPU s", justify="right")
    table.add_column("edges/s", justify="right")
    table.add_column("µs/edge", justify="right")
    table.add_column("peak RSS", justify="right")
    table.add_column("rounds", justify="right")
    if a:
        rounds = sorted({r["rounds"] for r in a})
        wall = med(a, "wall")
        table.add_row("(a) large-star/small-star in DuckDB", f"{wall:.2f}",
                      f"{min(r['wall'] for r in a):.2f}–{max(r['wall'] for r in a):.2f}", f"{med(a, 'cpu'):.2f}",
                      f"{n / wall / 1e6:.2f} M/s", f"{wall / n * 1e6:.2f}", gb(max(r["rss"] for r in a)),
                      "/".join(map(str, rounds)))
    if b:
        wall = med(b, "wall")
        table.add_row("(b) networkx: build nx.Graph + components", f"{wall:.2f}",
                      f"{min(r['wall'] for r in b):.2f}–{max(r['wall'] for r in b):.2f}", f"{med(b, 'cpu'):.2f}",
                      f"{n / wall / 1e6:.2f} M/s", f"{wall / n * 1e6:.2f}", gb(max(r["rss"] for r in b)), "—")
        table.add_row("    of which Arrow → Python ints", f"{med(b, 'convert'):.2f}", "", "", "", "", "", "", style="dim")
        table.add_row("    of which nx.Graph build (incl. the above)", f"{med(b, 'build'):.2f}", "",
                      f"{med(b, 'build_cpu'):.2f}", "", "", "", "", style="dim")
        table.add_row("    of which connected_components + labels", f"{med(b, 'components'):.2f}", "",
                      f"{med(b, 'components_cpu'):.2f}", "", "", "", "", style="dim")
    console.print(table)

    if a:
        steps = Table(title="(a) per step (median over runs, summed over rounds)")
        steps.add_column("")
        names = [p for p in PHASES if any(p in r["phases"] for r in a)]
        for name in names:
            steps.add_column(name, justify="right")
        for label, index in (("wall s", 0), ("CPU s", 1)):
            steps.add_row(label, *(f"{statistics.median(r['phases'].get(name, [0.0, 0.0])[index] for r in a):.2f}"
                                   for name in names))
        console.print(steps)

    checks = Table(title="targets")
    checks.add_column("check")
    checks.add_column("measured", justify="right")
    checks.add_column("target", justify="right")
    checks.add_column("", justify="center")

    def check(label: str, measured: str, target: str, ok: bool) -> None:
        checks.add_row(label, measured, target, "[green]ok[/green]" if ok else "[red]MISSED[/red]")

    if a:
        wall = med(a, "wall")
        limit = TARGET_SECONDS_5M * n / 5_000_000  # scaled linearly below/above 5M edges
        check(f"(a) median wall (target {TARGET_SECONDS_5M:.0f} s at 5M edges, scaled)", f"{wall:.2f} s",
              f"≤ {limit:.2f} s", wall <= limit)
        longest = meta["longest_chain"]
        bound = 2 * math.log2(longest) + 2
        worst = max(r["rounds"] for r in a)
        check(f"(a) rounds vs longest alias chain {longest:,} (log2 = {math.log2(longest):.2f})", f"{worst}",
              f"≤ 2·log2 + 2 = {bound:.1f}", worst <= bound)
    if a and b:
        check("(b) / (a) wall: faster than networkx", f"{med(b, 'wall') / med(a, 'wall'):.2f}×",
              f"≥ {TARGET_SPEEDUP}×", med(b, "wall") / med(a, "wall") >= TARGET_SPEEDUP)
        checks.add_row("(b) / (a) CPU (networkx is single-threaded, DuckDB uses every core)",
                       f"{med(b, 'cpu') / med(a, 'cpu'):.2f}×", "", "")
    console.print(checks)


def compare(path: Path, nx_labels: Path, meta: dict) -> None:
    with duckdb.connect(str(path), read_only=True) as con:
        con.execute(f"CREATE TEMP VIEW nx_labels AS SELECT * FROM read_parquet('{nx_labels}')")
        sql_summary = partition_summary(con, "main.cc_labels")
        nx_summary = partition_summary(con, "nx_labels")
        differing = con.execute(
            "SELECT count(*) FROM main.cc_labels AS s FULL JOIN nx_labels AS n USING (node) "
            "WHERE s.component IS DISTINCT FROM n.component").fetchone()[0]
    table = Table(title="partition: (a) vs (b)")
    table.add_column("")
    table.add_column("(a) SQL", justify="right")
    table.add_column("(b) networkx", justify="right")
    for key in ("nodes", "components", "largest"):
        table.add_row(key, f"{sql_summary[key]:,}", f"{nx_summary[key]:,}")
    for bucket in sorted(set(sql_summary["histogram"]) | set(nx_summary["histogram"])):
        table.add_row(f"components of {2 ** bucket:,}–{2 ** (bucket + 1) - 1:,} nodes",
                      f"{sql_summary['histogram'].get(bucket, 0):,}", f"{nx_summary['histogram'].get(bucket, 0):,}",
                      style="dim")
    console.print(table)
    same = (differing == 0 and sql_summary == nx_summary and sql_summary["nodes"] == meta["nodes"])
    console.print(("[green]same partition[/green]" if same else "[red]PARTITIONS DIFFER[/red]")
                  + f": every one of {sql_summary['nodes']:,} nodes checked, {differing:,} with a different "
                    f"component (min id)")


if __name__ == "__main__":
    main()
