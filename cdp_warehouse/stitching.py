"""Identity stitching in the warehouse: identifiers → profiles, by the rules of docs/identity.md.

Each step is one SQL statement over small typed tables (identifiers are numbered densely so
the graph work runs on integers); the two graph steps use ``graph.connected_components``.
The result is ``identity_map(identifier_type, identifier, profile_id)`` and
``_anonymous_message_profiles(message_id, profile_id)`` (the profile of each message without
a user id); ``compiler.identity.profiled_events`` reads both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from cdp_warehouse.compiler.fragments import json_text
from cdp_warehouse.compiler.identity import (
    ANONYMOUS_MESSAGES,
    IDENTITY_MAP,
    PROFILE_KEYS,
    before,
    events_table,
    message_email,
)
from cdp_warehouse.graph import connected_components
from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.specs.models import CustomIdentifier
from cdp_warehouse.warehouses.base import Warehouse, create_as

DEFAULT_PRIORITY = ("user_id", "email", "anonymous_id")


@dataclass(frozen=True)
class StitchResult:
    identifiers: int
    profiles: int
    rounds: int  # connected-components rounds (accounts + floating groups)


def priority(project: ResolvedProject) -> list[str]:
    """Identifier types, highest priority first (user_id always first)."""
    names = [i if isinstance(i, str) else i.name for i in project.config.identity.identifiers]
    ordered = ["user_id", *[n for n in names if n != "user_id"]]
    return ordered + [n for n in DEFAULT_PRIORITY if n not in ordered]


def _sql(template: str, **tables: exp.Expression) -> exp.Expression:
    """A fixed statement of this module with its tables put in as trees (no user input is
    formatted into SQL text)."""
    return exp.replace_placeholders(sqlglot.parse_one(template, read="duckdb"), **tables)


def _identifiers(project: ResolvedProject, as_of: exp.Expression) -> exp.Query:
    """``(message_id, message_type, ts, id_type, value)``: every identifier of every message."""
    events = events_table(project)

    def part(id_type: exp.Expression, value: exp.Expression) -> exp.Select:
        return (
            exp.select(
                exp.column("message_id", quoted=True),
                exp.alias_(exp.column("type", quoted=True), "message_type", quoted=True),
                exp.alias_(exp.column("timestamp", quoted=True), "ts", quoted=True),
                exp.alias_(id_type, "id_type", quoted=True),
                exp.alias_(value, "value", quoted=True),
            )
            .from_(events.copy())
            .where(before(as_of))
        )

    def present(value: exp.Expression) -> exp.Expression:
        return exp.and_(exp.Not(this=exp.Is(this=value.copy(), expression=exp.null())),
                        value.copy().neq(exp.Literal.string("")))

    parts = []
    for name in ("user_id", "anonymous_id"):
        value = exp.column(name, quoted=True)
        parts.append(part(exp.Literal.string(name), value).where(present(value)))
    email = message_email()
    parts.append(part(exp.Literal.string("email"), email).where(present(email)))
    for identifier in project.config.identity.identifiers:
        if isinstance(identifier, CustomIdentifier):
            keys = identifier.path.split(".")
            value = exp.Trim(this=json_text(keys[0], keys[1:]))
            parts.append(part(exp.Literal.string(identifier.name), value).where(present(value)))
    # An alias's previous_id is a user id when some message has it as its user id.
    previous = exp.column("previous_id", quoted=True)
    known_users = exp.select(exp.column("user_id", quoted=True)).from_(events.copy()).where(
        exp.and_(before(as_of), exp.Not(this=exp.Is(this=exp.column("user_id", quoted=True), expression=exp.null()))))
    previous_type = exp.Case().when(previous.copy().isin(query=known_users), exp.Literal.string("user_id")).else_(
        exp.Literal.string("anonymous_id"))
    parts.append(part(previous_type, previous).where(
        exp.and_(exp.column("type", quoted=True).eq(exp.Literal.string("alias")), present(previous))))
    query: exp.Query = parts[0]
    for item in parts[1:]:
        query = exp.union(query, item, distinct=False)
    return query


def _rank(types: list[str]) -> exp.Expression:
    case = exp.Case()
    for index, name in enumerate(types):
        case = case.when(exp.column("id_type", quoted=True).eq(exp.Literal.string(name)), exp.Literal.number(index))
    return case.else_(exp.Literal.number(len(types)))


def stitch(
    project: ResolvedProject, warehouse: Warehouse, as_of: exp.Expression,
    step: Callable[[str, exp.Expression], None] | None = None,
) -> StitchResult:
    """Write ``identity_map`` and ``_anonymous_message_profiles`` for messages before as-of
    (inside the caller's transaction)."""
    def run(statement: exp.Expression) -> None:
        (step or (lambda _, s: warehouse.execute(s)))("identity", statement)

    t = {name: exp.to_table(f"_id_{name}") for name in (
        "raw", "hits", "nodes", "account_labels", "accounts", "message_accounts", "owners",
        "floating_labels", "groups", "message_owners", "joins", "entities", "keys")}
    identity_map = exp.table_(IDENTITY_MAP, db=project.models_schema, quoted=True)
    anonymous_messages = exp.table_(ANONYMOUS_MESSAGES, db=project.models_schema, quoted=True)
    profile_keys = exp.table_(PROFILE_KEYS, db=project.models_schema, quoted=True)

    hits = exp.select("*", exp.alias_(_rank(priority(project)), "id_rank", quoted=True)).from_(
        exp.alias_(_identifiers(project, as_of).subquery(), "o"))
    run(create_as(t["raw"], hits, temporary=True))
    # Dense integer ids; each identifier's first appearance (timestamp, then message id).
    run(create_as(t["nodes"], _sql("""
        SELECT ROW_NUMBER() OVER (ORDER BY id_type, value) AS node, id_type, value, id_rank,
               ts AS first_ts, message_id AS first_message
        FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY id_type, value ORDER BY ts, message_id) AS k FROM :raw)
        WHERE k = 1""", raw=t["raw"]), temporary=True))
    run(create_as(t["hits"], _sql("""
        SELECT h.message_id, h.message_type, h.ts, h.id_type, h.id_rank, h.value, n.node
        FROM :raw AS h JOIN :nodes AS n ON n.id_type = h.id_type AND n.value = h.value""",
        raw=t["raw"], nodes=t["nodes"]), temporary=True))

    # Rule 1: accounts are user ids joined by aliases.
    alias_links = _sql("""
        SELECT x.node AS a, y.node AS b FROM :hits AS x JOIN :hits AS y ON y.message_id = x.message_id
        WHERE x.message_type = 'alias' AND x.id_type = 'user_id' AND y.id_type = 'user_id' AND x.node < y.node""",
        hits=t["hits"])
    accounts = connected_components(warehouse, alias_links, t["account_labels"], temporary=True)
    run(create_as(t["accounts"], _sql("""
        SELECT n.node, COALESCE(l.component, n.node) AS account FROM :nodes AS n
        LEFT JOIN :labels AS l ON l.node = n.node WHERE n.id_type = 'user_id'""",
        nodes=t["nodes"], labels=t["account_labels"]), temporary=True))
    run(create_as(t["message_accounts"], _sql("""
        SELECT h.message_id, MIN(h.ts) AS ts, MIN(a.account) AS account
        FROM :hits AS h JOIN :accounts AS a ON a.node = h.node GROUP BY h.message_id""",
        hits=t["hits"], accounts=t["accounts"]), temporary=True))
    # Rule 2: a non-user identifier belongs to the account it was first seen with.
    run(create_as(t["owners"], _sql("""
        SELECT node, account FROM (
          SELECT h.node, m.account, ROW_NUMBER() OVER (PARTITION BY h.node ORDER BY m.ts, m.message_id) AS k
          FROM :hits AS h JOIN :message_accounts AS m ON m.message_id = h.message_id WHERE h.id_type <> 'user_id')
        WHERE k = 1""", hits=t["hits"], message_accounts=t["message_accounts"]), temporary=True))
    # Rule 3: floating identifiers on one message belong together.
    floating_links = _sql("""
        SELECT node AS a, MIN(node) OVER (PARTITION BY message_id) AS b FROM :hits AS h
        WHERE h.id_type <> 'user_id' AND NOT EXISTS (SELECT 1 FROM :owners AS o WHERE o.node = h.node)""",
        hits=t["hits"], owners=t["owners"])
    floating = connected_components(warehouse, floating_links, t["floating_labels"], temporary=True)
    run(create_as(t["groups"], _sql("""
        SELECT n.node, COALESCE(l.component, n.node) AS grp FROM :nodes AS n
        LEFT JOIN :labels AS l ON l.node = n.node
        WHERE n.id_type <> 'user_id' AND NOT EXISTS (SELECT 1 FROM :owners AS o WHERE o.node = n.node)""",
        nodes=t["nodes"], labels=t["floating_labels"], owners=t["owners"]), temporary=True))
    # Rule 4: a floating group joins the owner of its earliest message with an owned identifier.
    run(create_as(t["message_owners"], _sql("""
        SELECT message_id, ts, account FROM (
          SELECT h.message_id, h.ts, o.account,
                 ROW_NUMBER() OVER (PARTITION BY h.message_id ORDER BY h.id_rank, h.value) AS k
          FROM :hits AS h JOIN :owners AS o ON o.node = h.node)
        WHERE k = 1""", hits=t["hits"], owners=t["owners"]), temporary=True))
    run(create_as(t["joins"], _sql("""
        SELECT grp, account FROM (
          SELECT g.grp, m.account, ROW_NUMBER() OVER (PARTITION BY g.grp ORDER BY m.ts, m.message_id) AS k
          FROM :hits AS h JOIN :groups AS g ON g.node = h.node JOIN :message_owners AS m ON m.message_id = h.message_id)
        WHERE k = 1""", hits=t["hits"], groups=t["groups"], message_owners=t["message_owners"]), temporary=True))
    run(create_as(t["entities"], _sql("""
        SELECT node, account AS entity FROM :accounts
        UNION ALL SELECT node, account FROM :owners
        UNION ALL SELECT g.node, COALESCE(j.account, g.grp) FROM :groups AS g LEFT JOIN :joins AS j ON j.grp = g.grp""",
        accounts=t["accounts"], owners=t["owners"], groups=t["groups"], joins=t["joins"]), temporary=True))
    # Rule 6: a profile is keyed by its earliest user id, else anonymous id, else its earliest
    # identifier of the highest priority type. The key's value is the profile id (readable and
    # stable); it is prefixed with its type for other types and when two keys share a value.
    run(create_as(t["keys"], _sql("""
        SELECT entity, id_type AS key_type, value AS key,
               CASE WHEN id_type IN ('user_id', 'anonymous_id') AND COUNT(*) OVER (PARTITION BY value) = 1
                    THEN value ELSE id_type || ':' || value END AS profile_id
        FROM (
          SELECT e.entity, n.id_type, n.value, ROW_NUMBER() OVER (
            PARTITION BY e.entity
            ORDER BY CASE n.id_type WHEN 'user_id' THEN 0 WHEN 'anonymous_id' THEN 1 ELSE 2 END,
                     n.id_rank, n.first_ts, n.first_message, n.value) AS k
          FROM :entities AS e JOIN :nodes AS n ON n.node = e.node)
        WHERE k = 1""", entities=t["entities"], nodes=t["nodes"]), temporary=True))
    # profiles.user_id is the key when it is a user id: the same earliest user id that names
    # the profile (ties and alias previous_ids counted the same way).
    run(create_as(profile_keys, _sql("SELECT profile_id, key_type, key FROM :keys", keys=t["keys"])))
    run(create_as(identity_map, _sql("""
        SELECT n.id_type AS identifier_type, n.value AS identifier, k.profile_id
        FROM :nodes AS n JOIN :entities AS e ON e.node = n.node JOIN :keys AS k ON k.entity = e.entity""",
        nodes=t["nodes"], entities=t["entities"], keys=t["keys"])))
    # Rule 5: a message without a user id goes to its highest-priority identifier's profile.
    run(create_as(anonymous_messages, _sql("""
        SELECT message_id, profile_id FROM (
          SELECT h.message_id, k.profile_id, ROW_NUMBER() OVER (PARTITION BY h.message_id ORDER BY h.id_rank, h.value) AS r
          FROM :hits AS h JOIN :entities AS e ON e.node = h.node JOIN :keys AS k ON k.entity = e.entity
          WHERE NOT EXISTS (SELECT 1 FROM :message_accounts AS m WHERE m.message_id = h.message_id))
        WHERE r = 1""", hits=t["hits"], entities=t["entities"], keys=t["keys"],
        message_accounts=t["message_accounts"])))
    counts = warehouse.fetch(_sql("SELECT (SELECT COUNT(*) FROM :nodes), (SELECT COUNT(*) FROM :keys)",
                                  nodes=t["nodes"], keys=t["keys"]))[0]
    for table in t.values():
        warehouse.execute(exp.Drop(tables=[table.copy()], kind="TABLE", exists=True))
    return StitchResult(identifiers=counts[0], profiles=counts[1], rounds=accounts.rounds + floating.rounds)
