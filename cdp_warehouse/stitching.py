"""Identity stitching in the warehouse: identifiers → profiles, by the rules of docs/identity.md.

Each step is one SQL statement over small typed tables (identifiers are numbered so the
graph work runs on integers); the graph steps use ``cdp_warehouse.graph``. The result is
``identity_map(identifier_type, identifier, profile_id)``, ``_profile_keys`` and
``_anonymous_message_profiles(message_id, profile_id)`` (the profile of each message without
a user id); ``compiler.identity.profiled_events`` reads them.

Runs are incremental. The state kept between runs (in the models schema):
``_identity_messages`` (messages already stitched), ``_identity_hits`` (their identifiers),
``_identity_nodes`` (each identifier's number and its component in the *loose* graph, where
all identifiers of a message are linked and a user id and an anonymous id of the same value
are one node), ``_identity_minutes`` (messages stitched per minute of timestamps: where new
messages are searched), ``_identity_signatures`` (the earliest message of each identifier
set: a later message with a known set is inert) and ``_identity_state`` (as-of and settings
of the last run). Every rule decides within one loose component, so a run re-applies the
rules only to the components its non-inert new messages touch.
"""

from __future__ import annotations

import hashlib
import json
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
from cdp_warehouse.graph import connected_components, merge_components
from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.specs.models import CustomIdentifier
from cdp_warehouse.warehouses.base import Warehouse, create_as, create_table

DEFAULT_PRIORITY = ("user_id", "email", "anonymous_id")
STATE_VERSION = 3  # bump when the state tables change shape: the next run rebuilds them
# Types whose values share one loose node: an alias previous_id is one or the other, and a
# user id equal to an anonymous id must meet it to name both profiles apart (rule 6).
_ID_TYPES = ("user_id", "anonymous_id", "previous_id")
_STATE_COLUMNS = {
    "state": (("as_of", "timestamp"), ("fingerprint", "text")),
    "messages": (("message_id", "text"), ("ts", "timestamp")),
    # How many messages of each minute of timestamps were stitched: a minute whose count in
    # the landing table grew holds new messages; only those minutes are searched for them.
    "minutes": (("day", "date"), ("minute", "int"), ("messages", "bigint")),
    "hits": (("message_id", "text"), ("message_type", "text"), ("ts", "timestamp"), ("id_type", "text"),
             ("value", "text"), ("node", "bigint")),
    "nodes": (("node", "bigint"), ("cls", "text"), ("value", "text"), ("component", "bigint")),
    # The earliest message of each identifier set (typed nodes, see ``_signatures``): a later
    # message with the same set changes no rule's outcome (see ``_inert``).
    "signatures": (("n", "bigint"), ("lo", "bigint"), ("hi", "bigint"), ("total", "bigint"),
                   ("first_ts", "timestamp"), ("first_message", "text")),
}


@dataclass(frozen=True)
class StitchResult:
    identifiers: int  # rows of identity_map
    profiles: int
    rounds: int  # connected-components rounds (loose graph + accounts + floating groups)
    full: bool  # rebuilt from every message (else: extended from the new ones)
    messages: int  # messages read from the landing table by this run


def priority(project: ResolvedProject) -> list[str]:
    """Identifier types, highest priority first (user_id always first)."""
    names = [i if isinstance(i, str) else i.name for i in project.config.identity.identifiers]
    ordered = ["user_id", *[n for n in names if n != "user_id"]]
    return ordered + [n for n in DEFAULT_PRIORITY if n not in ordered]


def _sql(template: str, **tables: exp.Expression) -> exp.Expression:
    """A fixed statement of this module with its tables put in as trees (no user input is
    formatted into SQL text)."""
    return exp.replace_placeholders(sqlglot.parse_one(template, read="duckdb"), **tables)


def loose_class(id_type: exp.Expression) -> exp.Expression:
    """The loose node class of an identifier type (see the module docstring)."""
    return exp.Case().when(id_type.copy().isin(*map(exp.Literal.string, _ID_TYPES)), exp.Literal.string("id")).else_(
        id_type.copy())


