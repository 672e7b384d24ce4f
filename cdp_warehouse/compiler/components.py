"""Connected components of an undirected graph, in SQL: large-star / small-star.

Kiveris et al., "Connected Components in MapReduce and Beyond" (SoCC 2014). Each round is
one large-star and one small-star step; both keep every component connected while pulling
every node towards its component's smallest id, and the number of rounds grows with the
log of the longest path, not with its length (plain min-label propagation needs as many
rounds as the path is long). When a round changes nothing, every edge joins a node to its
component's smallest id.

Edges are kept normalised as ``(a, b)`` with ``a > b`` (both integers), so the set compares
cheaply between rounds. The statements are sqlglot trees; ``stitching`` runs them.
"""

from __future__ import annotations

from sqlglot import exp

A, B = "a", "b"


def _col(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table, quoted=True)


def normalised_edges(edges: exp.Query) -> exp.Select:
    """``edges(a, b)`` → distinct ``(greatest, least)`` pairs without self-loops."""
    source = exp.alias_(edges.subquery(), "e")
    return (
        exp.select(
            exp.alias_(exp.func("GREATEST", _col(A, "e"), _col(B, "e")), A, quoted=True),
            exp.alias_(exp.func("LEAST", _col(A, "e"), _col(B, "e")), B, quoted=True),
        )
        .distinct()
        .from_(source)
        .where(_col(A, "e").neq(_col(B, "e")))
    )


def _neighbours(edges: exp.Table) -> exp.Union:
    """Both directions of every edge: ``(u, v)``."""
    forward = exp.select(exp.alias_(_col(A), "u", quoted=True), exp.alias_(_col(B), "v", quoted=True)).from_(edges.copy())
    backward = exp.select(exp.alias_(_col(B), "u", quoted=True), exp.alias_(_col(A), "v", quoted=True)).from_(edges.copy())
    return exp.union(forward, backward, distinct=False)


def large_star(edges: exp.Table) -> exp.Select:
    """Every neighbour larger than u is linked to the smallest of u and its neighbours."""
    smallest = (
        exp.select(_col("u"), exp.alias_(exp.func("LEAST", _col("u"), exp.Min(this=_col("v"))), "m", quoted=True))
        .from_("neighbours")
        .group_by(_col("u"))
    )
    return (
        exp.select(exp.alias_(_col("v", "n"), A, quoted=True), exp.alias_(_col("m", "s"), B, quoted=True))
        .distinct()
        .with_("neighbours", as_=_neighbours(edges))
        .with_("smallest", as_=smallest)
        .from_(exp.alias_(exp.to_table("neighbours"), "n"))
        .join(exp.alias_(exp.to_table("smallest"), "s"), on=_col("u", "s").eq(_col("u", "n")))
        .where(exp.and_(_col("v", "n") > _col("u", "n"), _col("v", "n").neq(_col("m", "s"))))
    )


def small_star(edges: exp.Table) -> exp.Select:
    """u and every neighbour smaller than u are linked to the smallest of them."""
    smaller = (
        exp.select(_col("u"), _col("v")).from_("neighbours").where(_col("v") < _col("u"))
    )
    smallest = exp.select(_col("u"), exp.alias_(exp.Min(this=_col("v")), "m", quoted=True)).from_("smaller").group_by(_col("u"))
    # The members of u's small star: its smaller neighbours and u itself.
    members = exp.union(
        exp.select(_col("u"), _col("v")).from_("smaller"),
        exp.select(_col("u"), exp.alias_(_col("u"), "v", quoted=True)).from_("smallest"),
        distinct=False,
    )
    return (
        exp.select(exp.alias_(_col("v", "n"), A, quoted=True), exp.alias_(_col("m", "s"), B, quoted=True))
        .distinct()
        .with_("neighbours", as_=_neighbours(edges))
        .with_("smaller", as_=smaller)
        .with_("smallest", as_=smallest)
        .with_("members", as_=members)
        .from_(exp.alias_(exp.to_table("members"), "n"))
        .join(exp.alias_(exp.to_table("smallest"), "s"), on=_col("u", "s").eq(_col("u", "n")))
        .where(_col("v", "n").neq(_col("m", "s")))
    )


def changed_edges(before: exp.Table, after: exp.Table) -> exp.Select:
    """How many edges one round added or removed (0: converged)."""
    added = exp.except_(exp.select(_col(A), _col(B)).from_(after.copy()), exp.select(_col(A), _col(B)).from_(before.copy()))
    removed = exp.except_(exp.select(_col(A), _col(B)).from_(before.copy()), exp.select(_col(A), _col(B)).from_(after.copy()))
    return exp.select(exp.Count(this=exp.Star())).from_(exp.union(added, removed, distinct=False).subquery("d"))


def labels(edges: exp.Table) -> exp.Select:
    """``(node, component)`` of every node on a converged edge set (roots label themselves)."""
    members = exp.select(exp.alias_(_col(A), "node", quoted=True), exp.alias_(_col(B), "component", quoted=True)).from_(edges.copy())
    roots = exp.select(exp.alias_(_col(B), "node", quoted=True), exp.alias_(_col(B), "component", quoted=True)).from_(edges.copy())
    return (
        exp.select(_col("node"), exp.alias_(exp.Min(this=_col("component")), "component", quoted=True))
        .from_(exp.union(members, roots, distinct=False).subquery("l"))
        .group_by(_col("node"))
    )
