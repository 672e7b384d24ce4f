"""Benchmark: `cdp serve` (durable, fsync'd) under concurrent clients vs `cdp load` of the same events.

    .venv/bin/python benchmarks/collect.py                       # 200k events, 8 clients, batches of 100
    .venv/bin/python benchmarks/collect.py --events 50000        # quick

1. Builds a scratch project under ``benchmarks/.data/collect/`` (one source, a fresh DuckDB
   file) and N Segment-like events (track 80%, page 15%, identify 5%, ~350 bytes each, as
   the SDKs send them), pre-serialised into request bodies of ``--batch`` events so that
   building JSON does not count as client time.
2. Starts a real ``cdp serve`` subprocess on a free loopback port (fsync on, the default)
   and lets ``--clients`` threads post the bodies on persistent HTTP/1.1 connections
   (``http.client``, like the SDKs' ``requests`` sessions), each request timed from send to
   response. 429s are retried after ``Retry-After`` and counted.
3. Reports events/s accepted (200s) and the median / p99 / max request latency, then waits
   until ``GET /health`` shows every event landed in ``raw.events`` (the time from the last
   200 to that moment is the landing lag), and stops the server with SIGTERM.
4. Writes the same events as JSONL and times ``cdp load`` on them into another fresh DuckDB
   file (a subprocess, like a user runs it), for events/s side by side.

See benchmarks/README.md for what the figures mean.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".data" / "collect"
CDP = Path(sys.executable).parent / "cdp"
WRITE_KEY = "bench-write-key"

sys.path.insert(0, str(REPO))

import duckdb
from rich.console import Console
from rich.table import Table

console = Console(highlight=False, width=120)

CDP_YAML = f"""\
name: collect_bench
warehouse:
  type: duckdb
  path: data/bench.duckdb
sources:
  bench:
    write_key: {WRITE_KEY}
"""

EVENTS = ["Product Viewed", "Product Added", "Checkout Started", "Order Completed", "Signed In"]


def make_events(n: int) -> list[dict]:
    """Deterministic Segment-like messages, as analytics-python serialises them."""
    start = datetime(2026, 6, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        kind = "identify" if i % 20 == 0 else "page" if i % 20 < 4 else "track"
        message = {
            "type": kind, "messageId": f"bench-{i:09d}", "userId": f"user-{i % 5000:05d}", "anonymousId": None,
            "timestamp": (start + timedelta(milliseconds=37 * i)).isoformat(),
            "context": {"library": {"name": "analytics-python", "version": "2.4.0"}, "ip": "10.0.0.1"},
            "integrations": {},
        }
        if kind == "track":
            message |= {"event": EVENTS[i % len(EVENTS)],
                        "properties": {"sku": f"sku-{i % 997}", "price": round(5 + (i % 300) * 0.97, 2),
                                       "currency": "EUR", "quantity": 1 + i % 3}}
        elif kind == "page":
            message |= {"name": "Product", "properties": {"path": f"/p/{i % 997}", "referrer": "https://example.com/"}}
        else:
            message |= {"traits": {"email": f"user{i % 5000}@example.com", "plan": "pro"}}
        out.append(message)
    return out


def bodies(events: list[dict], batch: int, compress: bool) -> list[tuple[bytes, int]]:
    sent_at = datetime.now(UTC).isoformat()
    out = []
    for offset in range(0, len(events), batch):
        chunk = events[offset:offset + batch]
        data = json.dumps({"batch": chunk, "sentAt": sent_at, "writeKey": WRITE_KEY}).encode()
        out.append((gzip.compress(data, 6) if compress else data, len(chunk)))
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def health(port: int) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/health")
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def wait_ready(port: int, process: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"cdp serve exited early: {process.stderr.read().decode()}")
        try:
            health(port)
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("cdp serve did not start")


class Client(threading.Thread):
    """Posts its share of the bodies on one keep-alive connection, timing each request."""

    def __init__(self, port: int, work: list[tuple[bytes, int]], compress: bool, interval: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.port, self.work, self.interval = port, work, interval
        self.headers = {"Content-Type": "application/json"}
        if compress:
            self.headers["Content-Encoding"] = "gzip"
        self.latencies: list[float] = []
        self.events = 0
        self.throttled = 0
        self.errors: list[str] = []

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        next_at = time.perf_counter()
        for body, count in self.work:
            if self.interval:  # paced (--rate): one request every `interval` seconds
                next_at += self.interval
                time.sleep(max(0.0, next_at - time.perf_counter()))
            while True:
                started = time.perf_counter()
                connection.request("POST", "/v1/batch", body=body, headers=self.headers)
                response = connection.getresponse()
                payload = response.read()
                self.latencies.append(time.perf_counter() - started)
                if response.status == 429:
                    self.throttled += 1
                    time.sleep(float(response.getheader("Retry-After") or 1))
                    continue
                if response.status != 200:
                    self.errors.append(f"{response.status} {payload[:200]!r}")
                else:
                    self.events += count
                break
        connection.close()


def run_serve(args: argparse.Namespace, project: Path, work: list[tuple[bytes, int]]) -> dict:
    port = free_port()
    process = subprocess.Popen([str(CDP), "--project", str(project), "serve", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_ready(port, process)
        interval = args.clients * args.batch / args.rate if args.rate else 0.0
        clients = [Client(port, work[index::args.clients], args.gzip, interval) for index in range(args.clients)]
        cpu_before = _process_cpu(process.pid)
        started = time.perf_counter()
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        elapsed = time.perf_counter() - started
        accepted = sum(client.events for client in clients)
        landed_at = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = health(port)
            if state["backlog_bytes"] == 0 and state["landed"] + state["duplicates"] >= accepted:
                landed_at = time.perf_counter()
                break
            time.sleep(0.05)
        cpu = _process_cpu(process.pid) - cpu_before  # accepting and landing everything
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=35)
    finally:
        if process.poll() is None:
            process.kill()
    latencies = sorted(latency for client in clients for latency in client.latencies)
    return {
        "accepted": accepted, "seconds": elapsed, "cpu": cpu,
        "median_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "max_ms": 1000 * latencies[-1],
        "throttled": sum(client.throttled for client in clients),
        "errors": [error for client in clients for error in client.errors][:5],
        "lag": None if landed_at is None else landed_at - (started + elapsed),
        "landed_seconds": None if landed_at is None else landed_at - started,
        "exit": process.returncode,
    }


def run_load(project: Path, events: list[dict]) -> dict:
    path = WORK / "events.jsonl"
    with path.open("w") as handle:
        for message in events:
            handle.write(json.dumps(message) + "\n")
    started = time.perf_counter()
    subprocess.run([str(CDP), "--project", str(project), "load", str(path), "--source", "bench"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return {"seconds": time.perf_counter() - started}


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its live children (the lander; Linux /proc)."""
    total = 0.0
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(child) for child in (task / "children").read_text().split()]
    for each in pids:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def landed_rows(project: Path) -> int:
    with duckdb.connect(str(project / "data" / "bench.duckdb"), read_only=True) as con:
        return con.execute("SELECT count(*) FROM raw.events").fetchone()[0]


