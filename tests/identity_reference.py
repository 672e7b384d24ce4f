"""A plain-Python reference of identity stitching (docs/identity.md, spec section 3).

Deliberately naive: it walks the landed rows in (timestamp, message_id) order and follows the
rules of docs/identity.md (1-6, and 4b: limits) one by one, with a union-find for accounts
(rule 1) and for floating groups (rule 3). It is an oracle for ``cdp run``'s ``cdp.identity_map`` and for who
each message belongs to (tests/test_stitching.py, tests/reference.py).

A landed row is a dict with ``message_id, type, user_id, anonymous_id, previous_id,
timestamp`` (naive UTC datetime), ``traits`` and ``context`` (dict or None). Missing keys read
as None. An identifier is a pair ``(type, value)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Identifier = tuple[str, str]
# An entry of the priority list: "user_id" | "email" | "anonymous_id" | (custom name, path).
IdentifierSpec = str | tuple[str, str]
DEFAULT_PRIORITY: tuple[IdentifierSpec, ...] = ("user_id", "email", "anonymous_id")


READABLE_KEY_TYPES = ("user_id", "anonymous_id")


def profile_id_of(identifier: Identifier, clashing: frozenset[str] = frozenset()) -> str:
    """Rule 6: a user id or anonymous id key is the profile id as it is, unless another
    profile's key has the same value (``clashing``); every other key is ``type:value``."""
    kind, value = identifier
    return value if kind in READABLE_KEY_TYPES and value not in clashing else f"{kind}:{value}"


def priority_of(identifiers: Iterable[Any]) -> tuple[IdentifierSpec, ...]:
    """``cdp.yaml``'s ``identity.identifiers`` (strings or objects with name/path) → priority.
    The built-in types are always identifiers: user_id first, the rest as declared, and any
    built-in left out after them in the default order (docs/identity.md is silent on leaving
    one out; this is the package's reading)."""
    declared = [item if isinstance(item, str) else (item.name, item.path) for item in identifiers]
    ordered = ["user_id", *[item for item in declared if item != "user_id"]]
    return tuple(ordered + [name for name in DEFAULT_PRIORITY if name not in ordered])


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def find(self, item: Any) -> Any:
        self.parent.setdefault(item, item)
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]  # path halving
            item = self.parent[item]
        return item

    def union(self, a: Any, b: Any) -> None:
        self.parent[self.find(a)] = self.find(b)


def _get(row: Mapping[str, Any], key: str) -> Any:
    value = row.get(key)
    return None if value == "" else value


def _path(row: Mapping[str, Any], path: str) -> Any:
    """``context.traits.phone`` → row['context']['traits']['phone'] (None when absent)."""
    value: Any = row
    for key in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _text(value: Any) -> str | None:
    """A JSON value as identifier text, trimmed; numbers as JSON text; empty is no identifier."""
    if value is None or isinstance(value, (bool, dict, list)):
        return None
    text = value.strip() if isinstance(value, str) else str(value)
    return text or None


def email_of(row: Mapping[str, Any]) -> str | None:
    """Identify ``traits.email``, else ``context.traits.email`` (any call); trimmed, lower-cased.
    Group traits describe the account and are ignored."""
    raw = _path(row, "traits.email") if row.get("type") == "identify" else None
    if raw is None:
        raw = _path(row, "context.traits.email")
    text = _text(raw)
    return text.lower() if text is not None else None


@dataclass
class Stitched:
    identity_map: dict[Identifier, str]  # every identifier → profile_id
    message_profile: dict[str, str]  # message_id → profile_id (messages before as-of)
    keys: dict[str, Identifier]  # profile_id → its key (rule 6)


