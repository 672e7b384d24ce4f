"""Benchmark: `cdp sync` of a 1M-member audience to a fake Braze, then again after 1% changed.

    .venv/bin/python benchmarks/sync.py                          # 1M members, 1,500 requests / 3 s
    .venv/bin/python benchmarks/sync.py --members 100000         # quick (~20 s)
    .venv/bin/python benchmarks/sync.py --members 200000 --rate-limit 900 [--no-pace]
                                       # a limit our side can keep up with; --no-pace: the client
                                       # without pacing (burst, then wait for X-RateLimit-Reset)

1. Builds a scratch project under ``benchmarks/.data/sync/``: ``cdp.yaml`` with a Braze
   destination read from environment variables, one audience ``active`` mirrored to Braze
   (``membership: {attribute: active}``, three mapped traits), and a DuckDB file whose
   ``cdp.profiles``, ``cdp.profile_traits`` and ``cdp.audience_members`` are generated with
   SQL over ``range()`` in the shapes ``cdp run`` writes (N members among 1.25 N profiles),
   instead of going through N events and ``cdp run``.
2. Starts ``tests/fakes/braze.py``'s ``FakeBraze`` in a **separate process** (so that its
   request handling does not share our GIL; it counts requests instead of keeping them, and
   answers ``GET /_bench/stats``), first without a rate limit to measure what the fake
   itself serves on this machine, then with ``--rate-limit`` requests per ``--window``
   seconds. Braze allows 3,000 ``/users/track`` requests per 3 s; the fake serves ~850/s on
   the 2-core machine, so the default is 1,500 per 3 s. The fake's sockets get TCP_NODELAY
   (see ``serve_fake``: without it every answer stalls ~40 ms; ``--fake-nagle`` to see it).
3. Times, in this process, ``cdp_warehouse.sync.engine.sync`` (what ``cdp sync`` calls):
   - the diff alone (``CREATE TEMP TABLE _sync_changes AS <diff.changes(...)>``, median of
     ``--repeat``) with an empty ``sync_state`` and with N rows in it after ``--changed``
     of the members changed a trait;
   - run 1: the full sync of N members (every row ``added``);
   - run 2: after ``UPDATE cdp.profile_traits`` of ``--changed`` (1%) of the members;
   - run 3: nothing changed (no request expected).
   Engine steps are timed by wrapping a few of its methods from here (``--no-probes`` to
   leave them alone); nothing under ``cdp_warehouse/`` is changed.
4. Reports rows/s, requests (ours and the fake's), 429s, the achieved request rate against
   the configured limit per rate-limit window, where the time went, and the issue's targets.

See benchmarks/README.md for what the figures mean.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import math
import os
import statistics
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".data" / "sync"
sys.path.insert(0, str(REPO))

from rich.console import Console
from rich.table import Table
from sync_support import FakeProcess, own_cpu
from sync_support import build_project as build_project_in

console = Console(highlight=False, width=130)

AUDIENCE, DESTINATION = "active", "braze"
API_KEY = "bench-braze-key"
BRAZE_MAX_OBJECTS = 75
DIFF_TARGET_SECONDS = 5.0  # the issue: diff of 1M rows under 5 s on DuckDB (scaled linearly)
RATE_TARGET = 0.90  # the issue: >= 90% of the fake's configured rate limit
# Braze allows 3,000 /users/track requests per 3 s; the fake serves ~850 req/s on the 2-core
# machine (one core at most: its GIL), so the default asks for half of Braze's rate.
DEFAULT_RATE_LIMIT = 1500

CDP_YAML = """\
name: sync_bench
warehouse:
  type: duckdb
  path: data/bench.duckdb
destinations:
  braze:
    type: braze
    rest_endpoint: ${{BRAZE_REST_ENDPOINT}}
    api_key: ${{BRAZE_API_KEY}}
    concurrency: {concurrency}
