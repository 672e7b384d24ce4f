"""The small interface every warehouse implements: execute, fetch, transactions, tables."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Self

from sqlglot import exp

from cdp_warehouse.compiler.dialects import lower
from cdp_warehouse.errors import WarehouseError
from cdp_warehouse.specs import ResolvedProject

# The landing table (spec section 1); column order is the insert order of loaders.
LANDING_COLUMNS: tuple[tuple[str, str], ...] = (
    ("message_id", "text"),
    ("type", "text"),
    ("event", "text"),
    ("user_id", "text"),
    ("anonymous_id", "text"),
    ("group_id", "text"),
    ("previous_id", "text"),
    ("timestamp", "timestamp"),
    ("received_at", "timestamp"),
    ("sent_at", "timestamp"),
    ("properties", "json"),
    ("traits", "json"),
    ("context", "json"),
    ("source", "text"),
)
REJECTED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("rejection_id", "text"),  # hash of reason and message: re-loading does not repeat a rejection
    ("received_at", "timestamp"),
    ("source", "text"),
    ("reason", "text"),
    ("message", "text"),
    ("origin", "text"),
)
MEMBERSHIP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("audience", "text"),
    ("profile_id", "text"),
    ("entered_at", "timestamp"),
    ("exited_at", "timestamp"),
)


def create_table(table: exp.Table, columns: Sequence[tuple[str, str]]) -> exp.Create:
    schema = exp.Schema(
        this=table,
        expressions=[
            exp.ColumnDef(this=exp.to_identifier(name, quoted=True), kind=exp.DataType.build(kind))
            for name, kind in columns
        ],
    )
    return exp.Create(this=schema, kind="TABLE", exists=True)


def create_as(table: exp.Table, select: exp.Query, *, temporary: bool = False) -> exp.Create:
    """``CREATE OR REPLACE [TEMPORARY] TABLE table AS select``."""
    properties = exp.Properties(expressions=[exp.TemporaryProperty()]) if temporary else None
    return exp.Create(this=table, kind="TABLE", expression=select, replace=True, properties=properties)


def require(module: str, extra: str) -> None:
    """Import ``module``, an optional dependency, or fail with the command that installs it."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as error:
        raise WarehouseError(f"warehouse.type {extra} needs the {module} package, which is not installed",
                             hint=f"pip install 'cdp_warehouse[{extra}]'") from error


def retyped_columns(create: exp.Create, retype: Callable[[exp.ColumnDef], None]) -> exp.Create:
    """A copy of ``CREATE TABLE t (columns)`` with ``retype`` applied to each typed column
    definition (how a warehouse stores our types); other statements as they are."""
    if not isinstance(create.this, exp.Schema):
        return create
    create = create.copy()
    for column in create.this.expressions:
        if isinstance(column, exp.ColumnDef) and column.kind is not None:
            retype(column)
    return create


def insert_new_rows(table: exp.Table, staging: exp.Table, names: Sequence[str],
                    value: Callable[[str], exp.Expression], skip_existing_key: str | None) -> exp.Insert:
    """``INSERT INTO table (names) SELECT value(name), ... FROM staging AS i``: a staged load's
    last step. With ``skip_existing_key``, keys already in ``table`` are skipped and a key twice
    in the batch lands once, as a unique key would have it (``value`` reads ``i``'s columns)."""
    select = exp.select(*(value(name) for name in names)).from_(exp.alias_(staging.copy(), "i"))
    if skip_existing_key:
        key = exp.column(skip_existing_key, table="i", quoted=True)
        already = (exp.select(exp.Literal.number(1)).from_(exp.alias_(table.copy(), "e"))
                   .where(exp.column(skip_existing_key, table="e", quoted=True).eq(key)))
        select = select.where(exp.Not(this=exp.Exists(this=already)))
        select = select.qualify(exp.Window(this=exp.RowNumber(), partition_by=[key.copy()]).eq(1))
    return exp.insert(select, table.copy(), columns=[exp.to_identifier(n, quoted=True) for n in names])


