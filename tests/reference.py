"""A small plain-Python reference of the contract's semantics (spec sections 1, 2, 4, 5).

It is deliberately naive — loops over a list of dict-like rows — so that it can be read
against the spec line by line and used as an oracle for the compiled SQL
(``tests/compiler/test_matches_reference.py``).

Identity: ``stitch=True`` stitches by the reference of docs/identity.md
(``tests/identity_reference.py``, default identifiers ``user_id, email, anonymous_id``), as
the package does with ``identity: {stitch: true}``; ``stitch=False`` (the package's default,
stitching off) keys a profile by ``coalesce(user_id, anonymous_id)``. See ``profile_of``.

Ambiguity: where the spec leaves a tie open (two events at the same instant carrying different
values for ``first``/``last``, two identifies at the same instant for ``trait``) the reference
returns ``AnyOf(candidates)`` and any of them is accepted.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cdp_warehouse.hashing import split_for
from tests.identity_reference import Stitched, stitch

EVENT_TYPES = ("track", "page", "screen")
ZERO_DEFAULT_KINDS = ("count", "days_active", "count_distinct")
_EPOCH = datetime(1970, 1, 1)


# ------------------------------------------------------------------ landing (section 1)


@dataclass(frozen=True)
class Row:
    """One landed message."""

    message_id: str
    type: str
    event: str | None
    user_id: str | None
    anonymous_id: str | None
    timestamp: datetime  # naive UTC
    properties: dict
    traits: dict
    previous_id: str | None = None
    context: dict = field(default_factory=dict)


def stitched(rows: list[Row], as_of: datetime) -> Stitched:
    """Identity stitching (docs/identity.md) of the landed rows at ``as_of``."""
    return stitch([asdict(row) for row in rows], naive_utc(as_of))


def profile_of(rows: list[Row], as_of: datetime, stitch: bool = False) -> dict[str, str]:
    """message_id → profile_id of every message before as-of: stitched (docs/identity.md), or
    the package's unstitched default ``coalesce(user_id, anonymous_id)``."""
    if stitch:
        return stitched(rows, as_of).message_profile
    return {row.message_id: coalesce(row.user_id, row.anonymous_id) for row in rows if row.timestamp < naive_utc(as_of)}


def profile_keys(rows: list[Row], as_of: datetime, stitch: bool = False) -> dict[str, tuple[str, str]]:
    """profile_id → its key (type, value); unstitched, the key is the profile id itself."""
    if stitch:
        return stitched(rows, as_of).keys
    return {profile_id: ("user_id" if any(row.user_id for row in own) else "anonymous_id", profile_id)
            for profile_id, own in profiles(rows, as_of).items()}


def instant(text: str | None) -> datetime | None:
    """ISO 8601 → naive UTC (an offset is honoured; naive means UTC)."""
    if text is None:
        return None
    value = datetime.fromisoformat(text)
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _nonempty(value: Any) -> Any:
    return None if value == "" else value


def land(messages: Iterable[dict]) -> list[Row]:
    """Landing rules: first copy of a messageId wins; clock skew corrected when timestamp,
    sentAt and receivedAt are all present; page/screen ``name`` is the event name.

    Only valid messages are expected here (the generator makes no invalid ones)."""
    rows: dict[str, Row] = {}
    for message in messages:
        message_id = message["messageId"]
        if message_id in rows:
            continue
        kind = message["type"]
        timestamp = instant(message.get("timestamp"))
        sent_at, received_at = instant(message.get("sentAt")), instant(message.get("receivedAt"))
        if timestamp is not None and sent_at is not None and received_at is not None:
            timestamp = received_at - (sent_at - timestamp)
        if timestamp is None:
            timestamp = received_at
        assert timestamp is not None, "the generator always sets timestamp or receivedAt"
        if kind == "track":
            event = _nonempty(message.get("event"))
        elif kind in ("page", "screen"):
            event = _nonempty(message.get("name")) or _nonempty(message.get("event"))
        else:
            event = None
        rows[message_id] = Row(
            message_id=message_id,
            type=kind,
            event=event,
            user_id=_nonempty(message.get("userId")),
            anonymous_id=_nonempty(message.get("anonymousId")),
            timestamp=timestamp,
            properties=dict(message.get("properties") or {}),
            traits=dict(message.get("traits") or {}),
            previous_id=_nonempty(message.get("previousId")),
            context=dict(message.get("context") or {}),
        )
    return list(rows.values())


# ------------------------------------------------------------------ time (section 2)


@dataclass(frozen=True)
class Window:
    """``as_of - start <= ts < as_of - end``."""

    start: timedelta
    end: timedelta = timedelta(0)

    def contains(self, ts: datetime, as_of: datetime) -> bool:
        return as_of - self.start <= ts < as_of - self.end