"""

# The traits only give `profile_traits` its columns: the tables are generated, not computed.
AUDIENCES_YAML = """\
traits:
  - name: plan
    trait: {trait: plan}
  - name: reports
    count: {event: Report}
  - name: revenue
    sum: {event: Order Completed, property: amount}
audiences:
  - name: active
    title: Active users
    where: "reports >= 1"
    sync:
      - to: braze
        mode: mirror
        membership: {attribute: active}
        fields: {plan: plan, reports: reports, revenue: revenue}
"""


# --------------------------------------------------------------------------- the fake, in its own process


def serve_fake(rate_limit: int, window: float, nagle: bool = False) -> None:
    """``--serve-fake``: a FakeBraze that counts instead of keeping every request, plus
    ``GET /_bench/stats`` and ``POST /_bench/reset``; prints its URL, serves until stdin closes."""
    from tests.fakes import server
    from tests.fakes.braze import TRACK_PATH, FakeBraze
    from tests.fakes.server import Response

    # The fake writes a response's headers and body in two send()s; without TCP_NODELAY the
    # body waits for the client's delayed ACK of the headers: ~40 ms per request, ~25
    # requests/s per connection. A real API does not stall like that.
    server._Handler.disable_nagle_algorithm = not nagle

    class BenchBraze(FakeBraze):
        def __init__(self) -> None:
            super().__init__(api_key=API_KEY, rate_limit=rate_limit, window_seconds=window)
            self._slot = threading.local()
            self._reset_counts()

        def _reset_counts(self) -> None:
            self.statuses: dict[int, int] = {}
            self.objects = 0  # attribute objects in accepted requests
            self.first = self.last = None  # monotonic: first request in, last answer out
            self.windows: list[list[float]] = []  # [start, accepted, other statuses, last answer]

        def handle(self, request):
            if request.path == "/_bench/stats":
                with self._lock:
                    return Response(200, {"statuses": self.statuses, "objects": self.objects, "first": self.first,
                                          "last": self.last, "windows": self.windows, "users": len(self._users),
                                          "data_points": self._data_points, "limit": self.rate_limit,
                                          "window_seconds": self.window_seconds})
            if request.path == "/_bench/reset":
                with self._lock:
                    self._reset_counts()
                    self._window_end, self._window_count = 0.0, 0  # the next request opens a window
                return Response(200, {})
            with self._lock:
                if self.first is None:
                    self.first = time.monotonic()
            self._slot.window = None
            response = super().handle(request)
            window = self._slot.window  # the window this request was counted in
            if window is not None:
                with self._lock:
                    window[1 if response.status == 201 else 2] += 1
                    window[3] = time.monotonic()
            return response

        def _take_rate_slot(self) -> bool:
            with self._lock:
                allowed = super()._take_rate_slot()
                self._slot.window = self.windows[-1]
                return allowed

        def finalize(self, request, response) -> None:
            if not request.path.startswith("/_bench/"):  # bookkeeping calls must not open windows
                super().finalize(request, response)

        def _roll_window(self) -> None:
            now = time.time()
            if now >= self._window_end:
                self.windows.append([time.monotonic(), 0, 0, 0.0])
            super()._roll_window()

        def _record(self, request) -> None:
            """Count instead of keeping the request (1M rows are ~13k requests of ~6 KB)."""
            if request.path != TRACK_PATH:
                return
            with self._answered:
                self.statuses[request.status] = self.statuses.get(request.status, 0) + 1
                self.last = time.monotonic()
                if request.status == 201:
                    self.objects += len(request.body.get("attributes", []))

    fake = BenchBraze().start()
    print(fake.url, flush=True)
    sys.stdin.read()  # the parent closes our stdin (or dies): stop
    fake.stop()


class Fake(FakeProcess):
    """The fake Braze subprocess, seen from here."""

    def __init__(self, rate_limit: int, window: float, nagle: bool = False) -> None:
        super().__init__(__file__, ["--rate-limit", str(rate_limit), "--window", str(window),
                                    *(["--fake-nagle"] if nagle else [])], "Braze")


def busy_seconds() -> float:
    """CPU seconds all processes have used on this machine (every core), from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return math.nan
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Meter:
    """Wall, our CPU, the fake's CPU and the other processes' share of the machine over a span."""

    def __init__(self, fake: Fake) -> None:
        self.fake = fake
        self.wall, self.cpu, self.fake_cpu, self.busy = time.perf_counter(), own_cpu(), fake.cpu(), busy_seconds()

    def stop(self) -> dict:
        wall = time.perf_counter() - self.wall
        cpu, fake_cpu = own_cpu() - self.cpu, self.fake.cpu() - self.fake_cpu
        others = (busy_seconds() - self.busy - cpu - fake_cpu) / (wall * (os.cpu_count() or 1))
        return {"wall": wall, "cpu": cpu, "fake_cpu": fake_cpu, "others": max(0.0, others)}


