"""A fake of the BigQuery REST API (v2) over real HTTP, executing BigQuery SQL on DuckDB.

``google-cloud-bigquery`` is pointed at it with ``client_options={"api_endpoint": fake.url}``
and anonymous credentials, so the adapter's real calls go over the wire: query jobs
(``jobs.insert``, then ``jobs.get`` / ``jobs.getQueryResults`` polled until done), load jobs
from Parquet (multipart and resumable uploads), ``tables.get``, sessions (temporary tables)
and dry runs. Shapes follow the REST reference (cloud.google.com/bigquery/docs/reference/rest):
job resources, ``{"f": [{"v": ...}]}`` rows with ``pageToken`` paging, integer-microsecond
timestamps under ``formatOptions.useInt64Timestamp``, and error bodies
``{"error": {"code", "message", "errors": [{"reason", "message", "location"}], "status"}}``.

SQL is parsed with sqlglot's BigQuery dialect and run on DuckDB. Before that the fake enforces
the BigQuery rules a DuckDB would let pass: tables are named ``dataset.table`` (or
``project.dataset.table``), temporary tables need a session, ``DELETE`` needs a ``WHERE``.
It does not reproduce BigQuery's own semantics beyond what DuckDB shares with it (for
example ``ARRAY_AGG`` of a NULL succeeds here and fails on BigQuery).

Example::

    with FakeBigQuery(project="cdp-test", polls_until_done=2) as bq:
        client = bigquery.Client(project="cdp-test", credentials=AnonymousCredentials(),
                                 client_options={"api_endpoint": bq.url})
        client.query("SELECT 1").result()
"""

from __future__ import annotations

import base64
import io
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from email import message_from_bytes
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs

import duckdb
import pyarrow.parquet as pq
import sqlglot
from sqlglot import exp

from .server import Body, FakeServer, RecordedRequest, Response

_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 409: "ALREADY_EXISTS",
           429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
_REASON_STATUS = {"invalidQuery": 400, "invalid": 400, "notFound": 404, "duplicate": 409,
                  "backendError": 500, "rateLimitExceeded": 403, "accessDenied": 403}
_BYTES_PER_VALUE = 8  # dry-run estimate: rows x columns x 8 bytes of the tables read


class BigQueryError(Exception):
    """A job or request error with BigQuery's reason (``invalidQuery``, ``notFound``...)."""

    def __init__(self, reason: str, message: str, location: str | None = None) -> None:
        super().__init__(message)
        self.reason, self.message, self.location = reason, message, location

    def entry(self) -> dict[str, Any]:
        entry = {"reason": self.reason, "message": self.message, "domain": "global"}
        if self.location:
            entry["location"] = self.location
        return entry


def error_body(status: int, reason: str, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message,
                      "errors": [{"reason": reason, "message": message, "domain": "global"}],
                      "status": _STATUS.get(status, "UNKNOWN")}}