def _identifiers(project: ResolvedProject, source: exp.Table, where: exp.Expression | None) -> exp.Query:
    """``(message_id, message_type, ts, id_type, value, cls)``: every identifier of the
    messages of ``source``. An alias's previous_id keeps the type ``previous_id`` here; the
    rules type it (it is a user id when some message has it as its user id)."""
    def part(id_type: str, value: exp.Expression) -> exp.Select:
        query = (
            exp.select(
                exp.column("message_id", quoted=True),
                exp.alias_(exp.column("type", quoted=True), "message_type", quoted=True),
                exp.alias_(exp.column("timestamp", quoted=True), "ts", quoted=True),
                exp.alias_(exp.Literal.string(id_type), "id_type", quoted=True),
                exp.alias_(value, "value", quoted=True),
                exp.alias_(loose_class(exp.Literal.string(id_type)), "cls", quoted=True),
            )
            .from_(source.copy())
            .where(present(value))
        )
        return query.where(where.copy()) if where is not None else query

    def present(value: exp.Expression) -> exp.Expression:
        return exp.and_(exp.Not(this=exp.Is(this=value.copy(), expression=exp.null())),
                        value.copy().neq(exp.Literal.string("")))

    parts = [part(name, exp.column(name, quoted=True)) for name in ("user_id", "anonymous_id")]
    parts.append(part("email", message_email()))
    for identifier in project.config.identity.identifiers:
        if isinstance(identifier, CustomIdentifier):
            keys = identifier.path.split(".")
            parts.append(part(identifier.name, exp.Trim(this=json_text(keys[0], keys[1:]))))
    alias = part("previous_id", exp.column("previous_id", quoted=True))
    parts.append(alias.where(exp.column("type", quoted=True).eq(exp.Literal.string("alias"))))
    query: exp.Query = parts[0]
    for item in parts[1:]:
        query = exp.union(query, item, distinct=False)
    return query


def _rank(types: list[str]) -> exp.Expression:
    case = exp.Case()
    for index, name in enumerate(types):
        case = case.when(exp.column("id_type", quoted=True).eq(exp.Literal.string(name)), exp.Literal.number(index))
    return case.else_(exp.Literal.number(len(types)))


def limits(project: ResolvedProject) -> dict[str, int]:
    """``identity.limits`` beyond user ids (whose limit of 1 is rule 1 itself), by type."""
    return {kind: cap for kind, cap in sorted(project.config.identity.limits.items()) if kind != "user_id"}


def fingerprint(project: ResolvedProject) -> str:
    """What the stitching state depends on besides the data: a change rebuilds it."""
    custom = [(i.name, i.path) for i in project.config.identity.identifiers if isinstance(i, CustomIdentifier)]
    settings: list = [STATE_VERSION, priority(project), custom]
    if limits(project):  # appended only when set, so states saved before limits existed stay valid
        settings.append(limits(project))
    return hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]


def state_tables(project: ResolvedProject) -> dict[str, exp.Table]:
    return {name: exp.table_(f"_identity_{name}", db=project.models_schema, quoted=True) for name in _STATE_COLUMNS}


def _can_extend(project: ResolvedProject, warehouse: Warehouse, as_of: exp.Expression) -> bool:
    """Whether the saved state can be extended: same settings, and as-of did not go back."""
    schema = project.models_schema
    names = [t.name for t in state_tables(project).values()] + [IDENTITY_MAP, ANONYMOUS_MESSAGES, PROFILE_KEYS]
    if not all(warehouse.table_exists(schema, name) for name in names):
        return False
    rows = warehouse.fetch(_sql("SELECT fingerprint, as_of <= :as_of FROM :state",
                                state=state_tables(project)["state"], as_of=as_of))
    return len(rows) == 1 and rows[0][0] == fingerprint(project) and bool(rows[0][1])


