"""`cdp serve`: the Segment HTTP Tracking API (spec section 7), durable before it answers.

``POST /v1/{track,identify,page,screen,group,alias,batch}`` as documented by Segment
(https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/), so the
Segment and RudderStack SDKs pointed at it with ``host=`` work unchanged.

One request, in order:

1. the body is read (``Content-Length`` or chunked) and, with ``Content-Encoding: gzip``,
   inflated *with a cap*: a small body that inflates past 500 KB is refused after 500 KB of
   output, never inflated whole (gzip bombs);
2. JSON is parsed (``NaN``/``Infinity`` are refused: they are not JSON and no warehouse
   takes them); the write key, the HTTP Basic user else ``writeKey`` in the body, names the
   source (401 otherwise);
3. limits: 32 KB per event, 500 KB per request after decompression, 2,500 events per batch
   (400, the whole request); a message that is well-formed but invalid (no ``userId`` nor
   ``anonymousId``, a track without ``event``) is *not* refused here: it is kept with its
   reason in ``rejected_messages`` when it is landed, like ``cdp load`` does;
4. the request becomes one record of the write-ahead log (``wal.py``): the source, the
   server's ``receivedAt``, the batch-level ``context``/``integrations``/``sentAt`` and the
   messages (``writeKey`` removed: secrets are not written to disk). 200 is sent only once
   the record is fsync'd; past ``max_backlog`` bytes not yet landed the answer is 429 with
   ``Retry-After``;
5. the flusher (``flusher.py``) has the lander child process (``lander.py``) land the log in
   micro-batches within about a second (``--flush-interval``, default 1 s, or 8 MB), merging
   the batch-level fields into each message and correcting clock skew (``landing_row``);
   a log segment is deleted only after its warehouse commit.

Operations: the log lives in ``wal/`` next to the DuckDB file (``data/wal/`` by default) and
is replayed on start; the 429 cap is ``--max-backlog`` or ``$CDP_SERVE_MAX_BACKLOG``
(default 256 MB); ``GET /health`` shows the backlog and the landing counters; on SIGTERM or
SIGINT the server stops accepting, waits for requests in flight, lands what it acknowledged
and exits within 30 s (what it could not land, e.g. with the warehouse locked, stays in the
log for the next start).

Errors are ``{"code": ..., "message": ...}`` (both SDKs read these keys). Nothing is logged
per request: an access log would be the one place a write key could leak.
"""

from __future__ import annotations

import base64
import gc
import hmac
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from cdp_warehouse.collect.flusher import FLUSH_INTERVAL, Flusher
from cdp_warehouse.collect.wal import WalClosed, WalError, WriteAheadLog
from cdp_warehouse.errors import CdpError
from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.specs.envvars import MissingEnvVar, interpolate

KB = 1024
MAX_EVENT_BYTES = 32 * KB  # per message, as compact JSON (the SDKs check the same before sending)
MAX_REQUEST_BYTES = 500 * KB  # per request, after decompression
MAX_BATCH_EVENTS = 2_500
MAX_BACKLOG_BYTES = 256 * KB * KB  # 429 past this much acknowledged but not yet landed
DRAIN_BYTES = 8 * KB * KB  # an oversize body up to this size is read and dropped, to keep the connection
STOP_SECONDS = 25.0  # SIGTERM: stop accepting, land what was acknowledged, exit (the spec allows 30 s)
CALLS = ("track", "identify", "page", "screen", "group", "alias", "batch")
BACKLOG_ENV = "CDP_SERVE_MAX_BACKLOG"

# Compact and ASCII-only: sizes are measured on it and surrogates survive the log.
_encode = json.JSONEncoder(separators=(",", ":")).encode
log = logging.getLogger("cdp_warehouse.collect")


