"""The collector's write-ahead log: `cdp serve` answers 200 only once a batch is on disk.

Layout (one directory, by default ``wal/`` next to the DuckDB file, e.g. ``data/wal/``)::

    LOCK                          flock'd by the one `cdp serve` that owns the directory
    00000000000000000001.wal      segments, appended in order; the highest one is active
    00000000000000000002.wal

A segment is a sequence of records, each ``b"CDPW" | uint32 length | uint32 crc32 | payload``
(little-endian). The payload is one accepted request as ASCII JSON (``server.Intake``)::

    {"v": 1, "source": "web", "receivedAt": "2026-06-30T10:00:00.123456+00:00", "call": "batch",
     "context": {...}, "integrations": {...}, "sentAt": "...", "batch": [{message}, ...]}

(batch-level fields only when the request had them; never the write key). Records are
appended by one writer thread that **group-commits**: it takes every record queued while the
previous ``fdatasync`` ran, writes them with one ``write`` and syncs once, then wakes all
their requests. Concurrent requests therefore share fsyncs instead of queueing for one each.

The flusher ``seal()``s the active segment (the next append opens a new one), has the lander
land the sealed segments in the warehouse and only then ``remove()``s them: a segment
disappears after its warehouse commit, never before. After a crash every segment left is replayed;
a torn record at the end (a write that was never acknowledged) is cut off.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

from cdp_warehouse.errors import CdpError

MAGIC = b"CDPW"
HEADER = struct.Struct("<4sII")
SUFFIX = ".wal"
SEGMENT_BYTES = 16 * 1024 * 1024  # roll over to a new segment past this size
MAX_RECORD = 64 * 1024 * 1024  # a length above this is a torn header, not a record

log = logging.getLogger("cdp_warehouse.collect")


class WalError(CdpError):
    """The write-ahead log cannot be used (locked by another server, disk error)."""


class WalClosed(WalError):
    """An append arrived after ``close()`` began."""


class _Group:
    """The records of one group commit; their requests wait on ``done``."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None


def read_records(path: Path) -> tuple[list[bytes], int]:
    """The intact records of a segment, and the byte offset where they end (a torn or
    corrupt tail starts there)."""
    data = path.read_bytes()
    records: list[bytes] = []
    offset = 0
    while offset + HEADER.size <= len(data):
        magic, length, crc = HEADER.unpack_from(data, offset)
        end = offset + HEADER.size + length
        if magic != MAGIC or length > MAX_RECORD or end > len(data):
            break
        payload = data[offset + HEADER.size:end]
        if zlib.crc32(payload) != crc:
            break
        records.append(payload)
        offset = end
    return records, offset


def iter_records(path: Path) -> Iterator[bytes]:
    yield from read_records(path)[0]


