"""The lander: the child process of `cdp serve` that moves log segments into the warehouse.

Run as ``python -m cdp_warehouse.collect.lander PROJECT_DIR`` by the server's flusher
(``flusher.py``), never by hand. For each command it opens the warehouse, lands the given
sealed segments of the write-ahead log through ``land_messages`` (the rules and the
idempotency on ``message_id`` of ``cdp load``), reports each segment once committed, and
closes the warehouse: with DuckDB the file is held only while a flush runs.

Landing is CPU-bound Python. In the server's own process it would hold the GIL for hundreds
of milliseconds per flush, and every request waiting on a socket or an fsync would queue
behind it (p99 > 100 ms); here it uses the second core instead, and a crash (or a hung
warehouse) costs a restart, not the server.

A message that breaks the landing itself (as opposed to one ``landing_row`` rejects) is
isolated by bisecting its chunk and kept in ``rejected_messages`` with the error, so that
one bad message cannot block the log forever.

Protocol (JSON lines): server → lander ``{"land": [path, ...]}``; lander → server
``{"ready": true}`` once, then per command one ``{"landed": path, "inserted", "duplicates",
"rejected"}`` per committed segment and ``{"done": true}`` or ``{"failed": reason}``.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cdp_warehouse.collect.wal import read_records
from cdp_warehouse.specs import ResolvedProject

CHUNK_MESSAGES = 10_000  # messages per land_messages call (bounds the lander's memory)

log = logging.getLogger("cdp_warehouse.collect")

Item = tuple[str, Any]  # (origin, message) as land_messages takes them


def record_messages(payload: bytes) -> tuple[str, list[Item]]:
    """The source name and the messages of one log record, ready for ``land_messages``:
    batch-level ``context``/``integrations`` merged under each message's own keys, the
    batch ``sentAt`` given to messages without one, the server's ``receivedAt``, and an
    identify's ``context.traits`` as its ``traits`` when it has none (RudderStack SDKs)."""
    record = json.loads(payload)
    source = record["source"]
    received = record["receivedAt"]
    sent = record.get("sentAt")
    shared = {key: record[key] for key in ("context", "integrations") if isinstance(record.get(key), dict)}
    items: list[Item] = []
    for index, message in enumerate(record["batch"], start=1):
        if isinstance(message, dict):
            for key, value in shared.items():
                own = message.get(key)
                if own is None:
                    message[key] = value
                elif isinstance(own, dict):
                    message[key] = {**value, **own}
            if sent is not None and message.get("sentAt") is None and message.get("sent_at") is None:
                message["sentAt"] = sent
            message.pop("received_at", None)
            message["receivedAt"] = received  # the server's clock, whatever the client sent
            context = message.get("context")
            if (message.get("type") == "identify" and message.get("traits") is None
                    and isinstance(context, dict) and isinstance(context.get("traits"), dict)):
                # RudderStack SDKs send identify traits only as context.traits.
                message["traits"] = context["traits"]
        items.append((f"cdp serve {record.get('call', 'batch')} ({source}) {received} #{index}", message))
    return source, items


class Lander:
    """Lands sealed log segments into the warehouse: open, write, close."""

    def __init__(self, project: ResolvedProject, *, chunk_messages: int = CHUNK_MESSAGES) -> None:
        self.project = project
        self.chunk_messages = chunk_messages

    def land(self, segments: list[Path], report: Callable[[dict[str, Any]], None]) -> None:
        """Land ``segments`` in order; ``report`` is told about each one once it is committed.
        Raises when the warehouse cannot be opened or written (nothing of the segment
        in progress counts as landed then)."""
        from cdp_warehouse.warehouses import connect

        warehouse = connect(self.project, wait_for_lock=False)  # the flusher retries with backoff
        try:
            for path in segments:
                counts = {"inserted": 0, "duplicates": 0, "rejected": 0}
                for source, items in self._chunks(read_records(path)[0]):
                    self._land(warehouse, source, items, counts)
                report({"landed": str(path), **counts})
        finally:
            warehouse.close()

    def _chunks(self, records: list[bytes]) -> Iterator[tuple[str, list[Item]]]:
        """(source, items) with about ``chunk_messages`` items; one source per chunk."""
        pending: dict[str, list[Item]] = {}
        count = 0
        for payload in records:
            source, items = record_messages(payload)
            pending.setdefault(source, []).extend(items)
            count += len(items)
            if count >= self.chunk_messages:
                yield from pending.items()
                pending, count = {}, 0
        yield from pending.items()

    def _try(self, warehouse: Any, source: str, items: list[Item], counts: dict[str, int]) -> None:
        from cdp_warehouse.collect.loader import land_messages

        result = land_messages(self.project, warehouse, items, source=source)
        counts["inserted"] += result.inserted
        counts["duplicates"] += result.duplicates
        counts["rejected"] += result.rejected

    def _land(self, warehouse: Any, source: str, items: list[Item], counts: dict[str, int]) -> None:
        try:
            self._try(warehouse, source, items, counts)
            return
        except Exception as error:  # noqa: BLE001 - whatever broke it, isolate the culprit
            failure = error
        # Is the warehouse itself unusable? Then this raises: keep everything, retry later.
        self._try(warehouse, source, [], counts)
        log.warning("a chunk of %d messages from %s failed to land (%s); isolating the culprit",
                    len(items), source, printable(failure))
        self._isolate(warehouse, source, items, failure, counts)

    def _isolate(self, warehouse: Any, source: str, items: list[Item], failure: Exception,
                 counts: dict[str, int]) -> None:
        """``items`` failed to land together: bisect until the messages that break the
        landing are alone, and keep each of them in rejected_messages with its error."""
        from cdp_warehouse.collect.loader import Unreadable

        if len(items) == 1:
            origin, message = items[0]
            reason = f"could not be landed: {type(failure).__name__}: {printable(failure)}"
            text = json.dumps(message, default=str)  # ASCII: survives whatever broke the landing
            self._try(warehouse, source, [(origin, Unreadable(reason, text))], counts)
            return
        half = len(items) // 2
        for part in (items[:half], items[half:]):
            try:
                self._try(warehouse, source, part, counts)
            except Exception as error:  # noqa: BLE001
                self._isolate(warehouse, source, part, error, counts)


def main(root: str) -> None:
    """The child process: land what the server asks for until its stdin closes."""
    # The server decides when to stop (and finishes its flush first); Ctrl-C in a terminal
    # reaches the whole process group and must not cut a landing short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s lander: %(message)s")

    # Replies go to a private copy of stdout; anything else that writes to stdout (a print,
    # a C library) lands on stderr instead of in the middle of the protocol.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr

    def send(message: dict[str, Any]) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    try:
        try:
            from cdp_warehouse.specs import load_project

            lander = Lander(load_project(root))
        except Exception as error:  # noqa: BLE001 - reported to the server, which logs it
            send({"fatal": printable(error)})
            return
        send({"ready": True})
        for line in sys.stdin:
            command = json.loads(line)
            try:
                lander.land([Path(path) for path in command["land"]], send)
            except BrokenPipeError:
                raise
            except Exception as error:  # noqa: BLE001 - the server retries later
                send({"failed": printable(error)})
            else:
                send({"done": True})
            gc.collect()
    except BrokenPipeError:
        pass  # the server is gone (killed): what was committed stays, the rest is in its log


def printable(error: BaseException) -> str:
    """The first line of an error, safe to log and to store (no lone surrogates)."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text.encode("utf-8", "backslashreplace").decode("utf-8")[:300]


if __name__ == "__main__":
    main(sys.argv[1])