def stitch(
    project: ResolvedProject, warehouse: Warehouse, as_of: exp.Expression,
    step: Callable[[str, exp.Expression], None] | None = None, *, full_refresh: bool = False,
) -> StitchResult:
    """Bring the identity tables up to as-of, inside the caller's transaction.

    Only messages not stitched before are read from the landing table (newer than the last
    as-of, or landed late). The result equals a full rebuild (tests/test_stitching.py checks
    it on random data); a rebuild happens on the first run, when the identity settings
    change, when as-of goes back, or with ``full_refresh``.
    """
    def run(statement: exp.Expression) -> None:
        (step or (lambda _, s: warehouse.execute(s)))("identity", statement)

    def count(table: exp.Table) -> int:
        return warehouse.fetch(exp.select(exp.Count(this=exp.Star())).from_(table.copy()))[0][0]

    state = state_tables(project)
    full = full_refresh or not _can_extend(project, warehouse, as_of)
    t = {name: exp.to_table(f"_id_{name}") for name in (
        "counts", "changed", "known", "new_events", "new_raw", "new", "new_signatures", "inert", "scope",
        "scope_hits")}
    events = events_table(project)
    if not full:
        # Messages per minute of timestamps now; a minute with fewer than were stitched lost
        # events (deleted from the landing table): the state no longer describes it.
        run(create_as(t["counts"], _sql(f"""
            SELECT {_MINUTE}, COUNT(*) AS messages FROM :events AS e WHERE e."timestamp" < :as_of
            GROUP BY 1, 2""", events=events, as_of=as_of), temporary=True))
        run(create_as(t["changed"], _sql("""
            SELECT c.day, c.minute, c.messages < COALESCE(s.messages, 0) AS fewer
            FROM :counts AS c FULL OUTER JOIN :minutes AS s ON s.day = c.day AND s.minute = c.minute
            WHERE c.messages IS NULL OR s.messages IS NULL OR c.messages <> s.messages""",
            counts=t["counts"], minutes=state["minutes"]), temporary=True))
        full = bool(warehouse.fetch(_sql("SELECT COUNT(*) FROM :changed WHERE fewer OR day IS NULL",
                                         changed=t["changed"]))[0][0])
    if full:
        for name, columns in _STATE_COLUMNS.items():
            run(exp.Drop(tables=[state[name].copy()], kind="TABLE", exists=True))
            run(create_table(state[name].copy(), columns))
        # every message is new: the two columns the message and minute state keep
        run(create_as(t["new_events"], _sql('SELECT e.message_id, e."timestamp" FROM :events AS e WHERE e."timestamp" < :as_of',
                                            events=events, as_of=as_of), temporary=True))
        new_events = t["new_events"]
        new_raw = _identifiers(project, events, before(as_of))
    else:
        # The new messages: in the minutes whose count grew, those not stitched yet.
        run(create_as(t["known"], _sql(f"""
            SELECT m.message_id FROM :messages AS m JOIN :changed AS c
              ON c.day = CAST(m.ts AS DATE) AND c.minute = {_minute_of("m.ts")}""",
            messages=state["messages"], changed=t["changed"]), temporary=True))
        run(create_as(t["new_events"], _sql(f"""
            SELECT e.* FROM :events AS e JOIN :changed AS c
              ON c.day = CAST(e."timestamp" AS DATE) AND c.minute = {_minute_of(_EVENT_TS)}
            WHERE e."timestamp" < :as_of AND NOT EXISTS (SELECT 1 FROM :known AS k WHERE k.message_id = e.message_id)""",
            events=events, as_of=as_of, changed=t["changed"], known=t["known"]), temporary=True))
        new_events = t["new_events"]
        new_raw = _identifiers(project, t["new_events"], None)
    run(create_as(t["new_raw"], new_raw, temporary=True))
    # New identifiers take the next numbers, in no particular order: no result depends on a
    # node's number, and numbering without a sort spares one over every identifier.
    run(exp.insert(_sql("""
        SELECT node, cls, value, node AS component FROM (
          SELECT b.base + ROW_NUMBER() OVER () AS node, d.cls, d.value
          FROM (SELECT DISTINCT cls, value FROM :new_raw AS h
                WHERE NOT EXISTS (SELECT 1 FROM :nodes AS n WHERE n.cls = h.cls AND n.value = h.value)) AS d
          CROSS JOIN (SELECT COALESCE(MAX(node), 0) AS base FROM :nodes) AS b)""",
        new_raw=t["new_raw"], nodes=state["nodes"]), state["nodes"].copy()))
    run(create_as(t["new"], _sql("""
        SELECT h.message_id, h.message_type, h.ts, h.id_type, h.value, n.node
        FROM :new_raw AS h JOIN :nodes AS n ON n.cls = h.cls AND n.value = h.value""",
        new_raw=t["new_raw"], nodes=state["nodes"]), temporary=True))
    run(exp.insert(exp.select("*").from_(t["new"].copy()), state["hits"].copy()))
    # messages read = rows the state gains (a table's count is cheap; a COUNT(DISTINCT) was not)
    stitched_before = count(state["messages"])
    run(exp.insert(_sql('SELECT e.message_id, e."timestamp" FROM :new_events AS e', new_events=new_events),
                   state["messages"].copy()))
    messages = count(state["messages"]) - stitched_before
    run(create_as(state["minutes"], _sql(f"""
        SELECT day, minute, CAST(SUM(messages) AS BIGINT) AS messages FROM (
          SELECT day, minute, messages FROM :minutes
          UNION ALL SELECT {_MINUTE}, COUNT(*) FROM :new_events AS e GROUP BY 1, 2) AS m
        GROUP BY day, minute""", minutes=state["minutes"], new_events=new_events)))
    loose = merge_components(warehouse, state["nodes"], _sql(
        "SELECT node AS a, MIN(node) OVER (PARTITION BY message_id) AS b FROM :new", new=t["new"]), rewrite=full)
    run(exp.Delete(this=state["state"].copy()))
    run(exp.insert(exp.select(exp.alias_(as_of.copy(), "as_of"), exp.alias_(exp.Literal.string(fingerprint(project)),
                                                                            "fingerprint")), state["state"].copy()))
    run(create_as(t["new_signatures"], _signatures(project, t["new"]), temporary=True))

    if full:
        scope_hits = state["hits"]
    else:
        run(create_as(t["inert"], _inert(t["new_signatures"], state["signatures"]), temporary=True))
        # The loose components the new messages touched (inert ones change nothing), and every
        # message in them.
        run(create_as(t["scope"], _sql("""
            SELECT node FROM :nodes WHERE component IN (
              SELECT n.component FROM :nodes AS n WHERE n.node IN (
                SELECT node FROM :new AS h WHERE NOT EXISTS (SELECT 1 FROM :inert AS i WHERE i.message_id = h.message_id)))""",
            nodes=state["nodes"], new=t["new"], inert=t["inert"]), temporary=True))
        run(create_as(t["scope_hits"], _sql("SELECT * FROM :hits WHERE node IN (SELECT node FROM :scope)",
                                            hits=state["hits"], scope=t["scope"]), temporary=True))
        scope_hits = t["scope_hits"]
    rules = _apply_rules(project, warehouse, scope_hits, run)
    outputs = {
        PROFILE_KEYS: (_sql("SELECT profile_id, key_type, key FROM :keys", keys=rules.tables["keys"]), "key_type", "key"),
        IDENTITY_MAP: (rules.identity_map, "identifier_type", "identifier"),
        ANONYMOUS_MESSAGES: (rules.anonymous_messages, None, None),
    }
    for name, (rows, type_column, value_column) in outputs.items():
        table = exp.table_(name, db=project.models_schema, quoted=True)
        if full:
            run(create_as(table, rows))
            continue
        if type_column:  # rows of identifiers in the touched components
            mine = exp.Exists(this=_sql("""
                SELECT 1 FROM :scope AS s JOIN :nodes AS n ON n.node = s.node""", scope=t["scope"], nodes=state["nodes"])
                .where(exp.column("value", table="n").eq(exp.column(value_column, table=name, quoted=True)))
                .where(exp.column("cls", table="n").eq(loose_class(exp.column(type_column, table=name, quoted=True)))))
        else:  # rows of messages in the touched components
            mine = exp.column("message_id", table=name, quoted=True).isin(
                query=_sql("SELECT message_id FROM :hits", hits=scope_hits))
        run(exp.delete(table.copy(), where=mine))
        run(exp.insert(rows, table.copy()))
    if not full:
        # Inert messages without a user id outside the touched components: rule 5 over the
        # identity map as it stands (their identifiers' profiles did not change).
        run(exp.insert(_sql("""
            SELECT h.message_id, ARG_MIN(m.profile_id, STRUCT_PACK(r := :rank, v := h.value)) AS profile_id
            FROM :new AS h JOIN :map AS m ON m.identifier_type = h.id_type AND m.identifier = h.value
            WHERE h.message_id IN (SELECT message_id FROM :inert WHERE has_user = 0)
              AND h.message_id NOT IN (SELECT message_id FROM :scope_hits)
            GROUP BY h.message_id""", new=t["new"], map=exp.table_(IDENTITY_MAP, db=project.models_schema, quoted=True),
            inert=t["inert"], scope_hits=scope_hits, rank=_rank(priority(project))),
            exp.table_(ANONYMOUS_MESSAGES, db=project.models_schema, quoted=True)))
    # Signatures seen for the first time, or earlier than known (a late arrival).
    signatures = _sql("""
        SELECT n, lo, hi, total, MIN(ts) AS first_ts,
               ARG_MIN(message_id, STRUCT_PACK(ts := ts, m := message_id)) AS first_message
        FROM :new_signatures AS s
        WHERE NOT EXISTS (SELECT 1 FROM :known AS k
                          WHERE k.n = s.n AND k.lo = s.lo AND k.hi = s.hi AND k.total = s.total AND k.first_ts <= s.ts)
        GROUP BY n, lo, hi, total""", new_signatures=t["new_signatures"], known=state["signatures"])
    run(exp.insert(signatures, state["signatures"].copy()))
    result = StitchResult(identifiers=count(exp.table_(IDENTITY_MAP, db=project.models_schema, quoted=True)),
                          profiles=count(exp.table_(PROFILE_KEYS, db=project.models_schema, quoted=True)),
                          rounds=loose.rounds + rules.rounds, full=full, messages=messages)
    for table in [*t.values(), *rules.tables.values()]:
        warehouse.execute(exp.Drop(tables=[table.copy()], kind="TABLE", exists=True))
    return result


