"""Benchmark: `cdp sync` of N new members to a fake Salesforce, through sObject Collections
(200 records per request) and through Bulk API 2.0 (one ingest job per 10,000 rows).

    .venv/bin/python benchmarks/sync_salesforce.py                  # 10,000 members
    .venv/bin/python benchmarks/sync_salesforce.py --members 50000 --job-polls 3

1. Builds a scratch project under ``benchmarks/.data/sync_salesforce/``: ``cdp.yaml`` with a
   Salesforce destination read from environment variables, one audience ``active``
   mirrored to Contacts (``match: {External_Id__c: user_id}``, four mapped fields), and a
   DuckDB file whose ``cdp.profiles``, ``cdp.profile_traits`` and ``cdp.audience_members``
   are generated with SQL over ``range()`` instead of going through events and ``cdp run``.
2. For each path, starts ``tests/fakes/salesforce.py``'s ``FakeSalesforce`` in a separate
   process (its request handling must not share our GIL), with typed Contact fields so that
   Bulk CSV values are parsed as Salesforce would, and ``--job-polls`` status reads that
   still say ``InProgress`` (a real job takes seconds to minutes: the destination polls with
   a delay from 0.25 s doubling to 15 s, so with the fake the wall time of a bulk run is
   mostly that delay).
3. Times ``cdp_warehouse.sync.engine.sync`` (what ``cdp sync`` calls) from an empty
   ``sync_state``, and reports rows/s, the HTTP requests made (ours and the fake's, token
   fetch included), requests and API calls per 10,000 rows, and the records the fake holds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".data" / "sync_salesforce"
sys.path.insert(0, str(REPO))

from sync_support import FakeProcess
from sync_support import build_project as build_project_in

CLIENT_ID, CLIENT_SECRET = "bench-client", "bench-secret"
CDP_YAML = """\
name: sync_salesforce_bench
warehouse:
  type: duckdb
  path: data/bench.duckdb
destinations:
  salesforce:
    type: salesforce
    instance_url: ${{SALESFORCE_INSTANCE_URL}}
    client_id: ${{SALESFORCE_CLIENT_ID}}
    client_secret: ${{SALESFORCE_CLIENT_SECRET}}
    bulk_threshold: {bulk_threshold}
    concurrency: {concurrency}
"""
AUDIENCES_YAML = """\
traits:
  - name: plan
    trait: {trait: plan}
  - name: reports
    count: {event: Report}
audiences:
  - name: active
    where: "reports >= 1"
    sync:
      - to: salesforce
        mode: mirror
        object: Contact
        match: {External_Id__c: user_id}
        fields: {LastName: user_id, Active__c: in_audience, Plan__c: plan, Reports__c: reports}
"""


# --------------------------------------------------------------------------- the fake, in its own process


def serve_fake(job_polls: int) -> None:
    """``--serve-fake``: a FakeSalesforce that counts requests instead of keeping them, plus
    ``GET /_bench/stats``; prints its URL and serves until stdin closes."""
    from tests.fakes import server
    from tests.fakes.salesforce import FakeSalesforce, SObjectType
    from tests.fakes.server import Response

    # The fake writes headers and body in two send()s; with Nagle's algorithm the body waits
    # for the client's delayed ACK (~40 ms a request). A real API does not stall like that.
    server._Handler.disable_nagle_algorithm = True

    class BenchSalesforce(FakeSalesforce):
        def __init__(self) -> None:
            types = {"Active__c": "boolean", "Reports__c": "double"}
            super().__init__(CLIENT_ID, CLIENT_SECRET, objects={"Contact": SObjectType("003", ("LastName",), types)},
                             api_limit=10**9, job_polls=job_polls)
            self.counts: dict[str, int] = {}

        def handle(self, request):
            if request.path == "/_bench/stats":
                with self._lock:
                    return Response(200, {"counts": self.counts, "records": len(self._records.get("Contact", {})),
                                          "api_used": self._api_used, "tokens": self._tokens_issued})
            return super().handle(request)

        def _record(self, request) -> None:
            kind = request.path.rstrip("/").rsplit("/", 1)[-1]
            kind = "job" if kind.startswith("750") else kind
            key = f"{request.method} {kind} {request.status}"
            with self._answered:
                self.counts[key] = self.counts.get(key, 0) + 1

    fake = BenchSalesforce().start()
    print(fake.url, flush=True)
    sys.stdin.read()  # the parent closes our stdin (or dies): stop
    fake.stop()


class Fake(FakeProcess):
    def __init__(self, job_polls: int) -> None:
        super().__init__(__file__, ["--job-polls", str(job_polls)], "Salesforce")


# --------------------------------------------------------------------------- data and runs


def build_project(members: int) -> Path:
    # cdp.yaml is written by each run (its bulk threshold differs)
    return build_project_in(WORK, "", AUDIENCES_YAML, members)


def run(root: Path, path: str, members: int, concurrency: int, job_polls: int) -> dict:
    from cdp_warehouse.specs import load_project
    from cdp_warehouse.sync.engine import jobs, sync
    from cdp_warehouse.warehouses import connect

    threshold = 1 if path == "bulk" else members + 1
    (root / "cdp.yaml").write_text(CDP_YAML.format(bulk_threshold=threshold, concurrency=concurrency))
    project = load_project(root, environ={})
    warehouse = connect(project)
    fake = Fake(job_polls)
    try:
        warehouse.execute("DROP TABLE IF EXISTS cdp.sync_state")  # every run starts with nothing synced
        environ = {"SALESFORCE_INSTANCE_URL": fake.url, "SALESFORCE_CLIENT_ID": CLIENT_ID,
                   "SALESFORCE_CLIENT_SECRET": CLIENT_SECRET}
        started = time.perf_counter()
        [outcome] = sync(project, warehouse, jobs(project, ["active"], ["salesforce"]), environ=environ)
        wall = time.perf_counter() - started
        stats = fake.stats()
    finally:
        fake.stop()
        warehouse.close()
    if outcome.status != "success":
        raise SystemExit(f"{path}: {outcome.status}: {outcome.error}")
    return {"path": path, "wall": wall, "rows": outcome.added, "requests": outcome.requests,
            "fake_requests": sum(stats["counts"].values()), "api_calls": stats["api_used"],
            "records": stats["records"], "counts": stats["counts"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--job-polls", type=int, default=1, help="status reads a closed job still says InProgress")
    parser.add_argument("--serve-fake", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake:
        return serve_fake(args.job_polls)
    root = build_project(args.members)
    results = [run(root, path, args.members, args.concurrency, args.job_polls) for path in ("collections", "bulk")]
    print(f"{args.members:,} new members, concurrency {args.concurrency}, bulk job polls {args.job_polls}")
    print(f"{'path':<12}{'wall s':>9}{'rows/s':>10}{'requests':>10}{'per 10k rows':>14}{'API calls':>11}{'records':>9}")
    for r in results:
        per_10k = r["requests"] * 10_000 / max(r["rows"], 1)
        print(f"{r['path']:<12}{r['wall']:>9.2f}{r['rows'] / r['wall']:>10,.0f}{r['requests']:>10}"
              f"{per_10k:>14.1f}{r['api_calls']:>11}{r['records']:>9,}")
    for r in results:
        print(f"  {r['path']}: " + ", ".join(f"{k} ×{v}" for k, v in sorted(r["counts"].items())))


if __name__ == "__main__":
    main()
