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
