"""`cdp serve` over HTTP (spec section 7): the real Segment and RudderStack SDKs, the limits,
the write keys and the JSON errors, against one server (in-process, with its lander child
process) landing into a real DuckDB file."""

from __future__ import annotations

import base64
import gzip
import json
import time
import tracemalloc
import uuid
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
import requests
from rudderstack.analytics import Client as RudderClient
from segment.analytics import Client as SegmentClient

from cdp_warehouse.collect.server import Collector, HttpError, inflate
from cdp_warehouse.specs import load_project
from tests.conftest import write_project

CDP_YAML = """\
name: serve_test
warehouse:
  type: duckdb
  path: data/serve.duckdb
sources:
  web:
    write_key: web-key
  backend:
    write_key: ${BACKEND_WRITE_KEY:-backend-key}
"""
AUDIENCES = """\
traits:
  - name: events_total
    count: {event: "*"}
"""
COLUMNS = ("message_id, type, event, user_id, anonymous_id, group_id, previous_id, timestamp, received_at, "
           "sent_at, properties, traits, context, source")


# ---------------------------------------------------------------------- helpers (also used by the
# other test_server_* modules)


def serve_project(root: Path, cdp_yaml: str = CDP_YAML) -> Path:
    return write_project(root, AUDIENCES, cdp_yaml)