class HttpError(Exception):
    """An answer other than 200: status, a stable ``code`` and a readable message."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: int | None = None,
                 close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.close = close


# ---------------------------------------------------------------------- configuration


def write_keys(project: ResolvedProject, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """write key → source name, from ``sources`` in cdp.yaml (``${ENV}`` resolved now)."""
    environ = os.environ if environ is None else environ
    keys: dict[str, str] = {}
    problems: list[tuple[str, str | None]] = []
    for name, source in project.config.sources.items():
        where = f"cdp.yaml: sources.{name}.write_key"
        try:
            key = interpolate(source.write_key, environ)
        except MissingEnvVar as missing:
            problems.append((f"{where}: environment variable {missing.name} is not set",
                             f"set it, or give a default: ${{{missing.name}:-value}}"))
            continue
        if not key.strip():
            problems.append((f"{where} is empty", "give every source a write key"))
        elif key in keys:
            problems.append((f"{where} is the same as sources.{keys[key]}.write_key",
                             "each source needs its own write key, so that `source` tells them apart"))
        else:
            keys[key] = name
    if not project.config.sources:
        problems.append(("cdp.yaml has no `sources`: `cdp serve` accepts only known write keys",
                         "add e.g. `sources: {web: {write_key: ${WEB_WRITE_KEY}}}` to cdp.yaml"))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CdpError(problems[0][0] + more, hint=problems[0][1])
    return keys


def wal_directory(project: ResolvedProject) -> Path:
    """Where the write-ahead log lives: ``wal/`` next to the DuckDB file (``data/wal``)."""
    config = project.config.warehouse
    if config.type == "duckdb":
        if config.path == ":memory:":
            raise CdpError("cdp serve needs a DuckDB file, not an in-memory database",
                           hint="set warehouse.path in cdp.yaml, e.g. data/warehouse.duckdb")
        return project.path(config.path).parent / "wal"
    return project.path("data/wal")


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?i?b?)?\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """``"256MB"``, ``"64 KB"``, ``"1g"`` or a number of bytes → bytes (units are powers of 1024)."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if not match:
        raise CdpError(f"not a size: {text!r}", hint="write e.g. 256MB, 64KB or a number of bytes")
    unit = (match.group(2) or "b").lower()[:1]
    return int(float(match.group(1)) * {"b": 1, "k": KB, "m": KB**2, "g": KB**3}[unit])


def human_size(size: int) -> str:
    if size < KB:
        return f"{size} bytes"
    return f"{size / KB:.1f} KB" if size < KB * KB else f"{size / KB / KB:.1f} MB"


# ---------------------------------------------------------------------- one request


