"""`cdp sync`: send each (audience, destination) what changed since it last accepted.

Every job runs in its own thread on its own warehouse connection, so a slow or failing
destination does not hold the others. In a job, batches go out ``concurrency`` at a time;
their results are written back as they arrive (accepted rows into ``sync_state``,
rejections into ``sync_rejections``), one transaction per write, so a crash re-sends at most
what was in flight. A row is never marked synced before the destination accepted it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from sqlglot import exp

from cdp_warehouse.compiler.plan import AUDIENCE_MEMBERS, models_table
from cdp_warehouse.errors import CdpError
from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.specs.models import SyncSpec
from cdp_warehouse.sync import diff
from cdp_warehouse.sync.changes import Change, RowResult, SyncError
from cdp_warehouse.sync.destinations import destination_type, settings
from cdp_warehouse.sync.destinations.base import Destination, RemoteIds, Request, SyncContext
from cdp_warehouse.warehouses.base import Warehouse, create_as, create_table

CHANGES = exp.to_table("_sync_changes")
SAMPLE_REQUESTS = 2  # requests shown per job by --dry-run
# Accepted batches are written back at least this often (seconds), several per transaction:
# one write per batch cost most of a large sync's time (benchmarks/sync.py). A crash can
# re-send what was accepted in this window, besides the requests in flight.
WRITE_EVERY = 0.2


@dataclass
class SyncOutcome:
    audience: str
    destination: str
    run_id: str | None = None
    added: int = 0  # rows accepted, by kind
    changed: int = 0
    removed: int = 0
    failed: int = 0  # rows rejected or not sent because the job failed
    status: str = "success"  # success | partial (rows rejected) | failed (the job stopped)
    error: str | None = None
    hint: str | None = None
    requests: int = 0  # HTTP requests, retries included
    throttled: int = 0
    planned: dict[str, int] = field(default_factory=dict)  # changes found, by kind
    samples: list[Request] = field(default_factory=list)  # --dry-run
    exception: BaseException | None = None  # an unexpected error, re-raised by `cdp --verbose`


@dataclass(frozen=True)
class Job:
    audience: str
    destination: str
    sync: SyncSpec


def jobs(project: ResolvedProject, audiences: Sequence[str] = (), to: Sequence[str] = ()) -> list[Job]:
    """The (audience, destination) pairs to sync: all, or those named."""
    for name in audiences:
        if name not in project.audiences:
            raise CdpError(f"unknown audience {name!r}", hint="known: " + ", ".join(sorted(project.audiences)))
    for name in to:
        if name not in project.config.destinations:
            raise CdpError(f"unknown destination {name!r}", hint="known: " + ", ".join(sorted(project.config.destinations)))
    return [Job(audience.name, spec.to, spec)
            for audience in project.audiences.values() if not audiences or audience.name in audiences
            for spec in audience.spec.sync if not to or spec.to in to]


def ensure_tables(project: ResolvedProject, warehouse: Warehouse) -> None:
    for name, columns in ((diff.STATE, diff.STATE_COLUMNS), (diff.REJECTIONS, diff.REJECTION_COLUMNS),
                          (diff.RUNS, diff.RUN_COLUMNS), (diff.REMOTE_IDS, diff.REMOTE_ID_COLUMNS)):
        warehouse.execute(create_table(models_table(project, name), columns))


def sync(
    project: ResolvedProject, warehouse: Warehouse, selected: Sequence[Job], *, dry_run: bool = False,
    full_resync: bool = False, environ: Mapping[str, str] | None = None,
    on_progress: Callable[[Job, int, int], None] | None = None,
) -> list[SyncOutcome]:
    """Run ``selected`` jobs side by side; one outcome per job, in the order given."""
    if not warehouse.table_exists(project.models_schema, AUDIENCE_MEMBERS):
        raise CdpError("no audiences computed yet", hint="run `cdp run` first")
    ensure_tables(project, warehouse)  # empty bookkeeping tables are no state, even for a dry run
    outcomes: list[SyncOutcome] = [SyncOutcome(job.audience, job.destination) for job in selected]

    def work(index: int) -> None:
        job = selected[index]
        connection = warehouse.duplicate()
        try:
            _Run(project, connection, job, outcomes[index], dry_run=dry_run, full_resync=full_resync,
                 environ=environ, on_progress=on_progress).run()
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(i,), name=f"sync-{j.audience}-{j.destination}")
               for i, j in enumerate(selected)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


class _Run:
    """One (audience, destination) job."""

    def __init__(self, project: ResolvedProject, warehouse: Warehouse, job: Job, outcome: SyncOutcome, *,
                 dry_run: bool, full_resync: bool, environ: Mapping[str, str] | None,
                 on_progress: Callable[[Job, int, int], None] | None) -> None:
        self.project, self.warehouse, self.job, self.outcome = project, warehouse, job, outcome
        self.dry_run, self.full_resync, self.environ, self.on_progress = dry_run, full_resync, environ, on_progress
        self.state = models_table(project, diff.STATE)
        self.rejections = models_table(project, diff.REJECTIONS)
        self.runs = models_table(project, diff.RUNS)
        self.remote_id_table = models_table(project, diff.REMOTE_IDS)
        self.remote_ids = RemoteIds()
        self.done = 0

    def run(self) -> None:
        outcome, job = self.outcome, self.job
        destination: Destination | None = None
        try:
            kind = destination_type(self.project, job.destination)
            audience = self.project.audiences[job.audience].spec
            context = SyncContext(job.audience, audience.title or job.audience, job.destination, job.sync,
                                  self.remote_ids)
            removals = job.sync.mode == "mirror" or kind.always_removals
            self.warehouse.execute(create_as(CHANGES.copy(), diff.changes(
                self.project, job.audience, job.destination, job.sync, removals=removals,
                full_resync=self.full_resync), temporary=True))
            outcome.planned = dict(self.warehouse.fetch(
                exp.select("kind", exp.Count(this=exp.Star())).from_(CHANGES.copy()).group_by("kind")))
            if self.dry_run:
                destination = kind(self._settings(lenient=True), context)
                outcome.samples = self._samples(destination)
                return
            outcome.run_id = uuid.uuid4().hex
            self._log_start()
            if sum(outcome.planned.values()):
                # settings (and their environment variables) only when there is something to send
                self._load_remote_ids()
                destination = kind(self._settings(), context)
                self._send(destination)
        except CdpError as error:  # SyncError included
            outcome.status, outcome.error, outcome.hint = "failed", str(error), error.hint
        except Exception as error:  # a bug: this job fails, the others go on
            outcome.status, outcome.error = "failed", f"{type(error).__name__}: {error}"
            outcome.hint, outcome.exception = "run again with --verbose for the traceback", error
        finally:
            if destination is not None:
                if destination._http is not None:
                    outcome.requests, outcome.throttled = destination._http.requests, destination._http.throttled
                destination.close()
            if outcome.failed and outcome.status == "success":
                outcome.status = "partial"
            if outcome.run_id and not self.dry_run:
                self._log_finish()
            self.warehouse.execute(exp.Drop(tables=[CHANGES.copy()], kind="TABLE", exists=True))

    # ------------------------------------------------------------------ sending

    def _settings(self, lenient: bool = False) -> Any:
        try:
            return settings(self.project, self.job.destination, self.environ)
        except CdpError:
            if not lenient:
                raise
            return self.project.config.destinations[self.job.destination]  # dry run: nothing is called

    def _rows(self) -> Iterator[Change]:
        table = self.warehouse.fetch_arrow(exp.select("*").from_(CHANGES.copy()).order_by("kind", "row_key"))
        targets = list(self.job.sync.fields)
        for batch in table.to_batches(max_chunksize=10_000):
            # a column at a time: to_pylist per row (a dict each) cost ~3 µs per row
            yield from _changes({name: batch.column(name).to_pylist() for name in batch.schema.names}, targets)

    def _batches(self, destination: Destination) -> Iterator[list[Change]]:
        size = destination.batch_size(sum(self.outcome.planned.values()))
        batch: list[Change] = []
        for row in self._rows():
            batch.append(row)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _samples(self, destination: Destination) -> list[Request]:
        samples: list[Request] = []
        for batch in self._batches(destination):
            samples += destination.requests(batch)
            if len(samples) >= SAMPLE_REQUESTS:
                break
        return samples[:SAMPLE_REQUESTS]

    def _send(self, destination: Destination) -> None:
        """Keep ``concurrency`` requests in flight; write results back as they arrive."""
        total = sum(self.outcome.planned.values())
        workers = destination.http.concurrency
        previous = self._previous_rejections()
        self.rejected_keys = set(previous)
        stop: SyncError | None = None
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"send-{self.job.destination}") as pool:
            pending: set[Future] = set()
            batches = self._batches(destination)

            def submit_more() -> None:
                while stop is None and len(pending) < workers * 2:
                    batch = next(batches, None)
                    if batch is None:
                        return
                    for request in destination.requests(batch):
                        future = pool.submit(destination.send, request)
                        future.request = request  # type: ignore[attr-defined]
                        pending.add(future)

            submit_more()
            results: list[tuple[Change, RowResult]] = []
            written = time.monotonic()
            while pending:
                finished, _ = wait(pending, timeout=WRITE_EVERY, return_when=FIRST_COMPLETED)
                pending -= finished
                for future in finished:
                    request: Request = future.request  # type: ignore[attr-defined]
                    reason = "the destination gave no answer for this row"
                    try:
                        answers = {(r.key_type, r.row_key): r for r in future.result()}
                    except SyncError as error:
                        stop = stop or error
                        answers, reason = {}, str(error)
                    for row in request.rows:
                        answer = answers.get((row.key_type, row.row_key)) or RowResult(
                            row.row_key, row.key_type, False, reason)
                        results.append((row, answer))
                submit_more()  # keep the destination busy while the warehouse is written
                if results and (not pending or stop is not None or time.monotonic() - written >= WRITE_EVERY):
                    self._record(results, previous)
                    self.done += len(results)
                    results, written = [], time.monotonic()
                    if self.on_progress:
                        self.on_progress(self.job, self.done, total)
        if stop is not None:
            raise stop

    # ------------------------------------------------------------------ bookkeeping

    def _mine(self, table: str | None = None) -> exp.Expression:
        return exp.and_(exp.column("audience", table=table, quoted=True).eq(exp.Literal.string(self.job.audience)),
                        exp.column("destination", table=table, quoted=True).eq(exp.Literal.string(self.job.destination)))

    def _load_remote_ids(self) -> None:
        """The destination's ids of the people in this run's changes."""
        ids, changes = self.remote_id_table, "c"
        same = exp.and_(*(exp.column(k, table="r", quoted=True).eq(exp.column(k, table=changes, quoted=True))
                          for k in ("key_type", "row_key")))
        rows = self.warehouse.fetch(
            exp.select(*(exp.column(k, table="r", quoted=True) for k in ("key_type", "row_key", "remote_id")))
            .from_(exp.alias_(ids.copy(), "r"))
            .join(exp.alias_(CHANGES.copy(), changes), on=same)
            .where(exp.column("destination", table="r", quoted=True).eq(exp.Literal.string(self.job.destination))))
        self.remote_ids.preload({(kind, key): remote for kind, key, remote in rows})

    def _save_remote_ids(self) -> None:
        new = self.remote_ids.drain()
        if not new:
            return
        self.warehouse.execute(exp.delete(self.remote_id_table.copy(), where=exp.and_(
            exp.column("destination", quoted=True).eq(exp.Literal.string(self.job.destination)), _keys_in(new))))
        self.warehouse.insert_arrow(self.remote_id_table.copy(), pa.table({
            "destination": [self.job.destination] * len(new),
            "key_type": [kind for kind, _ in new],
            "row_key": [key for _, key in new],
            "remote_id": list(new.values()),
        }))

    def _previous_rejections(self) -> dict[tuple[str, str], tuple[datetime, int]]:
        rows = self.warehouse.fetch(exp.select("key_type", "row_key", "first_failed_at", "attempts")
                                    .from_(self.rejections.copy()).where(self._mine()))
        return {(kind, key): (first, attempts) for kind, key, first, attempts in rows}

    def _record(self, results: list[tuple[Change, RowResult]],
                previous: dict[tuple[str, str], tuple[datetime, int]]) -> None:
        """Accepted rows become the destination's state; rejected ones wait in
        ``sync_rejections`` (attempts counted) and come back in the next run's diff."""
        now = datetime.now(UTC).replace(tzinfo=None)
        good = [row for row, result in results if result.accepted]
        bad = [(row, result) for row, result in results if not result.accepted]
        for row in good:
            setattr(self.outcome, row.kind, getattr(self.outcome, row.kind) + 1)
        self.outcome.failed += len(bad)
        # Few statements per write: each costs a round trip through the GIL the sender
        # threads hold (a benchmark measured this write at 85% of a 1M-row sync's time).
        replaced = [row for row in good if row.in_state]  # new rows have nothing to delete
        cleared = [row for row, _ in results if (row.key_type, row.row_key) in self.rejected_keys]
        with self.warehouse.transaction():
            self._save_remote_ids()
            if replaced:
                self.warehouse.execute(exp.delete(self.state.copy(), where=exp.and_(self._mine(), _keys_in((row.key_type, row.row_key) for row in replaced))))
            if good:
                self.warehouse.insert_arrow(self.state.copy(), pa.table({
                    "audience": [self.job.audience] * len(good),
                    "destination": [self.job.destination] * len(good),
                    "key_type": [row.key_type for row in good],
                    "row_key": [row.row_key for row in good],
                    "profile_id": [row.profile_id for row in good],
                    "payload": [row.payload for row in good],
                    "payload_hash": [row.payload_hash for row in good],
                    "member": [row.kind != "removed" for row in good],
                    "synced_at": pa.array([now] * len(good), pa.timestamp("us")),
                }))
            if cleared:
                self.warehouse.execute(exp.delete(self.rejections.copy(),
                                                  where=exp.and_(self._mine(), _keys_in((row.key_type, row.row_key) for row in cleared))))
            if bad:
                self.rejected_keys.update((row.key_type, row.row_key) for row, _ in bad)
                earlier = [previous.get((row.key_type, row.row_key), (now, 0)) for row, _ in bad]
                self.warehouse.insert_arrow(self.rejections.copy(), pa.table({
                    "audience": [self.job.audience] * len(bad),
                    "destination": [self.job.destination] * len(bad),
                    "profile_id": [row.profile_id for row, _ in bad],
                    "key_type": [row.key_type for row, _ in bad],
                    "row_key": [row.row_key for row, _ in bad],
                    "reason": [result.reason or "rejected" for _, result in bad],
                    "first_failed_at": pa.array([first for first, _ in earlier], pa.timestamp("us")),
                    "last_failed_at": pa.array([now] * len(bad), pa.timestamp("us")),
                    "attempts": pa.array([attempts + 1 for _, attempts in earlier], pa.int32()),
                }))

    def _log_start(self) -> None:
        now = datetime.now(UTC).replace(tzinfo=None)
        self.warehouse.insert_arrow(self.runs.copy(), pa.table({
            "run_id": [self.outcome.run_id], "audience": [self.job.audience], "destination": [self.job.destination],
            "started_at": pa.array([now], pa.timestamp("us")), "status": ["running"],
        }))

    def _log_finish(self) -> None:
        o = self.outcome
        values = {"finished_at": exp.cast(exp.Literal.string(datetime.now(UTC).replace(tzinfo=None).isoformat()), "timestamp"),
                  "added": o.added, "changed": o.changed, "removed": o.removed, "failed": o.failed,
                  "status": o.status, "error": o.error}
        self.warehouse.execute(exp.update(self.runs.copy(), {k: _literal(v) for k, v in values.items()},
                                          where=exp.column("run_id", quoted=True).eq(exp.Literal.string(o.run_id))))