@dataclass
class Job:
    project: str
    job_id: str
    location: str
    configuration: dict[str, Any]
    created_ms: int
    polls_left: int
    error: BigQueryError | None = None
    fields: list[dict[str, Any]] = field(default_factory=list)
    rows: list[tuple] = field(default_factory=list)
    statement_type: str | None = None
    affected_rows: int | None = None
    bytes_processed: int = 0
    session_id: str | None = None
    destination: dict[str, str] | None = None

    @property
    def done(self) -> bool:
        return self.polls_left <= 0

    def poll(self) -> None:
        self.polls_left -= 1

    def resource(self) -> dict[str, Any]:
        status: dict[str, Any] = {"state": "DONE" if self.done else "RUNNING"}
        if self.done and self.error is not None:
            status["errorResult"] = self.error.entry()
            status["errors"] = [self.error.entry()]
        statistics: dict[str, Any] = {"creationTime": str(self.created_ms), "startTime": str(self.created_ms)}
        if self.done:
            statistics["endTime"] = str(self.created_ms + 1)
            statistics["totalBytesProcessed"] = str(self.bytes_processed)
        kind = "load" if "load" in self.configuration else "query"
        if kind == "query":
            query: dict[str, Any] = {"totalBytesProcessed": str(self.bytes_processed),
                                     "totalBytesBilled": str(self.bytes_processed), "cacheHit": False}
            if self.statement_type:
                query["statementType"] = self.statement_type
            if self.done and self.affected_rows is not None:
                query["numDmlAffectedRows"] = str(self.affected_rows)
            if self.done and self.fields:
                query["schema"] = {"fields": self.fields}
            statistics["query"] = query
        elif self.done and self.error is None:
            statistics["load"] = {"outputRows": str(self.affected_rows or 0), "inputFiles": "1"}
        if self.session_id:
            statistics["sessionInfo"] = {"sessionId": self.session_id}
        configuration = dict(self.configuration)
        if kind == "query" and self.destination:
            configuration["query"] = {**configuration["query"], "destinationTable": self.destination}
        return {
            "kind": "bigquery#job",
            "etag": f'"{self.job_id}"',
            "id": f"{self.project}:{self.location}.{self.job_id}",
            "selfLink": f"/bigquery/v2/projects/{self.project}/jobs/{self.job_id}?location={self.location}",
            "jobReference": {"projectId": self.project, "jobId": self.job_id, "location": self.location},
            "configuration": configuration,
            "status": status,
            "statistics": statistics,
            "user_email": "anonymous@example.com",
        }


