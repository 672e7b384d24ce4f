"""A sync killed mid-run loses nothing and re-sends only what was in flight; a 429 storm
still delivers everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cdp_warehouse.warehouses import connect
from tests.conftest import track
from tests.fakes import FakeBraze, Fault
from tests.sync.conftest import ACTIVE

CDP = str(Path(sys.executable).parent / "cdp")
BATCH = 75


def reporters(count: int) -> list[dict]:
    return [track(f"u{i:04d}", "Report", "2026-06-02T00:00:00Z") for i in range(count)]


def test_kill_between_batches_then_rerun_completes_without_loss_or_resending(synced):
    s = synced(ACTIVE)
    project = s.ws.project
    (project.root / "cdp.yaml").write_text((project.root / "cdp.yaml").read_text().replace(
        "    timeout: 2\n", "    timeout: 60\n    concurrency: 1\n"))
    s.ws.land(*reporters(6 * BATCH))
    s.ws.run()
    s.ws.warehouse.close()  # the CLI process takes the DuckDB file
    # two batches answer at once, the third hangs until the process is gone
    s.braze.inject(Fault(times=2), Fault(status=None, delay=30))
    env = {**os.environ, **s.environ}
    process = subprocess.Popen([CDP, "--project", str(project.root), "sync", "active", "--to", "braze"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        s.braze.wait_for_requests(2, timeout=30)
        time.sleep(1.0)  # the third request is on its way and waiting
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()

    warehouse = connect(project)
    try:
        synced_keys = {row[0] for row in warehouse.fetch("SELECT row_key FROM cdp.sync_state")}
        assert len(synced_keys) == 2 * BATCH  # exactly the two accepted batches
        assert warehouse.fetch("SELECT status FROM cdp.sync_runs") == [("running",)]  # the crash shows
    finally:
        warehouse.close()
    first_run = len(s.braze.requests)

    rerun = subprocess.run([CDP, "--project", str(project.root), "sync", "active", "--to", "braze"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    resent = {a["external_id"] for r in s.braze.requests[first_run:] for a in r.body["attributes"]}
    assert len(resent) == 4 * BATCH and not resent & synced_keys  # nothing accepted is sent again
    members = {u.external_id for u in s.braze.users.values() if u.attributes.get("active") is True}
    assert members == {f"u{i:04d}" for i in range(6 * BATCH)}


def test_a_429_storm_delivers_every_row_within_the_limit(synced):
    s = synced(ACTIVE, braze=FakeBraze(rate_limit=2, window_seconds=1.0))
    s.ws.land(*reporters(8 * BATCH))
    s.ws.run()
    started = time.monotonic()
    outcome = s.sync("active", to=("braze",))["braze"]
    assert (outcome.added, outcome.failed, outcome.status) == (8 * BATCH, 0, "success")
    assert outcome.requests - outcome.throttled == 8  # every batch accepted exactly once
    assert time.monotonic() - started >= 3  # 8 requests at 2 per second
    members = {u.external_id for u in s.braze.users.values() if u.attributes.get("active") is True}
    assert len(members) == 8 * BATCH