_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def window(text: str | None) -> Window | None:
    if text is None:
        return None
    match = re.fullmatch(r"(\d+)([mhdw])(?:\.\.(\d+)([mhdw]))?", text)
    assert match, text
    start = int(match[1]) * _UNITS[match[2]]
    end = int(match[3]) * _UNITS[match[4]] if match[3] else timedelta(0)
    return Window(start, end)


def naive_utc(as_of: datetime) -> datetime:
    return as_of if as_of.tzinfo is None else as_of.astimezone(UTC).replace(tzinfo=None)


# ------------------------------------------------------------------ values (section 4)


def text_of(value: Any) -> str | None:
    """A JSON value read as text: strings as they are, numbers and booleans as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")


def number_of(value: Any) -> float | None:
    """Numeric kinds: JSON numbers and strings that parse as (finite, plain) numbers; else null.
    Booleans are not numbers."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        return float(value)
    return None


def typed(text: str | None, value_type: str | None) -> Any:
    if text is None or value_type in (None, "text"):
        return text
    if value_type == "number":
        return number_of(text)
    raise NotImplementedError(value_type)


@dataclass(frozen=True)
class AnyOf:
    """The spec allows any of these values (a tie it does not order)."""

    candidates: frozenset

    def __repr__(self) -> str:
        return f"AnyOf({sorted(self.candidates, key=repr)!r})"


def one_or_any(values: list) -> Any:
    distinct = set(values)
    return values[0] if len(distinct) == 1 else AnyOf(frozenset(distinct))


# ------------------------------------------------------------------ three-valued logic


def and3(*values: bool | None) -> bool | None:
    if any(value is False for value in values):
        return False
    return None if any(value is None for value in values) else True


def or3(*values: bool | None) -> bool | None:
    if any(value is True for value in values):
        return True
    return None if any(value is None for value in values) else False


def not3(value: bool | None) -> bool | None:
    return None if value is None else not value


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b, "<>": lambda a, b: a != b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}


def cmp3(left: Any, op: str, right: Any) -> bool | None:
    if left is None or right is None:
        return None
    return _OPS[op](left, right)


def div(left: Any, right: Any) -> float | None:
    """True division; ``x / 0`` is null."""
    if left is None or right is None or right == 0:
        return None
    return left / right


