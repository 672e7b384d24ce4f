"""A small base for stateful fake vendor APIs served over real HTTP on loopback.

Destinations are tested against these fakes through their real HTTP client (connection pool,
timeouts, retries), so the fakes speak real HTTP/1.1 on ``127.0.0.1`` instead of patching
the client. A subclass only implements :meth:`FakeServer.handle`; the base records every
request, applies injected faults, and answers.

Example::

    with FakeBraze() as braze:
        braze.inject(Fault(status=503), Fault(delay=2.0))   # next two requests misbehave
        ...
        braze.wait_for_requests(3)
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

#: What a fake answers with: a JSON value (dict or list), text, raw bytes, or nothing.
Body = dict[str, Any] | list[Any] | str | bytes | None


@dataclass(frozen=True)
class Fault:
    """A misbehaviour to apply to the next matching request(s).

    Attributes:
        status: Status to answer with instead of the fake's own answer. ``None`` (with a
            ``delay``) sleeps and then answers normally, which is how a slow-but-working
            vendor looks.
        headers: Extra response headers; they override the fake's own (e.g. ``Retry-After``).
        body: Response body; ``None`` lets the fake pick the vendor's usual body for ``status``.
        delay: Seconds to sleep before answering, to provoke client read timeouts.
        path: Only requests to this exact path (without query) match; ``None`` matches all.
        times: How many matching requests this fault applies to.
    """

    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Body = None
    delay: float = 0.0
    path: str | None = None
    times: int = 1


@dataclass
class Response:
    """What a fake answers: status, body (JSON-encoded when a dict or list) and headers."""

    status: int
    body: Body = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RecordedRequest:
    """One request as the fake saw it, plus the status it was answered with.

    Attributes:
        method: HTTP method, upper case.
        path: Path without the query string.
        query: The raw query string ("" when none).
        headers: Request headers with lower-case names.
        body: Parsed JSON when the body is JSON, else the decoded text, ``None`` when empty.
        raw: The body bytes after gzip/deflate decoding.
        client: ``(host, port)`` of the client socket; the same port on consecutive requests
            means the client reused its keep-alive connection.
        status: Status of the answer; set once answered (requests are recorded after that).
        response_body: The body the fake answered with (parsed JSON or text).
        fault: The injected fault that shaped the answer, if any.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    raw: bytes
    client: tuple[str, int]
    status: int | None = None
    response_body: Any = None
    fault: Fault | None = None


