"""Benchmark: identity stitching, a full run vs an incremental run on 1% new events.

    .venv/bin/python benchmarks/stitching.py --events 1000000
    .venv/bin/python benchmarks/stitching.py --events 10000000 --repeat 1

1. Data (cached under ``benchmarks/.data/``): ``python -m cdp_warehouse.demo FILE --events N``
   writes the demo's Segment-spec messages (end = now, rounded down to the hour; same seed,
   so the same data shifted in time), ``cdp_warehouse.collect.loader.load_files`` lands them
   into ``raw.events`` of a DuckDB file through a copy of the demo project (``cdp.yaml``,
   ``audiences/``, ``tracking_plan.yaml`` of the repository) with ``identity: {stitch: true}``.
   Then ~1% new messages are written to a JSONL file (see ``increment``): existing users
   continuing, existing visitors signing up, new visitors and users, second devices, shared
   devices, aliases, and late arrivals with old timestamps.
2. Per repetition, on a fresh copy of the landed file, in one process and one connection:
     (a) ``runner.run(..., as_of_1, full_refresh=True)``: the first, full stitching run;
     (b) the new messages are landed (``load_files``, not timed), then
         ``runner.run(..., as_of_2)``: an incremental run (only the new messages are read);
     (c) ``runner.run(..., as_of_2, full_refresh=True)``: a full rebuild on the same data as (b).
   ``identity_map``, ``_profile_keys`` and ``_anonymous_message_profiles`` of (b) and (c)
   must be equal (row for row).
3. Reports the identity step (``RunResult.seconds['identity']`` and the measured wall time of
   every statement the stitching runs, graph statements included), the whole run, the
   ratio full / incremental, peak RSS, and the identity statements that take the time.

See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import duckdb
import yaml
from bench_data import read_meta, with_duckdb_settings  # benchmarks/bench_data.py
from memory import gb, peak_rss_since_reset, reset_peak_rss  # benchmarks/memory.py
from rich.console import Console
from rich.table import Table
from sqlglot import exp

from cdp_warehouse.collect.loader import load_files
from cdp_warehouse.runner import RunResult, run
from cdp_warehouse.specs import ResolvedProject, load_project
from cdp_warehouse.warehouses import connect

DATA_DIR = HERE / ".data"
GENERATOR_VERSION = 1  # bump when the landed data or the increment change, to invalidate caches
TARGET_SPEEDUP = 10.0  # the issue: an incremental run on 1% new data ≥ 10× faster than a full one
COMPARED = ("identity_map", "_profile_keys", "_anonymous_message_profiles")
MODELS = "cdp"  # models schema of the demo project

# The ~1% new messages, by story (shares of their number). Each story emits a few messages;
# see increment().
STORIES = {
    "existing user continues": 0.50,  # browser (user + device) or backend (user only)
    "existing visitor browses": 0.09,  # anonymous only, a device seen before
    "existing visitor signs up": 0.05,  # new user_id on a known anonymous device
    "new visitor signs up": 0.15,  # new device, new user_id, email
    "new anonymous visitor": 0.07,  # a new device, anonymous pages only
    "second device of a user": 0.03,  # identify of a known user on a new device
    "shared device": 0.005,  # a known user on another known user's device
    "alias": 0.005,  # alias of a known user to another known user, or to a known device
    "late arrival": 0.08,  # an existing user's message with an old timestamp, landed now
}


# --------------------------------------------------------------------------- project


def write_project(root: Path, warehouse_path: Path) -> Path:
    """The repository's demo project with ``identity.stitch: true``, on ``warehouse_path``."""
    root.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((REPO / "cdp.yaml").read_text())
    config["warehouse"]["path"] = str(warehouse_path)
    config.setdefault("identity", {})["stitch"] = True
    (root / "cdp.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copytree(REPO / "audiences", root / "audiences", dirs_exist_ok=True)
    if config.get("tracking_plan"):
        shutil.copy(REPO / config["tracking_plan"], root / config["tracking_plan"])
    return root


def load_bench_project(root: Path, warehouse_path: Path, memory_limit: str | None,
                       threads: int | None) -> ResolvedProject:
    return with_duckdb_settings(load_project(write_project(root, warehouse_path), environ={}), memory_limit, threads)


# --------------------------------------------------------------------------- data


def data_file(n: int) -> Path:
    return DATA_DIR / f"stitching_{n}.duckdb"


def increment_file(n: int) -> Path:
    return DATA_DIR / f"stitching_{n}_increment.jsonl"


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds")


def increment(con: duckdb.DuckDBPyConnection, target: int, as_of_1: datetime, as_of_2: datetime,
              seed: int = 11) -> list[dict]:
    """~``target`` new Segment messages for the landed data, deterministic.

    New messages have timestamps in [as_of_1, as_of_2); late arrivals have a timestamp in the
    120 days before as_of_1 and are received after it (sentAt just before receivedAt, so the
    loader's clock correction keeps their old timestamp).
    """
    rng = random.Random(seed)
    # Existing identities, in a fixed order (the sampling below is seeded).
    users = con.execute("""
        SELECT user_id, arg_max(anonymous_id, "timestamp") FILTER (WHERE anonymous_id IS NOT NULL) AS device,
               max(traits ->> '$.email') AS email
        FROM raw.events WHERE user_id IS NOT NULL GROUP BY user_id ORDER BY user_id""").fetchall()
    visitors = [row[0] for row in con.execute("""
        SELECT anonymous_id FROM raw.events WHERE anonymous_id IS NOT NULL GROUP BY anonymous_id
        HAVING count(user_id) = 0 ORDER BY anonymous_id""").fetchall()]
    with_device = [u for u in users if u[1]]
    messages: list[dict] = []
    counter = [0]
    span = (as_of_2 - as_of_1).total_seconds() - 600

    def new_time() -> datetime:
        return as_of_1 + timedelta(seconds=rng.uniform(1, span))

    def uuid() -> str:
        h = f"{rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def emit(kind: str, at: datetime, *, user: str | None = None, device: str | None = None,
             late: bool = False, **body) -> None:
        counter[0] += 1
        if late:  # an offline device sends an old message now: sentAt just before receivedAt
            received = new_time()
            sent = received - timedelta(seconds=0.03)
        else:
            sent = at + timedelta(seconds=rng.uniform(0.01, 2.0))
            received = sent + timedelta(seconds=rng.uniform(0.02, 0.2))
        # The loader stores receivedAt - (sentAt - timestamp): `at` plus the network delay.
        message = {"messageId": f"bench-inc-{counter[0]:09d}", "type": kind, "timestamp": iso(at),
                   "sentAt": iso(sent), "receivedAt": iso(received),
                   "context": {"library": {"name": "analytics.js" if device else "analytics-python",
                                           "version": "4.1.0"}}}
        if user:
            message["userId"] = user
        if device:
            message["anonymousId"] = device
        message.update(body)
        messages.append(message)

    def track(event: str, at: datetime, **who) -> None:
        emit("track", at, event=event, properties={"source": "bench"}, **who)

    def page(name: str, at: datetime, **who) -> None:
        emit("page", at, name=name, properties={"path": "/" + name.lower()}, **who)

    new_users = [0]

    def new_user_id() -> str:
        new_users[0] += 1
        return f"u_new_{new_users[0]:07d}"

    budget = {story: max(1, round(target * share)) for story, share in STORIES.items()}
    produced = dict.fromkeys(STORIES, 0)

    def room(story: str) -> bool:
        return produced[story] < budget[story]

    while any(room(story) for story in STORIES):
        for story in STORIES:
            if not room(story):
                continue
            before = len(messages)
            at = new_time()
            if story == "existing user continues":
                user_id, device, _ = rng.choice(users)
                if device and rng.random() < 0.9:
                    for i in range(rng.randint(1, 5)):
                        when = at + timedelta(seconds=30 * i)
                        if rng.random() < 0.4:
                            page("Dashboard", when, user=user_id, device=device)
                        else:
                            track("Dashboard Viewed", when, user=user_id, device=device)
                else:
                    track("Payment Processed", at, user=user_id)
            elif story == "existing visitor browses":
                device = rng.choice(visitors)
                for i in range(rng.randint(1, 3)):
                    page("Pricing", at + timedelta(seconds=20 * i), device=device)
            elif story == "existing visitor signs up":
                device, user_id = rng.choice(visitors), new_user_id()
                page("Sign Up", at, device=device)
                emit("identify", at + timedelta(seconds=60), user=user_id, device=device,
                     traits={"email": f"{user_id}@bench.example", "plan": "free"})
                track("Signed Up", at + timedelta(seconds=61), user=user_id, device=device)
            elif story == "new visitor signs up":
                device, user_id = uuid(), new_user_id()
                page("Home", at, device=device)
                page("Sign Up", at + timedelta(seconds=30), device=device)
                emit("identify", at + timedelta(seconds=90), user=user_id, device=device,
                     traits={"email": f"{user_id}@bench.example", "plan": "free"})
                track("Signed Up", at + timedelta(seconds=91), user=user_id, device=device)
                for i in range(rng.randint(0, 3)):
                    track("Dashboard Viewed", at + timedelta(seconds=120 + 30 * i), user=user_id, device=device)
            elif story == "new anonymous visitor":
                device = uuid()
                for i in range(rng.randint(1, 4)):
                    page("Home", at + timedelta(seconds=20 * i), device=device)
            elif story == "second device of a user":
                user_id, _, email = rng.choice(users)
                device = uuid()
                emit("identify", at, user=user_id, device=device, traits={"email": email} if email else {})
                page("Dashboard", at + timedelta(seconds=2), user=user_id, device=device)
            elif story == "shared device":
                (user_id, _, _), (_, device, _) = rng.choice(users), rng.choice(with_device)
                track("Login", at, user=user_id, device=device)
            elif story == "alias":
                user_id = rng.choice(users)[0]
                if rng.random() < 0.5:  # two known accounts are merged
                    emit("alias", at, user=user_id, previousId=rng.choice(users)[0])
                else:  # a known visitor's device is aliased to a known user
                    emit("alias", at, user=user_id, previousId=rng.choice(visitors))
            elif story == "late arrival":
                user_id, device, _ = rng.choice(users)
                old = as_of_1 - timedelta(seconds=rng.uniform(3600, 120 * 86400))
                emit("track", old, user=user_id, device=device, late=True, event="Report Generated",
                     properties={"report_type": "usage"})
            produced[story] += len(messages) - before
    return messages


