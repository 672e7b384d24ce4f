"""`cdp serve` as a real process: a 200 survives SIGKILL (and is not landed twice), SIGTERM
lands what was acknowledged and exits, a locked warehouse fills the log until the server
answers 429, and `cdp run` works while the server serves."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pytest
import requests
from click.testing import CliRunner

from cdp_warehouse.cli import main
from cdp_warehouse.collect.server import Collector
from cdp_warehouse.specs import load_project
from tests.collect.test_server import landed, post, serve_project, track, wait_until

CDP = str(Path(sys.executable).parent / "cdp")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served:
    """`cdp serve` in a subprocess on a free port; its stderr goes to ``log``."""

    def __init__(self, root: Path, *options: str, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = root / f"serve-{time.monotonic_ns()}.log"
        self.process = subprocess.Popen(
            [CDP, "--project", str(root), "serve", "--port", self.url.rsplit(":", 1)[1], *options],
            stdout=subprocess.DEVNULL, stderr=self.log.open("w"), env={**os.environ, **(env or {})})
        try:
            wait_until(self._up, timeout=20, what="cdp serve to listen")
        except BaseException:
            self.kill()
            raise

    def _up(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()
        try:
            return requests.get(self.url + "/health", timeout=1).ok
        except requests.ConnectionError:
            return False

    def health(self) -> dict:
        return requests.get(self.url + "/health", timeout=5).json()

    def drained(self) -> bool:
        return self.health()["backlog_bytes"] == 0

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds to exit)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=35)
        return code, time.monotonic() - started


@pytest.fixture
def serve():
    """``serve(root, *options, env=...)`` → a Served; whatever a failing test leaves running
    is killed at teardown."""
    started: list[Served] = []

    def start(root: Path, *options: str, env: dict[str, str] | None = None) -> Served:
        started.append(Served(root, *options, env=env))
        return started[-1]

    yield start
    for server in started:
        if server.process.poll() is None:
            server.kill()


def wal_segments(root: Path) -> list[Path]:
    return sorted((root / "data" / "wal").glob("*.wal"))


def test_sigkill_after_a_200_loses_nothing_and_doubles_nothing(tmp_path, serve):
    root = serve_project(tmp_path)
    server = serve(root, "--flush-interval", "5")  # nothing is landed before the kill
    batches = [[track(f"user-{b}", messageId=f"kill-{b}-{i}") for i in range(50)] for b in range(6)]
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda batch: post(server.url, {"batch": batch}).status_code, batches))
    assert answers == [200] * 6
    server.kill()
    assert wal_segments(root)  # the acknowledged batches exist only in the log

    restarted = serve(root)  # replays the log
    wait_until(restarted.drained, what="the replay")
    assert post(restarted.url, {"batch": batches[0]}).status_code == 200  # a client retrying anyway
    wait_until(restarted.drained, what="the retry to land")
    rows = landed(root, "message_id LIKE 'kill-%'")
    assert sorted(rows) == sorted(message["messageId"] for batch in batches for message in batch)
    assert restarted.terminate()[0] == 0
    assert wal_segments(root) == []


def test_sigterm_lands_what_was_acknowledged_and_exits(tmp_path, serve):
    root = serve_project(tmp_path)
    server = serve(root, "--flush-interval", "5")
    messages = [track("user-term", messageId=f"term-{i}") for i in range(20)]
    assert post(server.url, {"batch": messages}).status_code == 200
    code, seconds = server.terminate()
    assert code == 0 and seconds < 30
    assert sorted(landed(root, "message_id LIKE 'term-%'")) == sorted(m["messageId"] for m in messages)
    assert wal_segments(root) == []
    assert "stopping" in server.log.read_text()


def test_a_locked_warehouse_fills_the_log_until_429_then_everything_lands(tmp_path, serve):
    root = serve_project(tmp_path)
    (root / "data").mkdir()
    holder = duckdb.connect(str(root / "data" / "serve.duckdb"))  # like a long `cdp run`
    server = serve(root, "--flush-interval", "0.1", env={"CDP_SERVE_MAX_BACKLOG": "1KB"})
    first = [track("user-429", messageId=f"first-{i}") for i in range(10)]
    second = [track("user-429", messageId=f"second-{i}") for i in range(10)]

    assert post(server.url, {"batch": first}).status_code == 200  # durable, but cannot land
    wait_until(lambda: server.health()["flush_failures"] > 0, what="a flush to find the file locked")
    refused = post(server.url, {"batch": second})
    assert refused.status_code == 429
    assert refused.json()["code"] == "backpressure" and "retry later" in refused.json()["message"]
    assert int(refused.headers["Retry-After"]) >= 1
    assert "lock" in server.health()["last_flush_error"].lower()

    holder.close()
    wait_until(server.drained, what="the flush to succeed once the file is free")
    assert post(server.url, {"batch": second}).status_code == 200
    wait_until(server.drained, what="the second batch to land")
    assert sorted(landed(root, "user_id = 'user-429'")) == sorted(m["messageId"] for m in first + second)
    assert server.terminate()[0] == 0


def test_cdp_run_works_while_the_server_serves(tmp_path, serve):
    root = serve_project(tmp_path)
    server = serve(root)
    assert post(server.url, {"batch": [track("user-run", messageId=f"run-{i}") for i in range(5)]}).status_code == 200
    wait_until(server.drained, timeout=5, what="the events to land (the spec: within 5 s)")

    # The server holds the DuckDB file only while it flushes, so another process can open it.
    run = subprocess.run([CDP, "--project", str(root), "run"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert run.returncode == 0, run.stderr
    assert "1 profiles" in run.stdout
    traits = duckdb.connect(str(root / "data" / "serve.duckdb"), read_only=True)
    assert traits.execute("SELECT events_total FROM cdp.profile_traits").fetchall() == [(5,)]
    traits.close()

    assert post(server.url, {"batch": [track("user-run", messageId="run-after")]}).status_code == 200
    wait_until(server.drained, what="an event sent after `cdp run` to land")
    assert "run-after" in landed(root, "user_id = 'user-run'")
    assert server.terminate()[0] == 0


def test_serve_refuses_to_start_without_a_write_key(tmp_path):
    root = serve_project(tmp_path, "name: t\nwarehouse:\n  type: duckdb\n  path: data/serve.duckdb\n"
                                   "sources:\n  web:\n    write_key: ${WEB_WRITE_KEY}\n")
    result = CliRunner().invoke(main, ["--project", str(root), "serve", "--port", "0"],
                                env={"WEB_WRITE_KEY": ""})
    assert result.exit_code == 1
    assert "sources.web.write_key: environment variable WEB_WRITE_KEY is not set" in result.output
    assert "Traceback" not in result.output


def test_a_shutdown_with_the_warehouse_locked_keeps_the_log_for_the_next_start(tmp_path):
    """The deadline wins over landing: the events wait in the log, and the next server lands them."""
    root = serve_project(tmp_path)
    (root / "data").mkdir()
    holder = duckdb.connect(str(root / "data" / "serve.duckdb"))
    server = Collector(load_project(root), port=0, flush_interval=0.1).start()
    assert post(server.url, {"batch": [track("user-late", messageId="late-1")]}).status_code == 200
    started = time.monotonic()
    assert server.stop(timeout=2) is False  # could not land before the deadline
    assert time.monotonic() - started < 5
    assert wal_segments(root)
    holder.close()

    again = Collector(load_project(root), port=0, flush_interval=0.1).start()
    assert again.stop(timeout=20) is True
    assert list(landed(root, "user_id = 'user-late'")) == ["late-1"]


def test_a_lander_that_dies_is_replaced(tmp_path):
    root = serve_project(tmp_path)
    server = Collector(load_project(root), port=0, flush_interval=0.1).start()
    try:
        assert post(server.url, {"batch": [track("user-crash", messageId="crash-1")]}).status_code == 200
        wait_until(lambda: server.wal.backlog_bytes == 0, what="the first landing")
        server.flusher._lander.process.kill()  # e.g. the OOM killer
        assert post(server.url, {"batch": [track("user-crash", messageId="crash-2")]}).status_code == 200
        wait_until(lambda: server.wal.backlog_bytes == 0, what="a new lander to land it")
    finally:
        assert server.stop()
    assert sorted(landed(root, "user_id = 'user-crash'")) == ["crash-1", "crash-2"]
