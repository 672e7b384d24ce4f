"""Run the connected-components statements of ``compiler.components`` on a warehouse."""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from cdp_warehouse.compiler import components
from cdp_warehouse.errors import WarehouseError
from cdp_warehouse.warehouses.base import Warehouse, create_as

MAX_ROUNDS = 200
_EDGES, _LARGE, _SMALL, _ROOTS, _DONE = (
    exp.to_table(name) for name in ("_cc_edges", "_cc_large", "_cc_small", "_cc_roots", "_cc_done")
)


@dataclass(frozen=True)
class ComponentsResult:
    rounds: int  # large-star + small-star rounds until every component is a star
    edges: int  # distinct undirected edges in the input


def connected_components(
    warehouse: Warehouse, edges: exp.Query, output: exp.Table, *, temporary: bool = False
) -> ComponentsResult:
    """Write ``output(node, component)`` for every node of ``edges(a, b)`` (integers), where
    ``component`` is the smallest node id of its component. Nodes without an edge are not
    in ``output``. Scratch tables are temporary."""
    warehouse.execute(create_as(_EDGES.copy(), components.normalised_edges(edges), temporary=True))
    count = warehouse.fetch(exp.select(exp.Count(this=exp.Star())).from_(_EDGES.copy()))[0][0]
    warehouse.execute(create_as(_DONE.copy(), exp.select("*").from_(_EDGES.copy()).where(exp.false()), temporary=True))
    rounds, remaining = 0, count
    while remaining:
        if rounds >= MAX_ROUNDS:
            raise WarehouseError(f"connected components did not converge in {MAX_ROUNDS} rounds")
        rounds += 1
        warehouse.execute(create_as(_LARGE.copy(), components.large_star(_EDGES), temporary=True))
        warehouse.execute(create_as(_SMALL.copy(), components.small_star(_LARGE), temporary=True))
        # Whole components that became stars are final: set them aside.
        warehouse.execute(create_as(_ROOTS.copy(), components.finished_roots(_SMALL), temporary=True))
        warehouse.execute(exp.insert(components.edges_of_roots(_SMALL, _ROOTS, inside=True), _DONE.copy()))
        warehouse.execute(create_as(_EDGES.copy(), components.edges_of_roots(_SMALL, _ROOTS, inside=False),
                                    temporary=True))
        remaining = warehouse.fetch(exp.select(exp.Count(this=exp.Star())).from_(_EDGES.copy()))[0][0]
    warehouse.execute(create_as(output, components.labels(_DONE), temporary=temporary))
    for table in (_EDGES, _LARGE, _SMALL, _ROOTS, _DONE):
        warehouse.execute(exp.Drop(tables=[table.copy()], kind="TABLE", exists=True))
    return ComponentsResult(rounds=rounds, edges=count)


_MERGE_EDGES, _MERGE_LABELS = exp.to_table("_cc_merge_edges"), exp.to_table("_cc_merge_labels")


def merge_components(warehouse: Warehouse, labels: exp.Table, new_edges: exp.Query, *, rewrite: bool = False
                     ) -> ComponentsResult:
    """Add ``new_edges(a, b)`` to a graph whose components are already known.

    ``labels(node, component, ...)`` holds every node (new ones as their own component);
    components joined by the new edges take the smallest label among them. Only the new
    edges, lifted to the labels of their ends, go through ``connected_components``: the
    work grows with what was added, not with the graph. ``rewrite`` rewrites the table
    instead of updating it in place (cheaper when most labels change, as in a first run).
    """
    a, b, node, component = (exp.column(name, table=table, quoted=True) for name, table in (
        ("component", "x"), ("component", "y"), ("node", "m"), ("component", "m")))
    lifted = (
        exp.select(exp.alias_(a, "a", quoted=True), exp.alias_(b, "b", quoted=True))
        .from_(exp.alias_(new_edges.subquery(), "e"))
        .join(exp.alias_(labels.copy(), "x"), on=exp.column("node", table="x", quoted=True).eq(exp.column("a", table="e", quoted=True)))
        .join(exp.alias_(labels.copy(), "y"), on=exp.column("node", table="y", quoted=True).eq(exp.column("b", table="e", quoted=True)))
        .where(a.copy().neq(b.copy()))
    )
    warehouse.execute(create_as(_MERGE_EDGES.copy(), lifted, temporary=True))
    result = connected_components(warehouse, exp.select("*").from_(_MERGE_EDGES.copy()), _MERGE_LABELS.copy(),
                                  temporary=True)
    label = exp.column("component", table=labels.name, quoted=True)
    if rewrite:
        columns = [c for c in warehouse.columns(labels.db, labels.name) if c != "component"]
        relabelled = (
            exp.select(*(exp.column(c, table="l", quoted=True) for c in columns),
                       exp.alias_(exp.func("COALESCE", component.copy(), exp.column("component", table="l", quoted=True)),
                                  "component", quoted=True))
            .from_(exp.alias_(labels.copy(), "l"))
            .join(exp.alias_(_MERGE_LABELS.copy(), "m"), on=node.copy().eq(exp.column("component", table="l", quoted=True)),
                  join_type="left")
        )
        warehouse.execute(create_as(labels.copy(), relabelled))
    else:
        warehouse.execute(exp.update(labels.copy(), {"component": component.copy()},
                                     from_=exp.From(this=exp.alias_(_MERGE_LABELS.copy(), "m")),
                                     where=exp.and_(label.eq(node.copy()), node.copy().neq(component.copy()))))
    for table in (_MERGE_EDGES, _MERGE_LABELS):
        warehouse.execute(exp.Drop(tables=[table.copy()], kind="TABLE", exists=True))
    return result