def generate(args, path: Path) -> None:
    """Demo events → JSONL (the demo CLI) → raw.events of ``path``; then the increment."""
    tmp = path.with_suffix(".tmp.duckdb")
    for stale in (tmp, Path(str(tmp) + ".wal")):
        stale.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    jsonl = path.with_suffix(".jsonl")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cdp_warehouse.demo", str(jsonl), "--events", str(args.events)],
                   check=True, cwd=REPO)
    generated = time.perf_counter() - started
    project = load_bench_project(args.project_root, tmp, args.memory_limit, args.threads)
    warehouse = connect(project)
    started = time.perf_counter()
    loaded = load_files(project, warehouse, [jsonl])
    landed = time.perf_counter() - started
    jsonl.unlink()  # ~0.6 GB per 1M events; the DuckDB file is the cache
    con = warehouse.connection
    # The demo's end is "now, rounded down to the hour": every timestamp is before it.
    latest = con.execute("SELECT max(received_at), max(\"timestamp\") FROM raw.events").fetchone()
    as_of_1 = (max(latest).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)).replace(tzinfo=UTC)
    as_of_2 = as_of_1 + timedelta(days=1)
    messages = increment(con, round(loaded.inserted * args.increment), as_of_1, as_of_2)
    with increment_file(args.events).open("w") as handle:
        for message in messages:
            handle.write(json.dumps(message, separators=(",", ":")) + "\n")
    con.execute("CREATE TABLE main.bench_meta AS SELECT ? AS version, ?::BIGINT AS events, ?::BIGINT AS landed, "
                "?::TIMESTAMP AS as_of_1, ?::TIMESTAMP AS as_of_2, ?::BIGINT AS increment, ?::DOUBLE AS share, "
                "?::DOUBLE AS generate_s, ?::DOUBLE AS land_s",
                [GENERATOR_VERSION, args.events, loaded.inserted, as_of_1.replace(tzinfo=None),
                 as_of_2.replace(tzinfo=None), len(messages), args.increment, generated, landed])
    con.execute("CHECKPOINT")
    warehouse.close()
    for stale in (path, Path(str(path) + ".wal")):
        stale.unlink(missing_ok=True)
    tmp.rename(path)


