"""BigQuery through google-cloud-bigquery: query jobs in a session, loads from Parquet.

Conventions (docs/warehouses/bigquery.md):
- Schemas are datasets of ``warehouse.project``; instants are ``DATETIME`` holding UTC (what
  sqlglot writes for our ``timestamp``), as DuckDB's ``TIMESTAMP``; JSON columns are ``JSON``
  and are read back as JSON text, as DuckDB returns them.
- Each connection runs its jobs in a BigQuery *session* (created on open, aborted on close),
  so temporary tables live as long as the connection and shadow permanent ones by name.
- ``CREATE OR REPLACE TABLE`` is atomic. BigQuery refuses DDL on permanent tables inside a
  multi-statement transaction, so ``transaction()`` does not group statements (as on
  Snowflake); loads stay idempotent because they skip known keys.
- Loads: Arrow → Parquet → a load job (``WRITE_TRUNCATE``) into a staging table of the models
  dataset → ``INSERT ... SELECT ... WHERE NOT EXISTS`` into the target (``PARSE_JSON`` for
  JSON columns, ``CAST`` to the target's types) → the staging table is dropped.
- ``explain`` is a dry run: the bytes the statement would scan (what BigQuery bills).
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Sequence
from contextlib import suppress
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlglot import exp

from cdp_warehouse.compiler.dialects import lower
from cdp_warehouse.errors import WarehouseError
from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.warehouses.base import Warehouse, insert_new_rows, require
from cdp_warehouse.warehouses.stand_ins import StandIns

STAGING_PREFIX = "_cdp_incoming_"
DEFAULT_LOCATION = "US"
_PARAMETER_TYPES = ((bool, "BOOL"), (int, "INT64"), (float, "FLOAT64"), (Decimal, "NUMERIC"),
                    (datetime, "DATETIME"), (date, "DATE"), (str, "STRING"))


def _message(error: Exception) -> str:
    """One line: BigQuery's own message, without the client's request line and job footer
    ("GET https://...: Not found: Table ..." → "Not found: Table ...")."""
    text = str(getattr(error, "message", None) or error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    return re.sub(r"^(GET|POST|PUT|PATCH|DELETE) \S+: ", "", first)


def client_arguments(config: Any) -> dict[str, Any]:
    """``bigquery.Client`` keywords for a ``warehouse: {type: bigquery}`` section:
    a service-account key from ``credentials_path``; anonymous credentials for an
    ``api_endpoint`` without one (an emulator); else Application Default Credentials."""
    arguments: dict[str, Any] = {"project": config.project}
    if config.location:
        arguments["location"] = config.location
    if config.api_endpoint:
        arguments["client_options"] = {"api_endpoint": config.api_endpoint}
    if config.credentials_path:
        from google.oauth2 import service_account

        try:
            arguments["credentials"] = service_account.Credentials.from_service_account_file(
                config.credentials_path, scopes=["https://www.googleapis.com/auth/bigquery"])
        except (OSError, ValueError) as error:
            raise WarehouseError(f"cannot read the BigQuery credentials file {config.credentials_path}: "
                                 f"{type(error).__name__}",
                                 hint="warehouse.credentials_path names a service-account JSON key") from error
    elif config.api_endpoint:
        from google.auth.credentials import AnonymousCredentials

        arguments["credentials"] = AnonymousCredentials()
    return arguments


class BigQueryWarehouse(StandIns, Warehouse):
    dialect = "bigquery"
    explain_estimates = False  # a dry run gives bytes scanned, not rows
    plan_name = "dry run"

    def __init__(self, client: Any, arguments: dict[str, Any], scratch_dataset: str) -> None:
        self.client = client
        self.arguments = arguments
        self.project_id = arguments["project"]
        self.scratch_dataset = scratch_dataset  # where load jobs stage their rows
        self.session_id: str | None = None
        self._temporary: set[str] = set()  # temporary tables of the session

    @classmethod
    def open(cls, project: ResolvedProject, *, wait_for_lock: bool = True) -> BigQueryWarehouse:
        require("google.cloud.bigquery", "bigquery")
        return cls.connect(client_arguments(project.config.warehouse), project.models_schema)

    @classmethod
    def connect(cls, arguments: dict[str, Any], scratch_dataset: str) -> BigQueryWarehouse:
        from google.api_core import exceptions
        from google.auth.exceptions import DefaultCredentialsError
        from google.cloud import bigquery  # optional: `pip install cdp_warehouse[bigquery]`

        try:
            if not arguments.get("location"):
                arguments = {**arguments, "location": _dataset_location(bigquery.Client(**arguments), scratch_dataset)}
            client = bigquery.Client(**arguments)
            warehouse = cls(client, arguments, scratch_dataset)
            warehouse._start_session()
        except DefaultCredentialsError as error:
            raise WarehouseError("no Google credentials for BigQuery",
                                 hint="set warehouse.credentials_path (a service-account key) or "
                                      "GOOGLE_APPLICATION_CREDENTIALS, or run `gcloud auth application-default login`"
                                 ) from error
        except exceptions.GoogleAPICallError as error:
            raise WarehouseError(f"cannot connect to BigQuery: {_message(error)}",
                                 hint="check warehouse.project/location in cdp.yaml and the account's "
                                      "roles (docs/warehouses/bigquery.md)") from error
        return warehouse

    def _start_session(self) -> None:
        from google.cloud import bigquery

        job = self.client.query("SELECT 1", job_config=bigquery.QueryJobConfig(create_session=True))
        job.result()
        self.session_id = job.session_info.session_id

    # ------------------------------------------------------------------ statements

    def _job_config(self, parameters: Sequence[Any] | None = None, **options: Any) -> Any:
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(use_legacy_sql=False, **options)
        if self.session_id:
            config.connection_properties = [bigquery.ConnectionProperty("session_id", self.session_id)]
        if parameters:
            config.query_parameters = [_parameter(value) for value in parameters]
        return config

    def _result(self, sql: str, parameters: Sequence[Any] | None = None, **options: Any) -> Any:
        """Run one statement as a query job and wait for it (the client polls the job)."""
        from google.api_core import exceptions

        try:
            job = self.client.query(sql, job_config=self._job_config(parameters, **options))
            return job, job.result()
        except exceptions.GoogleAPICallError as error:
            raise WarehouseError(_message(error)) from error

    def render(self, statement: exp.Expression | str, *, pretty: bool = False) -> str:
        """Every identifier quoted (backticks); a DELETE or UPDATE of every row gets the
        ``WHERE TRUE`` BigQuery requires."""
        if isinstance(statement, str):
            return statement
        if isinstance(statement, exp.Delete | exp.Update) and statement.args.get("where") is None:
            statement = statement.copy()
            statement.set("where", exp.Where(this=exp.true()))
        return lower(statement, self.dialect).sql(dialect=self.dialect, pretty=pretty, identify=True)

    def _apply(self, statement: exp.Expression | str, parameters: Sequence[Any] | None = None) -> None:
        if isinstance(statement, exp.Drop) and statement.kind == "TABLE":
            # An unqualified name is a temporary table of this session; BigQuery would look
            # for one that was never created in a dataset, and fail, even with IF EXISTS.
            tables = [t for t in statement.args["tables"] if t.db or t.name in self._temporary]
            if not tables:
                return
            statement = statement.copy()
            statement.set("tables", [t.copy() for t in tables])
        self._result(self.render(statement), parameters)
        if isinstance(statement, exp.Create) and _is_temporary(statement):
            self._temporary.add(_created(statement).name)
        elif isinstance(statement, exp.Drop):
            self._temporary.difference_update(t.name for t in statement.args["tables"] if not t.db)

    def _query_columns(self, query: exp.Query) -> list[str]:
        _, rows = self._result(self.render(query))
        return [field.name for field in rows.schema or []]

    def _is_scratch(self, table: exp.Table) -> bool:
        return table.name.startswith(STAGING_PREFIX)

    def fetch(self, query: exp.Expression | str, parameters: Sequence[Any] | None = None) -> list[tuple]:
        _, rows = self._result(self.render(self._reading(query)), parameters)
        json_columns = [i for i, f in enumerate(rows.schema or []) if f.field_type == "JSON"]
        return [_row(tuple(row.values()), json_columns) for row in rows]

    def fetch_dicts(self, query: exp.Expression | str, parameters: Sequence[Any] | None = None) -> list[dict]:
        _, rows = self._result(self.render(self._reading(query)), parameters)
        names = [f.name for f in rows.schema or []]
        json_columns = [i for i, f in enumerate(rows.schema or []) if f.field_type == "JSON"]
        return [dict(zip(names, _row(tuple(row.values()), json_columns), strict=True)) for row in rows]

    def fetch_arrow(self, query: exp.Expression | str) -> pa.Table:
        _, rows = self._result(self.render(self._reading(query)))
        return rows.to_arrow(create_bqstorage_client=False)

    def explain(self, statement: exp.Expression | str) -> str:
        """A dry run: what the statement would scan and bill, nothing run."""
        job, _ = self._result(self.render(self._reading(statement)), dry_run=True, use_query_cache=False)
        scanned = job.total_bytes_processed or 0
        return f"dry run: {job.statement_type or 'QUERY'} would process {scanned:,} bytes ({scanned / 2**20:.1f} MiB)"

    def columns(self, schema: str, table: str) -> list[str]:
        from google.api_core import exceptions

        stand_in = self._stand_in_columns(schema, table)
        if stand_in is not None:
            return stand_in
        try:
            found = self.client.get_table(f"{self.project_id}.{schema}.{table}")
        except exceptions.NotFound:
            return []
        except exceptions.GoogleAPICallError as error:
            raise WarehouseError(_message(error)) from error
        return [field.name for field in found.schema]

    def _column_types(self, table: exp.Table) -> dict[str, str]:
        """Standard SQL type of each column of ``table`` (a temporary table, or the stand-in
        of a permanent one inside ``transaction(rollback=True)``, too)."""
        _, rows = self._result(self.render(self._reading(exp.select("*").from_(table.copy()).limit(0))))
        # no CAST for arrays and records ("" : the value goes in as it is)
        return {field.name: "" if field.mode == "REPEATED" or field.field_type in ("RECORD", "STRUCT")
                else _standard_type(field.field_type) for field in rows.schema or []}

    # ------------------------------------------------------------------ loads

    def insert_arrow(self, table: exp.Table, rows: Any, *, skip_existing_key: str | None = None) -> int:
        """Insert an Arrow table: a Parquet load job into a staging table, then an INSERT
        that skips keys already in ``table`` (and a key twice in the batch). Returns rows
        inserted."""
        from google.api_core import exceptions
        from google.cloud import bigquery

        if not rows.num_rows:
            return 0
        names = list(rows.column_names)
        staging = exp.table_(f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}", db=self.scratch_dataset)
        buffer = io.BytesIO()
        pq.write_table(_loadable(rows), buffer)
        size = buffer.tell()
        buffer.seek(0)
        try:
            load = self.client.load_table_from_file(
                buffer, f"{self.project_id}.{staging.db}.{staging.name}", size=size,
                job_config=bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.PARQUET,
                                                  write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE))
            load.result()
        except exceptions.GoogleAPICallError as error:
            raise WarehouseError(f"load into {table.sql(dialect='bigquery')}: {_message(error)}") from error
        try:
            types = self._column_types(table)

            def value(name: str) -> exp.Expression:
                column = exp.column(name, table="i", quoted=True)
                if types.get(name) == "JSON":
                    # numbers JSON cannot hold exactly (a 20-digit id) are rounded, not refused:
                    # one such property would fail the whole load
                    return exp.Anonymous(this="PARSE_JSON", expressions=[column, exp.Kwarg(
                        this=exp.var("wide_number_mode"), expression=exp.Literal.string("round"))])
                if types.get(name):
                    return exp.cast(column, exp.DataType.build(types[name], dialect="bigquery"))
                return column

            insert = insert_new_rows(table, staging, names, value, skip_existing_key)
            if self._stand_ins is not None:
                insert = self._dry(insert)
            job, _ = self._result(self.render(insert))
            inserted = job.num_dml_affected_rows
        finally:
            self.execute(exp.Drop(tables=[staging.copy()], kind="TABLE", exists=True))
        return rows.num_rows if inserted is None else int(inserted)

    # ------------------------------------------------------------------ sessions

    def duplicate(self) -> BigQueryWarehouse:
        """A new session (its own temporary tables)."""
        return BigQueryWarehouse.connect(self.arguments, self.scratch_dataset)

    def close(self) -> None:
        if self.session_id:
            with suppress(Exception):  # the session expires on its own after 24 h of idling
                self._result("CALL BQ.ABORT_SESSION()")
            self.session_id = None
        self.client.close()


def _dataset_location(client: Any, dataset: str) -> str:
    """Where the models dataset lives (a session runs every job in its own location, so it must
    be created there); BigQuery's default, US, when the dataset does not exist yet."""
    from google.api_core import exceptions

    try:
        return client.get_dataset(f"{client.project}.{dataset}").location or DEFAULT_LOCATION
    except exceptions.NotFound:
        return DEFAULT_LOCATION
    finally:
        client.close()