def _signatures(project: ResolvedProject, hits: exp.Table) -> exp.Query:
    """Each message's identifier set as ``(n, lo, hi, total)`` over its typed nodes
    ``node * k + type rank``: with at most 3 of them, count, least, greatest and sum name the
    set exactly (the middle one is the sum minus the others), in integers any warehouse adds
    up fast. Messages with more identifiers, and aliases (they join accounts), are left out:
    they are never inert."""
    types = priority(project)
    typed = exp.column("node", quoted=True) * exp.Literal.number(len(types) + 1) + _rank(types)
    return _sql("""
        SELECT message_id, MIN(ts) AS ts, MAX(CASE WHEN id_type = 'user_id' THEN 1 ELSE 0 END) AS has_user,
               COUNT(*) AS n, MIN(:typed) AS lo, MAX(:typed) AS hi, SUM(:typed) AS total
        FROM :hits AS h GROUP BY message_id
        HAVING COUNT(*) <= 3 AND MAX(CASE WHEN message_type = 'alias' THEN 1 ELSE 0 END) = 0""",
        hits=hits, typed=typed)


def _minute_of(ts: str) -> str:
    """The minute of the day of ``ts`` (a fixed fragment of this module's statements)."""
    return f"CAST(EXTRACT(HOUR FROM {ts}) * 60 + EXTRACT(MINUTE FROM {ts}) AS INT)"