def fresh_project(name: str) -> Path:
    root = WORK / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / "cdp.yaml").write_text(CDP_YAML)
    return root


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--gzip", action="store_true", help="gzip the request bodies (rudder-sdk-python's default)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="offered load in events/s across all clients (default: as fast as they can)")
    parser.add_argument("--skip-load", action="store_true", help="do not time `cdp load`")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    events = make_events(args.events)
    work = bodies(events, args.batch, args.gzip)
    size = sum(len(body) for body, _ in work) / len(work)
    pace = f"offered {args.rate:,.0f} events/s" if args.rate else "as fast as they can"
    console.print(f"{args.events:,} events in {len(work):,} requests of {args.batch} "
                  f"({size / 1024:.1f} KB{' gzip' if args.gzip else ''} each), {args.clients} clients {pace}, "
                  f"cpus={os.cpu_count()}, fsync on")

    serve = run_serve(args, fresh_project("serve"), work)
    landed = landed_rows(WORK / "serve")
    table = Table(title="cdp serve vs cdp load")
    for column in ("", "events", "seconds", "events/s", "median ms", "p99 ms", "max ms", "server+lander CPU s"):
        table.add_column(column, justify="right" if column else "left")
    table.add_row("cdp serve: accepted (200)", f"{serve['accepted']:,}", f"{serve['seconds']:.2f}",
                  f"{serve['accepted'] / serve['seconds']:,.0f}", f"{serve['median_ms']:.1f}",
                  f"{serve['p99_ms']:.1f}", f"{serve['max_ms']:.1f}", f"{serve['cpu']:.1f}")
    if serve["landed_seconds"]:
        table.add_row("cdp serve: in raw.events", f"{landed:,}", f"{serve['landed_seconds']:.2f}",
                      f"{landed / serve['landed_seconds']:,.0f}", "", "", "", "")
    if not args.skip_load:
        load = run_load(fresh_project("load"), events)
        table.add_row("cdp load (JSONL)", f"{args.events:,}", f"{load['seconds']:.2f}",
                      f"{args.events / load['seconds']:,.0f}", "", "", "", "")
    console.print(table)
    lag = "never (timed out)" if serve["lag"] is None else f"{serve['lag']:.2f} s after the last 200"
    console.print(f"landed in raw.events: {landed:,} rows, {lag}; 429s: {serve['throttled']}; "
                  f"server exit code after SIGTERM: {serve['exit']}")
    for error in serve["errors"]:
        console.print(f"[red]error:[/] {error}")


if __name__ == "__main__":
    main()
