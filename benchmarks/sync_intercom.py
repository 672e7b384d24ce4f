"""Benchmark: `cdp sync` of an audience to the fake Intercom at its default rate limit.

    .venv/bin/python benchmarks/sync_intercom.py                    # 10,000 members (~6 min)
    .venv/bin/python benchmarks/sync_intercom.py --members 2000     # quick
    .venv/bin/python benchmarks/sync_intercom.py --no-validate      # the fake skips its OpenAPI checks

Intercom has no batch endpoint for contacts: every person costs a few calls, and its rate
limit (10,000 calls a minute per app, enforced per 10-second window: 1,666 per window) sets
the pace. This measures rows/s and requests per 10k rows for:

1. run 1: every member new to Intercom (search, create with the attributes, tag);
2. run 2: after 1% of the members changed a trait (one PUT each, ids from sync_remote_ids);
3. run 3: nothing changed (no request expected);
4. run 4: ``--full-resync`` (every contact known: attributes and tag again, no search);
5. run 5: ``--full-resync`` after ``sync_remote_ids`` was emptied, search lagging behind
   every contact (search misses, the create's 409 names the contact: no duplicate).

The data (``cdp.profiles``, ``cdp.profile_traits``, ``cdp.audience_members``) is generated
with SQL over ``range()`` in the shapes ``cdp run`` writes; ``tests/fakes/intercom.py``'s
``FakeIntercom`` runs in a separate process (its own GIL) with Nagle off (the fake's
two-send answers otherwise stall ~40 ms on delayed ACKs, which no real API does). Its
OpenAPI checks cost the fake ~2 ms of CPU per request (measured: 13.6 s for 6,000 requests),
well under the 6 ms a request the limit leaves: the rate limit, not the fake, sets the pace.
``--no-validate`` turns them off (to see what the client alone could do).

Figures: "req / 10k rows" counts the requests Intercom answered other than 429 (the 429s
are in their own column); "% of limit" can pass 100% on short runs because the first
window starts with its whole budget.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".data" / "sync_intercom"
sys.path.insert(0, str(REPO))

from sync_support import FakeProcess, own_cpu
from sync_support import build_project as build_project_in

AUDIENCE, DESTINATION, TOKEN = "active", "intercom", "bench-intercom-token"

CDP_YAML = """\
name: sync_intercom_bench
warehouse:
  type: duckdb
  path: data/bench.duckdb
destinations:
  intercom:
    type: intercom
    base_url: ${{INTERCOM_BASE_URL}}
    access_token: ${{INTERCOM_TOKEN}}
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
    where: "reports >= 1"
    sync:
      - to: intercom
        mode: mirror
        membership: {tag: Active}
        fields: {plan: plan, reports: reports, revenue: revenue}