# --------------------------------------------------------------------------- fake capacity


def capacity(concurrency: int, requests: int, nagle: bool = False) -> dict:
    """Requests/s the fake serves with no rate limit: pre-built bodies of 75 attribute
    objects shaped like the sync's, new users every time, ``concurrency`` keep-alive
    connections (``http.client``, so that the client costs little)."""
    fake = Fake(rate_limit=10**9, window=3600.0, nagle=nagle)
    try:
        bodies = []
        for r in range(requests):
            attributes = [{"external_id": f"cap{r * BRAZE_MAX_OBJECTS + i:09d}", "plan": "pro", "reports": 3 + i,
                           "revenue": 12.5 + i, "active": True} for i in range(BRAZE_MAX_OBJECTS)]
            bodies.append(json.dumps({"attributes": attributes}).encode())
        headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        statuses: list[int] = []

        def client(share: list[bytes]) -> None:
            connection = http.client.HTTPConnection(fake.host, fake.port, timeout=60)
            for body in share:
                connection.request("POST", "/users/track", body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                statuses.append(response.status)
            connection.close()

        threads = [threading.Thread(target=client, args=(bodies[i::concurrency],)) for i in range(concurrency)]
        meter = Meter(fake)
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        measured = meter.stop()
        ok = sum(1 for status in statuses if status == 201)
        return {**measured, "requests": len(statuses), "ok": ok, "rate": ok / measured["wall"],
                "body_kb": statistics.mean(len(b) for b in bodies) / 1024}
    finally:
        fake.stop()


# --------------------------------------------------------------------------- data


def change_sql(every: int) -> str:
    """One member in ``every`` reports one more (its payload hash changes)."""
    return (f"UPDATE cdp.profile_traits SET reports = reports + 1 "
            f"WHERE reports >= 1 AND CAST(substr(profile_id, 2) AS BIGINT) % {every} = 7 % {every}")


def build_project(args) -> Path:
    return build_project_in(WORK, CDP_YAML.format(concurrency=args.concurrency), AUDIENCES_YAML, args.members)


# --------------------------------------------------------------------------- timing inside the engine


class Probes:
    """Wall seconds spent in a few engine functions, by name, over all threads (wrapping the
    classes' methods from here: nothing under cdp_warehouse/ is edited)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()
        self.undo: list = []

    def wrap(self, owner, attribute: str, name) -> None:
        """Time ``owner.attribute`` under ``name``: a string, or a function of the call's
        arguments giving the name, or None for calls not to time."""
        original = getattr(owner, attribute)
        probes = self

        def timed(*a, **k):
            label = name(*a, **k) if callable(name) else name
            if label is None:
                return original(*a, **k)
            started = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                spent = time.perf_counter() - started
                with probes.lock:
                    probes.seconds[label] = probes.seconds.get(label, 0.0) + spent
                    probes.calls[label] = probes.calls.get(label, 0) + 1

        setattr(owner, attribute, timed)
        self.undo.append((owner, attribute, original))

    def restore(self) -> None:
        for owner, attribute, original in reversed(self.undo):
            setattr(owner, attribute, original)
        self.undo.clear()

    def take(self) -> dict[str, tuple[float, int]]:
        with self.lock:
            out = {name: (self.seconds[name], self.calls[name]) for name in self.seconds}
            self.seconds.clear()
            self.calls.clear()
        return out


def statement_kind(sql: str) -> str:
    head = sql[:80].upper()
    for prefix, kind in (("BEGIN", "BEGIN"), ("COMMIT", "COMMIT"), ("SELECT COUNT(*)", "count(*) around the INSERT")):
        if head.startswith(prefix):
            return kind
    if head.startswith(("DELETE", "INSERT")):
        table = "sync_state" if "SYNC_STATE" in head else "sync_rejections" if "SYNC_REJECTIONS" in head else "?"
        return f"{head.split()[0]} {table}"
    return "other"


def install_probes() -> Probes:
    """The job thread's steps: the diff statement, fetching the changes as Arrow, writing
    results back (``_Run._record``), building requests; the senders' ``Braze.send`` (HTTP +
    answer parsing, on ``concurrency`` threads)."""
    from sqlglot import exp

    from cdp_warehouse.sync import engine
    from cdp_warehouse.sync.destinations.braze import Braze
    from cdp_warehouse.warehouses.base import Warehouse
    from cdp_warehouse.warehouses.duckdb import DuckDBWarehouse

    probes = Probes()

    def diff_statement(self, statement, *rest, **kw) -> str | None:
        if isinstance(statement, exp.Create) and statement.this.name == engine.CHANGES.name:
            return "diff (CREATE TEMP TABLE _sync_changes)"
        return None

    def changes_fetch(self, query, *rest, **kw) -> str | None:
        if isinstance(query, exp.Select) and bool(query.args.get("order")) \
                and engine.CHANGES.name in {table.name for table in query.find_all(exp.Table)}:
            return "fetch changes as Arrow"
        return None

    probes.wrap(DuckDBWarehouse, "execute", diff_statement)
    probes.wrap(DuckDBWarehouse, "fetch_arrow", changes_fetch)
    # inside _record (a thread-local flag): its statements by kind, SQL rendering, key lists
    inside = threading.local()

    def in_record(label: str):
        return lambda *a, **k: label if getattr(inside, "on", False) else None

    probes.wrap(DuckDBWarehouse, "_cursor", lambda self, sql, *a, **k: (
        f"  _record: {statement_kind(sql)}" if getattr(inside, "on", False) else None))
    probes.wrap(Warehouse, "render", in_record("  _record: render SQL (sqlglot)"))
    # _keys_in moved from a method of _Run to a module function of the engine
    probes.wrap(engine._Run if hasattr(engine._Run, "_keys_in") else engine, "_keys_in",
                in_record("  _record: build key IN lists (sqlglot)"))
    probes.wrap(engine._Run, "_record", "write results back (_record)")
    record = engine._Run._record

    def flagged(*a, **k):
        inside.on = True
        try:
            return record(*a, **k)
        finally:
            inside.on = False

    engine._Run._record = flagged
    probes.undo.append((engine._Run, "_record", record))
    probes.wrap(Braze, "requests", "build requests (Braze.requests)")
    probes.wrap(Braze, "send", "send (Braze.send, sender threads)")
    return probes


# --------------------------------------------------------------------------- runs


def time_diff(project, warehouse, repeat: int) -> tuple[list[float], list[float], int]:
    """``CREATE TEMP TABLE _sync_changes AS <diff>`` as the engine runs it, on its own connection:
    wall and CPU seconds of each repetition (CPU: this process, all DuckDB threads), changes found."""
    from sqlglot import exp

    from cdp_warehouse.sync import diff, engine
    from cdp_warehouse.warehouses.base import create_as

    spec = next(s for s in project.audiences[AUDIENCE].spec.sync if s.to == DESTINATION)
    engine.ensure_tables(project, warehouse)
    connection = warehouse.duplicate()
    times, cpus = [], []
    try:
        for _ in range(repeat):
            statement = create_as(engine.CHANGES.copy(), diff.changes(project, AUDIENCE, DESTINATION, spec,
                                                                       removals=True, full_resync=False),
                                  temporary=True)
            started, cpu = time.perf_counter(), own_cpu()
            connection.execute(statement)
            times.append(time.perf_counter() - started)
            cpus.append(own_cpu() - cpu)
            rows = connection.fetch(exp.select(exp.Count(this=exp.Star())).from_(engine.CHANGES.copy()))[0][0]
            connection.execute(exp.Drop(tables=[engine.CHANGES.copy()], kind="TABLE", exists=True))
    finally:
        connection.close()
    return times, cpus, rows


def sync_once(project, warehouse, fake: Fake, environ: dict, probes: Probes | None) -> dict:
    from cdp_warehouse.sync.engine import jobs, sync

    fake.reset()
    meter = Meter(fake)
    started = time.monotonic()
    [outcome] = sync(project, warehouse, jobs(project, [AUDIENCE], [DESTINATION]), environ=environ)
    ended = time.monotonic()
    measured = meter.stop()
    stats = fake.stats()
    if outcome.status != "success":
        console.print(f"[red]sync {outcome.status}: {outcome.error} ({outcome.hint})[/]")
    return {**measured, "outcome": outcome, "stats": stats, "started": started, "ended": ended,
            "probes": probes.take() if probes else {}}


def rate_figures(run: dict) -> dict:
    """Achieved request rate vs the configured limit. Over the send phase (first request in
    to last answer out), and in steady state: accepted requests of every window but the last
    over the time from the first window's start to the last window's start (gaps between
    windows count: that is where a client that waits too long loses throughput)."""
    stats = run["stats"]
    limit_rate = stats["limit"] / stats["window_seconds"]
    accepted = stats["statuses"].get("201", 0)
    out = {"limit_rate": limit_rate, "accepted": accepted, "send": None, "send_rate": None, "steady": None,
           "full_windows": 0, "gaps": []}
    if stats["first"] is None:
        return out
    send = stats["last"] - stats["first"]
    out["send"], out["send_rate"] = send, accepted / send if send else None
    windows = stats["windows"]
    if len(windows) >= 2:
        span = windows[-1][0] - windows[0][0]
        out["steady"] = sum(w[1] for w in windows[:-1]) / span
        out["full_windows"] = len(windows) - 1
        out["gaps"] = [b[0] - (a[0] + stats["window_seconds"]) for a, b in itertools.pairwise(windows)]
        out["per_window"] = [int(w[1]) for w in windows]
    return out


# --------------------------------------------------------------------------- report


def run_row(table: Table, label: str, run: dict) -> None:
    o, stats = run["outcome"], run["stats"]
    rows = o.added + o.changed + o.removed
    table.add_row(label, f"{rows:,}", f"{o.added:,}/{o.changed:,}/{o.removed:,}", f"{o.requests:,}",
                  f"{stats['statuses'].get('201', 0):,}", f"{o.throttled:,}", f"{stats['objects']:,}",
                  f"{run['wall']:.2f}", f"{rows / run['wall']:,.0f}" if rows else "—",
                  f"{run['cpu']:.1f}", f"{run['fake_cpu']:.1f}", f"{run['others']:.0%}")


def report(args, cap: dict | None, diffs: dict, runs: dict) -> None:
    n = args.members
    if cap:
        console.print(f"fake capacity (no rate limit, {cap['requests']:,} requests of 75 objects, "
                      f"{cap['body_kb']:.1f} KB, {args.concurrency} connections): [bold]{cap['rate']:,.0f} req/s[/] "
                      f"({cap['rate'] * 75:,.0f} rows/s); fake CPU {cap['fake_cpu']:.1f} s for {cap['wall']:.1f} s "
                      f"({cap['fake_cpu'] / cap['wall']:.0%} of a core), client CPU {cap['cpu']:.1f} s, "
                      f"others {cap['others']:.0%} of the machine")

    table = Table(title=f"sync of {n:,} members to the fake Braze, limit {args.rate_limit:,} req / {args.window:g} s, "
                        f"concurrency {args.concurrency}")
    for column in ("run", "rows", "added/changed/removed", "requests", "fake 201s", "429s", "objects in",
                   "wall s", "rows/s", "our CPU s", "fake CPU s", "others"):
        table.add_column(column, justify="left" if column == "run" else "right")
    run_row(table, "1: full (empty state)", runs["full"])
    run_row(table, f"2: after {args.changed:.0%} changed", runs["changed"])
    run_row(table, "3: nothing changed", runs["noop"])
    console.print(table)

    full = runs["full"]
    rates = rate_figures(full)
    if rates["send"] is None:
        console.print("[red]run 1 sent no request[/]")
        return
    phases = Table(title="run 1: where the wall time went")
    phases.add_column("phase")
    phases.add_column("s", justify="right")
    phases.add_column("", style="dim")
    stats = full["stats"]
    prepare = stats["first"] - full["started"]
    phases.add_row("before the first request", f"{prepare:.2f}", "diff, counts, fetch of the changes, first batches")
    phases.add_row("sending (first request in → last answer out)", f"{rates['send']:.2f}",
                   f"{rates['send_rate']:,.0f} accepted req/s = {rates['send_rate'] / rates['limit_rate']:.0%} of the limit "
                   f"({rates['limit_rate']:,.0f}/s)")
    phases.add_row("after the last answer", f"{full['ended'] - stats['last']:.2f}", "last write-back, run log")
    console.print(phases)
    if rates["steady"] is not None:
        gaps, complete = rates["gaps"], rates["per_window"][:-1]
        # paced, the client leaves 3% of each window unused on purpose (cdp_warehouse/sync/http.py)
        filled = sum(1 for accepted in complete if accepted >= 0.95 * stats["limit"])
        console.print(f"rate windows of {stats['window_seconds']:g} s: {len(rates['per_window'])}; {filled} of the "
                      f"{len(complete)} complete ones used ≥ 95% of the limit ({stats['limit']:,}); accepted per window: "
                      f"median {statistics.median(complete):,.0f} ({min(complete):,}–{max(complete):,}); idle between "
                      f"windows {statistics.mean(gaps):.2f} s on average ({min(gaps):.2f}–{max(gaps):.2f})")
        console.print(f"steady state (all windows but the last): [bold]{rates['steady']:,.0f} req/s = "
                      f"{rates['steady'] / rates['limit_rate']:.0%}[/] of the limit")
        if rates["steady"] < RATE_TARGET * rates["limit_rate"]:
            if filled < len(complete) / 2:
                console.print("  → the bottleneck is our side: most windows ended with budget left (paced: the "
                              "first window or two are spread up to the whole-second reset, until the window's "
                              "length is measured)")
            else:
                console.print("  → the windows fill up; the time goes to waiting between them (unpaced, the client "
                              "holds until X-RateLimit-Reset, whole epoch seconds, + 0.05 s)")

    probes = full["probes"]
    if probes:
        console.print(steps_table("run 1: time in engine steps (wall s summed over calls; send is summed over "
                                  f"{args.concurrency} sender threads)", probes, full["wall"]))

    diff_table = Table(title=f"the diff alone: CREATE TEMP TABLE _sync_changes (median of {args.repeat})")
    for column in ("sync_state", "median s", "min–max s", "CPU s", "changes found"):
        diff_table.add_column(column, justify="left" if column == "sync_state" else "right")
    for label, (times, cpus, rows) in diffs.items():
        diff_table.add_row(label, f"{statistics.median(times):.2f}", f"{min(times):.2f}–{max(times):.2f}",
                           f"{statistics.median(cpus):.2f}", f"{rows:,}")
    console.print(diff_table)

    # the targets
    changed = runs["changed"]
    expected_rows = changed["expected_rows"]
    expected_requests = math.ceil(expected_rows / BRAZE_MAX_OBJECTS)
    diff_seconds = statistics.median(diffs[DIFF_CHANGED][0])
    diff_target = DIFF_TARGET_SECONDS * n / 1_000_000
    steady = rates["steady"] if rates["steady"] is not None else rates["send_rate"]
    checks = [
        ((f"run 2 sends only the changed rows: {changed['outcome'].changed:,} rows in "
          f"{changed['outcome'].requests:,} requests (expected {expected_rows:,} in {expected_requests:,}; "
          f"fake saw {changed['stats']['objects']:,} objects)"),
         changed["outcome"].requests == expected_requests and changed["stats"]["objects"] == expected_rows
         and changed["outcome"].changed == expected_rows),
        (f"diff of {n:,} rows {diff_seconds:.2f} s ≤ {diff_target:.2f} s", diff_seconds <= diff_target),
        ((f"request rate {steady:,.0f}/s ≥ {RATE_TARGET:.0%} of the limit {rates['limit_rate']:,.0f}/s "
          f"({steady / rates['limit_rate']:.0%})"), steady >= RATE_TARGET * rates["limit_rate"]),
        ((f"run 1 delivered every member: fake has {full['stats']['users']:,} users, "
          f"{full['outcome'].added:,} added"), full["stats"]["users"] == n and full["outcome"].added == n),
    ]
    for text, ok in checks:
        console.print(("[green]met[/]     " if ok else "[red]NOT met[/] ") + text)


def steps_table(title: str, probes: dict, wall: float) -> Table:
    table = Table(title=title)
    table.add_column("step")
    table.add_column("s", justify="right")
    table.add_column("calls", justify="right")
    table.add_column("ms/call", justify="right")
    table.add_column("% of run wall", justify="right")
    steps = sorted((kv for kv in probes.items() if not kv[0].startswith(" ")), key=lambda kv: -kv[1][0])
    parts = sorted((kv for kv in probes.items() if kv[0].startswith(" ")), key=lambda kv: -kv[1][0])
    for name, (seconds, calls) in steps:
        table.add_row(name, f"{seconds:.2f}", f"{calls:,}", f"{1000 * seconds / calls:.3f}", f"{seconds / wall:.0%}")
        if name.startswith("write results back"):
            for part, (seconds, calls) in parts:
                table.add_row(part, f"{seconds:.2f}", f"{calls:,}", f"{1000 * seconds / calls:.3f}",
                              f"{seconds / wall:.0%}", style="dim")
    return table


# --------------------------------------------------------------------------- main

DIFF_EMPTY, DIFF_CHANGED = "empty (run 1's diff)", "N rows, 1% changed (run 2's diff)"


def main() -> None:
    args = parse_args()
    if args.serve_fake:
        serve_fake(args.rate_limit, args.window, args.fake_nagle)
        return

    from cdp_warehouse.specs import load_project
    from cdp_warehouse.warehouses import connect

    console.print(f"{args.members:,} members, fake Braze limit {args.rate_limit:,} requests / {args.window:g} s "
                  f"({args.rate_limit / args.window:,.0f}/s), concurrency {args.concurrency}, cpus={os.cpu_count()}, "
                  f"pacing {'off' if args.no_pace else 'on'}")
    if args.no_pace:
        from cdp_warehouse.sync.http import HttpClient

        HttpClient.__init__.__kwdefaults__["pace"] = False
    cap = None
    if args.capacity_requests:
        cap = capacity(args.concurrency, args.capacity_requests, args.fake_nagle)
        console.print(f"  fake capacity: {cap['rate']:,.0f} req/s", highlight=False)
        if args.rate_limit / args.window > 0.8 * cap["rate"]:
            console.print(f"  [yellow]the limit ({args.rate_limit / args.window:,.0f} req/s) is above 80% of what the "
                          f"fake serves here: a shortfall may be the fake's, lower --rate-limit[/]")

    started = time.perf_counter()
    root = build_project(args)
    console.print(f"  data generated in {time.perf_counter() - started:.1f} s ({root})")
    fake = Fake(args.rate_limit, args.window, args.fake_nagle)
    environ = {"BRAZE_REST_ENDPOINT": fake.url, "BRAZE_API_KEY": API_KEY}
    project = load_project(root, environ=environ)
    warehouse = connect(project)
    try:
        diffs: dict[str, tuple[list[float], list[float], int]] = {}
        diffs[DIFF_EMPTY] = time_diff(project, warehouse, args.repeat)
        console.print(f"  diff, empty state: {statistics.median(diffs[DIFF_EMPTY][0]):.2f} s")

        probes = install_probes() if not args.no_probes else None
        runs = {}
        runs["full"] = sync_once(project, warehouse, fake, environ, probes)
        console.print(f"  run 1: {runs['full']['wall']:.2f} s, {runs['full']['outcome'].requests:,} requests")

        every = round(1 / args.changed)
        warehouse.execute(change_sql(every))
        expected = warehouse.fetch(f"SELECT count(*) FROM cdp.profile_traits WHERE reports >= 1 "
                                   f"AND CAST(substr(profile_id, 2) AS BIGINT) % {every} = 7 % {every}")[0][0]
        diffs[DIFF_CHANGED] = time_diff(project, warehouse, args.repeat)
        times = diffs[DIFF_CHANGED][0]
        console.print(f"  diff, {args.changed:.0%} changed: {statistics.median(times):.2f} s")
        runs["changed"] = sync_once(project, warehouse, fake, environ, probes)
        runs["changed"]["expected_rows"] = expected
        console.print(f"  run 2: {runs['changed']['wall']:.2f} s, {runs['changed']['outcome'].requests:,} requests")
        runs["noop"] = sync_once(project, warehouse, fake, environ, probes)
        if probes:
            probes.restore()
        report(args, cap, diffs, runs)
    finally:
        warehouse.close()
        fake.stop()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000, help="audience members (profiles: 1.25×)")
    parser.add_argument("--rate-limit", type=int, default=DEFAULT_RATE_LIMIT,
                        help="fake Braze: requests per window (default 1,500: Braze's 3,000 is more than the fake "
                             "serves on a 2-core machine)")
    parser.add_argument("--window", type=float, default=3.0, help="fake Braze: rate-limit window in seconds (Braze: 3)")
    parser.add_argument("--concurrency", type=int, default=4, help="the destination's `concurrency` (default 4)")
    parser.add_argument("--changed", type=float, default=0.01, help="share of members changed before run 2")
    parser.add_argument("--repeat", type=int, default=3, help="timings of the diff alone (median reported)")
    parser.add_argument("--capacity-requests", type=int, default=3000,
                        help="requests for the fake's capacity check (0: skip)")
    parser.add_argument("--no-probes", action="store_true", help="do not time the engine's steps")
    parser.add_argument("--no-pace", action="store_true",
                        help="turn the HTTP client's pacing off (burst until X-RateLimit-Remaining: 0, then wait "
                             "for X-RateLimit-Reset), to compare")
    parser.add_argument("--fake-nagle", action="store_true",
                        help="leave Nagle on in the fake as tests/fakes/server.py does (~40 ms stall per request)")
    parser.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    main()
