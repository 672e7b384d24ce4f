"""When acknowledged requests move from the write-ahead log into the landing table.

``Flusher`` is a thread of `cdp serve`. Once the oldest un-landed record is ``interval`` old
(default 1 s, so events reach the landing table within ~2 s) or the log holds ``flush_bytes``
(default 4 MB), it seals the active segment and asks the lander (``lander.py``, a child
process) to land the sealed segments; it deletes each segment only after the lander reports
its warehouse commit. If the warehouse cannot be opened or written (a DuckDB file locked by
`cdp run` or Dagster), the flush is retried with backoff (0.25 s doubling to 2 s) and
nothing is lost meanwhile: the log grows, and past its cap the server answers 429. A lander
that dies or hangs is replaced; segments it had not reported are landed again by the next
one (idempotent on ``message_id``).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdp_warehouse.collect.wal import WriteAheadLog
from cdp_warehouse.specs import ResolvedProject

FLUSH_INTERVAL = 1.0  # seconds a record may wait before a flush (the spec allows 5)
FLUSH_BYTES = 8 * 1024 * 1024  # flush early once this much is waiting (~1 s at 20k events/s)
OPEN_BYTES = 64 * 1024 * 1024  # land at most this much per warehouse open, then let others in
RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0)
START_SECONDS = 60.0  # the lander must be ready by then (imports, project load)
FLUSH_SECONDS = 300.0  # a lander silent for this long during a flush is replaced

log = logging.getLogger("cdp_warehouse.collect")


@dataclass
class FlushStats:
    """Counters since the server started (shown by ``GET /health``)."""

    flushes: int = 0
    landed: int = 0
    duplicates: int = 0
    rejected: int = 0
    failures: int = 0
    last_error: str | None = None


@dataclass
class _Outcome:
    """What one flush landed, or why it stopped."""

    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    error: str | None = None

    def add(self, reply: dict[str, Any]) -> None:
        self.inserted += reply["inserted"]
        self.duplicates += reply["duplicates"]
        self.rejected += reply["rejected"]


class _LanderProcess:
    """The child process and a thread reading its replies into a queue."""

    def __init__(self, project: ResolvedProject) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cdp_warehouse.collect.lander", str(project.root)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1,
        )
        self.replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.ready = False
        threading.Thread(target=self._read, name="cdp-lander-replies", daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            try:
                self.replies.put(json.loads(line))
            except ValueError:
                continue
        self.replies.put(None)  # EOF: the process is gone

    def reply(self, deadline: Callable[[], float]) -> dict[str, Any] | None:
        """The next reply; None when the process died. Raises TimeoutError past
        ``deadline()`` (re-read while waiting: a shutdown may bring it closer)."""
        while True:
            remaining = deadline() - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the lander did not answer in time")
            try:
                return self.replies.get(timeout=min(remaining, 0.1))
            except queue.Empty:
                continue

    def send(self, command: dict[str, Any]) -> None:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def close(self, timeout: float) -> None:
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Flusher:
    """Schedules flushes and keeps the log in step with what the lander committed."""

    def __init__(
        self,
        project: ResolvedProject,
        wal: WriteAheadLog,
        *,
        interval: float = FLUSH_INTERVAL,
        flush_bytes: int = FLUSH_BYTES,
    ) -> None:
        self.project = project
        self.wal = wal
        self.interval = interval
        self.flush_bytes = flush_bytes
        self.stats = FlushStats()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one flush at a time (thread and final flush)
        self._thread: threading.Thread | None = None
        self._lander: _LanderProcess | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._stop_deadline = float("inf")  # set by stop(): no flush may run past it

    def start(self) -> None:
        self._lander = _LanderProcess(self.project)  # starts importing while we begin to serve
        self._thread = threading.Thread(target=self._loop, name="cdp-flusher", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Called after an append: flush early when the log is past ``flush_bytes``."""
        if self.wal.backlog_bytes >= self.flush_bytes:
            self._wake.set()

    @property
    def retry_after(self) -> int:
        """Seconds a client should wait before retrying after a 429."""
        if self._failures:
            return max(1, round(RETRY_DELAYS[min(self._failures, len(RETRY_DELAYS)) - 1]))
        return 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            since = self.wal.pending_since
            now = time.monotonic()
            if since is None:
                due = now + self.interval
            elif self.wal.backlog_bytes >= self.flush_bytes:
                due = now
            else:
                due = since + self.interval
            due = max(due, self._retry_at)
            if due > now:
                self._wake.wait(min(due - now, 0.1))
                self._wake.clear()
                continue
            try:
                self.flush()
            except Exception:  # never let the thread die: the log keeps everything
                log.exception("flush failed; retrying")
                self._failed("unexpected error (see the traceback above)")

    def stop(self, deadline: float) -> bool:
        """Stop the thread, then flush until everything is landed or ``deadline``
        (``time.monotonic()``) passes; stop the lander. Returns True when the log is empty."""
        self._stop_deadline = deadline
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        try:
            while time.monotonic() < deadline:
                try:
                    if self.flush() and self.wal.pending_since is None:
                        return True
                except Exception:
                    log.exception("final flush failed")
                pause = max(0.05, self._retry_at - time.monotonic())
                if time.monotonic() + pause >= deadline:
                    break
                time.sleep(pause)
            return self.wal.pending_since is None
        finally:
            if self._lander is not None:
                self._lander.close(timeout=max(1.0, deadline - time.monotonic()))
                self._lander = None

    def flush(self) -> bool:
        """Seal the active segment and land every sealed one (up to ``OPEN_BYTES`` per call).
        Returns False when some could not be landed; they stay for the next try."""
        wait = self._stop_deadline - time.monotonic()  # inf until stop(): wait as long as it takes
        if not self._lock.acquire(timeout=-1 if wait == float("inf") else max(0.0, wait)):
            return False  # the thread's flush is still running at the shutdown deadline
        try:
            return self._flush()
        finally:
            self._lock.release()

    def _flush(self) -> bool:
        segments = self.wal.seal()
        if not segments:
            return True
        batch, size = [], 0
        for path in segments:
            if batch and size >= OPEN_BYTES:
                break  # the rest next time: another process may be waiting for the file
            batch.append(path)
            size += path.stat().st_size
        started = time.monotonic()
        outcome = _Outcome()
        self._land(batch, outcome, lambda: min(started + FLUSH_SECONDS, self._stop_deadline))
        if outcome.error is not None:
            self._failed(outcome.error)
            return False
        self.stats.flushes += 1
        if self._failures:
            log.info("landing resumed")
        self._failures, self._retry_at = 0, 0.0
        log.info("landed %d messages (%d duplicates, %d rejected) from %d log segment(s) in %.0f ms",
                 outcome.inserted, outcome.duplicates, outcome.rejected, len(batch),
                 1000 * (time.monotonic() - started))
        return len(batch) == len(segments)

    def _land(self, batch: list[Path], outcome: _Outcome, deadline: Callable[[], float]) -> None:
        """Ask the lander to land ``batch``; remove each segment it reports committed."""
        if deadline() <= time.monotonic():
            outcome.error = "the shutdown deadline has passed"
            return
        lander = self._lander
        if lander is None or lander.process.poll() is not None:
            if lander is not None:
                log.warning("the lander process exited (code %s); starting a new one", lander.process.returncode)
            lander = self._lander = _LanderProcess(self.project)
        try:
            if not lander.ready:
                ready_by = time.monotonic() + START_SECONDS
                reply = lander.reply(lambda: min(deadline(), ready_by))
                if reply is None or "fatal" in reply:
                    self._lander = None
                    outcome.error = f"the lander could not start: {(reply or {}).get('fatal', 'it exited')}"
                    return
                lander.ready = True
            lander.send({"land": [str(path) for path in batch]})
            while True:
                reply = lander.reply(deadline)
                if reply is None:
                    self._lander = None
                    outcome.error = "the lander process died while landing"
                    return
                if "landed" in reply:
                    self.wal.remove(Path(reply["landed"]))  # after its warehouse commit, never before
                    outcome.add(reply)
                    self.stats.landed += reply["inserted"]
                    self.stats.duplicates += reply["duplicates"]
                    self.stats.rejected += reply["rejected"]
                elif "failed" in reply:
                    outcome.error = reply["failed"]
                    return
                elif reply.get("done"):
                    return
        except (OSError, TimeoutError) as error:
            # A lander that does not answer in time is replaced; what it committed meanwhile
            # is landed again by the next one, and skipped as duplicates.
            lander.close(timeout=0)
            self._lander = None
            outcome.error = str(error) or type(error).__name__

    def _failed(self, reason: str) -> None:
        self._failures += 1
        self.stats.failures += 1
        self.stats.last_error = reason
        delay = RETRY_DELAYS[min(self._failures, len(RETRY_DELAYS)) - 1]
        self._retry_at = time.monotonic() + delay
        if self._failures == 1:
            log.warning("cannot land yet (%s); the write-ahead log keeps everything, retrying", reason)
