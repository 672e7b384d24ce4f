"""Audience rules (spec section 5) → boolean expressions over the per-profile tables.

``events(...)`` calls become hidden count columns of the fused aggregate pass;
``in_audience('x')`` and ``exclude`` are inlined as x's own condition, so audiences are
evaluated in one pass over ``profile_traits`` without ordering between them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

from cdp_warehouse.asof import parse_window
from cdp_warehouse.compiler.fragments import (
    column_parts,
    parse_fragment,
    safe_division,
)
from cdp_warehouse.compiler.traits import matching_condition
from cdp_warehouse.specs import ResolvedAudience, ResolvedProject

PROFILES_ALIAS, AGGREGATES_ALIAS = "p", "a"
TraitValue = Callable[[str], exp.Expression]
HEX_DIGITS = "0123456789abcdef"
BUCKET_HEX_DIGITS = 6  # 16.7M buckets folded onto 100: bias below 1e-5
SPLIT_BUCKETS = 100


@dataclass(frozen=True)
class EventCount:
    """One distinct ``events(...)``/``events_where(...)`` call, as a hidden aggregate column."""

    column: str
    event: str
    window: str | None
    condition: str | None

    def aggregate(self, as_of: exp.Expression) -> exp.Expression:
        window = parse_window(self.window) if self.window else None
        where = parse_fragment(self.condition) if self.condition else None
        condition = matching_condition(self.event, window, where, as_of)
        return exp.Filter(this=exp.Count(this=exp.Star()), expression=exp.Where(this=condition))


def _call_args(call: exp.Anonymous) -> tuple[str, str | None, str | None]:
    args = [arg.this for arg in call.expressions]
    return args[0], args[1] if len(args) > 1 else None, args[2] if len(args) > 2 else None


def event_counts(audiences: list[ResolvedAudience]) -> dict[tuple, EventCount]:
    """Distinct event-count calls of these audiences, keyed by (event, window, condition)."""
    counts: dict[tuple, EventCount] = {}
    for audience in audiences:
        for call in audience.where.find_all(exp.Anonymous):
            if call.name.lower() in ("events", "events_where"):
                key = _call_args(call)
                if key not in counts:
                    digest = hashlib.sha1(repr(key).encode()).hexdigest()[:8]
                    counts[key] = EventCount(f"_events_{digest}", *key)
    return counts


def audience_closure(project: ResolvedProject, names: list[str]) -> list[str]:
    """``names`` plus every audience they read through in_audience/exclude."""
    seen: dict[str, None] = {}
    stack = list(names)
    while stack:
        name = stack.pop()
        if name not in seen:
            seen[name] = None
            stack.extend(project.audiences[name].audiences_used)
    return [name for name in project.audiences if name in seen]


def membership_condition(
    project: ResolvedProject, name: str, counts: dict[tuple, EventCount], trait_value: TraitValue
) -> exp.Expression:
    """True when the profile is a member of ``name`` (NULL counts as not a member).

    ``trait_value(name)`` is the SQL of a trait's value for the row being evaluated, so the
    rule can read the aggregates directly instead of joining profile_traits.
    """
    audience = project.audiences[name]
    condition: exp.Expression = exp.func(
        "COALESCE", exp.paren(_rule(project, audience, counts, trait_value)), exp.false()
    )
    for excluded in audience.spec.exclude:
        condition = exp.and_(
            condition, exp.Not(this=exp.paren(membership_condition(project, excluded, counts, trait_value)))
        )
    return condition


def _rule(project: ResolvedProject, audience: ResolvedAudience, counts: dict[tuple, EventCount],
          trait_value: TraitValue) -> exp.Expression:
    tree = audience.where.copy()
    replacements: list[tuple[exp.Expression, exp.Expression]] = []
    for call in tree.find_all(exp.Anonymous):
        name = call.name.lower()
        if name in ("events", "events_where"):
            column = exp.column(counts[_call_args(call)].column, table=AGGREGATES_ALIAS, quoted=True)
            replacements.append((call, exp.func("COALESCE", column, exp.Literal.number(0))))
        elif name == "in_audience":
            target = call.expressions[0].this
            replacements.append((call, exp.paren(membership_condition(project, target, counts, trait_value))))
    for column in tree.find_all(exp.Column):
        if column.find_ancestor(exp.Anonymous):
            continue
        column_name = ".".join(column_parts(column))
        if column_name in project.traits:
            replacements.append((column, exp.paren(trait_value(column_name))))
        elif column_name == "profile_id":
            replacements.append((column, exp.column(column_name, table=AGGREGATES_ALIAS, quoted=True)))
        else:
            replacements.append((column, exp.column(column_name, table=PROFILES_ALIAS, quoted=True)))
    for old, new in replacements:
        if old is tree:
            tree = new
        else:
            old.replace(new)
    return safe_division(tree)


def split_digest(audience: str, profile_id: exp.Expression) -> exp.Expression:
    """md5(audience || ':' || profile_id) as 32 hex digits."""
    return exp.MD5(this=exp.DPipe(
        this=exp.Literal.string(f"{audience}:"), expression=exp.cast(profile_id, "text"), safe=True
    ))


def split_bucket(digest: exp.Expression) -> exp.Expression:
    """A stable bucket in [0, 100) from the first hex digits of ``split_digest``.

    Built from functions every warehouse has (md5, substring, strpos) so that a profile lands
    in the same split whichever warehouse computes it; ``hashing.split_bucket`` is the same in
    Python.
    """
    total: exp.Expression | None = None
    for index in range(BUCKET_HEX_DIGITS):
        char = exp.Substring(this=digest.copy(), start=exp.Literal.number(index + 1), length=exp.Literal.number(1))
        digit = exp.Sub(this=exp.StrPosition(this=exp.Literal.string(HEX_DIGITS), substr=char),
                        expression=exp.Literal.number(1))
        term = exp.Mul(this=exp.paren(digit), expression=exp.Literal.number(16 ** (BUCKET_HEX_DIGITS - 1 - index)))
        total = term if total is None else exp.Add(this=total, expression=term)
    return exp.Mod(this=exp.paren(total), expression=exp.Literal.number(SPLIT_BUCKETS))


def split_case(splits: dict[str, int], bucket: exp.Expression) -> exp.Expression:
    """Which split a bucket falls in; ranges follow the YAML order."""
    case = exp.Case()
    upper = 0
    for name, share in splits.items():
        if share <= 0:
            continue
        upper += share
        case = case.when(bucket.copy() < exp.Literal.number(upper), exp.Literal.string(name))
    return case