def ensure_data(args) -> dict:
    path = data_file(args.events)
    meta = read_meta(path)
    if (not args.regenerate and meta and meta["version"] == GENERATOR_VERSION and meta["share"] == args.increment
            and increment_file(args.events).exists()):
        return meta
    console.print(f"generating {args.events:,} demo events → {path.relative_to(REPO)} …")
    started = time.perf_counter()
    # In a child process, so the peak RSS reported below is the benchmark's alone.
    command = [sys.executable, __file__, "--generate-only", "--events", str(args.events),
               "--increment", str(args.increment), "--memory-limit", args.memory_limit]
    subprocess.run(command, check=True)
    meta = read_meta(path)
    console.print(f"generated in {time.perf_counter() - started:.1f} s (demo CLI {meta['generate_s']:.0f} s, "
                  f"landing {meta['land_s']:.0f} s; {path.stat().st_size / 1e9:.2f} GB on disk)")
    return meta


# --------------------------------------------------------------------------- measuring

GRAPH_NAMES = ("loose graph (merge_components)", "accounts (rule 1)", "floating groups (rule 3)")
_GRAPH_SCRATCH = ("_cc_edges", "_cc_large", "_cc_small", "_cc_roots", "_cc_done")


def target_of(statement) -> str:
    if isinstance(statement, str):
        return statement.split()[0].lower()
    if isinstance(statement, exp.Drop):  # exp.Drop(tables=[...]) has no `this`
        table = statement.find(exp.Table)
        return table.name if table else "?"
    if isinstance(statement, (exp.Create, exp.Insert, exp.Delete, exp.Update)):
        table = statement.this
        if isinstance(table, exp.Schema):
            table = table.this
        return table.name if isinstance(table, exp.Table) else "?"
    table = statement.find(exp.Table)
    return table.name if table else "?"


