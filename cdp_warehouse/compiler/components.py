"""Connected components of an undirected graph, in SQL: large-star / small-star.

Kiveris et al., "Connected Components in MapReduce and Beyond" (SoCC 2014). Each round is
one large-star and one small-star step; both keep every component connected while pulling
every node towards its component's smallest id, and the number of rounds grows with the
log of the longest path, not with its length (plain min-label propagation needs as many
rounds as the path is long). Once the edges form stars, every edge joins a node to its
component's smallest id; a star that is a whole component is set aside as soon as it
forms, so each round works only on the components still being merged.

Edges are kept normalised as ``(a, b)`` with ``a > b`` (both integers): a node's smaller
neighbours are then its ``b``s, which both steps exploit. The statements are sqlglot trees;
``cdp_warehouse.graph`` runs them.
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


def _smallest_neighbour(edges: exp.Table) -> exp.Select:
    """``(u, m)``: each node's smallest neighbour. With edges stored as ``a > b`` a node's
    smaller neighbours are exactly its ``b``s, so no both-directions copy is needed."""
    return (
        exp.select(exp.alias_(_col(A), "u", quoted=True), exp.alias_(exp.Min(this=_col(B)), "m", quoted=True))
        .from_(edges.copy())
        .group_by(_col(A))
    )


def large_star(edges: exp.Table) -> exp.Select:
    """Every neighbour larger than u is linked to the smallest of u and its neighbours.

    Seen from an edge ``(a, b)``: ``a`` is a larger neighbour of ``b``, so it is linked to
    ``b``'s smallest neighbour, or to ``b`` itself when ``b`` has none smaller. Duplicates are
    left for small-star's DISTINCT.
    """
    return (
        exp.select(
            exp.alias_(_col(A, "e"), A, quoted=True),
            exp.alias_(exp.func("COALESCE", _col("m", "s"), _col(B, "e")), B, quoted=True),
        )
        .with_("smallest", as_=_smallest_neighbour(edges))
        .from_(exp.alias_(edges.copy(), "e"))
        .join(exp.alias_(exp.to_table("smallest"), "s"), on=_col("u", "s").eq(_col(B, "e")), join_type="left")
    )


def small_star(edges: exp.Table) -> exp.Select:
    """u and every neighbour smaller than u are linked to the smallest of them."""
    # The members of u's small star: its smaller neighbours (its b's) and u itself.
    members = exp.union(
        exp.select(exp.alias_(_col(A), "u", quoted=True), exp.alias_(_col(B), "v", quoted=True)).from_(edges.copy()),
        exp.select(_col("u"), exp.alias_(_col("u"), "v", quoted=True)).from_("smallest"),
        distinct=False,
    )
    return (
        exp.select(exp.alias_(_col("v", "n"), A, quoted=True), exp.alias_(_col("m", "s"), B, quoted=True))
        .distinct()
        .with_("smallest", as_=_smallest_neighbour(edges))
        .with_("members", as_=members)
        .from_(exp.alias_(exp.to_table("members"), "n"))
        .join(exp.alias_(exp.to_table("smallest"), "s"), on=_col("u", "s").eq(_col("u", "n")))
        .where(_col("v", "n").neq(_col("m", "s")))
    )


def finished_roots(edges: exp.Table) -> exp.Select:
    """Roots of stars that are whole components: the root has no smaller neighbour, and each
    of its leaves has the root as its only neighbour. Their edges are final; later rounds
    need not carry them (identity graphs are mostly small components that finish early)."""
    degree = exp.select(_col(A), exp.alias_(exp.Count(this=exp.Star()), "n", quoted=True)).from_(edges.copy()).group_by(_col(A))
    larger = exp.select(exp.alias_(_col(B), "x", quoted=True)).distinct().from_(edges.copy())
    leaf_is_alone = exp.and_(_col("n", "d").eq(exp.Literal.number(1)), _col("x", "l").is_(exp.null()))
    return (
        exp.select(exp.alias_(_col(B, "e"), "root", quoted=True))
        .with_("degree", as_=degree)
        .with_("larger", as_=larger)
        .from_(exp.alias_(edges.copy(), "e"))
        .join(exp.alias_(exp.to_table("degree"), "d"), on=_col(A, "d").eq(_col(A, "e")))
        .join(exp.alias_(exp.to_table("larger"), "l"), on=_col("x", "l").eq(_col(A, "e")), join_type="left")
        .join(exp.alias_(exp.to_table("degree"), "r"), on=_col(A, "r").eq(_col(B, "e")), join_type="left")
        .group_by(_col(B, "e"))
        .having(exp.and_(exp.func("BOOL_AND", leaf_is_alone), exp.func("BOOL_AND", _col(A, "r").is_(exp.null()))))
    )


def edges_of_roots(edges: exp.Table, roots: exp.Table, *, inside: bool) -> exp.Select:
    """The edges whose ``b`` is (``inside``) or is not one of ``roots``."""
    member = _col(B).isin(query=exp.select(_col("root")).from_(roots.copy()))
    return exp.select(_col(A), _col(B)).from_(edges.copy()).where(member if inside else exp.Not(this=member))


def labels(edges: exp.Table) -> exp.Select:
    """``(node, component)`` of every node on a converged edge set (roots label themselves)."""
    members = exp.select(exp.alias_(_col(A), "node", quoted=True), exp.alias_(_col(B), "component", quoted=True)).from_(edges.copy())
    roots = exp.select(exp.alias_(_col(B), "node", quoted=True), exp.alias_(_col(B), "component", quoted=True)).from_(edges.copy())
    return (
        exp.select(_col("node"), exp.alias_(exp.Min(this=_col("component")), "component", quoted=True))
        .from_(exp.union(members, roots, distinct=False).subquery("l"))
        .group_by(_col("node"))
    )