def wait_until(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def query(root: Path, sql: str, *params) -> list[dict]:
    """Rows of ``sql`` on the project's DuckDB file (read-only; retried while the server's
    lander holds the file for a flush)."""
    path = root / "data" / "serve.duckdb"
    deadline = time.monotonic() + 10
    while True:
        try:
            with duckdb.connect(str(path), read_only=True) as con:
                cursor = con.execute(sql, list(params))
                names = [column[0] for column in cursor.description]
                return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def landed(root: Path, where: str = "true", *params) -> dict[str, dict]:
    """message_id → row of raw.events."""
    rows = query(root, f"SELECT {COLUMNS} FROM raw.events WHERE {where}", *params)
    return {row["message_id"]: row for row in rows}


def rejected(root: Path, where: str = "true", *params) -> list[dict]:
    return query(root, f"SELECT reason, message, origin, source FROM raw.rejected_messages WHERE {where} "
                 "ORDER BY reason", *params)


def post(url: str, body: object, *, path: str = "/v1/batch", key: str | None = "web-key",
         compress: bool = False, raw: bytes | None = None) -> requests.Response:
    """POST ``body`` as JSON (or ``raw`` bytes), with the write key as HTTP Basic user."""
    data = raw if raw is not None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if compress:
        data = gzip.compress(data)
        headers["Content-Encoding"] = "gzip"
    if key is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    return requests.post(url + path, data=data, headers=headers, timeout=10)


def track(user: str, event: str = "Signed Up", **extra) -> dict:
    return {"type": "track", "messageId": f"m-{uuid.uuid4().hex[:12]}", "userId": user, "anonymousId": None,
            "event": event, "properties": {"plan": "pro"}, "timestamp": datetime.now(UTC).isoformat(), **extra}


def settle(server: Collector) -> None:
    """Wait until everything acknowledged is in raw.events."""
    wait_until(lambda: server.wal.backlog_bytes == 0 and server.wal.pending_since is None,
               what="the write-ahead log to drain")


def assert_error(response: requests.Response, status: int, code: str, *words: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"code", "message"} and body["code"] == code
    for word in words:
        assert word in body["message"]
    return body


# ---------------------------------------------------------------------- one server for this module


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return serve_project(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def server(root):
    collector = Collector(load_project(root), port=0, flush_interval=0.1).start()
    yield collector
    assert collector.stop(timeout=20)


@pytest.fixture
def url(server) -> str:
    return server.url


@pytest.fixture
def user() -> str:
    """A user id of this test alone, to find its rows in the shared warehouse."""
    return f"user-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------------- the real SDKs


def every_call(client, user: str) -> None:
    client.track(user, "Order Completed", {"total": 19.99})
    client.identify(user, {"email": f"{user}@example.com", "plan": "pro"})
    client.page(user, "Docs", "Getting Started", {"path": "/docs"})
    client.screen(user, "App", "Home")
    client.group(user, "acme", {"name": "Acme"})
    client.alias(f"anon-{user}", user)


def assert_every_call_landed(root: Path, user: str, source: str) -> None:
    rows = sorted(landed(root, "user_id = ?", user).values(), key=lambda row: row["type"])
    assert [(r["type"], r["event"], r["group_id"], r["previous_id"]) for r in rows] == [
        ("alias", None, None, f"anon-{user}"),
        ("group", None, "acme", None),
        ("identify", None, None, None),
        ("page", "Getting Started", None, None),
        ("screen", "Home", None, None),
        ("track", "Order Completed", None, None),
    ]
    by_type = {row["type"]: row for row in rows}
    assert json.loads(by_type["track"]["properties"]) == {"total": 19.99}
    assert json.loads(by_type["identify"]["traits"]) == {"email": f"{user}@example.com", "plan": "pro"}
    assert json.loads(by_type["group"]["traits"]) == {"name": "Acme"}
    now = datetime.now(UTC).replace(tzinfo=None)
    for row in rows:
        assert row["source"] == source
        assert json.loads(row["context"])["library"]["name"] == "analytics-python"
        assert row["sent_at"] is not None  # the batch's sentAt reached every message
        assert now - timedelta(minutes=1) < row["received_at"] <= now  # stamped by the server
        assert abs(row["timestamp"] - row["received_at"]) < timedelta(seconds=5)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_segment_sdk_delivers_every_call(root, server, user, compress):
    client = SegmentClient(write_key="web-key", host=server.url, sync_mode=True, gzip=compress)
    every_call(client, user)  # sync mode: each call is one POST /v1/batch that raises on non-2xx
    settle(server)
    assert_every_call_landed(root, user, "web")


def test_segment_sdk_batches_in_the_background(root, server, user):
    errors = []
    client = SegmentClient(write_key="web-key", host=server.url, gzip=True, upload_interval=0.05,
                           on_error=lambda error, batch: errors.append(error))
    every_call(client, user)
    client.shutdown()
    assert errors == []
    settle(server)
    assert_every_call_landed(root, user, "web")


@pytest.mark.parametrize("compress", [True, False], ids=["gzip (its default)", "plain"])
def test_rudderstack_sdk_delivers_every_call(root, server, user, compress):
    """rudder-sdk-python gzips by default, sends the key only as HTTP Basic, wants exactly 200
    and sends identify traits as context.traits."""
    client = RudderClient(write_key="backend-key", host=server.url, sync_mode=True, gzip=compress)
    every_call(client, user)
    settle(server)
    assert_every_call_landed(root, user, "backend")


# ---------------------------------------------------------------------- what lands


def test_clock_skew_is_corrected_with_the_batch_sent_at(root, server, url, user):
    # The device clock is an hour fast: it stamped the event 10 s before it sent the batch.
    device_now = datetime.now(UTC) + timedelta(hours=1)
    message = track(user, timestamp=(device_now - timedelta(seconds=10)).isoformat())
    assert post(url, {"batch": [message], "sentAt": device_now.isoformat()}).status_code == 200
    settle(server)
    row = landed(root, "user_id = ?", user)[message["messageId"]]
    assert row["sent_at"] == device_now.replace(tzinfo=None)  # as sent, not corrected
    assert row["received_at"] - row["timestamp"] == pytest.approx(timedelta(seconds=10), abs=timedelta(seconds=2))


def test_batch_context_and_integrations_merge_into_each_message(root, server, url, user):
    own = track(user, context={"library": {"name": "own-lib"}, "page": {"path": "/a"}})
    bare = track(user)
    batch = {"batch": [own, bare], "context": {"library": {"name": "batch-lib"}, "ip": "10.0.0.1"},
             "integrations": {"All": False}}
    assert post(url, batch).status_code == 200
    settle(server)
    rows = landed(root, "user_id = ?", user)
    assert json.loads(rows[own["messageId"]]["context"]) == {
        "library": {"name": "own-lib"}, "page": {"path": "/a"}, "ip": "10.0.0.1"}  # the message's keys win
    assert json.loads(rows[bare["messageId"]]["context"]) == {"library": {"name": "batch-lib"}, "ip": "10.0.0.1"}


def test_single_call_endpoints_with_the_write_key_in_the_body(root, server, url, user):
    """The endpoint gives the type; the body's writeKey authenticates and is not stored."""
    message = {"userId": user, "event": "Signed Up", "messageId": f"single-{user}", "writeKey": "web-key"}
    assert post(url, message, path="/v1/track", key=None).status_code == 200
    identify = {"userId": user, "traits": {"plan": "pro"}, "messageId": f"ident-{user}", "type": "track"}
    assert post(url, identify, path="/v1/identify", key="backend-key").status_code == 200
    settle(server)
    rows = landed(root, "user_id = ?", user)
    assert (rows[f"single-{user}"]["type"], rows[f"single-{user}"]["source"]) == ("track", "web")
    assert (rows[f"ident-{user}"]["type"], rows[f"ident-{user}"]["source"]) == ("identify", "backend")
    assert "web-key" not in json.dumps([str(row) for row in rows.values()])


def test_invalid_messages_are_kept_in_rejected_messages_and_the_rest_lands(root, server, url, user):
    good = track(user)
    nobody = track(user) | {"userId": None, "anonymousId": None, "properties": {"tag": user}}
    no_event = track(user) | {"event": None}
    response = post(url, {"batch": [good, nobody, no_event]})
    assert response.status_code == 200 and response.json() == {"success": True}
    settle(server)
    assert set(landed(root, "properties->>'plan' = 'pro' AND user_id = ?", user)) == {good["messageId"]}
    kept = rejected(root, "message LIKE ?", f"%{user}%")
    assert [row["reason"] for row in kept] == ["a message needs userId or anonymousId", "a track call needs event"]
    assert all(row["source"] == "web" and row["origin"].startswith("cdp serve batch (web)") for row in kept)


def test_a_duplicate_message_id_lands_once(root, server, url, user):
    first = track(user, event="First")
    again = first | {"event": "Again"}
    assert post(url, {"batch": [first]}).status_code == 200
    assert post(url, {"batch": [again]}).status_code == 200  # e.g. a client retry after a timeout
    settle(server)
    rows = landed(root, "user_id = ?", user)
    assert [row["event"] for row in rows.values()] == ["First"]


def test_a_message_that_breaks_the_landing_is_isolated(root, server, url, user):
    """A timestamp so far from sentAt that skew correction overflows, and a lone surrogate
    (valid JSON, not encodable as UTF-8): each is kept in rejected_messages, the rest lands."""
    good = track(user)
    overflow = track(user, timestamp="0001-01-01T00:00:00Z", sentAt="9999-12-31T00:00:00Z")
    surrogate = json.dumps({"batch": [{"type": "track", "userId": user, "event": "bad \ud800",
                                       "messageId": f"s-{user}"}]})  # json.dumps escapes it: \\ud800
    assert post(url, {"batch": [good, overflow]}).status_code == 200
    assert post(url, None, raw=surrogate.encode()).status_code == 200
    settle(server)
    assert set(landed(root, "user_id = ?", user)) == {good["messageId"]}
    kept = rejected(root, "message LIKE ?", f"%{user}%")
    assert len(kept) == 2
    assert all("could not be landed" in row["reason"] or "timestamp" in row["reason"] for row in kept)


# ---------------------------------------------------------------------- refused requests


def test_malformed_json_is_400(url):
    assert_error(post(url, None, raw=b'{"batch": [{"type": "track",'), 400, "invalid_json", "not valid JSON")
    assert_error(post(url, None, raw=b'{"batch": [{"type": "track", "x": NaN}]}'), 400, "invalid_json", "NaN")
    assert_error(post(url, None, raw=b"[1, 2]"), 400, "invalid_json", "JSON object")
    assert_error(post(url, {"batch": {"type": "track"}}), 400, "invalid_batch", "list")
    assert_error(post(url, None, raw=b"\x1f\x8b not gzip", compress=False), 400, "invalid_json")


def test_an_oversize_event_rejects_the_whole_batch(root, server, url, user):
    small = track(user)
    big = track(user, properties={"blob": "x" * (33 * 1024)})
    body = assert_error(post(url, {"batch": [small, big]}), 400, "event_too_large", "message 2", "32 KB")
    assert "33." in body["message"]
    settle(server)
    assert landed(root, "user_id = ?", user) == {}


def test_an_oversize_request_is_400_plain_or_gzipped(url):
    batch = {"batch": [track("u", properties={"blob": "x" * 20_000}) for _ in range(30)]}  # ~600 KB
    assert_error(post(url, batch), 400, "request_too_large", "500 KB")
    # gzipped it is small on the wire; the limit applies after decompression
    response = post(url, batch, compress=True)
    assert len(gzip.compress(json.dumps(batch).encode())) < 10_000
    assert_error(response, 400, "request_too_large", "after decompression")


def test_more_than_2500_events_is_400(url):
    batch = {"batch": [{"type": "track", "userId": "u", "event": "e"} for _ in range(2501)]}
    assert_error(post(url, batch), 400, "batch_too_large", "2,501", "2,500")


def test_unknown_or_missing_write_key_is_401(url, root, user):
    batch = {"batch": [track(user)]}
    body = assert_error(post(url, batch, key="not-a-key"), 401, "unauthorized", "unknown write key")
    assert "not-a-key" not in body["message"]  # keys are never echoed
    assert_error(post(url, batch, key=None), 401, "unauthorized", "no write key")
    assert_error(post(url, batch | {"writeKey": "nope"}, key=None), 401, "unauthorized")
    # HTTP Basic wins over the body
    assert_error(post(url, batch | {"writeKey": "web-key"}, key="nope"), 401, "unauthorized")


def test_unknown_endpoints_are_404(url):
    assert_error(post(url, {}, path="/v1/trackz"), 404, "not_found", "/v1/{track,")


def test_a_gzip_bomb_is_refused(url):
    bomb = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    data = bomb.compress(b'{"batch": [' + b" " * 50_000_000) + bomb.flush()  # 50 MB of JSON whitespace
    assert len(data) < 100_000
    started = time.monotonic()
    response = requests.post(url + "/v1/batch", data=data, timeout=10, headers={
        "Content-Encoding": "gzip", "Authorization": "Basic " + base64.b64encode(b"web-key:").decode()})
    assert_error(response, 400, "request_too_large", "after decompression")
    assert time.monotonic() - started < 2


def test_inflate_stops_at_the_limit_instead_of_inflating_everything():
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = b"".join(compressor.compress(b"\0" * 1_000_000) for _ in range(200)) + compressor.flush()  # 200 MB
    tracemalloc.start()
    try:
        with pytest.raises(HttpError) as refused:
            inflate(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert refused.value.status == 400
    assert peak < 4 * 1024 * 1024  # about the 500 KB limit (and the bomb itself), never 200 MB
    assert inflate(gzip.compress(b'{"a": 1}') + gzip.compress(b"")) == b'{"a": 1}'  # several members


def test_health_reports_the_log_and_the_landing(url):
    state = requests.get(url + "/health", timeout=5).json()
    assert state["status"] == "ok"
    assert {"backlog_bytes", "landed", "rejected", "flush_failures"} <= set(state)


def test_other_methods_are_405_in_json(url):
    response = requests.put(url + "/v1/track", data=b"{}", timeout=5)
    assert_error(response, 405, "method_not_allowed", "PUT is not allowed")
    assert response.headers["Allow"] == "GET, POST"