class Recorder:
    """Wraps ``execute``/``fetch`` of one warehouse instance: wall and CPU seconds of every
    statement, by run step (``on_step``) and, for the identity step, by statement."""

    def __init__(self, warehouse) -> None:
        self.warehouse = warehouse
        self.step = "setup"
        self.steps: dict[str, list[float]] = {}
        self.statements: dict[str, list[float]] = {}  # label -> [wall, cpu, count]
        self.graph = 0
        self.graph_open = False
        execute, fetch = warehouse.execute, warehouse.fetch

        def measured(method, verb):
            def wrapper(statement, parameters=None):
                label = self.label(statement, verb)
                wall, cpu = time.perf_counter(), time.process_time()
                try:
                    return method(statement, parameters)
                finally:
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    totals = self.steps.setdefault(self.step, [0.0, 0.0])
                    totals[0] += wall
                    totals[1] += cpu
                    if self.step == "identity":
                        totals = self.statements.setdefault(label, [0.0, 0.0, 0])
                        totals[0] += wall
                        totals[1] += cpu
                        totals[2] += 1
            return wrapper

        warehouse.execute, warehouse.fetch = measured(execute, "execute"), measured(fetch, "fetch")

    def on_step(self, name: str) -> None:
        self.step = name

    def label(self, statement, verb: str) -> str:
        name = target_of(statement)
        if name in _GRAPH_SCRATCH:
            # connected_components: its statements from the normalisation (CREATE _cc_edges)
            # to the drop of its scratch tables count as one line.
            if isinstance(statement, exp.Create) and name == "_cc_edges" and not self.graph_open:
                self.graph += 1
                self.graph_open = True
            if isinstance(statement, exp.Drop) and name == "_cc_done":
                self.graph_open = False
            index = self.graph - 1
            return "graph: " + (GRAPH_NAMES[index] if index < len(GRAPH_NAMES) else f"#{self.graph}") + \
                " — connected_components"
        if isinstance(statement, exp.Drop):
            return "drop scratch tables"
        if verb == "fetch":
            return f"fetch from {name}"
        kind = type(statement).__name__.lower() if not isinstance(statement, str) else "sql"
        return f"{kind} {name}"

    def close(self) -> None:
        del self.warehouse.execute, self.warehouse.fetch