class Warehouse(ABC):
    """A connection to one warehouse. SQL arrives as sqlglot trees and is rendered here.

    Trees are written with DuckDB's vocabulary where it is the clearest; ``render`` lowers
    them for the warehouse's dialect (``compiler.dialects``). Capability flags tell callers
    what a warehouse can do beyond that common subset.

    What every implementation guarantees for the statements it executes:
    - ``create_as(table, select)`` (CREATE OR REPLACE TABLE) replaces ``table`` atomically,
      and ``select`` may read the table it replaces;
    - DDL inside ``transaction()`` commits or rolls back with the data;
    - a temporary table (``create_as(..., temporary=True)``) is seen by this session only,
      and its unqualified name is found before any permanent table of the same name;
    - ``insert_arrow(..., skip_existing_key=k)`` is an idempotent merge on ``k`` (loads,
      rejections and the tracking-plan tables rely on it).
    """

    dialect: str
    # One process may write at a time (a DuckDB file); others queue or fail fast.
    single_writer: bool = False
    # STRUCT values can be built, compared, aggregated (MIN, ARG_MIN) and read back by field.
    struct_values: bool = False
    # ``explain`` shows the planner's estimates (rows, cost) without running the statement.
    explain_estimates: bool = True
    # What ``explain`` shows, as `cdp run --explain` labels it.
    plan_name: str = "EXPLAIN"

    @classmethod
    @abstractmethod
    def open(cls, project: ResolvedProject, *, wait_for_lock: bool = True) -> Warehouse: ...

    @abstractmethod
    def execute(self, statement: exp.Expression | str, parameters: Sequence[Any] | None = None) -> None: ...

    @abstractmethod
    def fetch(self, query: exp.Expression | str, parameters: Sequence[Any] | None = None) -> list[tuple]: ...

    @abstractmethod
    def fetch_arrow(self, query: exp.Expression | str) -> Any:
        """The rows of ``query`` as an Arrow table."""

    @abstractmethod
    def duplicate(self) -> Warehouse:
        """A second connection to the same warehouse, for another thread."""

    @abstractmethod
    def insert_arrow(self, table: exp.Table, rows: Any, *, skip_existing_key: str | None = None) -> int:
        """Insert an Arrow table; skip rows whose ``skip_existing_key`` is already there."""

    @abstractmethod
    def columns(self, schema: str, table: str) -> list[str]:
        """Column names of ``schema.table`` (empty when it does not exist)."""

    @abstractmethod
    @contextmanager
    def transaction(self, rollback: bool = False) -> Iterator[None]:
        """Everything inside commits together or not at all (``rollback``: never commits,
        for previews)."""

    @abstractmethod
    def close(self) -> None: ...

    def render(self, statement: exp.Expression | str, *, pretty: bool = False) -> str:
        """SQL text for this warehouse; text passes through as written."""
        if isinstance(statement, str):
            return statement
        return lower(statement, self.dialect).sql(dialect=self.dialect, pretty=pretty)

    def explain(self, statement: exp.Expression | str) -> str:
        """The warehouse's plan for ``statement`` (its EXPLAIN, as text); nothing is run."""
        raise NotImplementedError

    def fetch_dicts(self, query: exp.Expression | str, parameters: Sequence[Any] | None = None) -> list[dict]:
        raise NotImplementedError

    def table_exists(self, schema: str, table: str) -> bool:
        return bool(self.columns(schema, table))

    def ensure_landing(self, project: ResolvedProject) -> None:
        """Create the schemas and the landing, rejection and history tables if missing."""
        for schema in (project.raw_schema, project.models_schema):
            self.execute(exp.Create(this=exp.to_identifier(schema, quoted=True), kind="SCHEMA", exists=True))
        self.execute(create_table(exp.table_("events", db=project.raw_schema, quoted=True), LANDING_COLUMNS))
        self.execute(create_table(exp.table_("rejected_messages", db=project.raw_schema, quoted=True), REJECTED_COLUMNS))
        self.execute(create_table(exp.table_("audience_membership", db=project.models_schema, quoted=True),
                                  MEMBERSHIP_COLUMNS))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