def _parameter(value: Any) -> Any:
    from google.cloud import bigquery

    if value is None:
        return bigquery.ScalarQueryParameter(None, "STRING", None)
    for kind, name in _PARAMETER_TYPES:
        if isinstance(value, kind):
            if isinstance(value, datetime) and value.tzinfo is not None:
                value = value.astimezone(UTC).replace(tzinfo=None)  # DATETIME holds UTC
            return bigquery.ScalarQueryParameter(None, name, value)
    raise WarehouseError(f"cannot pass a {type(value).__name__} as a BigQuery parameter")


def _is_temporary(create: exp.Create) -> bool:
    properties = create.args.get("properties")
    return bool(properties) and any(isinstance(p, exp.TemporaryProperty) for p in properties.expressions)


def _created(create: exp.Create) -> exp.Table:
    return create.this.this if isinstance(create.this, exp.Schema) else create.this


def _loadable(rows: pa.Table) -> pa.Table:
    """Columns a load job can type: a column of nulls only (Arrow's null type) as STRING; the
    INSERT casts every column to the target's type."""
    fields = [pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in rows.schema]
    return rows.cast(pa.schema(fields)) if fields != list(rows.schema) else rows


def _row(values: tuple, json_columns: list[int]) -> tuple:
    """A row as DuckDB gives it: JSON as text, instants as naive UTC."""
    converted = list(values)
    for index, item in enumerate(converted):
        if index in json_columns and item is not None:
            converted[index] = json.dumps(item)
        elif isinstance(item, datetime) and item.tzinfo is not None:
            converted[index] = item.astimezone(UTC).replace(tzinfo=None)
    return tuple(converted)


def _standard_type(legacy: str) -> str:
    """tables.get names types the legacy way (INTEGER, FLOAT, BOOLEAN); CAST wants these."""
    return {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "RECORD": "STRUCT"}.get(legacy, legacy)


__all__ = ["BigQueryWarehouse", "client_arguments"]