class FakeServer:
    """Base of the fakes: a ``ThreadingHTTPServer`` on ``127.0.0.1:<free port>``.

    Subclasses implement :meth:`handle` (and may override :meth:`finalize` to add headers every
    response carries, and :meth:`fault_body` for the vendor's usual error bodies). Handlers run
    on many threads at once, so subclasses guard their state with ``self._lock``.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._answered = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._faults: list[list[Any]] = []  # [fault, uses left], first match wins
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------------- lifecycle
    def start(self) -> Self:
        """Bind a free loopback port and serve from a daemon thread."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True  # a handler stuck in a delay must not block interpreter exit
        httpd.fake = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open keep-alive connections, so clients see a dead server."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()  # wakes handlers sleeping in an injected delay
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        if self._httpd is None:
            raise RuntimeError(f"{type(self).__name__} is not started; use start() or `with`")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # ------------------------------------------------------------------------------ recording
    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests answered so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``n`` requests were answered; return them all.

        Raises:
            TimeoutError: fewer than ``n`` requests were answered within ``timeout`` seconds.
        """
        with self._answered:
            if not self._answered.wait_for(lambda: len(self._requests) >= n, timeout=timeout):
                raise TimeoutError(
                    f"{type(self).__name__} got {len(self._requests)} requests, "
                    f"expected {n} within {timeout}s"
                )
            return list(self._requests)

    # ------------------------------------------------------------------------ fault injection
    def inject(self, *faults: Fault) -> None:
        """Queue faults; each is consumed by the next ``fault.times`` requests it matches."""
        with self._lock:
            self._faults.extend([fault, fault.times] for fault in faults if fault.times > 0)

    def clear_faults(self) -> None:
        """Drop the faults not yet consumed."""
        with self._lock:
            self._faults.clear()

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for entry in self._faults:
                fault = entry[0]
                if fault.path is None or fault.path == path:
                    entry[1] -= 1
                    if entry[1] == 0:
                        self._faults.remove(entry)
                    return fault
        return None

    # ---------------------------------------------------------------------- subclass hooks
    def handle(self, request: RecordedRequest) -> Response:
        """Answer one request (the vendor's behaviour). Subclasses must override."""
        raise NotImplementedError

    def finalize(self, request: RecordedRequest, response: Response) -> None:
        """Adjust every response, injected or not (e.g. headers the vendor always sends)."""

    def fault_body(self, status: int) -> Body:
        """The body the vendor usually sends with ``status``, for faults that give none."""
        try:
            return HTTPStatus(status).phrase
        except ValueError:
            return ""

    # ----------------------------------------------------------------------------- serving
    def _serve(self, request: RecordedRequest) -> Response:
        fault = self._take_fault(request.path)
        request.fault = fault
        if fault is not None and fault.delay > 0:
            # Interruptible sleep: stop() must not wait for a delay meant to time clients out.
            self._stopping.wait(fault.delay)
        if fault is not None and fault.status is not None:
            body = fault.body if fault.body is not None else self.fault_body(fault.status)
            response = Response(fault.status, body)
            self.finalize(request, response)
            response.headers.update(fault.headers)
        else:
            try:
                response = self.handle(request)
            except Exception as exc:  # noqa: BLE001 - a bug in the fake must be a loud 500, not a hang
                response = Response(500, f"fake server error: {exc!r}")
            self.finalize(request, response)
            if fault is not None:
                response.headers.update(fault.headers)
        return response

    def _record(self, request: RecordedRequest) -> None:
        with self._answered:
            self._requests.append(request)
            self._answered.notify_all()


class _Handler(BaseHTTPRequestHandler):
    """Reads one request, hands it to the fake, writes the answer; HTTP/1.1 keep-alive."""

    # HTTP/1.1 keeps connections open between requests, as real vendors (and pools) do;
    # that requires a Content-Length on every response, which _write always sends.
    protocol_version = "HTTP/1.1"
    # headers and body go out in separate writes: with Nagle on, every answer waits ~40 ms
    disable_nagle_algorithm = True
    server: ThreadingHTTPServer

    def setup(self) -> None:
        super().setup()
        with self._fake._lock:
            self._fake._connections.add(self.connection)

    def finish(self) -> None:
        with self._fake._lock:
            self._fake._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass  # the client went away mid-answer (e.g. it timed out during a delay)

    @property
    def _fake(self) -> FakeServer:
        return self.server.fake  # type: ignore[attr-defined,no-any-return]

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr log; tests read ``fake.requests`` instead."""

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _dispatch(self) -> None:
        raw = self._read_body()
        headers = {name.lower(): value for name, value in self.headers.items()}
        raw = _decode_content(raw, headers.get("content-encoding", ""))
        parts = urlsplit(self.path)
        request = RecordedRequest(
            method=self.command,
            path=parts.path,
            query=parts.query,
            headers=headers,
            body=_parse_body(raw),
            raw=raw,
            client=self.client_address[:2],
        )
        response = self._fake._serve(request)
        request.status = response.status
        request.response_body = response.body
        # recorded before the answer leaves: a client that has read it must find it recorded
        self._fake._record(request)
        self._write(response)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers, if any, end with an empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _write(self, response: Response) -> None:
        body, content_type = _encode_body(response.body)
        try:
            self.send_response(response.status)
            headers = {"Content-Type": content_type, **response.headers}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # client gone (timed out); nothing left to say


def _decode_content(raw: bytes, encoding: str) -> bytes:
    """Undo ``Content-Encoding`` (gzip and deflate are what HTTP clients send)."""
    encoding = encoding.strip().lower()
    if encoding == "gzip":
        return gzip.decompress(raw)
    if encoding == "deflate":
        return zlib.decompress(raw)
    return raw


def _parse_body(raw: bytes) -> Any:
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _encode_body(body: Body) -> tuple[bytes, str]:
    if body is None:
        return b"", "text/plain; charset=utf-8"
    if isinstance(body, bytes):
        return body, "application/octet-stream"
    if isinstance(body, str):
        return body.encode("utf-8"), "text/plain; charset=utf-8"
    return json.dumps(body).encode("utf-8"), "application/json"