class FakeBigQuery(FakeServer):
    """One BigQuery project whose datasets are DuckDB schemas of one in-memory database.

    Args:
        project: The project id clients must name.
        polls_until_done: Status reads (``jobs.get`` or ``getQueryResults``) a job answers as
            RUNNING before DONE, so clients must poll.
        page_rows: Rows per ``getQueryResults`` page when the client asks for more.
        location: The location jobs report.

    Attributes:
        statements: Every SQL text of a query job, in order (dry runs included).
        failures: Job errors to give the next query jobs, first in first out (see
            :meth:`fail_next_jobs`).
    """

    def __init__(self, project: str = "cdp-test", *, polls_until_done: int = 1, page_rows: int = 5_000,
                 location: str = "US") -> None:
        super().__init__()
        self.project = project
        self.polls_until_done = polls_until_done
        self.page_rows = page_rows
        self.location = location
        self.database = duckdb.connect()
        self.jobs: dict[str, Job] = {}
        self.sessions: dict[str, duckdb.DuckDBPyConnection] = {}
        self.statements: list[str] = []
        self.failures: list[BigQueryError] = []
        self._uploads: dict[str, dict[str, Any]] = {}
        self.dataset_locations: dict[str, str] = {}  # where each dataset was created
        self.session_locations: dict[str, str] = {}  # a session runs every job where it was made

    # ------------------------------------------------------------------ test helpers
    def fail_next_jobs(self, reason: str, message: str, times: int = 1) -> None:
        """The next ``times`` query jobs end with this error (``backendError`` and
        ``rateLimitExceeded`` are the ones the client retries with a new job)."""
        with self._lock:
            self.failures.extend(BigQueryError(reason, message) for _ in range(times))

    def query(self, sql: str) -> list[tuple]:
        """Rows of DuckDB SQL on the fake's database, for assertions."""
        with self._lock:
            return self.database.cursor().execute(sql).fetchall()

    def fault_body(self, status: int) -> Body:
        reason = {429: "rateLimitExceeded", 500: "backendError", 503: "backendError"}.get(status, "invalid")
        return error_body(status, reason, f"fake fault {status}")

    # ------------------------------------------------------------------ routing
    def handle(self, request: RecordedRequest) -> Response:
        path, method = request.path, request.method
        params = {key: values[-1] for key, values in parse_qs(request.query).items()}
        with self._lock:
            try:
                if path.startswith("/upload/bigquery/v2/projects/"):
                    return self._upload(request, params)
                match = re.fullmatch(r"/bigquery/v2/projects/([^/]+)(/.*)", path)
                if not match:
                    return Response(404, error_body(404, "notFound", f"Not found: URL {path}"))
                project, rest = match.groups()
                if project != self.project:
                    return Response(404, error_body(404, "notFound", f"Not found: Project {project}"))
                if method == "POST" and rest == "/jobs":
                    return Response(200, self._insert(request.body or {}).resource())
                if (m := re.fullmatch(r"/jobs/([^/]+)", rest)) and method == "GET":
                    job = self._job(m.group(1))
                    job.poll()
                    return Response(200, job.resource())
                if (m := re.fullmatch(r"/jobs/([^/]+)/cancel", rest)) and method == "POST":
                    return Response(200, {"kind": "bigquery#jobCancelResponse", "job": self._job(m.group(1)).resource()})
                if (m := re.fullmatch(r"/queries/([^/]+)", rest)) and method == "GET":
                    return self._results(self._job(m.group(1)), params)
                if (m := re.fullmatch(r"/datasets/([^/]+)/tables/([^/]+)", rest)) and method == "GET":
                    return Response(200, self._table(m.group(1), m.group(2)))
                if (m := re.fullmatch(r"/datasets/([^/]+)", rest)) and method == "GET":
                    return Response(200, self._dataset(m.group(1)))
                return Response(404, error_body(404, "notFound", f"Not found: {method} {rest}"))
            except BigQueryError as error:
                status = _REASON_STATUS.get(error.reason, 400)
                body = error_body(status, error.reason, error.message)
                body["error"]["errors"] = [error.entry()]
                return Response(status, body)

    def _job(self, job_id: str) -> Job:
        if job_id not in self.jobs:
            raise BigQueryError("notFound", f"Not found: Job {self.project}:{self.location}.{job_id}")
        return self.jobs[job_id]

    def _new_job(self, body: dict[str, Any]) -> Job:
        reference = body.get("jobReference") or {}
        job_id = reference.get("jobId") or uuid.uuid4().hex
        if job_id in self.jobs:
            raise BigQueryError("duplicate", f"Already Exists: Job {self.project}:{self.location}.{job_id}")
        job = Job(project=self.project, job_id=job_id, location=reference.get("location") or self.location,
                  configuration=body.get("configuration") or {}, created_ms=int(time.time() * 1000),
                  polls_left=self.polls_until_done)
        self.jobs[job_id] = job
        return job

    # ------------------------------------------------------------------ query jobs
    def _insert(self, body: dict[str, Any]) -> Job:
        job = self._new_job(body)
        configuration = job.configuration
        if "query" not in configuration:
            raise BigQueryError("invalid", "Job configuration must contain query (load jobs are uploaded)")
        query = configuration["query"]
        if query.get("useLegacySql", True) is not False:
            # The client sends useLegacySql=false; anything else would run legacy SQL.
            raise BigQueryError("invalidQuery", "Legacy SQL is not supported by this fake")
        dry_run = bool(configuration.get("dryRun"))
        if dry_run:
            job.polls_left = 0  # dry runs answer at once
        try:
            session = self._session(job, query)
            self.statements.append(query.get("query", ""))
            if self.failures and not dry_run:
                raise self.failures.pop(0)
            self._run(job, session, query.get("query", ""), query.get("queryParameters") or [],
                      query.get("parameterMode"), dry_run)
        except BigQueryError as error:
            # A job that fails answers DONE at once, as BigQuery does for a query it rejects
            # when the job is inserted (the client then re-runs retryable failures as new jobs).
            job.error, job.polls_left = error, 0
        return job

    def _session(self, job: Job, query: dict[str, Any]) -> duckdb.DuckDBPyConnection | None:
        properties = {p["key"]: p["value"] for p in query.get("connectionProperties") or []}
        if query.get("createSession"):
            job.session_id = "fake-session-" + uuid.uuid4().hex[:16]
            self.sessions[job.session_id] = self.database.cursor()
            self.session_locations[job.session_id] = job.location
            return self.sessions[job.session_id]
        if "session_id" in properties:
            if properties["session_id"] not in self.sessions:
                raise BigQueryError("invalidQuery", f"Session {properties['session_id']} has expired or does not exist")
            job.session_id = properties["session_id"]
            job.location = self.session_locations[job.session_id]
            return self.sessions[job.session_id]
        return None

    def _run(self, job: Job, session: duckdb.DuckDBPyConnection | None, sql: str, parameters: list[dict[str, Any]],
             mode: str | None, dry_run: bool) -> None:
        try:
            statements = _parse(sql)
        except sqlglot.errors.ParseError as error:
            raise BigQueryError("invalidQuery", f"Syntax error: {error.errors[0]['description'] if error.errors else error}",
                                "query") from error
        if len(statements) != 1:
            raise BigQueryError("invalidQuery", "this fake runs one statement per job")
        tree = statements[0]
        if _is_abort_session(tree):
            if job.session_id:
                self.sessions.pop(job.session_id).close()
            job.statement_type = "CALL"
            return
        temporary = self._check(tree, session, job.location)
        if isinstance(tree, exp.Create) and tree.kind == "SCHEMA" and not dry_run:
            self.dataset_locations.setdefault(tree.this.db, job.location)
        values = _parameter_values(parameters, mode)
        connection = session if session is not None else self.database.cursor()
        job.bytes_processed = self._bytes_read(tree, connection, temporary)
        job.statement_type = _statement_type(tree)
        text = tree.sql(dialect="duckdb")
        try:
            if dry_run:
                connection.execute("EXPLAIN " + text, values)
                return
            if isinstance(tree, exp.Query):
                described = connection.execute("DESCRIBE " + text, values).fetchall()
                job.fields = [_field(row[0], row[1]) for row in described]
                job.rows = connection.execute(text, values).fetchall()
            else:
                counts = connection.execute(text, values).fetchall()
                if isinstance(tree, exp.Insert | exp.Update | exp.Delete | exp.Merge):
                    job.affected_rows = int(counts[0][0]) if counts else 0
        except duckdb.CatalogException as error:
            raise BigQueryError("notFound", _not_found(str(error), self.project, self.location)) from error
        except duckdb.Error as error:
            raise BigQueryError("invalidQuery", str(error).splitlines()[0], "query") from error
        finally:
            if session is None:
                connection.close()

    def _check(self, tree: exp.Expression, session: duckdb.DuckDBPyConnection | None, location: str) -> set[str]:
        """BigQuery's rules that DuckDB would not enforce; rewrites ``project.dataset.table``
        to DuckDB's ``dataset.table``. Returns the temporary tables the statement names."""
        create = tree if isinstance(tree, exp.Create) else None
        is_temporary = bool(create and create.args.get("properties") and any(
            isinstance(p, exp.TemporaryProperty) for p in create.args["properties"].expressions))
        if is_temporary and session is None:
            raise BigQueryError("invalidQuery", "Use of CREATE TEMPORARY TABLE requires a script or session", "query")
        if isinstance(tree, exp.Delete | exp.Update) and not tree.args.get("where"):
            raise BigQueryError("invalidQuery", f"{tree.key.upper()} must have a WHERE clause", "query")
        for cast in tree.find_all(exp.Cast):
            if isinstance(cast.this, exp.JSONObject | exp.ParseJSON) and cast.to.is_type(*exp.DataType.TEXT_TYPES):
                raise BigQueryError("invalidQuery", "Invalid cast from JSON to STRING", "query")
        temporary = set(_temporary_tables(session)) if session is not None else set()
        if is_temporary and create is not None:
            target = create.this.this if isinstance(create.this, exp.Schema) else create.this
            temporary.add(target.name)
        ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
        for table in tree.find_all(exp.Table):
            if isinstance(tree, exp.Create | exp.Drop) and tree.kind == "SCHEMA":
                continue
            if table.args.get("catalog") is not None:
                if table.catalog != self.project:
                    raise BigQueryError("notFound", f"Not found: Project {table.catalog}")
                table.set("catalog", None)
            if not table.db and table.name not in ctes and table.name not in temporary:
                raise BigQueryError("invalidQuery", f'Table "{table.name}" must be qualified with a dataset '
                                                    "(e.g. dataset.table).", "query")
            if table.db and self.dataset_locations.get(table.db, location) != location:
                raise BigQueryError("notFound", f"Not found: Dataset {self.project}:{table.db} was not found in "
                                                f"location {location}")
        if isinstance(tree, exp.Create | exp.Drop) and tree.kind == "SCHEMA" and tree.this.args.get("catalog"):
            # CREATE SCHEMA project.dataset: the dataset is DuckDB's schema
            if tree.this.catalog != self.project:
                raise BigQueryError("notFound", f"Not found: Project {tree.this.catalog}")
            tree.this.set("catalog", None)
        return temporary

    def _bytes_read(self, tree: exp.Expression, connection: duckdb.DuckDBPyConnection, temporary: set[str]) -> int:
        """Roughly what BigQuery would bill: rows x columns x 8 bytes of each permanent table
        read (temporary tables are billed too on BigQuery; counted the same here)."""
        total = 0
        targets = set()
        if isinstance(tree, exp.Create | exp.Insert):
            target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
            if isinstance(target, exp.Table):
                targets.add((target.db, target.name))
        for table in tree.find_all(exp.Table):
            if not table.name or (table.db, table.name) in targets:
                continue
            schema = table.db or ("temp" if table.name in temporary else None)
            if schema is None:
                continue
            try:
                rows = connection.execute(exp.select(exp.Count(this=exp.Star())).from_(table.copy())
                                          .sql(dialect="duckdb")).fetchone()[0]
                columns = len(connection.execute(exp.select("*").from_(table.copy()).limit(0)
                                                 .sql(dialect="duckdb")).description)
            except duckdb.Error:
                continue
            total += rows * columns * _BYTES_PER_VALUE
        return total

    def _results(self, job: Job, params: dict[str, str]) -> Response:
        job.poll()
        base = {"kind": "bigquery#getQueryResultsResponse", "etag": f'"{job.job_id}"',
                "jobReference": {"projectId": self.project, "jobId": job.job_id, "location": job.location}}
        if not job.done:
            return Response(200, {**base, "jobComplete": False})
        if job.error is not None:
            status = _REASON_STATUS.get(job.error.reason, 400)
            body = error_body(status, job.error.reason, job.error.message)
            body["error"]["errors"] = [job.error.entry()]
            return Response(status, body)
        start = int(params.get("pageToken") or params.get("startIndex") or 0)
        size = min(int(params.get("maxResults") or self.page_rows), self.page_rows)
        if "maxResults" in params and int(params["maxResults"]) == 0:
            size = 0
        int64 = params.get("formatOptions.useInt64Timestamp", "").lower() == "true"
        page = job.rows[start:start + size]
        answer = {**base, "jobComplete": True, "totalBytesProcessed": str(job.bytes_processed), "cacheHit": False}
        if job.statement_type == "SELECT":  # DDL and DML answer without rows or a schema
            answer["schema"] = {"fields": job.fields}
            answer["totalRows"] = str(len(job.rows))
        if page:  # no "rows" key at all for an empty page (the client reads it as the last page)
            answer["rows"] = [{"f": [_cell(value, f, int64) for value, f in zip(row, job.fields, strict=True)]}
                              for row in page]
        if job.affected_rows is not None:
            answer["numDmlAffectedRows"] = str(job.affected_rows)
        if job.session_id:
            answer["sessionInfo"] = {"sessionId": job.session_id}
        if size and start + size < len(job.rows):
            answer["pageToken"] = str(start + size)
        return Response(200, answer)

    def _dataset(self, dataset: str) -> dict[str, Any]:
        if dataset not in self.dataset_locations:
            raise BigQueryError("notFound", f"Not found: Dataset {self.project}:{dataset}")
        return {"kind": "bigquery#dataset", "id": f"{self.project}:{dataset}",
                "datasetReference": {"projectId": self.project, "datasetId": dataset},
                "location": self.dataset_locations[dataset]}

    def _table(self, dataset: str, name: str) -> dict[str, Any]:
        cursor = self.database.cursor()
        rows = cursor.execute("SELECT column_name, data_type FROM information_schema.columns "
                              "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                              [dataset, name]).fetchall()
        if not rows:
            raise BigQueryError("notFound", f"Not found: Table {self.project}:{dataset}.{name}")
        table = exp.table_(name, db=dataset, quoted=True).sql(dialect="duckdb")
        types = _types(cursor, f"SELECT * FROM {table}", [])
        count = cursor.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        return {"kind": "bigquery#table", "id": f"{self.project}:{dataset}.{name}", "type": "TABLE",
                "tableReference": {"projectId": self.project, "datasetId": dataset, "tableId": name},
                "schema": {"fields": [_field(column, kind) for (column, _), kind in zip(rows, types, strict=True)]},
                "numRows": str(count), "location": self.location}

    # ------------------------------------------------------------------ load jobs
    def _upload(self, request: RecordedRequest, params: dict[str, str]) -> Response:
        kind = params.get("uploadType")
        if kind == "multipart" and request.method == "POST":
            metadata, data = _multipart(request)
            return Response(200, self._load(metadata, data).resource())
        if kind == "resumable" and request.method == "POST":
            upload_id = uuid.uuid4().hex
            self._uploads[upload_id] = {"metadata": request.body, "data": bytearray()}
            location = f"{self.url}{request.path}?uploadType=resumable&upload_id={upload_id}"
            return Response(200, None, {"Location": location})
        if kind == "resumable" and request.method == "PUT":
            upload = self._uploads.get(params.get("upload_id", ""))
            if upload is None:
                return Response(404, error_body(404, "notFound", "Not found: upload session"))
            upload["data"].extend(request.raw)
            span = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", request.headers.get("content-range", ""))
            if span and span.group(3) != "*" and int(span.group(2)) + 1 < int(span.group(3)):
                return Response(308, None, {"Range": f"bytes=0-{len(upload['data']) - 1}"})
            if span is None and request.headers.get("content-range", "").endswith("/*"):
                return Response(308, None, {"Range": f"bytes=0-{len(upload['data']) - 1}"})
            self._uploads.pop(params["upload_id"])
            return Response(200, self._load(upload["metadata"], bytes(upload["data"])).resource())
        return Response(400, error_body(400, "invalid", f"unsupported upload {request.method} {kind}"))

    def _load(self, metadata: dict[str, Any], data: bytes) -> Job:
        job = self._new_job(metadata)
        load = job.configuration.get("load") or {}
        try:
            if load.get("sourceFormat") != "PARQUET":
                raise BigQueryError("invalid", f"this fake loads PARQUET only, not {load.get('sourceFormat')}")
            reference = load.get("destinationTable") or {}
            if reference.get("projectId", self.project) != self.project:
                raise BigQueryError("notFound", f"Not found: Project {reference.get('projectId')}")
            dataset, name = reference.get("datasetId"), reference.get("tableId")
            rows = pq.read_table(io.BytesIO(data))
            untyped = [f.name for f in rows.schema if str(f.type) == "null"]
            if untyped:
                raise BigQueryError("invalid", f"Unsupported field type NULL for field {untyped[0]}")
            if self.dataset_locations.get(dataset, job.location) != job.location:
                raise BigQueryError("notFound", f"Not found: Dataset {self.project}:{dataset} was not found in "
                                                f"location {job.location}")
            cursor = self.database.cursor()
            if not cursor.execute("SELECT 1 FROM information_schema.schemata WHERE schema_name = ?",
                                  [dataset]).fetchall():
                raise BigQueryError("notFound", f"Not found: Dataset {self.project}:{dataset}")
            table = exp.table_(name, db=dataset, quoted=True).sql(dialect="duckdb")
            exists = bool(cursor.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = ? "
                                         "AND table_name = ?", [dataset, name]).fetchall())
            disposition = load.get("writeDisposition") or "WRITE_APPEND"
            cursor.register("incoming", rows)
            if not exists and load.get("createDisposition") == "CREATE_NEVER":
                raise BigQueryError("notFound", f"Not found: Table {self.project}:{dataset}.{name}")
            if not exists or disposition == "WRITE_TRUNCATE":
                cursor.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM incoming")
            elif disposition == "WRITE_EMPTY" and cursor.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]:
                raise BigQueryError("duplicate", f"Already Exists: Table {self.project}:{dataset}.{name}")
            else:
                cursor.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
            job.affected_rows = rows.num_rows
        except BigQueryError as error:
            job.error = error
        except duckdb.Error as error:
            job.error = BigQueryError("invalid", str(error).splitlines()[0])
        return job