@dataclasses.dataclass
class Measured:
    wall: float
    cpu: float
    rss: float | None
    identity: float  # wall of every statement run while the step was "identity"
    identity_cpu: float
    identity_reported: float  # RunResult.seconds["identity"]
    result: RunResult
    steps: dict[str, float]
    statements: dict[str, list[float]]


def timed_run(project: ResolvedProject, warehouse, as_of: datetime, full_refresh: bool) -> Measured:
    recorder = Recorder(warehouse)
    reset_peak_rss()
    started, cpu = time.perf_counter(), time.process_time()
    try:
        result = run(project, warehouse, as_of, on_step=recorder.on_step, full_refresh=full_refresh)
    finally:
        recorder.close()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    rss = peak_rss_since_reset()
    identity = recorder.steps.get("identity", [0.0, 0.0])
    return Measured(wall, cpu, rss, identity[0], identity[1], result.seconds.get("identity", 0.0), result,
                    dict(result.seconds), recorder.statements)


def compare(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, int, int]]:
    """Per table: (rows in (b), rows in (c), rows in one and not the other, as multisets)."""
    out = {}
    for table in COMPARED:
        inc, full = f"bench.inc_{table.lstrip('_')}", f"{MODELS}.{table}"
        differing = con.execute(f"SELECT (SELECT count(*) FROM (SELECT * FROM {inc} EXCEPT ALL SELECT * FROM {full})) "
                                f"+ (SELECT count(*) FROM (SELECT * FROM {full} EXCEPT ALL SELECT * FROM {inc}))").fetchone()[0]
        out[table] = (con.execute(f"SELECT count(*) FROM {inc}").fetchone()[0],
                      con.execute(f"SELECT count(*) FROM {full}").fetchone()[0], differing)
    return out


def scope(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, int]]:
    """What (b) re-stitched: the loose components its new messages touch, and every node,
    identifier occurrence (hit) and message in them, against the totals (after (b))."""
    row = con.execute(f"""
        WITH new_nodes AS (SELECT DISTINCT node FROM {MODELS}._identity_hits WHERE message_id LIKE 'bench-inc-%'),
        touched AS (SELECT DISTINCT component FROM {MODELS}._identity_nodes WHERE node IN (SELECT node FROM new_nodes)),
        scope AS (SELECT node FROM {MODELS}._identity_nodes WHERE component IN (SELECT component FROM touched))
        SELECT (SELECT count(*) FROM touched), (SELECT count(DISTINCT component) FROM {MODELS}._identity_nodes),
               (SELECT count(*) FROM scope), (SELECT count(*) FROM {MODELS}._identity_nodes),
               (SELECT count(*) FROM {MODELS}._identity_hits WHERE node IN (SELECT node FROM scope)),
               (SELECT count(*) FROM {MODELS}._identity_hits),
               (SELECT count(DISTINCT message_id) FROM {MODELS}._identity_hits WHERE node IN (SELECT node FROM scope)),
               (SELECT count(*) FROM {MODELS}._identity_messages)""").fetchone()
    return {"components": row[0:2], "identifiers": row[2:4], "hits": row[4:6], "messages": row[6:8]}


