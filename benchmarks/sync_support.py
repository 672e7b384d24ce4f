"""What the sync benchmarks share: a fake vendor in its own process, the generated tables
`cdp run` would have written, and CPU clocks. Used by sync.py, sync_intercom.py and
sync_salesforce.py (each runs as a script from this folder, so this imports as a module)."""

from __future__ import annotations

import http.client
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit


class FakeProcess:
    """A benchmark script run with ``--serve-fake ...``: it prints its URL and serves until
    its stdin closes; ``GET /_bench/stats`` and ``POST /_bench/reset`` are its extra routes."""

    def __init__(self, script: str, args: list[str], name: str, cwd: Path | None = None) -> None:
        self.process = subprocess.Popen([sys.executable, script, "--serve-fake", *args],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=cwd)
        self.url = self.process.stdout.readline().strip()
        if not self.url:
            raise SystemExit(f"the fake {name} did not start")
        parts = urlsplit(self.url)
        self.host, self.port = parts.hostname, parts.port

    def call(self, method: str, path: str) -> dict:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            connection.request(method, path)
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()

    def stats(self) -> dict:
        return self.call("GET", "/_bench/stats")

    def reset(self) -> None:
        self.call("POST", "/_bench/reset")

    def cpu(self) -> float:
        return process_cpu(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def generation_sql(members: int) -> list[str]:
    """``cdp.profiles``, ``cdp.profile_traits``, ``cdp.audience_members`` as ``cdp run`` writes
    them: 1.25 N profiles, the first N (reports >= 1) members of ``active``."""
    profiles = members + members // 4

    def uniform(stream: int) -> str:  # deterministic, in [0, 1)
        return f"((hash(i * 16 + {stream}) >> 11)::DOUBLE / 9007199254740992.0)"

    return [
        "CREATE SCHEMA IF NOT EXISTS cdp",
        f"""CREATE OR REPLACE TABLE cdp.profiles AS
        SELECT printf('u%09d', i) AS profile_id, printf('u%09d', i) AS user_id,
               printf('user%d@example.com', i) AS email, [printf('a%09d', i)] AS anonymous_ids,
               TIMESTAMP '2026-01-01' + to_seconds(floor({uniform(1)} * 86400 * 90)::BIGINT) AS first_seen,
               TIMESTAMP '2026-04-01' + to_seconds(floor({uniform(2)} * 86400 * 90)::BIGINT) AS last_seen
        FROM range({profiles}) AS r(i)""",
        f"""CREATE OR REPLACE TABLE cdp.profile_traits AS
        SELECT printf('u%09d', i) AS profile_id,
               CASE WHEN {uniform(3)} < 0.6 THEN 'free' WHEN {uniform(3)} < 0.9 THEN 'pro' ELSE 'enterprise' END AS plan,
               CASE WHEN i < {members} THEN 1 + floor({uniform(4)} * 40)::BIGINT ELSE 0 END AS reports,
               CASE WHEN {uniform(5)} < 0.3 THEN NULL ELSE round({uniform(6)} * 2000, 2) END AS revenue
        FROM range({profiles}) AS r(i)""",
        """CREATE OR REPLACE TABLE cdp.audience_members AS
        SELECT 'active' AS audience, profile_id, NULL::VARCHAR AS split, TIMESTAMP '2026-06-30' AS as_of
        FROM cdp.profile_traits WHERE reports >= 1""",
    ]


def build_project(work: Path, cdp_yaml: str, audiences_yaml: str, members: int) -> Path:
    """A project folder under ``work`` whose DuckDB file holds the generated tables."""
    import duckdb

    root = work / "project"
    shutil.rmtree(root, ignore_errors=True)
    (root / "audiences").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "cdp.yaml").write_text(cdp_yaml)
    (root / "audiences" / "main.yaml").write_text(audiences_yaml)
    with duckdb.connect(str(root / "data" / "bench.duckdb")) as con:
        for statement in generation_sql(members):
            con.execute(statement)
    return root