# ---------------------------------------------------------------------- SQL helpers

def _is_abort_session(tree: exp.Expression) -> bool:
    return isinstance(tree, exp.Command) and "ABORT_SESSION" in tree.sql().upper()


def _parse(sql: str) -> list[exp.Expression]:
    if re.fullmatch(r"\s*CALL\s+BQ\.ABORT_SESSION\(\s*\)\s*;?\s*", sql, flags=re.IGNORECASE):
        return [exp.Command(this="CALL", expression=exp.Literal.string("BQ.ABORT_SESSION()"))]
    return [s for s in sqlglot.parse(sql, read="bigquery") if s is not None]


def _temporary_tables(connection: duckdb.DuckDBPyConnection) -> list[str]:
    return [row[0] for row in connection.execute(
        "SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()]


def _statement_type(tree: exp.Expression) -> str:
    if isinstance(tree, exp.Create):
        if tree.kind == "SCHEMA":
            return "CREATE_SCHEMA"
        if tree.expression is not None:
            return "CREATE_TABLE_AS_SELECT"
        return "CREATE_TABLE"
    if isinstance(tree, exp.Drop):
        return "DROP_SCHEMA" if tree.kind == "SCHEMA" else "DROP_TABLE"
    return {exp.Insert: "INSERT", exp.Update: "UPDATE", exp.Delete: "DELETE", exp.Merge: "MERGE"}.get(
        type(tree), "SELECT")


def _not_found(message: str, project: str, location: str) -> str:
    match = re.search(r"Table with name (\w+) does not exist", message)
    if match:
        return f"Not found: Table {project}:{match.group(1)} was not found in location {location}"
    match = re.search(r'Schema with name "?(\w+)"? does not exist', message)
    if match:
        return f"Not found: Dataset {project}:{match.group(1)} was not found in location {location}"
    return "Not found: " + message.splitlines()[0]


def _parameter_values(parameters: list[dict[str, Any]], mode: str | None) -> list[Any]:
    if parameters and mode != "POSITIONAL":
        raise BigQueryError("invalidQuery", "this fake supports positional (?) parameters only")
    values = []
    for parameter in parameters:
        kind = parameter["parameterType"]["type"]
        value = (parameter.get("parameterValue") or {}).get("value")
        if value is None:
            values.append(None)
        elif kind in ("INT64", "INTEGER"):
            values.append(int(value))
        elif kind in ("FLOAT64", "FLOAT"):
            values.append(float(value))
        elif kind in ("BOOL", "BOOLEAN"):
            values.append(value.lower() == "true")
        elif kind in ("TIMESTAMP", "DATETIME"):
            values.append(datetime.fromisoformat(value.replace(" ", "T")).replace(tzinfo=None))
        else:
            values.append(value)
    return values


def _types(connection: duckdb.DuckDBPyConnection, sql: str, values: list[Any]) -> list[Any]:
    """DuckDB's types of a query's columns (``DESCRIBE`` keeps nested types whole)."""
    described = connection.execute("DESCRIBE " + sql, values).fetchall()
    return [row[1] for row in described]


def _field(name: str, kind: str) -> dict[str, Any]:
    """A BigQuery schema field for a DuckDB type name."""
    kind = kind.strip()
    if kind.endswith("[]"):
        inner = _field(name, kind[:-2])
        return {**inner, "mode": "REPEATED"}
    upper = kind.upper()
    if upper.startswith("STRUCT("):
        return {"name": name, "type": "RECORD", "mode": "NULLABLE",
                "fields": [_field(n, t) for n, t in _struct_members(kind[7:-1])]}
    base = upper.split("(")[0]
    mapping = {"VARCHAR": "STRING", "JSON": "JSON", "BIGINT": "INTEGER", "INTEGER": "INTEGER",
               "SMALLINT": "INTEGER", "TINYINT": "INTEGER", "HUGEINT": "INTEGER", "UBIGINT": "INTEGER",
               "UINTEGER": "INTEGER", "DOUBLE": "FLOAT", "FLOAT": "FLOAT", "DECIMAL": "NUMERIC",
               "BOOLEAN": "BOOLEAN", "TIMESTAMP": "DATETIME", "TIMESTAMP WITH TIME ZONE": "TIMESTAMP",
               "DATE": "DATE", "BLOB": "BYTES", "NULL": "STRING"}
    return {"name": name, "type": mapping.get(base, "STRING"), "mode": "NULLABLE"}


def _struct_members(text: str) -> list[tuple[str, str]]:
    members, depth, current = [], 0, ""
    for char in text + ",":
        if char == "," and depth == 0:
            name, _, kind = current.strip().partition(" ")
            members.append((name.strip('"'), kind))
            current = ""
            continue
        depth += char == "("
        depth -= char == ")"
        current += char
    return members


def _cell(value: Any, schema: dict[str, Any], int64_timestamps: bool) -> dict[str, Any]:
    if value is None:
        return {"v": None}
    if schema.get("mode") == "REPEATED":
        element = {**schema, "mode": "NULLABLE"}
        return {"v": [_cell(item, element, int64_timestamps) for item in value]}
    kind = schema["type"]
    if kind == "RECORD":
        items = list(value.values()) if isinstance(value, dict) else list(value)
        return {"v": {"f": [_cell(item, f, int64_timestamps) for item, f in zip(items, schema["fields"], strict=True)]}}
    return {"v": _scalar(value, kind, int64_timestamps)}


def _scalar(value: Any, kind: str, int64_timestamps: bool) -> str:
    if kind == "BOOLEAN":
        return "true" if value else "false"
    if kind == "TIMESTAMP":
        instant = value if value.tzinfo else value.replace(tzinfo=UTC)
        micros = int(instant.timestamp()) * 1_000_000 + instant.microsecond
        return str(micros) if int64_timestamps else repr(micros / 1_000_000)
    if kind == "DATETIME":
        return value.isoformat() if isinstance(value, datetime) else str(value)
    if kind == "DATE" and isinstance(value, date):
        return value.isoformat()
    if kind == "BYTES":
        return base64.b64encode(value).decode()
    if kind == "JSON":
        return value if isinstance(value, str) else json.dumps(value)
    if isinstance(value, Decimal | float | int):
        return str(value)
    return str(value)


def _multipart(request: RecordedRequest) -> tuple[dict[str, Any], bytes]:
    """The job metadata (JSON part) and the data part of a ``multipart/related`` upload."""
    header = f"Content-Type: {request.headers.get('content-type', '')}\r\n\r\n".encode()
    message = message_from_bytes(header + request.raw, policy=HTTP)
    parts = list(message.iter_parts())
    if len(parts) != 2:
        raise BigQueryError("invalid", f"a multipart upload has 2 parts, got {len(parts)}")
    return json.loads(parts[0].get_payload(decode=True)), parts[1].get_payload(decode=True)


__all__ = ["BigQueryError", "FakeBigQuery", "Job", "error_body"]
