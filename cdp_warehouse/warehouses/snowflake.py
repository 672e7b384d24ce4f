"""Snowflake through snowflake-connector-python: key-pair or password auth, staged bulk loads.

Conventions (docs/warehouses/snowflake.md):
- The session's time zone is UTC and instants are ``TIMESTAMP_NTZ`` holding UTC, as in DuckDB.
- JSON columns are ``VARIANT``; they are read back as JSON text, as DuckDB returns them.
- ``CREATE OR REPLACE TABLE`` is native and atomic; temporary tables live in the session's
  schema (the models schema, ``USE SCHEMA`` after ``ensure_landing``) and shadow permanent
  tables of the same name there.
- Snowflake commits DDL on its own (docs.snowflake.com/en/sql-reference/transactions#ddl), so
  ``transaction()`` does not group statements; loads stay idempotent (known keys skipped).
  ``transaction(rollback=True)`` (`cdp run --explain`, `cdp preview`) cannot roll back either:
  inside it, what would change a permanent table changes a temporary stand-in instead, which
  later statements read, and the stand-ins are dropped at the end.
- Loads: Arrow → Parquet file → ``PUT`` to the table stage of a temporary staging table →
  ``COPY INTO ... MATCH_BY_COLUMN_NAME`` → ``INSERT ... SELECT ... WHERE NOT EXISTS`` into the
  target (``PARSE_JSON`` for VARIANT columns), so a re-load skips known keys.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Sequence
from contextlib import suppress
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlglot import exp

from cdp_warehouse.compiler.dialects import lower
from cdp_warehouse.errors import WarehouseError
from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.warehouses.base import Warehouse, insert_new_rows, require, retyped_columns
from cdp_warehouse.warehouses.stand_ins import StandIns

# The load's temporary staging table and stage live in a schema of their own, named without
# quotes: fakesnow resolves stages in quoted lower-case schemas under the upper-cased name.
STAGING_SCHEMA, STAGING, STAGE = "_CDP_STAGING", "_CDP_INCOMING", "_CDP_STAGE"  # upper case: same quoted or not
PASSPHRASE_ENV = "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE"  # for an encrypted private_key_path
_PARAMETER = "__cdp_parameter__"
# snowflake.connector.constants.FIELD_TYPES: 0 is FIXED (NUMBER), 10 is ARRAY
FIXED_TYPE_CODE, ARRAY_TYPE_CODE = 0, 10
_JSON_TYPES = ("VARIANT", "OBJECT", "ARRAY", "JSON")


def _message(error: Exception) -> str:
    # "002003 (42S02): SQL compilation error:\nObject 'X' does not exist": one line
    return " ".join(line.strip() for line in str(error).strip().splitlines()) or type(error).__name__


def connect_arguments(config: Any, schema: str | None = None) -> dict[str, Any]:
    """``snowflake.connector.connect`` keywords for a ``warehouse: {type: snowflake}`` section:
    key-pair auth when ``private_key_path`` is set (passphrase from
    ``$SNOWFLAKE_PRIVATE_KEY_PASSPHRASE``), else the password."""
    arguments: dict[str, Any] = {"account": config.account, "user": config.user, "database": config.database,
                                 "application": "cdp_warehouse", "session_parameters": {"TIMEZONE": "UTC"}}
    for key in ("role", "warehouse"):
        if getattr(config, key):
            arguments[key] = getattr(config, key)
    if schema:
        arguments["schema"] = schema
    if config.private_key_path:
        arguments["authenticator"] = "SNOWFLAKE_JWT"
        arguments["private_key_file"] = config.private_key_path
        if os.environ.get(PASSPHRASE_ENV):
            arguments["private_key_file_pwd"] = os.environ[PASSPHRASE_ENV]
    elif config.password:
        arguments["password"] = config.password
    else:
        raise WarehouseError("warehouse.password or warehouse.private_key_path is required for Snowflake",
                             hint="set `password: ${SNOWFLAKE_PASSWORD}` or `private_key_path:` in cdp.yaml")
    return arguments


class SnowflakeWarehouse(StandIns, Warehouse):
    dialect = "snowflake"
    explain_estimates = False  # EXPLAIN shows partitions and bytes, not rows

    def __init__(self, connection: Any, arguments: dict[str, Any]) -> None:
        self.connection = connection
        self.arguments = arguments
        self._staging_ready = False
        self._schema: str | None = None  # the session's current schema, once ``_use`` set it
        # The load's temporary stage, named per session: Snowflake keeps temporary stages apart
        # per session, fakesnow shares one folder per name (concurrent loads of two sessions,
        # as `cdp sync` jobs make, would overwrite and purge each other's files).
        self._stage_name = f"{STAGE}_{uuid.uuid4().hex[:12].upper()}"
        # The session's TIMEZONE is UTC through ``session_parameters`` at connect (not an
        # ALTER SESSION, which fakesnow does not implement).

    @classmethod
    def open(cls, project: ResolvedProject, *, wait_for_lock: bool = True) -> SnowflakeWarehouse:
        require("snowflake.connector", "snowflake")
        warehouse = cls.connect(connect_arguments(project.config.warehouse))
        # Temporary tables go to the current schema: the models schema, when it exists yet
        # (``ensure_landing`` creates it and comes back here).
        with suppress(WarehouseError):
            warehouse._use(project.models_schema)
        return warehouse

    def _use(self, schema: str) -> None:
        """Make ``schema`` the session's current one (where unqualified temporary tables go)."""
        self.execute(exp.Use(kind=exp.var("SCHEMA"), this=exp.table_(schema, quoted=True)))
        self._schema = schema

    @classmethod
    def connect(cls, arguments: dict[str, Any]) -> SnowflakeWarehouse:
        import snowflake.connector  # an optional dependency: `pip install cdp_warehouse[snowflake]`

        try:
            connection = snowflake.connector.connect(**arguments)
        except snowflake.connector.Error as error:
            raise WarehouseError(f"cannot connect to Snowflake: {_message(error)}",
                                 hint="check warehouse.account/user/password (or private_key_path)/role/"
                                      "database/warehouse in cdp.yaml") from error
        return cls(connection, arguments)

    # ------------------------------------------------------------------ statements

    def _cursor(self, sql: str, parameters: Sequence[Any] | None = None) -> Any:
        import snowflake.connector

        cursor = self.connection.cursor()
        try:
            cursor.execute(sql, parameters)
        except snowflake.connector.Error as error:
            raise WarehouseError(_message(error)) from error
        return cursor

    def _text(self, statement: exp.Expression | str, parameters: Sequence[Any] | None) -> str:
        """SQL text; with parameters, ``?``-placeholders of a tree become the connector's
        ``%s`` (pyformat, its default)."""
        if isinstance(statement, str) or not parameters:
            return self.render(statement)
        tree = statement.copy()
        for node in list(tree.find_all(exp.Placeholder)):
            node.replace(exp.var(_PARAMETER))
        return self.render(tree).replace("%", "%%").replace(_PARAMETER, "%s")

    def render(self, statement: exp.Expression | str, *, pretty: bool = False) -> str:
        """Every identifier quoted: Snowflake upper-cases unquoted names, DuckDB and our
        lower-case column names do not (``SELECT node`` must read the column ``"node"``)."""
        if isinstance(statement, str):
            return statement
        if isinstance(statement, exp.Create) and statement.kind == "TABLE":
            statement = _snowflake_columns(statement)
        return lower(statement, self.dialect).sql(dialect=self.dialect, pretty=pretty, identify=True)

    def _apply(self, statement: exp.Expression | str, parameters: Sequence[Any] | None = None) -> None:
        self._cursor(self._text(statement, parameters), parameters).close()

    def _query_columns(self, query: exp.Query) -> list[str]:
        return [column[0] for column in self._cursor(self.render(query)).description]

    def _is_scratch(self, table: exp.Table) -> bool:
        return table.db.upper() == STAGING_SCHEMA

    def _rows(self, cursor: Any) -> list[tuple]:
        """Rows as DuckDB gives them: ARRAY columns (JSON text from the connector) as lists,
        NUMBER(p, 0) as int (the connector does so; fakesnow gives Decimal); VARIANT and OBJECT
        stay JSON text, as DuckDB's JSON does."""
        description = cursor.description or []
        arrays = [i for i, column in enumerate(description) if column[1] == ARRAY_TYPE_CODE]
        integers = [i for i, column in enumerate(description) if column[1] == FIXED_TYPE_CODE and not column[5]]
        rows = cursor.fetchall()
        if not arrays and not integers:
            return [tuple(row) for row in rows]
        converted = []
        for row in rows:
            row = list(row)
            for index in arrays:
                if isinstance(row[index], str):
                    row[index] = json.loads(row[index])
            for index in integers:
                if isinstance(row[index], Decimal):
                    row[index] = int(row[index])
            converted.append(tuple(row))
        return converted

    def fetch(self, query: exp.Expression | str, parameters: Sequence[Any] | None = None) -> list[tuple]:
        return self._rows(self._cursor(self._text(self._reading(query), parameters), parameters))

    def fetch_dicts(self, query: exp.Expression | str, parameters: Sequence[Any] | None = None) -> list[dict]:
        cursor = self._cursor(self._text(self._reading(query), parameters), parameters)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in self._rows(cursor)]

    def fetch_arrow(self, query: exp.Expression | str) -> pa.Table:
        cursor = self._cursor(self._text(self._reading(query), None))
        names = [column[0] for column in cursor.description]
        table = cursor.fetch_arrow_all() if hasattr(cursor, "fetch_arrow_all") else None
        if table is not None:
            return table
        # No rows (the connector gives None), or fakesnow (no Arrow fetch): from the tuples.
        rows = cursor.fetchall()
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
        return pa.Table.from_arrays([pa.array(list(values)) if values else pa.array([], pa.string())
                                     for values in columns], names=names)

    def explain(self, statement: exp.Expression | str) -> str:
        """``EXPLAIN USING TEXT``: the plan's operators, partitions and bytes (nothing is run).
        A statement Snowflake will not explain gives a line saying so instead of an error, so
        `cdp run --explain` still shows every model's SQL (running the model would report
        the error). fakesnow explains nothing (docs/warehouses/snowflake.md)."""
        try:
            rows = self._cursor("EXPLAIN USING TEXT " + self._text(self._reading(statement), None)).fetchall()
        except WarehouseError as error:
            return f"no plan: Snowflake did not explain this statement ({error})"
        return "\n".join(str(row[0]) for row in rows)

    def columns(self, schema: str, table: str) -> list[str]:
        stand_in = self._stand_in_columns(schema, table)
        if stand_in is not None:
            return stand_in
        return [name for name, _ in self._column_types(schema, table)]

    def _column_types(self, schema: str, table: str) -> list[tuple[str, str]]:
        rows = self.fetch(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            [schema, table],
        )
        return [(row[0], str(row[1]).upper()) for row in rows]

    def ensure_landing(self, project: ResolvedProject) -> None:
        super().ensure_landing(project)
        # Temporary tables are created in the current schema: make it ours.
        self._use(project.models_schema)

    # ------------------------------------------------------------------ loads

    def _ensure_staging(self) -> None:
        """The staging schema, created once per session; CREATE SCHEMA also makes it the
        session's current schema, so the one we were in is restored after."""
        if self._staging_ready:
            return
        current = self.fetch("SELECT CURRENT_SCHEMA()")[0][0]
        self.execute(exp.Create(this=exp.to_identifier(STAGING_SCHEMA), kind="SCHEMA", exists=True))
        if current:
            self.execute(exp.Use(kind=exp.var("SCHEMA"), this=exp.table_(current, quoted=True)))
        self._staging_ready = True

    def insert_arrow(self, table: exp.Table, rows: Any, *, skip_existing_key: str | None = None) -> int:
        """Insert an Arrow table through a stage (PUT + COPY INTO); with ``skip_existing_key``,
        rows whose key is already in ``table`` are skipped. Returns rows inserted."""
        if not rows.num_rows:
            return 0
        names = list(rows.column_names)
        types = dict(self._column_types(table.db, table.name))
        self._ensure_staging()
        # A table of this session's own (a COPY INTO a temporary table of a quoted lower-case
        # schema is not found by fakesnow), dropped after the load.
        staging = exp.table_(f"{STAGING}_{uuid.uuid4().hex[:12].upper()}", db=STAGING_SCHEMA)
        self.execute(exp.Create(this=exp.Schema(this=staging.copy(), expressions=[
            exp.ColumnDef(this=exp.to_identifier(field.name, quoted=True), kind=_staging_type(field.type))
            for field in rows.schema]), kind="TABLE", replace=True))
        try:
            self._stage(staging, rows)

            def value(name: str) -> exp.Expression:
                column = exp.column(name, table="i", quoted=True)
                if types.get(name, "").startswith(_JSON_TYPES):
                    return exp.Anonymous(this="PARSE_JSON", expressions=[column])
                return column

            insert = insert_new_rows(table, staging, names, value, skip_existing_key)
            if self._stand_ins is not None:
                insert = self._dry(insert)
            cursor = self._cursor(self.render(insert))
            inserted = cursor.rowcount
            cursor.close()
        finally:
            self.execute(exp.Drop(tables=[staging.copy()], kind="TABLE", exists=True))
        return rows.num_rows if inserted is None or inserted < 0 else inserted

    def _stage(self, staging: exp.Table, rows: pa.Table) -> None:
        """``PUT`` the rows as one Parquet file on the staging table's stage, ``COPY INTO`` it."""
        stage = exp.var("@" + exp.table_(self._stage_name, db=STAGING_SCHEMA).sql(dialect="snowflake"))
        self.execute(exp.Create(this=exp.table_(self._stage_name, db=STAGING_SCHEMA), kind="STAGE", replace=True,
                                properties=exp.Properties(expressions=[exp.TemporaryProperty()])))
        with tempfile.TemporaryDirectory(prefix="cdp_snowflake_") as folder:
            path = Path(folder) / "rows.parquet"
            pq.write_table(rows, path)
            put = exp.Put(this=exp.Literal.string(path.as_uri()), target=stage,
                          properties=exp.Properties(expressions=[
                              exp.Property(this=exp.var("AUTO_COMPRESS"), value=exp.false()),
                              exp.Property(this=exp.var("OVERWRITE"), value=exp.true())]))
            self.execute(put)
        copy = exp.Copy(this=staging.copy(), kind=True, files=[stage.copy()], params=[
            exp.CopyParameter(this=exp.var("FILE_FORMAT"), expressions=[
                exp.Property(this=exp.var("TYPE"), value=exp.var("PARQUET")),
                # Parquet timestamps as timestamps, not as numbers (docs: COPY INTO, USE_LOGICAL_TYPE)
                exp.Property(this=exp.var("USE_LOGICAL_TYPE"), value=exp.true())]),
            exp.CopyParameter(this=exp.var("MATCH_BY_COLUMN_NAME"), expression=exp.var("CASE_INSENSITIVE")),
            exp.CopyParameter(this=exp.var("PURGE"), expression=exp.true()),
        ])
        self.execute(copy)

    # ------------------------------------------------------------------ sessions

    def duplicate(self) -> SnowflakeWarehouse:
        """A new session (its own transactions and temporary tables), in the same schema: a
        new connection has no current schema, and an unqualified temporary table (`cdp sync`'s
        ``_sync_changes``, on a connection of its own per job) needs one."""
        other = SnowflakeWarehouse.connect(self.arguments)
        if self._schema:
            try:
                other._use(self._schema)
            except WarehouseError:
                other.close()
                raise
        return other

    def close(self) -> None:
        self.connection.close()


def _staging_type(kind: pa.DataType) -> exp.DataType:
    if pa.types.is_timestamp(kind):
        return exp.DataType.build("timestamp_ntz", dialect="snowflake")
    if pa.types.is_boolean(kind):
        return exp.DataType.build("boolean")
    if pa.types.is_integer(kind):
        return exp.DataType.build("bigint")
    if pa.types.is_floating(kind):
        return exp.DataType.build("double")
    if pa.types.is_date(kind):
        return exp.DataType.build("date")
    return exp.DataType.build("text")


def _snowflake_columns(create: exp.Create) -> exp.Create:
    """Column definitions as Snowflake stores ours: JSON as VARIANT, instants as TIMESTAMP_NTZ."""
    def retype(column: exp.ColumnDef) -> None:
        if column.kind.this == exp.DataType.Type.JSON:
            column.set("kind", exp.DataType.build("variant", dialect="snowflake"))
        elif column.kind.this == exp.DataType.Type.TIMESTAMP:
            column.set("kind", exp.DataType.build("timestamp_ntz", dialect="snowflake"))
    return retyped_columns(create, retype)


__all__ = ["SnowflakeWarehouse", "connect_arguments"]
