"""PostgreSQL (15+) through psycopg 3: transactional DDL, COPY for loads.

Conventions (docs/warehouses/postgres.md):
- The session's time zone is UTC: instants are ``timestamp`` (without time zone) holding UTC,
  as in DuckDB.
- JSON columns are ``jsonb``; text columns of the tables we create compare in code-point
  order (``COLLATE "C"``), as DuckDB compares text, whatever the database's locale.
- ``CREATE OR REPLACE TABLE`` does not exist: a replacement is written under a scratch
  name, the old table dropped and the new one renamed, in one transaction, so readers see
  the old table or the new one, never none; then analysed, for the statements that read it.
- Temporary tables live in ``pg_temp``, which PostgreSQL searches first for unqualified
  names (the runner relies on it); unqualified names in ``DROP`` are qualified with it so a
  permanent table of the same name is never dropped by mistake.
- Loads go through ``COPY`` (Arrow → CSV in C, parsed by the server); ``skip_existing_key``
  copies into a temporary staging table, then ``INSERT ... SELECT ... WHERE NOT EXISTS``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg.conninfo import make_conninfo
from psycopg.types.string import TextLoader
from sqlglot import exp

from cdp_warehouse.errors import WarehouseError
from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.warehouses.base import Warehouse, create_as, retyped_columns

CONNECT_TIMEOUT_SECONDS = 10
TEMP_SCHEMA = "pg_temp"
STAGING = "_cdp_incoming"
REPLACEMENT_PREFIX = "_cdp_new_"
MAX_IDENTIFIER = 63  # PostgreSQL truncates longer names (NAMEDATALEN - 1)
_PARAMETER = "__cdp_parameter__"
# Unique indexes on the landing tables' keys: loads skip known ids through them cheaply, and
# two loaders racing on the same message cannot both land it (spec section 1).
LANDING_KEYS = (("events", "message_id"), ("rejected_messages", "rejection_id"))
# Arrow types of the result columns we produce (by type OID); others are inferred.
_ARROW_TYPES = {
    16: pa.bool_(), 20: pa.int64(), 21: pa.int16(), 23: pa.int32(), 25: pa.string(), 700: pa.float32(),
    701: pa.float64(), 1043: pa.string(), 114: pa.string(), 3802: pa.string(), 1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"), 1082: pa.date32(), 1009: pa.list_(pa.string()),
}


def conninfo(config: Any) -> str:
    """The libpq connection string of a ``warehouse: {type: postgres}`` section: ``dsn``
    first, then the separate fields (which win where both are given)."""
    fields = {"host": config.host, "port": config.port, "user": config.user, "password": config.password,
              "dbname": config.database}
    info = make_conninfo(config.dsn or "", **{k: v for k, v in fields.items() if v is not None})
    defaults = {"application_name": "cdp_warehouse", "connect_timeout": CONNECT_TIMEOUT_SECONDS}
    present = psycopg.conninfo.conninfo_to_dict(info)
    return make_conninfo(info, **{k: v for k, v in defaults.items() if k not in present})


def _message(error: psycopg.Error) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class PostgresWarehouse(Warehouse):
    dialect = "postgres"

    def __init__(self, connection: psycopg.Connection, info: str) -> None:
        self.connection = connection
        self.conninfo = info
        # No server-side prepared statements: our tables are replaced between statements, and
        # a prepared `SELECT *` of a table whose columns changed fails ("cached plan must not
        # change result type"); analytic statements gain nothing from a cached plan.
        connection.prepare_threshold = None
        # json/jsonb as text, as DuckDB returns JSON columns (callers parse when they need to).
        for name in ("json", "jsonb"):
            connection.adapters.register_loader(name, TextLoader)
        self._cursor("SET TimeZone = 'UTC'")
        # JIT compiles our wide aggregates for longer than they run (measured: the fused
        # aggregates at 1M events 1.9 s with JIT, 1.4 s without).
        self._cursor("SET jit = off")

    @classmethod
    def open(cls, project: ResolvedProject, *, wait_for_lock: bool = True) -> PostgresWarehouse:
        return cls.connect(conninfo(project.config.warehouse))

    @classmethod
    def connect(cls, info: str) -> PostgresWarehouse:
        try:
            # Autocommit: a statement outside ``transaction()`` commits on its own, like DuckDB.
            connection = psycopg.connect(info, autocommit=True)
        except psycopg.Error as error:
            raise WarehouseError(f"cannot connect to PostgreSQL: {_message(error)}",
                                 hint="check warehouse.dsn/host/port/user/password/database in cdp.yaml "
                                      "and that the server accepts connections") from error
        return cls(connection, info)

    # ------------------------------------------------------------------ statements

    def _cursor(self, sql: str, parameters: Sequence[Any] | None = None) -> psycopg.Cursor:
        try:
            return self.connection.execute(sql, parameters)
        except psycopg.Error as error:
            raise WarehouseError(_message(error)) from error

    def _text(self, statement: exp.Expression | str, parameters: Sequence[Any] | None) -> str:
        """SQL text; with parameters, ``?``-placeholders of a tree become psycopg's ``%s``
        (text statements use ``%s`` themselves)."""
        if isinstance(statement, str) or not parameters:
            return self.render(statement)
        tree = statement.copy()
        for node in list(tree.find_all(exp.Placeholder)):
            node.replace(exp.var(_PARAMETER))
        return self.render(tree).replace("%", "%%").replace(_PARAMETER, "%s")

    def execute(self, statement: exp.Expression | str, parameters: Sequence[Any] | None = None) -> None:
        steps = self._steps(statement)
        if len(steps) == 1:
            self._cursor(self._text(steps[0], parameters), parameters)
            return
        with self._atomic():
            for step in steps:  # parameters belong to the statement given, not to our drops and renames
                given = parameters if isinstance(step, str) or step.find(exp.Placeholder) else None
                self._cursor(self._text(step, given), given)

    def fetch(self, query: exp.Expression | str, parameters: Sequence[Any] | None = None) -> list[tuple]:
        return self._cursor(self._text(query, parameters), parameters).fetchall()

    def fetch_dicts(self, query: exp.Expression | str, parameters: Sequence[Any] | None = None) -> list[dict]:
        cursor = self._cursor(self._text(query, parameters), parameters)
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def fetch_arrow(self, query: exp.Expression | str) -> pa.Table:
        cursor = self._cursor(self._text(query, None))
        description = cursor.description or []
        rows = cursor.fetchall()
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in description]
        arrays = [pa.array(list(values), type=_ARROW_TYPES.get(column.type_code))
                  for column, values in zip(description, columns, strict=True)]
        return pa.Table.from_arrays(arrays, names=[column.name for column in description])

    def explain(self, statement: exp.Expression | str) -> str:
        """``EXPLAIN (FORMAT TEXT)``: the planner's plan with estimated rows and cost."""
        rows = self._cursor("EXPLAIN (FORMAT TEXT) " + self.render(statement)).fetchall()
        return "\n".join(row[0] for row in rows)

    # ------------------------------------------------------------------ DDL

    def _steps(self, statement: exp.Expression | str) -> list[exp.Expression | str]:
        """The PostgreSQL statements for one of ours: a replacement becomes create-new, drop,
        rename; drops of unqualified (temporary) tables are qualified with pg_temp."""
        if isinstance(statement, exp.Create) and statement.kind == "TABLE":
            statement = _postgres_columns(statement)
            if statement.args.get("replace"):
                return self._replacement(statement)
            return [statement]
        if isinstance(statement, exp.Drop) and statement.kind == "TABLE":
            statement = statement.copy()
            for table in statement.args.get("tables") or statement.expressions:
                if isinstance(table, exp.Table) and not table.db:
                    table.set("db", exp.to_identifier(TEMP_SCHEMA))
            return [statement]
        return [statement]

    def _replacement(self, create: exp.Create) -> list[exp.Expression]:
        target = create.this.this if isinstance(create.this, exp.Schema) else create.this
        temporary = any(isinstance(p, exp.TemporaryProperty) for p in (create.args.get("properties") or exp.Properties()).expressions)
        schema = TEMP_SCHEMA if temporary else target.db
        drop = exp.Drop(tables=[exp.table_(target.name, db=schema or None, quoted=True)], kind="TABLE", exists=True)
        plain = create.copy()
        plain.set("replace", False)
        if create.expression is None:  # columns only: nothing reads the old table
            return [drop, plain]
        scratch = (REPLACEMENT_PREFIX + target.name)[:MAX_IDENTIFIER]
        new_table = exp.table_(scratch, db=None if temporary else target.db, quoted=True)
        plain.set("this", new_table)
        stale = exp.Drop(tables=[exp.table_(scratch, db=schema or None, quoted=True)], kind="TABLE", exists=True)
        rename = exp.Alter(this=exp.table_(scratch, db=schema or None, quoted=True), kind="TABLE",
                           actions=[exp.AlterRename(this=exp.table_(target.name, quoted=True))])
        # Statistics now: the next statement of the run reads the table, autovacuum would come
        # later (and never for temporary tables). Measured: stitching at 1M events 15% faster.
        analyze = exp.Analyze(tables=[exp.table_(target.name, db=schema or None, quoted=True)])
        return [stale, plain, drop, rename, analyze]

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        """A transaction, or a savepoint inside the caller's."""
        try:
            with self.connection.transaction():
                yield
        except psycopg.Error as error:
            raise WarehouseError(_message(error)) from error

    def columns(self, schema: str, table: str) -> list[str]:
        rows = self.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            [schema, table],
        )
        return [row[0] for row in rows]

    def ensure_landing(self, project: ResolvedProject) -> None:
        super().ensure_landing(project)
        for table, key in LANDING_KEYS:
            name = f"{table}_{key}_key"
            # Looked up first: CREATE INDEX IF NOT EXISTS would lock the table against loads
            # even when the index is there.
            if self.fetch("SELECT 1 FROM pg_indexes WHERE schemaname = %s AND indexname = %s",
                          [project.raw_schema, name]):
                continue
            index = exp.Index(this=exp.to_identifier(name, quoted=True),
                              table=exp.table_(table, db=project.raw_schema, quoted=True),
                              params=exp.IndexParameters(columns=[exp.Ordered(this=exp.column(key, quoted=True))]))
            self.execute(exp.Create(this=index, kind="INDEX", unique=True, exists=True))

    # ------------------------------------------------------------------ loads

    def _copy(self, table: exp.Table, rows: pa.Table) -> None:
        """``COPY table (columns) FROM STDIN`` with the rows as CSV (nulls unquoted and empty,
        empty strings quoted, so the two stay apart)."""
        buffer = io.BytesIO()
        pa_csv.write_csv(rows, buffer, write_options=pa_csv.WriteOptions(include_header=False))
        statement = exp.Copy(
            this=exp.Schema(this=table.copy(), expressions=[exp.to_identifier(n, quoted=True) for n in rows.column_names]),
            kind=True, files=[exp.var("STDIN")],
            params=[exp.CopyParameter(this=exp.var("FORMAT"), expression=exp.var("csv"))],
        )
        try:
            with self.connection.cursor() as cursor, cursor.copy(self.render(statement)) as copy:
                copy.write(buffer.getbuffer())
        except psycopg.Error as error:
            raise WarehouseError(_message(error)) from error

    def insert_arrow(self, table: exp.Table, rows: Any, *, skip_existing_key: str | None = None) -> int:
        """Insert an Arrow table through COPY; with ``skip_existing_key``, rows whose key is
        already in ``table`` are skipped (idempotent loads). Returns rows inserted."""
        if not rows.num_rows:
            return 0
        if skip_existing_key is None:
            with self._atomic():
                self._copy(table, rows)
            return rows.num_rows
        names = list(rows.column_names)
        staging = exp.to_table(STAGING, quoted=True)
        incoming = exp.alias_(staging.copy(), "i")
        already = (exp.select(exp.Literal.number(1)).from_(exp.alias_(table.copy(), "e"))
                   .where(exp.column(skip_existing_key, table="e", quoted=True)
                          .eq(exp.column(skip_existing_key, table="i", quoted=True))))
        select = (exp.select(*(exp.column(name, table="i", quoted=True) for name in names)).from_(incoming)
                  .where(exp.Not(this=exp.Exists(this=already))))
        insert = exp.insert(select, table.copy(), columns=[exp.to_identifier(n, quoted=True) for n in names])
        # A key landed meanwhile by another loader (or twice in this batch) is skipped too.
        insert.set("conflict", exp.OnConflict(action=exp.var("DO NOTHING")))
        shape = exp.select(*(exp.column(name, quoted=True) for name in names)).from_(table.copy()).where(exp.false())
        with self._atomic():
            self.execute(exp.Drop(tables=[staging.copy()], kind="TABLE", exists=True))
            create = create_as(staging.copy(), shape, temporary=True)  # the target's column types
            create.set("replace", False)  # dropped just above
            self.execute(create)
            self._copy(staging, rows)
            inserted = self._cursor(self.render(insert)).rowcount
            self.execute(exp.Drop(tables=[staging.copy()], kind="TABLE", exists=True))
        return inserted

    # ------------------------------------------------------------------ sessions

    def duplicate(self) -> PostgresWarehouse:
        """A new connection to the same database (its own transactions and temporary tables)."""
        return PostgresWarehouse.connect(self.conninfo)

    @contextmanager
    def transaction(self, rollback: bool = False) -> Iterator[None]:
        try:
            with self.connection.transaction(force_rollback=rollback):
                yield
        except psycopg.Error as error:
            raise WarehouseError(_message(error)) from error

    def close(self) -> None:
        self.connection.close()


def _postgres_columns(create: exp.Create) -> exp.Create:
    """Column definitions as PostgreSQL stores ours: JSON as jsonb, text in code-point order."""
    def retype(column: exp.ColumnDef) -> None:
        if column.kind.this == exp.DataType.Type.JSON:
            column.set("kind", exp.DataType.build("jsonb"))
        elif column.kind.this in (exp.DataType.Type.TEXT, exp.DataType.Type.VARCHAR):
            column.append("constraints", exp.ColumnConstraint(
                kind=exp.CollateColumnConstraint(this=exp.to_identifier("C", quoted=True))))
    return retyped_columns(create, retype)
