"""Connected components in SQL (large-star / small-star) against a plain union-find."""

from __future__ import annotations

import math
import random

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from cdp_warehouse.graph import connected_components
from cdp_warehouse.warehouses.duckdb import DuckDBWarehouse


def union_find(edges: list[tuple[int, int]]) -> dict[int, int]:
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {node: find(node) for node in parent}


@pytest.fixture
def warehouse():
    warehouse = DuckDBWarehouse(duckdb.connect(), ":memory:")
    yield warehouse
    warehouse.close()


def components_of(warehouse, edges: list[tuple[int, int]]):
    warehouse.execute("CREATE OR REPLACE TABLE edges (a BIGINT, b BIGINT)")
    if edges:
        warehouse.connection.executemany("INSERT INTO edges VALUES (?, ?)", edges)
    result = connected_components(warehouse, exp.select("a", "b").from_("edges"), exp.to_table("labels"))
    return dict(warehouse.fetch("SELECT node, component FROM labels")), result


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), max_size=60))
def test_components_equal_union_find_on_random_graphs(warehouse, edges):
    labels, _ = components_of(warehouse, edges)
    expected = {node: root for node, root in union_find([e for e in edges if e[0] != e[1]]).items()}
    assert labels == expected


@pytest.mark.parametrize("order", ["ascending", "descending", "shuffled"])
def test_a_chain_of_1000_converges_in_logarithmic_rounds(warehouse, order):
    nodes = list(range(1000))
    if order == "descending":
        nodes.reverse()
    elif order == "shuffled":
        random.Random(3).shuffle(nodes)
    chain = list(zip(nodes, nodes[1:], strict=False))
    labels, result = components_of(warehouse, chain)
    assert set(labels.values()) == {0} and len(labels) == 1000
    assert result.rounds <= 2 * math.log2(1000) + 2, result.rounds


def test_nodes_keep_their_component_across_many_small_components(warehouse):
    edges = [(10 * k + 1, 10 * k + 2) for k in range(50)] + [(10 * k + 2, 10 * k + 3) for k in range(50)]
    labels, result = components_of(warehouse, edges)
    assert {labels[10 * k + 3] for k in range(50)} == {10 * k + 1 for k in range(50)}
    assert result.edges == 100
