"""DuckDB, the embedded default: one file, ACID transactions including DDL."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import duckdb
from sqlglot import exp

from cdp_warehouse.errors import WarehouseError
from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.warehouses.base import Warehouse

LOCK_WAIT_SECONDS = 10.0  # how long to wait for another process's write lock on the file


class DuckDBWarehouse(Warehouse):
    dialect = "duckdb"
    single_writer = True
    struct_values = True

    def __init__(self, connection: duckdb.DuckDBPyConnection, path: str) -> None:
        self.connection = connection
        self.path = path
        # Every instant is UTC (naive TIMESTAMP columns); pin the session so casts agree.
        self._run("SET TimeZone = 'UTC'")

    @classmethod
    def open(cls, project: ResolvedProject, *, wait_for_lock: bool = True) -> DuckDBWarehouse:
        config = project.config.warehouse
        path = config.path
        if path != ":memory:":
            file = project.path(path)
            file.parent.mkdir(parents=True, exist_ok=True)
            path = str(file)
        settings: dict[str, Any] = {}
        if config.memory_limit:
            settings["memory_limit"] = config.memory_limit
        if config.threads:
            settings["threads"] = config.threads
        deadline = time.monotonic() + (LOCK_WAIT_SECONDS if wait_for_lock else 0.0)
        while True:
            try:
                connection = duckdb.connect(path, config=settings)
                break
            except duckdb.Error as error:
                # `cdp serve` holds the file for a moment per flush: wait for it to let go.
                if "lock" in str(error).lower() and time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                raise WarehouseError(f"cannot open DuckDB file {path}: {str(error).splitlines()[0]}",
                                     hint="is another process (cdp serve, dagster) writing to it?") from error
        return cls(connection, path)

    def _cursor(self, sql: str, parameters: Sequence[Any] | None = None) -> duckdb.DuckDBPyConnection:
        try:
            return self.connection.execute(sql, parameters)
        except duckdb.Error as error:
            raise WarehouseError(str(error).splitlines()[0]) from error

    def _run(self, sql: str, parameters: Sequence[Any] | None = None) -> None:
        # DuckDB 2 keeps a statement's result pending until it is consumed.
        self._cursor(sql, parameters).fetchall()

    def execute(self, statement: exp.Expression | str, parameters: Sequence[Any] | None = None) -> None:
        self._run(self.render(statement), parameters)

    def fetch(self, query: exp.Expression | str, parameters: Sequence[Any] | None = None) -> list[tuple]:
        return self._cursor(self.render(query), parameters).fetchall()

    def fetch_dicts(self, query: exp.Expression | str, parameters: Sequence[Any] | None = None) -> list[dict]:
        cursor = self._cursor(self.render(query), parameters)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def fetch_arrow(self, query: exp.Expression | str) -> Any:
        try:
            return self.connection.sql(self.render(query)).to_arrow_table()
        except duckdb.Error as error:
            raise WarehouseError(str(error).splitlines()[0]) from error

    def explain(self, statement: exp.Expression | str) -> str:
        """``EXPLAIN``: the physical plan with DuckDB's estimated cardinalities."""
        rows = self._cursor("EXPLAIN " + self.render(statement)).fetchall()
        return "\n".join(str(row[-1]) for row in rows)

    def duplicate(self) -> DuckDBWarehouse:
        """Another connection to the same database (its own transactions and temporary
        tables), for work on another thread."""
        return DuckDBWarehouse(self.connection.cursor(), self.path)

    def columns(self, schema: str, table: str) -> list[str]:
        rows = self.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ? "
            "ORDER BY ordinal_position",
            [schema, table],
        )
        return [row[0] for row in rows]

    def insert_arrow(self, table: exp.Table, rows: Any, *, skip_existing_key: str | None = None) -> int:
        """Insert an Arrow table; with ``skip_existing_key``, rows whose key is already in
        ``table`` are skipped (idempotent loads). Returns rows inserted."""
        self.connection.register("_incoming", rows)
        try:
            names = list(rows.column_names)
            select = exp.select(*(exp.column(name, table="i", quoted=True) for name in names)).from_(
                exp.alias_(exp.to_table("_incoming"), "i"))
            if skip_existing_key:
                already = (exp.select(exp.Literal.number(1)).from_(exp.alias_(table.copy(), "e"))
                           .where(exp.column(skip_existing_key, table="e", quoted=True)
                                  .eq(exp.column(skip_existing_key, table="i", quoted=True))))
                select = select.where(exp.Not(this=exp.Exists(this=already)))
            insert = exp.insert(select, table.copy(), columns=[exp.to_identifier(n, quoted=True) for n in names])
            if not skip_existing_key:
                self.execute(insert)
                return rows.num_rows
            count = exp.select(exp.Count(this=exp.Star())).from_(table.copy())
            before = self.fetch(count)[0][0]
            self.execute(insert)
            return self.fetch(count)[0][0] - before
        finally:
            self.connection.unregister("_incoming")

    @contextmanager
    def transaction(self, rollback: bool = False) -> Iterator[None]:
        self._run("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self._run("ROLLBACK")
            raise
        self._run("ROLLBACK" if rollback else "COMMIT")

    def close(self) -> None:
        self.connection.close()