def stitch(rows: Iterable[Mapping[str, Any]], as_of: datetime,
           priority: Sequence[IdentifierSpec] = DEFAULT_PRIORITY,
           limits: Mapping[str, int] | None = None) -> Stitched:
    """``limits``: ``identity.limits`` (type → most identifiers of it a profile keeps)."""
    rows = [row for row in rows if row["timestamp"] < as_of]  # as-of applies to identity too
    ordered = sorted(rows, key=lambda row: (row["timestamp"], row["message_id"]))
    rank = {(spec if isinstance(spec, str) else spec[0]): i for i, spec in enumerate(priority)}
    known_users = {_get(row, "user_id") for row in rows} - {None}

    def users(row) -> list[Identifier]:
        out = [("user_id", row["user_id"])] if _get(row, "user_id") else []
        if row["type"] == "alias" and _get(row, "previous_id") in known_users:
            out.append(("user_id", row["previous_id"]))
        return out

    def others(row) -> list[Identifier]:
        """The message's non-user identifiers."""
        out: list[Identifier] = []
        for spec in priority:
            if spec == "anonymous_id":
                out += [("anonymous_id", v) for v in (_get(row, "anonymous_id"),) if v]
                if row["type"] == "alias" and _get(row, "previous_id") and row["previous_id"] not in known_users:
                    out.append(("anonymous_id", row["previous_id"]))
            elif spec == "email":
                out += [("email", v) for v in (email_of(row),) if v]
            elif not isinstance(spec, str):
                out += [(spec[0], v) for v in (_text(_path(row, spec[1])),) if v]
        return out

    def best(identifiers: list[Identifier]) -> Identifier:
        """The identifier of the highest priority type; ties: the smallest value."""
        return min(identifiers, key=lambda ident: (rank[ident[0]], ident[1]))

    # Rule 1: accounts = connected components of the user ids on one message (aliases).
    accounts = UnionFind()
    for row in ordered:
        ids = users(row)
        for ident in ids:
            accounts.union(ids[0], ident)

    # Rule 2: a non-user identifier seen with a user id is owned by the account of the
    # earliest such message.
    owner: dict[Identifier, Any] = {}
    for row in ordered:
        if _get(row, "user_id"):
            account = accounts.find(("user_id", row["user_id"]))
            for ident in others(row):
                owner.setdefault(ident, account)

    # Rule 3: floating identifiers on one message belong together.
    floating = UnionFind()
    for row in ordered:
        ids = [ident for ident in others(row) if ident not in owner]
        for ident in ids:
            floating.union(ids[0], ident)

    # Rule 4: a floating group joins the owner of the earliest message carrying one of its
    # identifiers with an owned one (the owned identifier of highest priority decides).
    joined: dict[Any, Any] = {}
    for row in ordered:
        ids = others(row)
        loose = [ident for ident in ids if ident not in owner]
        owned = [ident for ident in ids if ident in owner]
        if loose and owned:
            joined.setdefault(floating.find(loose[0]), owner[best(owned)])

    def formed(ident: Identifier) -> tuple:
        if ident[0] == "user_id":
            return ("account", accounts.find(ident))
        if ident in owner:
            return ("account", owner[ident])
        group = floating.find(ident)
        return ("account", joined[group]) if group in joined else ("floating", group)

    # "Earliest" (rules 4b and 6): by the first message carrying the identifier; ties: value.
    first: dict[Identifier, tuple] = {}
    for row in ordered:
        for ident in users(row) + others(row):
            first.setdefault(ident, (row["timestamp"], row["message_id"]))
    profile_of = {ident: formed(ident) for ident in first}

    # Rule 4b: a profile keeps its N earliest identifiers of a limited type; each later one
    # is a profile of its own.
    for kind, most in (limits or {}).items():
        if kind == "user_id":
            continue  # rule 1 is that limit
        held: dict[tuple, list[Identifier]] = {}
        for ident in first:
            if ident[0] == kind:
                held.setdefault(profile_of[ident], []).append(ident)
        for idents in held.values():
            for ident in sorted(idents, key=lambda ident: (first[ident], ident[1]))[most:]:
                profile_of[ident] = ("detached", ident)

    # Rule 6: key = earliest user_id, else earliest anonymous_id, else earliest identifier of
    # the highest priority type.
    members: dict[tuple, list[Identifier]] = {}
    for ident in first:
        members.setdefault(profile_of[ident], []).append(ident)
    key_of: dict[tuple, Identifier] = {}
    for group, idents in members.items():
        for kind in ("user_id", "anonymous_id"):
            of_kind = [ident for ident in idents if ident[0] == kind]
            if of_kind:
                key_of[group] = min(of_kind, key=lambda ident: (first[ident], ident[1]))
                break
        else:
            key_of[group] = min(idents, key=lambda ident: (rank[ident[0]], first[ident], ident[1]))

    values = [key[1] for key in key_of.values()]
    clashing = frozenset(value for value in values if values.count(value) > 1)
    identity_map = {ident: profile_id_of(key_of[profile_of[ident]], clashing) for ident in first}

    # Rule 5: a message with a user_id belongs to that user's profile; any other to the
    # profile of its identifier of the highest priority type.
    message_profile = {}
    for row in ordered:
        ident = ("user_id", row["user_id"]) if _get(row, "user_id") else best(others(row))
        message_profile[row["message_id"]] = identity_map[ident]
    keys = {profile_id_of(key, clashing): key for key in key_of.values()}
    return Stitched(identity_map, message_profile, keys)