class WriteAheadLog:
    """Append-only, fsync'd, segmented log of accepted requests.

    Args:
        directory: where the segments live; created if missing.
        fsync: ``fdatasync`` each group commit (turn off only in tests that do not crash).
        segment_bytes: size past which the active segment is closed and a new one begun.
    """

    def __init__(self, directory: Path, *, fsync: bool = True, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self._io = threading.Lock()  # the active file, the segment lists and byte counts
        self._cond = threading.Condition()  # the queue of records waiting for the writer
        self._queue: list[bytes] = []
        self._group = _Group()
        self._closing = False
        self._writer: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._active: Path | None = None
        self._active_size = 0
        self._sequence = 0
        self._sealed: list[Path] = []
        self._sizes: dict[Path, int] = {}
        self._started: dict[Path, float] = {}  # monotonic time of a segment's first record
        self._backlog = 0

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> list[Path]:
        """Lock the directory, recover the segments a previous run left (they are sealed,
        to be landed first) and start the writer. Returns the recovered segments."""
        self.directory.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise WalError(f"another `cdp serve` is using the write-ahead log in {self.directory}",
                           hint="stop it first, or serve another project") from None
        self._lock_fd = lock_fd
        segments = sorted(self.directory.glob("*" + SUFFIX))
        for index, path in enumerate(segments):
            self._sequence = max(self._sequence, _sequence_of(path))
            records, end = read_records(path)
            size = path.stat().st_size
            if end < size:
                self._cut_tail(path, end, size, last=index == len(segments) - 1)
            if not records:
                path.unlink()
                continue
            self._sealed.append(path)
            self._sizes[path] = end
            self._started[path] = 0.0  # due at once: replay before anything else
            self._backlog += end
        self._sync_directory()
        self._writer = threading.Thread(target=self._write_loop, name="cdp-wal-writer", daemon=True)
        self._writer.start()
        return list(self._sealed)

    def close(self) -> None:
        """Write what is queued, stop the writer and release the directory. Segments stay on
        disk; the next ``open()`` replays whatever was not removed."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        with self._io:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
                if self._active is not None and self._active_size:
                    self._sealed.append(self._active)
                self._active = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # ------------------------------------------------------------------ appending

    def append(self, payload: bytes) -> None:
        """Append one record; returns once it is on disk (fsync'd). Raises WalError."""
        record = HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload
        with self._cond:
            if self._closing:
                raise WalClosed("the server is shutting down")
            self._queue.append(record)
            group = self._group
            self._cond.notify()
        group.done.wait()
        if group.error is not None:
            raise WalError(f"cannot write the write-ahead log in {self.directory}: {group.error}")

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                records, group = self._queue, self._group
                self._queue, self._group = [], _Group()
            try:
                self._write(b"".join(records))
            except OSError as error:
                log.error("write-ahead log: %s", error)
                group.error = error
            group.done.set()

    def _write(self, data: bytes) -> None:
        with self._io:
            if self._fd is None:
                self._open_segment()
            fd = self._fd
            start = self._active_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if self.fsync:
                    os.fdatasync(fd)
            except OSError:
                # Leave no partial record behind: cut the file back to its last record and
                # continue in a new segment (if the cut fails, replay stops at the last intact
                # record of this one, and the records after it are in the next segment).
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    pass
                self._sizes[self._active] = start
                if start:
                    self._close_active()
                else:
                    os.close(fd)
                    self._sizes.pop(self._active, None)
                    self._started.pop(self._active, None)
                    self._active.unlink(missing_ok=True)
                    self._fd, self._active = None, None
                raise
            self._active_size += len(data)
            self._sizes[self._active] = self._active_size
            self._backlog += len(data)
            if self._active_size >= self.segment_bytes:
                self._close_active()

    def _open_segment(self) -> None:
        self._sequence += 1
        path = self.directory / f"{self._sequence:020d}{SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._sync_directory()  # the new file's name is durable before its first record is
        self._active = path
        self._active_size = 0
        self._sizes[path] = 0
        self._started[path] = time.monotonic()

    def _close_active(self) -> None:
        os.close(self._fd)
        self._sealed.append(self._active)
        self._fd, self._active, self._active_size = None, None, 0

    # ------------------------------------------------------------------ the flusher's side

    def seal(self) -> list[Path]:
        """Close the active segment (if it holds anything) and return every sealed segment
        not yet removed, oldest first. Their records are on disk and will not change."""
        with self._io:
            if self._fd is not None and self._active_size:
                self._close_active()
            return list(self._sealed)

    def remove(self, path: Path) -> None:
        """Delete a sealed segment whose records are committed in the warehouse."""
        with self._io:
            if path not in self._sealed:
                return
            path.unlink(missing_ok=True)
            self._sealed.remove(path)
            self._backlog -= self._sizes.pop(path, 0)
            self._started.pop(path, None)

    @property
    def backlog_bytes(self) -> int:
        """Bytes acknowledged but not yet landed (sealed and active segments)."""
        return self._backlog

    @property
    def pending_since(self) -> float | None:
        """``time.monotonic()`` of the oldest record not yet landed, None when there is none."""
        with self._io:
            for path in self._sealed:
                return self._started[path]
            if self._active is not None and self._active_size:
                return self._started[self._active]
            return None

    # ------------------------------------------------------------------ recovery

    def _cut_tail(self, path: Path, end: int, size: int, *, last: bool) -> None:
        if last:
            # The write that was in progress when the process died; never acknowledged.
            log.info("write-ahead log: dropping a torn write of %d bytes at the end of %s", size - end, path.name)
        else:
            keep = path.with_name(path.name + ".corrupt")
            shutil.copyfile(path, keep)
            log.error("write-ahead log: %s is corrupt after byte %d; the intact records are replayed, "
                      "a copy is kept as %s", path.name, end, keep.name)
        os.truncate(path, end)

    def _sync_directory(self) -> None:
        if not self.fsync:
            return
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _sequence_of(path: Path) -> int:
    try:
        return int(path.name[: -len(SUFFIX)])
    except ValueError:
        return 0