def _keys_in(keys: Iterable[tuple[str, str]]) -> exp.Expression:
    """``(key_type, row_key)`` is one of ``keys``."""
    by_type: dict[str, list[str]] = {}
    for kind, key in keys:
        by_type.setdefault(kind, []).append(key)
    return exp.or_(*(exp.and_(exp.column("key_type", quoted=True).eq(exp.Literal.string(kind)),
                              exp.column("row_key", quoted=True).isin(*map(exp.Literal.string, keys)))
                     for kind, keys in by_type.items()))


def _literal(value: Any) -> exp.Expression:
    if isinstance(value, exp.Expression):
        return value
    if value is None:
        return exp.null()
    if isinstance(value, int):
        return exp.Literal.number(value)
    return exp.Literal.string(str(value))


_NO_FIELDS: frozenset[str] = frozenset()


def _changes(columns: dict[str, list[Any]], targets: list[str]) -> Iterator[Change]:
    """The rows of ``_sync_changes``, given as Python lists by column, as ``Change`` objects."""
    values = [columns[diff.field_column(i)] for i in range(len(targets))]
    fields = (dict(zip(targets, row)) for row in zip(*values)) if values else (
        {} for _ in columns["kind"])
    for kind, key_type, row_key, profile_id, user_id, email, payload, previous, payload_hash, in_state, mapped in zip(
            columns["kind"], columns["key_type"], columns["row_key"], columns["profile_id"], columns["user_id"],
            columns["email"], columns["payload"], columns["previous"], columns["payload_hash"], columns["in_state"],
            fields):
        changed = _NO_FIELDS
        if kind == "changed":
            new, old = json.loads(payload), json.loads(previous or "{}")
            changed = frozenset(name for name in targets if new.get(name) != old.get(name) or name not in old)
        user_id = user_id or (row_key if key_type == "user_id" else None)
        email = email or (row_key if key_type == "email" else None)
        yield Change(kind, key_type, row_key, profile_id, user_id, email, mapped, changed,
                     payload if kind != "removed" else previous, payload_hash, in_state)