def coalesce(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


# ------------------------------------------------------------------ traits (section 4)


Predicate = Callable[[Row], "bool | None"]


@dataclass(frozen=True)
class Trait:
    """One trait. ``where`` is a Python twin of the YAML ``where`` (three-valued); ``sql`` of a
    ``sql`` trait is a function of the profile's event rows; of an ``expression`` trait, a
    function of the profile's other trait values."""

    name: str
    kind: str
    event: str | list[str] = "*"
    where: Predicate | None = None
    window: str | None = None
    property: str | None = None
    limit: int = 100
    type: str | None = None
    trait: str | None = None
    sql: Callable[..., Any] | None = None


def matches(row: Row, trait_event: str | list[str], win: Window | None, where: Predicate | None,
            as_of: datetime) -> bool:
    if row.type not in EVENT_TYPES:
        return False
    names = [trait_event] if isinstance(trait_event, str) else list(trait_event)
    if "*" not in names and row.event not in names:
        return False
    if win is not None and not win.contains(row.timestamp, as_of):
        return False
    return where is None or where(row) is True


def property_value(row: Row, name: str) -> Any:
    keys = name.split(".")
    root = row.properties
    if keys[0] in ("properties", "traits") and len(keys) > 1:
        root = row.properties if keys[0] == "properties" else row.traits
        keys = keys[1:]
    value: Any = root
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def trait_value(trait: Trait, rows: list[Row], as_of: datetime, values: dict[str, Any]) -> Any:
    """The value of one trait for one profile (``rows``: its messages before as-of)."""
    kind = trait.kind
    if kind == "expression":
        return trait.sql(values)
    if kind == "trait":
        carrying = [(r.timestamp, text_of(property_value(r, "traits." + trait.trait)))
                    for r in rows if r.type == "identify"]
        carrying = [(ts, text) for ts, text in carrying if text is not None]
        if not carrying:
            return None
        latest = max(ts for ts, _ in carrying)
        return one_or_any([typed(text, trait.type) for ts, text in carrying if ts == latest])
    events = [r for r in rows if r.type in EVENT_TYPES]
    if kind == "sql":
        return trait.sql(events)

    matching = [r for r in rows if matches(r, trait.event, window(trait.window), trait.where, as_of)]
    if kind == "count":
        return len(matching)
    if kind == "days_active":
        return len({r.timestamp.date() for r in matching})
    if kind == "first_seen":
        return min((r.timestamp for r in matching), default=None)
    if kind == "last_seen":
        return max((r.timestamp for r in matching), default=None)

    if kind in ("sum", "avg", "min", "max"):
        numbers = [n for n in (number_of(property_value(r, trait.property)) for r in matching) if n is not None]
        if not numbers:
            return None
        return {"sum": math.fsum, "avg": lambda xs: math.fsum(xs) / len(xs), "min": min, "max": max}[kind](numbers)

    having = [(r.timestamp, text) for r in matching
              if (text := text_of(property_value(r, trait.property))) is not None]
    if kind in ("first", "last"):
        if not having:
            return None
        pick = min if kind == "first" else max
        at = pick(ts for ts, _ in having)
        return one_or_any([typed(text, trait.type) for ts, text in having if ts == at])
    if kind == "count_distinct":
        return len({text for _, text in having})
    if kind == "unique":
        return sorted({text for _, text in having})[: trait.limit] or None
    if kind == "most_frequent":
        if not having:
            return None
        stats: dict[str, tuple[int, datetime]] = {}
        for ts, text in having:
            n, last = stats.get(text, (0, ts))
            stats[text] = (n + 1, max(last, ts))
        # commonest; tie → latest latest-occurrence; then by value
        best = min(stats, key=lambda text: (-stats[text][0], -(stats[text][1] - _EPOCH).total_seconds(), text))
        return typed(best, trait.type)
    raise AssertionError(f"unknown kind {kind}")


def profiles(rows: list[Row], as_of: datetime, stitch: bool = False) -> dict[str, list[Row]]:
    """profile_id → its messages before as-of (every profile seen on any message before as-of)."""
    as_of = naive_utc(as_of)
    profile = profile_of(rows, as_of, stitch)
    out: dict[str, list[Row]] = {}
    for row in rows:
        if row.timestamp < as_of:
            out.setdefault(profile[row.message_id], []).append(row)
    return out


def compute_traits(rows: list[Row], as_of: datetime, traits: list[Trait],
                   stitch: bool = False) -> dict[str, dict[str, Any]]:
    """profile_id → {trait: value}. Traits are computed in order (expressions after the
    traits they use)."""
    as_of = naive_utc(as_of)
    table: dict[str, dict[str, Any]] = {}
    for profile_id, own in profiles(rows, as_of, stitch).items():
        values: dict[str, Any] = {}
        for trait in traits:
            values[trait.name] = trait_value(trait, own, as_of, values)
        table[profile_id] = values
    return table


# ------------------------------------------------------------------ audiences (section 5)


@dataclass(frozen=True)
class Audience:
    name: str
    rule: Callable[[Context], bool | None]
    exclude: tuple[str, ...] = ()
    splits: dict[str, int] | None = None


@dataclass
class Context:
    """What an audience ``where`` sees for one profile."""

    profile_id: str
    rows: list[Row]
    traits: dict[str, Any]
    as_of: datetime
    membership: Callable[[str, str], bool]
    profile: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        if name in self.traits:
            return self.traits[name]
        return self.profile[name]

    def events(self, event: str, window_text: str | None = None, where: Predicate | None = None) -> int:
        return sum(matches(r, event, window(window_text), where, self.as_of) for r in self.rows)

    def in_audience(self, name: str) -> bool:
        return self.membership(name, self.profile_id)


def profile_columns(rows: list[Row], key: tuple[str, str]) -> dict[str, Any]:
    """The profile columns an audience may read (no emails are generated, so email is null).
    ``user_id`` is the profile's earliest user id: its key when the key is a user id."""
    return {
        "user_id": key[1] if key[0] == "user_id" else None,
        "email": None,
        "first_seen": min(r.timestamp for r in rows),
        "last_seen": max(r.timestamp for r in rows),
    }


def compute_members(rows: list[Row], as_of: datetime, traits_table: dict[str, dict[str, Any]],
                    audiences: list[Audience], stitch: bool = False) -> dict[str, dict[str, str | None]]:
    """audience → {profile_id: split}. ``traits_table`` must hold no AnyOf values (resolve
    ties first), since membership is decided per profile."""
    as_of = naive_utc(as_of)
    by_name = {audience.name: audience for audience in audiences}
    own = profiles(rows, as_of, stitch)
    keys = profile_keys(rows, as_of, stitch)
    cache: dict[tuple[str, str], bool] = {}

    def member(name: str, profile_id: str) -> bool:
        key = (name, profile_id)
        if key not in cache:
            audience = by_name[name]
            context = Context(profile_id, own[profile_id], traits_table[profile_id], as_of, member,
                              profile_columns(own[profile_id], keys[profile_id]))
            inside = audience.rule(context) is True  # NULL is not a member
            cache[key] = inside and not any(member(other, profile_id) for other in audience.exclude)
        return cache[key]

    return {
        audience.name: {pid: split_for(audience.name, pid, audience.splits) for pid in own if member(audience.name, pid)}
        for audience in audiences
    }