def inflate(data: bytes, limit: int = MAX_REQUEST_BYTES) -> bytes:
    """Decompress a gzip body, refusing it as soon as the output passes ``limit`` (so a
    gzip bomb costs at most ``limit`` bytes of output, whatever it would inflate to)."""
    out: list[bytes] = []
    size = 0
    try:
        while True:  # a gzip body may hold several members
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            chunk = inflater.decompress(data, limit + 1 - size)
            size += len(chunk)
            if size > limit:
                raise HttpError(400, "request_too_large",
                                f"the request inflates to more than {limit // KB} KB; the limit is "
                                f"{limit // KB} KB per request after decompression")
            out.append(chunk)
            if not inflater.eof:
                raise HttpError(400, "invalid_gzip", "the gzip body is truncated")
            data = inflater.unused_data
            if not data.strip(b"\0"):
                return b"".join(out)
    except zlib.error as error:
        raise HttpError(400, "invalid_gzip", f"the body is not valid gzip: {error}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


@dataclass(frozen=True)
class Accepted:
    """A request that passed every check: its log record and what it holds."""

    source: str
    payload: bytes
    events: int


class Intake:
    """Turns a request (call, decompressed body, Authorization header) into a log record."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._keys = [(key.encode(), name) for key, name in keys.items()]

    def source_for(self, authorization: str | None, body: dict[str, Any]) -> str:
        key = ""
        if authorization:
            scheme, _, credentials = authorization.strip().partition(" ")
            if scheme.lower() == "basic":
                try:
                    key = base64.b64decode(credentials.strip(), validate=True).decode("utf-8").partition(":")[0]
                except ValueError:
                    raise HttpError(401, "unauthorized", "the Authorization header is not valid HTTP Basic") from None
        if not key and isinstance(body.get("writeKey"), str):
            key = body["writeKey"]
        if not key:
            raise HttpError(401, "unauthorized",
                            "no write key: send it as the HTTP Basic user or as `writeKey` in the body")
        given = key.encode()
        found = None
        for candidate, name in self._keys:  # compare_digest: no timing hint about valid keys
            if hmac.compare_digest(candidate, given):
                found = name
        if found is None:
            raise HttpError(401, "unauthorized", "unknown write key (see `sources` in cdp.yaml)")
        return found

    def accept(self, call: str, body: bytes, authorization: str | None, now: datetime) -> Accepted:
        if len(body) > MAX_REQUEST_BYTES:
            raise HttpError(400, "request_too_large", f"the request is {len(body) / KB:.1f} KB; "
                            f"the limit is {MAX_REQUEST_BYTES // KB} KB per request")
        try:
            data = json.loads(body, parse_constant=_no_constant)
        except (ValueError, RecursionError) as error:
            raise HttpError(400, "invalid_json", f"the body is not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise HttpError(400, "invalid_json", "the body must be a JSON object")
        source = self.source_for(authorization, data)
        record: dict[str, Any] = {"v": 1, "source": source,
                                  "receivedAt": now.astimezone(UTC).isoformat(timespec="microseconds"),
                                  "call": call}
        if call == "batch":
            messages = data.get("batch")
            if not isinstance(messages, list):
                raise HttpError(400, "invalid_batch", "`batch` must be a list of messages")
            if len(messages) > MAX_BATCH_EVENTS:
                raise HttpError(400, "batch_too_large", f"the batch has {len(messages):,} events; "
                                f"the limit is {MAX_BATCH_EVENTS:,} per request")
            for key in ("context", "integrations"):
                if data.get(key) is not None:
                    if not isinstance(data[key], dict):
                        raise HttpError(400, "invalid_batch", f"batch-level `{key}` must be an object")
                    record[key] = data[key]
            if data.get("sentAt") is not None:
                if not isinstance(data["sentAt"], str):
                    raise HttpError(400, "invalid_batch", "batch-level `sentAt` must be an ISO 8601 string")
                record["sentAt"] = data["sentAt"]
        else:
            data.pop("writeKey", None)
            data["type"] = call  # the endpoint says what it is
            messages = [data]
        parts = []
        for index, message in enumerate(messages, start=1):
            if isinstance(message, dict) and "writeKey" in message:
                message = {name: value for name, value in message.items() if name != "writeKey"}
            text = _encode(message)
            if len(text) > MAX_EVENT_BYTES:
                which = f"message {index} of the batch" if call == "batch" else "the message"
                raise HttpError(400, "event_too_large", f"{which} is {len(text) / KB:.1f} KB; "
                                f"the limit is {MAX_EVENT_BYTES // KB} KB per event")
            parts.append(text)
        head = _encode(record)
        payload = (head[:-1] + ',"batch":[' + ",".join(parts) + "]}").encode("ascii")
        return Accepted(source, payload, len(parts))


# ---------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the SDKs reuse one connection
    server_version = "cdp-serve"
    sys_version = ""
    timeout = 75  # seconds an idle keep-alive connection is kept
    # Headers and body go out in two writes; with Nagle on, the second waits for the client's
    # delayed ACK (40 ms on Linux) on every request.
    disable_nagle_algorithm = True
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no access log (see the module docstring)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own errors (bad request line, unknown method, ...) as JSON too."""
        headers = {}
        if code == HTTPStatus.NOT_IMPLEMENTED:  # a method without a do_<METHOD>
            code, headers = HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": "GET, POST"}
            message = f"{getattr(self, 'command', '')} is not allowed: POST events to /v1/{{{','.join(CALLS)}}}"
        status = HTTPStatus(code)
        self.close_connection = True
        self._reply(status, {"code": status.phrase.lower().replace(" ", "_").replace("-", "_"),
                             "message": message or status.phrase}, headers)

    def do_GET(self) -> None:
        if urlsplit(self.path).path.rstrip("/") in ("", "/health"):
            self._reply(200, self.server.collector.health())
        else:
            self._reply(404, {"code": "not_found", "message": f"no such endpoint: GET {self.path[:100]}"})

    def do_POST(self) -> None:
        collector = self.server.collector
        path = urlsplit(self.path).path.rstrip("/")
        call = path[len("/v1/"):] if path.startswith("/v1/") else ""
        try:
            if call not in CALLS:
                self.close_connection = True
                raise HttpError(404, "not_found", f"no such endpoint: POST {self.path[:100]} "
                                f"(use /v1/{{{','.join(CALLS)}}})")
            if not collector.enter():
                raise HttpError(503, "shutting_down", "the server is shutting down; retry", close=True)
            try:
                body = self._read_body()
                now = datetime.now(UTC)
                accepted = collector.intake.accept(call, inflate(body) if self._gzip() else body,
                                                   self.headers.get("Authorization"), now)
                collector.commit(accepted)
            finally:
                collector.leave()
        except HttpError as error:
            if error.close:
                self.close_connection = True
            headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
            self._reply(error.status, {"code": error.code, "message": error.message}, headers)
            return
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            return
        except Exception:  # a bug: answer (the SDKs retry 5xx), nothing was acknowledged
            log.exception("request failed")
            self.close_connection = True
            self._reply(500, {"code": "internal_error", "message": "the server failed; retry"})
            return
        self._reply(200, {"success": True})

    def _gzip(self) -> bool:
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            return True
        if encoding != "identity":
            raise HttpError(400, "unsupported_encoding", f"Content-Encoding {encoding[:40]!r} is not supported "
                            "(send gzip or nothing)")
        return False

    def _read_body(self) -> bytes:
        # A gzip body is never larger than what it inflates to, give or take its header.
        limit = MAX_REQUEST_BYTES + KB
        transfer = (self.headers.get("Transfer-Encoding") or "").strip().lower()
        if transfer == "chunked":
            return self._read_chunked(limit)
        if transfer not in ("", "identity"):
            raise HttpError(400, "invalid_request", "unsupported Transfer-Encoding", close=True)
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0:
                raise ValueError
        except ValueError:
            raise HttpError(400, "invalid_request", "Content-Length is not a number", close=True) from None
        if length > limit:
            if length <= DRAIN_BYTES:
                self._discard(length)
            else:
                self.close_connection = True
            raise HttpError(400, "request_too_large", f"the request is {length / KB:.1f} KB; "
                            f"the limit is {MAX_REQUEST_BYTES // KB} KB per request")
        body = self.rfile.read(length)
        if len(body) < length:
            raise ConnectionError("the client closed the connection mid-body")
        return body

    def _read_chunked(self, limit: int) -> bytes:
        parts, size = [], 0
        while True:
            line = self.rfile.readline(1024)
            try:
                chunk = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise HttpError(400, "invalid_request", "malformed chunked body", close=True) from None
            if chunk == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            size += chunk
            if size > limit:
                raise HttpError(400, "request_too_large", f"the request is over {MAX_REQUEST_BYTES // KB} KB; "
                                f"the limit is {MAX_REQUEST_BYTES // KB} KB per request", close=True)
            parts.append(self.rfile.read(chunk))
            self.rfile.readline(1024)

    def _discard(self, length: int) -> None:
        while length > 0:
            data = self.rfile.read(min(length, 64 * KB))
            if not data:
                break
            length -= len(data)

    def _reply(self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        try:
            self.wfile.write(data)
        except OSError:  # the client went away; what it sent is (or is not) in the log either way
            self.close_connection = True


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # idle keep-alive connections must not hold up a shutdown
    request_queue_size = 256
    collector: Collector


# ---------------------------------------------------------------------- the server


class Collector:
    """The collection server: HTTP front, write-ahead log and flusher.

    Args:
        project: the resolved project (its ``sources`` give the write keys).
        host, port: where to listen (port 0: any free port, see ``url``).
        max_backlog: bytes acknowledged but not yet landed past which requests get 429.
        flush_interval: seconds a record may wait in the log before it is landed.
        wal_dir: the write-ahead log's directory (default: ``wal_directory(project)``).
        fsync: sync the log before answering (only tests that never crash turn it off).
        environ: where ``${VAR}`` in write keys is looked up (default: ``os.environ``).
    """

    def __init__(
        self,
        project: ResolvedProject,
        *,
        host: str = "127.0.0.1",
        port: int = 8088,
        max_backlog: int = MAX_BACKLOG_BYTES,
        flush_interval: float = FLUSH_INTERVAL,
        wal_dir: Path | None = None,
        fsync: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.project = project
        self.host, self.port = host, port
        self.max_backlog = max_backlog
        keys = write_keys(project, environ)
        self.intake = Intake(keys)
        self.sources = sorted(set(keys.values()))
        self.wal = WriteAheadLog(wal_dir or wal_directory(project), fsync=fsync)
        self.flusher = Flusher(project, self.wal, interval=flush_interval)
        self.accepted_requests = 0
        self.accepted_events = 0
        self._http: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._state = threading.Condition()
        self._inflight = 0
        self._stopping = False

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2] if self._http else (self.host, self.port)
        return f"http://{host}:{port}"

    def start(self) -> Self:
        """Recover and replay the log, listen, start the flusher. Returns self."""
        recovered = self.wal.open()
        if recovered:
            log.info("replaying %d write-ahead log segment(s) left by the previous run", len(recovered))
        try:
            self._http = _HttpServer((self.host, self.port), _Handler)
        except OSError as error:
            self.wal.close()
            raise CdpError(f"cannot listen on {self.host}:{self.port}: {error.strerror or error}",
                           hint="is another `cdp serve` running? pick another --port") from error
        self._http.collector = self
        self.flusher.start()
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="cdp-http", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = STOP_SECONDS) -> bool:
        """Stop accepting, wait for requests in flight, land everything acknowledged.
        Returns True when the log is empty; otherwise what is left is replayed on next start."""
        deadline = time.monotonic() + timeout
        with self._state:
            self._stopping = True
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        with self._state:  # requests already in flight finish (and are answered)
            in_flight_by = min(deadline, time.monotonic() + 10.0)
            self._state.wait_for(lambda: self._inflight == 0, timeout=max(0.0, in_flight_by - time.monotonic()))
        landed = self.flusher.stop(deadline)
        self.wal.close()
        return landed

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ called by requests

    def enter(self) -> bool:
        with self._state:
            if self._stopping:
                return False
            self._inflight += 1
            return True

    def leave(self) -> None:
        with self._state:
            self._inflight -= 1
            if self._inflight == 0:
                self._state.notify_all()

    def commit(self, accepted: Accepted) -> None:
        """Append to the log (200 follows) or refuse with 429/503."""
        if not accepted.events:
            return
        backlog = self.wal.backlog_bytes
        if backlog > self.max_backlog:
            raise HttpError(429, "backpressure",
                            f"{human_size(backlog)} of events are waiting for the warehouse "
                            f"(cap {human_size(self.max_backlog)}); retry later",
                            retry_after=self.flusher.retry_after)
        try:
            self.wal.append(accepted.payload)
        except WalClosed:
            raise HttpError(503, "shutting_down", "the server is shutting down; retry", close=True) from None
        except WalError as error:
            raise HttpError(503, "unavailable", f"cannot store the batch durably: {error}") from None
        with self._state:
            self.accepted_requests += 1
            self.accepted_events += accepted.events
        self.flusher.wake()

    def health(self) -> dict[str, Any]:
        stats = self.flusher.stats
        return {"status": "stopping" if self._stopping else "ok", "backlog_bytes": self.wal.backlog_bytes,
                "accepted_requests": self.accepted_requests, "accepted_events": self.accepted_events,
                "landed": stats.landed, "duplicates": stats.duplicates, "rejected": stats.rejected,
                "flushes": stats.flushes, "flush_failures": stats.failures, "last_flush_error": stats.last_error}


def serve(
    project: ResolvedProject,
    *,
    host: str = "127.0.0.1",
    port: int = 8088,
    max_backlog: int | None = None,
    flush_interval: float = FLUSH_INTERVAL,
    on_ready: Callable[[Collector], None] | None = None,
) -> bool:
    """Run the collector until SIGTERM or SIGINT, then stop it (``Collector.stop``).
    Returns True when everything acknowledged was landed."""
    if max_backlog is None:
        max_backlog = parse_size(os.environ.get(BACKLOG_ENV) or MAX_BACKLOG_BYTES)
    collector = Collector(project, host=host, port=port, max_backlog=max_backlog, flush_interval=flush_interval)
    # Request threads wait on sockets and fsyncs; while the flusher computes, each wake-up
    # waits for the GIL up to the switch interval (5 ms by default, paid many times per
    # request). 1 ms keeps the p99 low at a small cost in throughput.
    sys.setswitchinterval(0.001)
    stop = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stop.set()) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        collector.start()
        # What is loaded by now lives as long as the process: keep it out of every collection
        # (a full collection over the imported modules stalls all requests for ~50 ms).
        gc.collect()
        gc.freeze()
        if on_ready:
            on_ready(collector)
        while not stop.wait(0.5):
            pass
    finally:
        for number, handler in previous.items():  # a second Ctrl-C interrupts the shutdown
            signal.signal(number, handler)
    log.info("stopping: no new requests; landing what was acknowledged")
    return collector.stop()
