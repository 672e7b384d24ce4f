"""Trait kinds (spec section 4) → conditional aggregates over the profiled events.

Every event-level trait becomes one aggregate with its own filter, so all of them are
computed in one ``GROUP BY profile_id`` pass. ``most_frequent`` needs a count per
(profile, value), so those traits share one extra pre-aggregation (see ``plan.py``).
"""

from __future__ import annotations

from datetime import timedelta

from sqlglot import exp

from cdp_warehouse.asof import Window
from cdp_warehouse.compiler.dialects import binary_order
from cdp_warehouse.compiler.fragments import as_number, json_text, rewrite_event_fragment
from cdp_warehouse.compiler.identity import EVENT_TYPES
from cdp_warehouse.specs import ResolvedTrait

ZERO_DEFAULT_KINDS = ("count", "days_active", "count_distinct")
NUMERIC_KINDS = ("sum", "avg", "min", "max")
VALUE_KINDS = ("first", "last", "most_frequent", "trait")
_CASTS = {"number": "double", "boolean": "boolean"}


def timestamp_column() -> exp.Column:
    return exp.column("timestamp", quoted=True)


def interval(delta: timedelta) -> exp.Interval:
    """The largest whole unit that expresses ``delta`` (windows are m/h/d/w)."""
    minutes = int(delta.total_seconds() // 60)
    for unit, size in (("DAY", 1440), ("HOUR", 60), ("MINUTE", 1)):
        if minutes % size == 0:
            return exp.Interval(this=exp.Literal.string(str(minutes // size)), unit=exp.var(unit))
    raise AssertionError("windows are whole minutes")


def window_condition(window: Window | None, as_of: exp.Expression) -> exp.Expression | None:
    """``as_of - start <= timestamp < as_of - end``; messages at or after as-of are already gone."""
    if window is None:
        return None
    condition: exp.Expression = timestamp_column() >= exp.Sub(this=as_of.copy(), expression=interval(window.start))
    if window.end:
        condition = exp.and_(condition, timestamp_column() < exp.Sub(this=as_of.copy(), expression=interval(window.end)))
    return condition


def event_name_condition(event: str | list[str]) -> exp.Expression | None:
    names = [event] if isinstance(event, str) else list(event)
    if "*" in names:
        return None
    column = exp.column("event", quoted=True)
    if len(names) == 1:
        return column.eq(exp.Literal.string(names[0]))
    return column.isin(*(exp.Literal.string(name) for name in names))


def is_event_message() -> exp.Expression:
    """Track, page and screen messages are the events traits count (spec section 4)."""
    return exp.column("type", quoted=True).isin(*(exp.Literal.string(t) for t in EVENT_TYPES))


def matching_condition(
    event: str | list[str], window: Window | None, where: exp.Expression | None, as_of: exp.Expression
) -> exp.Expression:
    parts = [is_event_message(), event_name_condition(event), window_condition(window, as_of)]
    if where is not None:
        parts.append(exp.paren(rewrite_event_fragment(where)))
    return exp.and_(*(part for part in parts if part is not None))


def property_text(name: str) -> exp.Expression:
    keys = name.split(".")
    if keys[0] in ("properties", "context", "traits") and len(keys) > 1:
        return json_text(keys[0], keys[1:])
    return json_text("properties", keys)


def _filtered(aggregate: exp.Expression, condition: exp.Expression) -> exp.Filter:
    return exp.Filter(this=aggregate, expression=exp.Where(this=condition))


def _not_null(value: exp.Expression) -> exp.Expression:
    return exp.Not(this=exp.Is(this=value.copy(), expression=exp.null()))


def _when(condition: exp.Expression, value: exp.Expression) -> exp.Case:
    return exp.Case().when(condition, value)


def typed(value: exp.Expression, value_type: str | None) -> exp.Expression:
    """Value kinds are text unless the trait declares ``type``."""
    if value_type == "timestamp":
        # Through TIMESTAMPTZ so an offset like +02:00 is honoured; sessions are in UTC, so
        # the cast back to TIMESTAMP yields the UTC instant.
        instant = exp.TryCast(this=value, to=exp.DataType.build("timestamptz"), requires_string=True)
        return exp.cast(instant, "timestamp")
    if value_type in _CASTS:
        return exp.TryCast(this=value, to=exp.DataType.build(_CASTS[value_type]), requires_string=True)
    return value


def trait_aggregate(trait: ResolvedTrait, as_of: exp.Expression, dialect: str = "duckdb") -> exp.Expression:
    """The aggregate over profiled events computing ``trait`` (not for most_frequent/expression).

    Values read from JSON sit inside ``CASE WHEN condition THEN value END`` so a warehouse
    extracts them only from matching rows: an aggregate's FILTER alone does not stop DuckDB
    from computing its argument on every row (measured: 1.6x the CPU of the CASE form).
    """
    kind, params = trait.kind, trait.spec.params
    if kind == "trait":
        value = json_text("traits", params.trait.split("."))
        is_identify = exp.column("type", quoted=True).eq(exp.Literal.string("identify"))
        # Spec: the latest identify *that carries the key*; earlier ones never win.
        ordering = _when(exp.and_(is_identify.copy(), _not_null(value)), timestamp_column())
        return typed(exp.ArgMax(this=_when(is_identify, value.copy()), expression=ordering), trait.value_type)
    if kind == "sql":
        return typed(_sql_trait(trait), trait.value_type)

    condition = matching_condition(params.event, trait.window, trait.where, as_of)
    if kind == "count":
        return _filtered(exp.Count(this=exp.Star()), condition)
    if kind in ("first_seen", "last_seen"):
        aggregate = exp.Min if kind == "first_seen" else exp.Max
        return _filtered(aggregate(this=timestamp_column()), condition)
    if kind == "days_active":
        return _days_active(condition, trait.window, as_of, dialect)

    text = property_text(params.property)
    if kind in NUMERIC_KINDS:
        aggregate = {"sum": exp.Sum, "avg": exp.Avg, "min": exp.Min, "max": exp.Max}[kind]
        return _filtered(aggregate(this=_when(condition.copy(), as_number(text))), condition)
    if kind in ("first", "last"):
        # arg_min/arg_max ignore rows whose ordering value is NULL: the CASE keeps only
        # matching rows that have the property, portably (a FILTER clause is not: sqlglot
        # moves it into the first argument of Snowflake's MIN_BY).
        picker = exp.ArgMin if kind == "first" else exp.ArgMax
        ordering = _when(exp.and_(condition.copy(), _not_null(text)), timestamp_column())
        return typed(picker(this=_when(condition, text.copy()), expression=ordering), trait.value_type)
    if kind == "count_distinct":
        return exp.Count(this=exp.Distinct(expressions=[_when(condition, text)]))
    if kind == "unique":
        value = binary_order(_when(condition.copy(), text.copy()), dialect)  # code-point order
        ordered = exp.Order(
            this=exp.Distinct(expressions=[value]),
            expressions=[exp.Ordered(this=value.copy(), nulls_first=True)],
        )
        values = _filtered(exp.ArrayAgg(this=ordered), exp.and_(condition, _not_null(text)))
        return exp.ArraySlice(this=values, start=exp.Literal.number(1), end=exp.Literal.number(params.limit))
    raise AssertionError(f"no aggregate for trait kind {kind!r}")


BITMAP_DAYS = 63  # bits of an unsigned 64-bit integer we use, one per day back from as-of


def _days_active(condition: exp.Expression, window: Window | None, as_of: exp.Expression, dialect: str) -> exp.Expression:
    """Distinct UTC days with a matching event.

    On DuckDB, a window of at most 63 days is an exact bitmap (bit i = i days before as-of's
    date; a window of W days touches at most W+1 dates): one OR per row instead of a
    distinct-count hash table (measured 2.2x less CPU for this trait). Elsewhere, and for
    longer windows, COUNT(DISTINCT date).
    """
    day = exp.cast(timestamp_column(), "date")
    if dialect == "duckdb" and window is not None and window.start <= timedelta(days=BITMAP_DAYS):
        days_ago = exp.DateDiff(this=exp.cast(as_of.copy(), "date"), expression=day, unit=exp.var("DAY"))
        unsigned = exp.DataType(this=exp.DataType.Type.UBIGINT)
        bit = exp.BitwiseLeftShift(this=exp.cast(exp.Literal.number(1), unsigned),
                                   expression=exp.cast(days_ago, unsigned.copy()))
        # BIGINT like COUNT(DISTINCT): the column type must not depend on the window.
        days = exp.func("COALESCE", exp.func("BIT_COUNT", exp.BitwiseOrAgg(this=_when(condition, bit))),
                        exp.Literal.number(0))
        return exp.cast(days, "bigint")
    return exp.Count(this=exp.Distinct(expressions=[_when(condition, day)]))


def _sql_trait(trait: ResolvedTrait) -> exp.Expression:
    """A ``sql`` trait aggregates the profile's track/page/screen messages: every aggregate
    in it gets that filter (joined with any FILTER the analyst wrote)."""
    tree = rewrite_event_fragment(trait.sql)
    for node in list(tree.find_all(exp.AggFunc)):
        parent = node.parent
        if isinstance(parent, exp.Filter):
            existing = parent.expression.this
            parent.set("expression", exp.Where(this=exp.and_(is_event_message(), exp.paren(existing))))
        elif node is tree:
            tree = _filtered(node, is_event_message())  # the whole fragment is one aggregate
        else:
            node.replace(_filtered(node.copy(), is_event_message()))
    return tree


def most_frequent_value(trait: ResolvedTrait, as_of: exp.Expression) -> tuple[exp.Expression, exp.Expression]:
    """(value, condition) rows that feed the (profile, value) counts of a most_frequent trait."""
    params = trait.spec.params
    text = property_text(params.property)
    condition = exp.and_(matching_condition(params.event, trait.window, trait.where, as_of), _not_null(text))
    return text, condition