"""


# --------------------------------------------------------------------------- the fake, in its own process

def serve_fake(validate: bool, search_delay: float) -> None:
    """``--serve-fake``: a FakeIntercom that counts requests by status and call instead of
    keeping them, plus ``GET /_bench/stats`` and ``POST /_bench/reset`` (no auth, not
    counted against the limit); prints its URL, serves until stdin closes."""
    from tests.fakes import server
    from tests.fakes.intercom import FakeIntercom
    from tests.fakes.server import Response

    server._Handler.disable_nagle_algorithm = True

    class BenchIntercom(FakeIntercom):
        def __init__(self) -> None:
            super().__init__(token=TOKEN, validate=validate, search_delay=search_delay)
            self.reset_counts()

        def reset_counts(self) -> None:
            self.statuses: dict[str, int] = {}
            self.calls: dict[str, int] = {}

        def handle(self, request):
            if request.path == "/_bench/stats":
                with self._lock:
                    contacts = list(self._contacts.values())
                    return Response(200, {"statuses": self.statuses, "calls": self.calls, "contacts": len(contacts),
                                          "external_ids": len({c.external_id for c in contacts}),
                                          "tagged": sum(1 for c in contacts if c.tags),
                                          "violations": len(self._violations), "limit": self.rate_limit,
                                          "window": self.window_seconds})
            if request.path == "/_bench/reset":
                with self._lock:
                    self.reset_counts()
                return Response(200, {})
            if request.path == "/_bench/lag":  # search forgets every contact until further notice
                with self._lock:
                    for contact in self._contacts.values():
                        contact.searchable_at = float("inf")
                return Response(200, {})
            return super().handle(request)

        def finalize(self, request, response) -> None:
            if not request.path.startswith("/_bench/"):
                super().finalize(request, response)

        def _record(self, request) -> None:
            if request.path.startswith("/_bench/"):
                return
            parts = request.path.split("/")
            if len(parts) > 2 and parts[1] == "contacts" and parts[2] != "search":
                parts[2] = "{id}"
            if len(parts) > 4:
                parts[4] = "{tag_id}"
            call = f"{request.method} {'/'.join(parts)}"
            with self._answered:
                self.statuses[str(request.status)] = self.statuses.get(str(request.status), 0) + 1
                self.calls[call] = self.calls.get(call, 0) + 1

    fake = BenchIntercom().start()
    print(fake.url, flush=True)
    sys.stdin.read()
    fake.stop()


class Fake(FakeProcess):
    def __init__(self, validate: bool) -> None:
        super().__init__(__file__, [] if validate else ["--no-validate"], "Intercom", cwd=REPO)


# --------------------------------------------------------------------------- data and runs

def build_project(members: int, concurrency: int) -> Path:
    return build_project_in(WORK, CDP_YAML.format(concurrency=concurrency), AUDIENCES_YAML, members)


def sync_once(project, warehouse, fake: Fake, environ: dict, **options) -> dict:
    from cdp_warehouse.sync.engine import jobs, sync

    fake.call("POST", "/_bench/reset")
    cpu, fake_cpu, started = own_cpu(), fake.cpu(), time.perf_counter()
    outcome = sync(project, warehouse, jobs(project, [AUDIENCE], [DESTINATION]), environ=environ, **options)[0]
    wall = time.perf_counter() - started
    if outcome.status != "success":
        raise SystemExit(f"sync failed: {outcome.error}")
    return {"outcome": outcome, "wall": wall, "cpu": own_cpu() - cpu, "fake_cpu": fake.cpu() - fake_cpu,
            "stats": fake.call("GET", "/_bench/stats")}


def report(runs: dict[str, dict], args) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=140)
    limit = next(iter(runs.values()))["stats"]
    rate = limit["limit"] / limit["window"]
    table = Table(title=f"sync of {args.members:,} members to the fake Intercom, limit {limit['limit']:,} req / "
                        f"{limit['window']:g} s ({rate:,.0f}/s), concurrency {args.concurrency}, "
                        f"OpenAPI checks {'on' if args.validate else 'off'}")
    for column in ("run", "rows", "requests", "429s", "req / 10k rows", "wall s", "rows/s", "req/s",
                   "% of limit", "our CPU s", "fake CPU s"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for label, run in runs.items():
        o = run["outcome"]
        rows = o.added + o.changed + o.removed
        sent = o.requests - o.throttled
        table.add_row(label, f"{rows:,}", f"{o.requests:,}", f"{o.throttled:,}",
                      f"{10_000 * sent / rows:,.0f}" if rows else "—", f"{run['wall']:.1f}",
                      f"{rows / run['wall']:,.1f}" if rows else "—", f"{sent / run['wall']:,.1f}",
                      f"{sent / run['wall'] / rate:.0%}", f"{run['cpu']:.1f}", f"{run['fake_cpu']:.1f}")
    console.print(table)
    for label, run in runs.items():
        calls = ", ".join(f"{k} {v:,}" for k, v in sorted(run["stats"]["calls"].items(), key=lambda kv: -kv[1]))
        console.print(f"[bold]{label}[/]: {calls or 'no call'}; statuses {run['stats']['statuses']}")
    last = list(runs.values())[-1]["stats"]
    console.print(f"fake: {last['contacts']:,} contacts for {last['external_ids']:,} external ids "
                  f"({'no duplicate' if last['contacts'] == last['external_ids'] else 'DUPLICATES'}), "
                  f"{last['tagged']:,} tagged, {last['violations']} OpenAPI violations")


def main() -> None:
    args = parse_args()
    if args.serve_fake:
        serve_fake(args.validate, 0.0)
        return
    from cdp_warehouse.specs import load_project
    from cdp_warehouse.warehouses import connect

    root = build_project(args.members, args.concurrency)
    fake = Fake(args.validate)
    environ = {"INTERCOM_BASE_URL": fake.url, "INTERCOM_TOKEN": TOKEN}
    project = load_project(root, environ=environ)
    warehouse = connect(project)
    runs: dict[str, dict] = {}
    try:
        runs["1: all new"] = sync_once(project, warehouse, fake, environ)
        print(f"  run 1: {runs['1: all new']['wall']:.1f} s", flush=True)
        every = round(1 / args.changed)
        warehouse.execute(f"UPDATE cdp.profile_traits SET reports = reports + 1 "
                          f"WHERE reports >= 1 AND CAST(substr(profile_id, 2) AS BIGINT) % {every} = 7 % {every}")
        runs[f"2: {args.changed:.0%} changed"] = sync_once(project, warehouse, fake, environ)
        runs["3: nothing changed"] = sync_once(project, warehouse, fake, environ)
        runs["4: full resync, ids known"] = sync_once(project, warehouse, fake, environ, full_resync=True)
        print(f"  run 4: {runs['4: full resync, ids known']['wall']:.1f} s", flush=True)
        if not args.skip_lost:
            warehouse.execute("DELETE FROM cdp.sync_remote_ids")
            fake.call("POST", "/_bench/lag")
            runs["5: full resync, ids lost, search lagging"] = sync_once(project, warehouse, fake, environ,
                                                                        full_resync=True)
        report(runs, args)
    finally:
        warehouse.close()
        fake.stop()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000, help="audience members (profiles: 1.25x)")
    parser.add_argument("--concurrency", type=int, default=4, help="the destination's `concurrency` (default 4)")
    parser.add_argument("--changed", type=float, default=0.01, help="share of members changed before run 2")
    parser.add_argument("--no-validate", dest="validate", action="store_false",
                        help="the fake skips its OpenAPI checks of every request and answer")
    parser.add_argument("--skip-lost", action="store_true", help="skip run 5 (ids lost, search lagging)")
    parser.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    main()
