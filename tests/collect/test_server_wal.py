"""The collector's write-ahead log and lander, without HTTP: durable appends, group commit,
recovery of a torn tail, one server per log, idempotent replay, and the configuration
`cdp serve` reads from cdp.yaml."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cdp_warehouse.collect.lander import Lander, record_messages
from cdp_warehouse.collect.server import Intake, parse_size, write_keys
from cdp_warehouse.collect.wal import WalError, WriteAheadLog, read_records
from cdp_warehouse.errors import CdpError
from cdp_warehouse.specs import load_project
from tests.collect.test_server import landed, rejected, serve_project, track


@pytest.fixture
def wal(tmp_path):
    log = WriteAheadLog(tmp_path / "wal")
    log.open()
    yield log
    log.close()


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wal"))


def test_a_record_is_in_the_file_when_append_returns(wal):
    wal.append(b'{"first": 1}')
    wal.append(b'{"second": 2}')
    [active] = segments(wal.directory)
    assert read_records(active)[0] == [b'{"first": 1}', b'{"second": 2}']
    assert wal.backlog_bytes == active.stat().st_size


def test_concurrent_appends_share_fsyncs(wal, monkeypatch):
    """Group commit: requests that arrive while an fsync runs are written by the next one."""
    syncs = []
    real = os.fdatasync

    def slow_sync(fd: int) -> None:
        syncs.append(fd)
        time.sleep(0.02)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", slow_sync)
    threads = [threading.Thread(target=wal.append, args=(f'{{"n": {n}}}'.encode(),)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = [record for path in segments(wal.directory) for record in read_records(path)[0]]
    assert sorted(records) == sorted(f'{{"n": {n}}}'.encode() for n in range(40))
    assert len(syncs) < 20  # 40 durable appends, far fewer fsyncs


def test_sealed_segments_stay_until_removed(wal):
    wal.append(b"one")
    [sealed] = wal.seal()
    wal.append(b"two")  # goes to a new segment
    assert len(segments(wal.directory)) == 2
    assert wal.seal() == [sealed, segments(wal.directory)[1]]
    wal.remove(sealed)
    assert read_records(segments(wal.directory)[0])[0] == [b"two"]


def test_a_torn_write_at_the_end_is_cut_on_recovery(tmp_path):
    log = WriteAheadLog(tmp_path / "wal")
    log.open()
    log.append(b"acknowledged")
    log.close()
    [segment] = segments(tmp_path / "wal")
    with segment.open("ab") as handle:  # a crash in the middle of the next write
        handle.write(b"CDPW\x40\x00\x00\x00half a rec")
    again = WriteAheadLog(tmp_path / "wal")
    assert again.open() == [segment]  # recovered segments are landed first
    assert read_records(segment) == ([b"acknowledged"], segment.stat().st_size)
    again.append(b"next")
    again.close()
    assert [read_records(path)[0] for path in segments(tmp_path / "wal")] == [[b"acknowledged"], [b"next"]]


def test_only_one_server_per_log(wal):
    with pytest.raises(WalError, match="another `cdp serve` is using"):
        WriteAheadLog(wal.directory).open()


# ---------------------------------------------------------------------- the lander


def test_replaying_a_segment_after_its_commit_doubles_nothing(tmp_path, wal):
    """A crash between the warehouse commit and the segment's deletion replays the segment."""
    root = serve_project(tmp_path / "project")
    intake = Intake({"web-key": "web"})
    body = json.dumps({"batch": [track("u1"), track("u2"), {"type": "track", "event": "no ids"}],
                       "writeKey": "web-key"}).encode()
    wal.append(intake.accept("batch", body, None, datetime.now(UTC)).payload)
    [segment] = wal.seal()
    lander = Lander(load_project(root))
    reports = []
    lander.land([segment], reports.append)
    lander.land([segment], reports.append)  # the replay
    assert [(r["inserted"], r["duplicates"], r["rejected"]) for r in reports] == [(2, 0, 1), (0, 2, 1)]
    assert len(landed(root)) == 2
    assert len(rejected(root)) == 1  # a rejection is not repeated either


def test_record_messages_merges_the_batch_fields():
    payload = json.dumps({
        "v": 1, "source": "web", "receivedAt": "2026-06-30T10:00:00+00:00", "call": "batch",
        "context": {"ip": "1.2.3.4"}, "sentAt": "2026-06-30T09:59:59+00:00",
        "batch": [
            {"type": "identify", "userId": "u", "context": {"traits": {"plan": "pro"}}, "receivedAt": "forged"},
            {"type": "track", "userId": "u", "event": "e", "sentAt": "2026-06-30T09:00:00+00:00"},
            "not an object",
        ],
    }).encode()
    source, items = record_messages(payload)
    assert source == "web"
    (origin, identify), (_, tracked), (_, junk) = items
    assert origin == "cdp serve batch (web) 2026-06-30T10:00:00+00:00 #1"
    assert identify["context"] == {"ip": "1.2.3.4", "traits": {"plan": "pro"}}
    assert identify["traits"] == {"plan": "pro"}  # RudderStack sends identify traits in context
    assert identify["receivedAt"] == tracked["receivedAt"] == "2026-06-30T10:00:00+00:00"
    assert identify["sentAt"] == "2026-06-30T09:59:59+00:00"
    assert tracked["sentAt"] == "2026-06-30T09:00:00+00:00"  # its own wins
    assert junk == "not an object"  # landing_row rejects it with its reason


# ---------------------------------------------------------------------- configuration


def test_write_keys_come_from_sources_with_env_vars(tmp_path):
    root = serve_project(tmp_path)
    project = load_project(root, environ={})
    assert write_keys(project, {}) == {"web-key": "web", "backend-key": "backend"}
    assert write_keys(project, {"BACKEND_WRITE_KEY": "from-env"})["from-env"] == "backend"


@pytest.mark.parametrize(("sources", "words"), [
    ("", "has no `sources`"),
    ("sources:\n  web:\n    write_key: ${WEB_KEY}\n", "sources.web.write_key: environment variable WEB_KEY is not set"),
    ("sources:\n  web:\n    write_key: same\n  app:\n    write_key: same\n",
     "sources.app.write_key is the same as sources.web.write_key"),
])
def test_bad_sources_stop_the_server_before_it_starts(tmp_path, sources, words):
    root = serve_project(tmp_path, "name: t\nwarehouse:\n  type: duckdb\n  path: data/serve.duckdb\n" + sources)
    with pytest.raises(CdpError) as error:
        write_keys(load_project(root, environ={}), {})
    assert words in str(error.value)
    assert "same" not in str(error.value).replace("the same as", "")  # keys are never printed


def test_sizes():
    assert parse_size("256MB") == 256 * 1024 * 1024
    assert parse_size("1 KB") == 1024
    assert parse_size("2g") == 2 * 1024**3
    assert parse_size("4096") == 4096
    with pytest.raises(CdpError, match="not a size"):
        parse_size("lots")