def changing_scope(con: duckdb.DuckDBPyConnection, as_of_1: datetime) -> dict[str, tuple[int, int]]:
    """An estimate, for the findings: the new messages that can change a rule's outcome in
    their component (a new identifier, two components joined, an alias, a late arrival, a
    first user id for a floating identifier, a message linking floating identifiers), and
    the messages of the components they touch. New messages of other components only add
    later occurrences of known identifiers: rules 1-4 and 6 pick the earliest, so only rule
    5 (the message's own profile) applies to them. ``bench.nodes_before`` holds the loose
    components before (b)."""
    row = con.execute(f"""
        WITH new AS (SELECT * FROM {MODELS}._identity_hits WHERE message_id LIKE 'bench-inc-%'),
        old AS (SELECT * FROM {MODELS}._identity_hits WHERE message_id NOT LIKE 'bench-inc-%'),
        owned_before AS (SELECT DISTINCT node FROM old
                         WHERE message_id IN (SELECT message_id FROM old WHERE id_type = 'user_id')),
        msg AS (
            SELECT n.message_id, bool_or(n.id_type = 'user_id') AS has_user, bool_or(n.message_type = 'alias') AS alias,
                   min(n.ts) AS ts, bool_or(b.node IS NULL) AS new_node, count(DISTINCT b.component) AS pre_components,
                   count(DISTINCT CASE WHEN n.id_type <> 'user_id' THEN n.node END) AS non_user,
                   bool_or(n.id_type <> 'user_id' AND o.node IS NULL) AS unowned
            FROM new AS n LEFT JOIN bench.nodes_before AS b ON b.node = n.node
            LEFT JOIN owned_before AS o ON o.node = n.node GROUP BY n.message_id),
        changing AS (SELECT message_id FROM msg WHERE new_node OR pre_components > 1 OR alias OR ts < ?
                     OR (has_user AND unowned) OR (NOT has_user AND non_user > 1)),
        comp AS (SELECT DISTINCT d.component FROM new AS h JOIN {MODELS}._identity_nodes AS d ON d.node = h.node
                 WHERE h.message_id IN (SELECT message_id FROM changing)),
        scope AS (SELECT node FROM {MODELS}._identity_nodes WHERE component IN (SELECT component FROM comp))
        SELECT (SELECT count(*) FROM changing), (SELECT count(*) FROM msg), (SELECT count(*) FROM comp),
               (SELECT count(DISTINCT component) FROM {MODELS}._identity_nodes),
               (SELECT count(DISTINCT message_id) FROM {MODELS}._identity_hits WHERE node IN (SELECT node FROM scope)),
               (SELECT count(*) FROM {MODELS}._identity_messages)""", [as_of_1]).fetchone()
    return {"new messages": row[0:2], "components": row[2:4], "messages": row[4:6]}


def repetition(args, meta: dict, rep: int) -> dict:
    """(a), landing, (b), (c) on a fresh copy of the landed data."""
    work = data_file(args.events).with_suffix(".work.duckdb")
    for stale in (work, Path(str(work) + ".wal")):
        stale.unlink(missing_ok=True)
    shutil.copy(data_file(args.events), work)
    project = load_bench_project(args.project_root, work, args.memory_limit, args.threads)
    warehouse = connect(project)
    con = warehouse.connection
    con.execute("SELECT count(*), max(message_id), max(user_id), max(anonymous_id), max(previous_id), "
                "max(\"timestamp\"), max(length(traits::VARCHAR)), max(length(context::VARCHAR)) "
                "FROM raw.events").fetchall()  # warm-up, not timed
    as_of_1 = meta["as_of_1"].replace(tzinfo=UTC)
    as_of_2 = meta["as_of_2"].replace(tzinfo=UTC)
    out: dict = {}
    out["a"] = timed_run(project, warehouse, as_of_1, full_refresh=True)
    show(rep, "(a) full, first run", out["a"])
    con.execute("CREATE SCHEMA IF NOT EXISTS bench")
    con.execute(f"CREATE OR REPLACE TABLE bench.nodes_before AS SELECT node, component FROM {MODELS}._identity_nodes")
    started = time.perf_counter()
    loaded = load_files(project, warehouse, [increment_file(args.events)])
    out["landed"] = (loaded.inserted, time.perf_counter() - started)
    out["b"] = timed_run(project, warehouse, as_of_2, full_refresh=False)
    show(rep, "(b) incremental", out["b"])
    out["scope"] = scope(con)
    out["changing"] = changing_scope(con, meta["as_of_1"])
    for table in COMPARED:
        con.execute(f"CREATE OR REPLACE TABLE bench.inc_{table.lstrip('_')} AS SELECT * FROM {MODELS}.{table}")
    out["c"] = timed_run(project, warehouse, as_of_2, full_refresh=True)
    show(rep, "(c) full rebuild", out["c"])
    out["compare"] = compare(con)
    out["profiles"] = {k: out[k].result.profiles for k in "abc"}
    warehouse.close()
    if not args.keep:
        for stale in (work, Path(str(work) + ".wal")):
            stale.unlink(missing_ok=True)
    return out


def show(rep: int, label: str, m: Measured) -> None:
    console.print(f"  rep {rep + 1} {label:22} run {m.wall:7.2f} s (CPU {m.cpu:6.2f})  identity {m.identity:7.2f} s "
                  f"(RunResult {m.identity_reported:6.2f})  rebuilt={m.result.identity_rebuilt}  "
                  f"messages {m.result.messages_stitched:,}  peak RSS {gb(m.rss)}", highlight=False)