_EVENT_TS = 'e."timestamp"'
_MINUTE = f"CAST({_EVENT_TS} AS DATE) AS day, {_minute_of(_EVENT_TS)} AS minute"


def _inert(new_signatures: exp.Table, known: exp.Table) -> exp.Query:
    """New messages that cannot change any rule's outcome: a message whose identifier set
    (typed nodes) an earlier message already had. Every rule picks the earliest message with
    some identifiers (owners, joins, keys, limits), or links identifiers seen together
    (accounts, floating groups, loose components): the earlier message already did all that.
    Equal timestamps count as not earlier (their tie-break order is the warehouse's)."""
    return _sql("""
        SELECT s.message_id, s.has_user FROM :new_signatures AS s
        WHERE EXISTS (SELECT 1 FROM :known AS k
                      WHERE k.n = s.n AND k.lo = s.lo AND k.hi = s.hi AND k.total = s.total AND k.first_ts < s.ts)""",
        new_signatures=new_signatures, known=known)


@dataclass(frozen=True)
class _Rules:
    tables: dict[str, exp.Table]  # scratch tables to drop
    identity_map: exp.Query
    anonymous_messages: exp.Query
    rounds: int


def _apply_rules(project: ResolvedProject, warehouse: Warehouse, scope_hits: exp.Table,
                 run: Callable[[exp.Expression], None]) -> _Rules:
    """Rules 1-6 (with 4b, limits) of docs/identity.md over the messages of ``scope_hits``
    (whole loose components). Earliest-first picks are ``ARG_MIN`` over (timestamp, message_id)."""
    t = {name: exp.to_table(f"_id_{name}") for name in (
        "user_nodes", "typed", "hits", "nodes", "account_labels", "accounts", "message_accounts", "owners",
        "floating_labels", "groups", "message_owners", "joins", "formed", "entities", "keys")}
    run(create_as(t["user_nodes"], _sql("SELECT DISTINCT node FROM :h WHERE id_type = 'user_id'", h=scope_hits),
                  temporary=True))
    # An alias previous_id is a user id when it is some message's user id; a typed identifier
    # is numbered from its loose node (a user id and an anonymous id of one value differ).
    run(create_as(t["typed"], _sql("""
        SELECT h.message_id, h.message_type, h.ts, h.value, h.node,
               CASE WHEN h.id_type <> 'previous_id' THEN h.id_type
                    WHEN h.node IN (SELECT node FROM :users) THEN 'user_id' ELSE 'anonymous_id' END AS id_type
        FROM :h AS h""", h=scope_hits, users=t["user_nodes"]), temporary=True))
    run(create_as(t["hits"], exp.select(
        "message_id", "message_type", "ts", "id_type", "value",
        exp.alias_(_rank(priority(project)), "id_rank", quoted=True),
        exp.alias_(_sql("node * 2 + CASE WHEN id_type = 'anonymous_id' THEN 1 ELSE 0 END"), "node", quoted=True),
    ).from_(t["typed"].copy()), temporary=True))
    # Where STRUCTs are not values (PostgreSQL), the same picks as one ARG_MIN per field.
    structs = warehouse.struct_values
    run(create_as(t["nodes"], _sql("""
        SELECT node, id_type, value, id_rank, STRUCT_EXTRACT(earliest, 'ts') AS first_ts,
               STRUCT_EXTRACT(earliest, 'm') AS first_message
        FROM (SELECT node, ANY_VALUE(id_type) AS id_type, ANY_VALUE(value) AS value, ANY_VALUE(id_rank) AS id_rank,
                     MIN(STRUCT_PACK(ts := ts, m := message_id)) AS earliest
              FROM :hits GROUP BY node)""" if structs else """
        SELECT node, ANY_VALUE(id_type) AS id_type, ANY_VALUE(value) AS value, ANY_VALUE(id_rank) AS id_rank,
               MIN(ts) AS first_ts, ARG_MIN(message_id, STRUCT_PACK(ts := ts, m := message_id)) AS first_message
        FROM :hits GROUP BY node""", hits=t["hits"]), temporary=True))

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
        SELECT h.node, ARG_MIN(m.account, STRUCT_PACK(ts := m.ts, m := m.message_id)) AS account
        FROM :hits AS h JOIN :message_accounts AS m ON m.message_id = h.message_id
        WHERE h.id_type <> 'user_id' GROUP BY h.node""", hits=t["hits"], message_accounts=t["message_accounts"]),
        temporary=True))
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
        SELECT h.message_id, MIN(h.ts) AS ts, ARG_MIN(o.account, STRUCT_PACK(r := h.id_rank, v := h.value)) AS account
        FROM :hits AS h JOIN :owners AS o ON o.node = h.node GROUP BY h.message_id""",
        hits=t["hits"], owners=t["owners"]), temporary=True))
    run(create_as(t["joins"], _sql("""
        SELECT g.grp, ARG_MIN(m.account, STRUCT_PACK(ts := m.ts, m := m.message_id)) AS account
        FROM :hits AS h JOIN :groups AS g ON g.node = h.node JOIN :message_owners AS m ON m.message_id = h.message_id
        GROUP BY g.grp""", hits=t["hits"], groups=t["groups"], message_owners=t["message_owners"]), temporary=True))
    formed = _sql("""
        SELECT node, account AS entity FROM :accounts
        UNION ALL SELECT node, account FROM :owners
        UNION ALL SELECT g.node, COALESCE(j.account, g.grp) FROM :groups AS g LEFT JOIN :joins AS j ON j.grp = g.grp""",
        accounts=t["accounts"], owners=t["owners"], groups=t["groups"], joins=t["joins"])
    caps = limits(project)
    if caps:
        # Rule 4b: a profile keeps its N earliest identifiers of a limited type (rule 6's order
        # of "earliest"); each later one is detached alone. Its label, -1 - node, is one no
        # formed entity has (their labels are node numbers, all positive).
        cap = exp.Case()
        for kind, most in caps.items():
            cap = cap.when(exp.column("id_type", table="n").eq(exp.Literal.string(kind)), exp.Literal.number(most))
        run(create_as(t["formed"], formed, temporary=True))
        run(create_as(t["entities"], _sql("""
            SELECT node, CASE WHEN seat > cap THEN -1 - node ELSE entity END AS entity FROM (
              SELECT e.node, e.entity, :cap AS cap, ROW_NUMBER() OVER (
                       PARTITION BY e.entity, n.id_type ORDER BY n.first_ts, n.first_message, n.value) AS seat
              FROM :formed AS e JOIN :nodes AS n ON n.node = e.node)""",
            cap=cap, formed=t["formed"], nodes=t["nodes"]), temporary=True))
    else:
        run(create_as(t["entities"], formed, temporary=True))
    # Rule 6: a profile is keyed by its earliest user id, else anonymous id, else its earliest
    # identifier of the highest priority type. The key's value is the profile id (readable and
    # stable); it is prefixed with its type for other types and when two keys share a value
    # (such keys are one loose node, so they are always stitched in the same run).
    key_order = """STRUCT_PACK(
              c := CASE n.id_type WHEN 'user_id' THEN 0 WHEN 'anonymous_id' THEN 1 ELSE 2 END,
              r := n.id_rank, ts := n.first_ts, m := n.first_message, v := n.value)"""
    picks = ("""
          SELECT entity, STRUCT_EXTRACT(pick, 't') AS key_type, STRUCT_EXTRACT(pick, 'v') AS key FROM (
            SELECT e.entity, ARG_MIN(STRUCT_PACK(t := n.id_type, v := n.value), """ + key_order + """) AS pick
            FROM :entities AS e JOIN :nodes AS n ON n.node = e.node GROUP BY e.entity)""" if structs else """
          SELECT e.entity, ARG_MIN(n.id_type, """ + key_order + """) AS key_type,
                 ARG_MIN(n.value, """ + key_order + """) AS key
          FROM :entities AS e JOIN :nodes AS n ON n.node = e.node GROUP BY e.entity""")
    run(create_as(t["keys"], _sql("""
        SELECT entity, key_type, key,
               CASE WHEN key_type IN ('user_id', 'anonymous_id') AND COUNT(*) OVER (PARTITION BY key) = 1
                    THEN key ELSE key_type || ':' || key END AS profile_id
        FROM (""" + picks + ")", entities=t["entities"], nodes=t["nodes"]), temporary=True))
    identity_map = _sql("""
        SELECT n.id_type AS identifier_type, n.value AS identifier, k.profile_id
        FROM :nodes AS n JOIN :entities AS e ON e.node = n.node JOIN :keys AS k ON k.entity = e.entity""",
        nodes=t["nodes"], entities=t["entities"], keys=t["keys"])
    # Rule 5: a message without a user id goes to its highest-priority identifier's profile.
    anonymous_messages = _sql("""
        SELECT h.message_id, ARG_MIN(k.profile_id, STRUCT_PACK(r := h.id_rank, v := h.value)) AS profile_id
        FROM :hits AS h JOIN :entities AS e ON e.node = h.node JOIN :keys AS k ON k.entity = e.entity
        WHERE NOT EXISTS (SELECT 1 FROM :message_accounts AS m WHERE m.message_id = h.message_id)
        GROUP BY h.message_id""", hits=t["hits"], entities=t["entities"], keys=t["keys"],
        message_accounts=t["message_accounts"])
    return _Rules(tables=t, identity_map=identity_map, anonymous_messages=anonymous_messages,
                  rounds=accounts.rounds + floating.rounds)
