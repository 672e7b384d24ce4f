"""Rolled-back transactions for warehouses that commit DDL as they go (Snowflake, BigQuery).

`cdp run --explain` and `cdp preview` run a whole run inside ``transaction(rollback=True)``
and must keep nothing. Where DDL commits on its own, nothing can be rolled back, so inside
such a transaction no permanent table is written: each one a statement would write gets a
temporary *stand-in* (a copy before DML, or the new table of a CREATE), and every later
statement reads and writes the stand-in instead. The stand-ins are dropped at the end, and
being temporary they end with the session anyway (a crash leaves nothing).

A warehouse mixes ``StandIns`` in (its ``execute`` runs statements through ``_dry``), calls
``_reading`` on the queries it fetches and ``_rolled_back`` in ``transaction(rollback=True)``;
it implements ``_apply`` (run a statement as it is), ``_query_columns`` and ``_is_scratch``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from sqlglot import exp

from cdp_warehouse.errors import WarehouseError
from cdp_warehouse.warehouses.base import create_as

_DML = (exp.Insert, exp.Delete, exp.Update, exp.Merge)


class StandIns:
    # Inside ``transaction(rollback=True)``: the permanent tables (schema, name) written so
    # far, each standing in as a temporary table (True; False once dropped). None outside.
    _stand_ins: dict[tuple[str, str], bool] | None = None

    def execute(self, statement: exp.Expression | str, parameters: Sequence[Any] | None = None) -> None:
        if self._stand_ins is not None:
            if isinstance(statement, str):  # text cannot be redirected to stand-ins
                raise WarehouseError("a statement as text cannot run in a rolled-back transaction on this warehouse",
                                     hint="this is a bug in cdp_warehouse: previews and explains must keep nothing")
            statement = self._dry(statement)
            if statement is None:
                return
        self._apply(statement, parameters)

    # ------------------------------------------------------------------ hooks
    def _apply(self, statement: exp.Expression | str, parameters: Any = None) -> None:
        """Run ``statement`` as it is (no stand-ins)."""
        raise NotImplementedError

    def _query_columns(self, query: exp.Query) -> list[str]:
        """Column names of ``query``'s result."""
        raise NotImplementedError

    def _is_scratch(self, table: exp.Table) -> bool:
        """A permanent table that is the adapter's own and short-lived (a load's staging)."""
        return False

    # ------------------------------------------------------------------ the transaction
    @contextmanager
    def transaction(self, rollback: bool = False) -> Iterator[None]:
        """Statements run as they come (the warehouse commits DDL on its own, so a BEGIN could
        not hold a batch together). What keeps a batch safe instead: every load skips known
        keys, so re-running an interrupted load completes it. ``rollback`` (`cdp run
        --explain`, `cdp preview`): permanent tables are not written; temporary stand-ins of
        the session are, read by the statements after, and dropped at the end."""
        if not rollback:
            yield
            return
        with self._rolled_back():
            yield

    @contextmanager
    def _rolled_back(self) -> Iterator[None]:
        if self._stand_ins is not None:
            yield
            return
        self._stand_ins = {}
        try:
            yield
        finally:
            written = [key for key, exists in self._stand_ins.items() if exists]
            self._stand_ins = None
            for key in written:
                with suppress(WarehouseError):
                    self._apply(exp.Drop(tables=[_stand_in(key)], kind="TABLE", exists=True))

    def _stand_in_columns(self, schema: str, table: str) -> list[str] | None:
        """Columns of the stand-in of ``schema.table`` ([] once dropped); None without one."""
        if self._stand_ins is None or (schema, table) not in self._stand_ins:
            return None
        if not self._stand_ins[schema, table]:
            return []
        return self._query_columns(exp.select("*").from_(_stand_in((schema, table))).limit(0))

    def _permanent(self, table: Any) -> tuple[str, str] | None:
        """(schema, name) of a table of ours that outlives the session: a schema-qualified one
        (temporary tables are unqualified), but a load's staging tables (dropped by the load)."""
        if not isinstance(table, exp.Table) or not table.db or self._is_scratch(table):
            return None
        return table.db, table.name

    def _dry(self, statement: exp.Expression) -> exp.Expression | None:
        """``statement`` inside ``transaction(rollback=True)``: one that would change a
        permanent table changes its temporary stand-in (created by the first write; a copy of
        the table before DML), reads of written tables read their stand-ins; None when there
        is nothing to run. ``CREATE SCHEMA`` and the ``CREATE TABLE IF NOT EXISTS`` of a table
        not written yet run as they are (empty landing tables, as any command creates)."""
        stand_ins = self._stand_ins
        assert stand_ins is not None
        if isinstance(statement, exp.Create) and statement.kind == "TABLE":
            schema = statement.this if isinstance(statement.this, exp.Schema) else None
            key = self._permanent(schema.this if schema else statement.this)
            temporary = any(isinstance(p, exp.TemporaryProperty)
                            for p in (statement.args.get("properties") or exp.Properties()).expressions)
            if key is None or temporary:
                return self._reading(statement)
            if statement.args.get("exists") and not statement.args.get("replace"):
                if key not in stand_ins:
                    return statement  # not written yet: as it is (nothing happens if it exists)
                if stand_ins[key]:
                    return None  # its stand-in exists; dropped ones are made again below
            select = statement.args.get("expression")
            select = self._reading(select) if select is not None else None  # may read what it replaces
            stand_ins[key] = True
            this = _stand_in(key)
            return exp.Create(this=exp.Schema(this=this, expressions=[c.copy() for c in schema.expressions])
                              if schema else this, kind="TABLE", expression=select, replace=True,
                              properties=exp.Properties(expressions=[exp.TemporaryProperty()]))
        if isinstance(statement, exp.Drop) and statement.kind == "TABLE":
            dropped = []
            for table in statement.args.get("tables") or statement.expressions:
                key = self._permanent(table)
                if key is None:
                    dropped.append(table.copy())
                    continue
                if stand_ins.get(key):
                    dropped.append(_stand_in(key))
                stand_ins[key] = False
            return exp.Drop(tables=dropped, kind="TABLE", exists=True) if dropped else None
        if isinstance(statement, _DML):
            key = self._permanent(_target(statement))
            if key is not None and key not in stand_ins:
                source = exp.table_(key[1], db=key[0], quoted=True)
                self._apply(create_as(_stand_in(key), exp.select("*").from_(source), temporary=True))
                stand_ins[key] = True
            return self._reading(statement)
        if isinstance(statement, exp.Create | exp.Drop) and statement.kind in ("SCHEMA", "STAGE"):
            return statement  # an empty schema, a load's stage: as any command makes them
        if isinstance(statement, exp.Query | exp.Use | exp.Put) or (
                isinstance(statement, exp.Copy) and self._permanent(statement.this) is None):
            return self._reading(statement)
        # Anything else might change a permanent object that no stand-in can take the place of.
        raise WarehouseError(f"{statement.key.upper()} cannot run in a rolled-back transaction on this warehouse",
                             hint="this is a bug in cdp_warehouse: previews and explains must keep nothing")

    def _reading(self, statement: exp.Expression) -> exp.Expression:
        """``statement`` reading (and writing) the stand-ins of the tables written so far
        inside ``transaction(rollback=True)``; a dropped one's is missing, as the table is."""
        if not self._stand_ins or isinstance(statement, str):
            return statement
        tree = statement.copy()
        target = _target(tree) if isinstance(tree, _DML) else None
        renamed: dict[str, str] = {}
        for table in list(tree.find_all(exp.Table)):
            key = self._permanent(table)
            if key is None or key not in self._stand_ins:
                continue
            stand_in = _stand_in(key)
            # a tree put in for a placeholder (``:nodes AS n``) is a table inside the aliased one
            wrapper = table.parent if isinstance(table.parent, exp.Table) else None
            if target is not None and (target is table or target is wrapper):
                if table.args.get("alias"):  # `DELETE FROM cdp.t AS x WHERE x.id = 1`
                    stand_in.set("alias", table.args["alias"].copy())
                elif isinstance(tree, exp.Delete | exp.Update) and not (wrapper and wrapper.alias):
                    renamed[key[1]] = stand_in.name  # `"identity_map"."identifier"` in its WHERE
            elif table.args.get("alias"):
                stand_in.set("alias", table.args["alias"].copy())
            elif not (wrapper and wrapper.alias):  # columns qualified by the table's name still find it
                stand_in.set("alias", exp.TableAlias(this=exp.to_identifier(key[1], quoted=True)))
            table.replace(stand_in)
        for column in tree.find_all(exp.Column):
            if column.table in renamed:
                column.set("table", exp.to_identifier(renamed[column.table], quoted=True))
        return tree


def _target(statement: exp.Expression) -> exp.Expression:
    target = statement.this
    return target.this if isinstance(target, exp.Schema) else target


def _stand_in(key: tuple[str, str]) -> exp.Table:
    """The temporary table standing in for ``schema.name`` in a rolled-back transaction."""
    return exp.Table(this=exp.to_identifier(f"_cdp_dry_{key[0]}_{key[1]}", quoted=True))


__all__ = ["StandIns"]