# --------------------------------------------------------------------------- report

console = Console(width=max(132, Console().width))


def med(values) -> float:
    return statistics.median(list(values))


def report(args, meta: dict, reps: list[dict], load: tuple[float, float]) -> None:
    labels = {"a": "(a) full, first run", "b": "(b) incremental", "c": "(c) full rebuild"}
    table = Table(title=f"identity stitching on {meta['landed']:,} demo events (+{meta['increment']:,} new) — median of "
                        f"{len(reps)} (shared 2-core machine: wall times are noisy; CPU s = process user+sys)")
    for column in ("run", "identity s", "identity CPU s", "RunResult identity s", "whole run s", "whole run CPU s",
                   "messages stitched", "rounds", "profiles", "peak RSS"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for key, label in labels.items():
        runs = [r[key] for r in reps]
        table.add_row(label, f"{med(m.identity for m in runs):.2f}", f"{med(m.identity_cpu for m in runs):.2f}",
                      f"{med(m.identity_reported for m in runs):.2f}", f"{med(m.wall for m in runs):.2f}",
                      f"{med(m.cpu for m in runs):.2f}", f"{runs[0].result.messages_stitched:,}",
                      f"{runs[0].result.rounds}", f"{runs[0].result.profiles:,}", gb(max(m.rss or 0 for m in runs)))
    console.print(table)

    steps = Table(title="per step, wall s (median; RunResult.seconds — identity there excludes graph statements and counts)")
    names = list(dict.fromkeys(name for r in reps for key in "abc" for name in r[key].steps))
    steps.add_column("run")
    for name in names:
        steps.add_column(name, justify="right")
    for key, label in labels.items():
        steps.add_row(label, *(f"{med(r[key].steps.get(name, 0.0) for r in reps):.2f}" for name in names))
    console.print(steps)

    ratios = Table(title="full / incremental (medians)")
    ratios.add_column("ratio")
    ratios.add_column("identity (measured)", justify="right")
    ratios.add_column("identity CPU", justify="right")
    ratios.add_column("identity (RunResult)", justify="right")
    ratios.add_column("whole run", justify="right")
    ratios.add_column("target", justify="right")
    for top, label in (("c", "(c) rebuild / (b) incremental, same data"), ("a", "(a) first run / (b) incremental")):
        def ratio(attribute: str, top: str = top) -> float:
            return med(getattr(r[top], attribute) for r in reps) / med(getattr(r["b"], attribute) for r in reps)
        identity = ratio("identity")
        ok = identity >= TARGET_SPEEDUP
        ratios.add_row(label, f"{identity:.1f}×", f"{ratio('identity_cpu'):.1f}×", f"{ratio('identity_reported'):.1f}×",
                       f"{ratio('wall'):.1f}×",
                       f"≥ {TARGET_SPEEDUP:.0f}× " + ("[green]ok[/green]" if ok else "[red]MISSED[/red]")
                       if top == "c" else "")
    console.print(ratios)

    # Where the identity step's time goes: every statement, by target table (graph
    # statements as one line per connected_components call), sorted by (b)'s wall time.
    labels_all = list(dict.fromkeys(label for r in reps for key in "abc" for label in r[key].statements))

    def stat(key: str, label: str, index: int) -> float:
        return med(r[key].statements.get(label, [0.0, 0.0, 0])[index] for r in reps)

    labels_all.sort(key=lambda label: -stat("b", label, 0))
    # The top statements of (b), and those of (c) the full rebuild spends most on.
    top_full = sorted(labels_all, key=lambda label: -stat("c", label, 0))[: max(3, args.top // 3)]
    shown = [label for label in labels_all if label in labels_all[: args.top] or label in top_full]
    breakdown = Table(title="identity step by statement (wall s, median; sorted by (b); "
                            "graph statements: one line per connected_components call)")
    breakdown.add_column("statement (target table)")
    for column in ("(a) full", "(c) rebuild", "(b) incr.", "(b) CPU", "(b) share", "(b) count"):
        breakdown.add_column(column, justify="right")
    total_b = med(r["b"].identity for r in reps)
    for label in shown:
        breakdown.add_row(label, f"{stat('a', label, 0):.3f}", f"{stat('c', label, 0):.3f}", f"{stat('b', label, 0):.3f}",
                          f"{stat('b', label, 1):.3f}", f"{stat('b', label, 0) / total_b:.0%}", f"{int(stat('b', label, 2))}")
    rest = [label for label in labels_all if label not in shown]
    if rest:
        breakdown.add_row(f"… {len(rest)} more", *(f"{sum(stat(k, label, 0) for label in rest):.3f}" for k in "acb"),
                          f"{sum(stat('b', label, 1) for label in rest):.3f}",
                          f"{sum(stat('b', label, 0) for label in rest) / total_b:.0%}", "", style="dim")
    console.print(breakdown)

    scoped = reps[-1]["scope"]
    console.print("(b) re-stitched the loose components its new messages touch: " + ", ".join(
        f"{name} {part:,} of {total:,} ({part / total:.1%})" for name, (part, total) in scoped.items()), highlight=False)
    console.print("  estimate, of those the components where a new message can change a rule's outcome (new "
                  "identifier, join, alias, late arrival, first user id of a floating identifier): " + ", ".join(
        f"{name} {part:,} of {total:,} ({part / total:.1%})" for name, (part, total) in reps[-1]["changing"].items()),
        highlight=False)

    checks = Table(title="(b) incremental vs (c) full rebuild, same data")
    checks.add_column("table")
    checks.add_column("rows (b)", justify="right")
    checks.add_column("rows (c)", justify="right")
    checks.add_column("rows differing", justify="right")
    same = True
    for table_name in COMPARED:
        inc_rows, full_rows, differing = reps[-1]["compare"][table_name]
        same = same and differing == 0 and all(r["compare"][table_name][2] == 0 for r in reps)
        checks.add_row(table_name, f"{inc_rows:,}", f"{full_rows:,}", f"{differing:,}")
    console.print(checks)
    console.print("[green]equal[/green]: incremental = full rebuild on every compared table" if same
                  else "[red]DIFFERENT[/red]: the incremental run does not equal the full rebuild")
    inserted, seconds = reps[0]["landed"]
    console.print(f"new messages landed before (b): {inserted:,} in {seconds:.1f} s (not timed); "
                  f"as-of 1 {meta['as_of_1']:%Y-%m-%d %H:%M}, as-of 2 {meta['as_of_2']:%Y-%m-%d %H:%M}; "
                  f"load average before/after {load[0]:.2f}/{load[1]:.2f} (2 cores: above ~0.5 others are busy)",
                  highlight=False)


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="demo events (default 1M; 10M for the large run)")
    parser.add_argument("--increment", type=float, default=0.01, help="new messages as a share of the landed (0.01)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of (a), (b), (c) (median reported)")
    parser.add_argument("--memory-limit", default="8GB", help="DuckDB memory_limit (default 8GB)")
    parser.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")
    parser.add_argument("--top", type=int, default=15, help="identity statements shown in the breakdown")
    parser.add_argument("--regenerate", action="store_true", help="rebuild the cached data")
    parser.add_argument("--keep", action="store_true", help="keep the work copy (benchmarks/.data/*.work.duckdb)")
    parser.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    # The demo project, copied with `stitch: true` (cdp.yaml is rewritten per warehouse file).
    with tempfile.TemporaryDirectory(prefix="stitching_project_") as root:
        args.project_root = Path(root)
        bench(args)


def bench(args) -> None:
    if args.generate_only:
        generate(args, data_file(args.events))
        return
    meta = ensure_data(args)
    console.print(f"duckdb {duckdb.__version__}, memory_limit={args.memory_limit}, threads={args.threads or 'default'}, "
                  f"cpus={os.cpu_count()}, {meta['landed']:,} events landed, {meta['increment']:,} new "
                  f"({meta['increment'] / meta['landed']:.2%}), load average "
                  f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())}", highlight=False)
    load_before = os.getloadavg()[0]
    reps = [repetition(args, meta, rep) for rep in range(args.repeat)]
    report(args, meta, reps, (load_before, os.getloadavg()[0]))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux; reset with VmHWM
    peaks = [r[k].rss or 0 for r in reps for k in "abc"]
    console.print(f"peak RSS of this process: {gb(max([peak, *peaks]))} (data generation runs in a child process, "
                  "not counted)")


if __name__ == "__main__":
    main()
