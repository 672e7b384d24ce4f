"""Analysts' SQL fragments (`where`, `sql`, audience rules): parse, check names, rewrite.

Fragments are written in the dialect of record (DuckDB) and are data from then on: we walk
and rewrite the sqlglot tree, never the text. ``properties.x`` / ``context.page.url`` /
``traits.plan`` read JSON paths; such a path is read as a number where it is compared with a
number or used in arithmetic (spec section 4), otherwise as text.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

DIALECT_OF_RECORD = "duckdb"

JSON_ROOTS = ("properties", "context", "traits")
EVENT_COLUMNS = (
    "message_id",
    "type",
    "event",
    "user_id",
    "anonymous_id",
    "group_id",
    "previous_id",
    "timestamp",
    "received_at",
    "sent_at",
    "source",
)
PROFILE_COLUMNS = ("profile_id", "user_id", "email", "first_seen", "last_seen")
AUDIENCE_FUNCTIONS = ("events", "events_where", "in_audience")

_ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.Neg, exp.IntDiv)
_COMPARISON = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ)
_NUMERIC_AGGREGATES = (exp.Sum, exp.Avg, exp.Stddev, exp.StddevPop, exp.StddevSamp, exp.Variance)
_NUMERIC_FUNCTIONS = (exp.Abs, exp.Round, exp.Ceil, exp.Floor, exp.Sqrt, exp.Ln, exp.Log, exp.Exp, exp.Pow, exp.Sign)
_SAME_TYPE_FUNCTIONS = (exp.Coalesce, exp.Greatest, exp.Least)


@dataclass(frozen=True)
class FragmentProblem:
    """A name or construct a fragment may not use; ``name`` is the offending text."""

    name: str
    message: str
    hint: str | None = None


def parse_fragment(sql: str) -> exp.Expression:
    """Parse one SQL expression in the dialect of record; raises ParseError."""
    tree = sqlglot.parse_one(sql, read=DIALECT_OF_RECORD, into=exp.Condition)
    if tree is None:
        raise ParseError("empty SQL")
    return tree


def parse_error_message(error: ParseError) -> str:
    """The first parse error as one line, with sqlglot's column when it has one."""
    details = error.errors[0] if getattr(error, "errors", None) else None
    if details:
        return f"SQL does not parse: {details.get('description')} (column {details.get('col')})"
    return f"SQL does not parse: {str(error).splitlines()[0]}"


def column_parts(node: exp.Column) -> list[str]:
    """``context.page.url`` → ``['context', 'page', 'url']``."""
    return [part.name for part in node.parts]


def did_you_mean(name: str, candidates: list[str] | tuple[str, ...]) -> str | None:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def _columns(tree: exp.Expression) -> list[exp.Column]:
    return [node for node in tree.find_all(exp.Column) if not isinstance(node.this, exp.Star)]


def unknown_functions(tree: exp.Expression, allowed: tuple[str, ...] = ()) -> list[FragmentProblem]:
    problems = []
    for node in tree.find_all(exp.Anonymous):
        name = node.name.lower()
        if name not in allowed:
            problems.append(
                FragmentProblem(node.name, f"unknown function {node.name!r}", did_you_mean(name, allowed))
            )
    return problems


def forbidden_constructs(tree: exp.Expression) -> list[FragmentProblem]:
    """Constructs no fragment may use: they read other tables (ignoring as-of, so a past run
    would not reproduce), depend on row order, or silently mean something else."""
    problems = []
    if any(True for _ in tree.find_all(exp.Query, exp.Table)):
        problems.append(FragmentProblem("SELECT", "subqueries and tables are not allowed in fragments",
                                        "use traits and events(...) instead"))
    if any(True for _ in tree.find_all(exp.Window)):
        problems.append(FragmentProblem("OVER", "window functions are not allowed in fragments"))
    for node in tree.find_all(exp.Bracket):
        inner = node.this
        if isinstance(inner, exp.Column) and column_parts(inner)[0] in JSON_ROOTS:
            problems.append(FragmentProblem(
                inner.sql(DIALECT_OF_RECORD), "JSON array elements cannot be indexed yet",
                "compare the whole value, or use a `sql` trait with the warehouse's JSON functions"))
    return problems


def check_event_fragment(tree: exp.Expression, *, aggregate: bool) -> list[FragmentProblem]:
    """Problems of a fragment over event rows (a trait ``where``, or a ``sql`` trait if
    ``aggregate``). Columns are event columns or JSON paths under properties/context/traits."""
    problems = unknown_functions(tree) + forbidden_constructs(tree)
    for column in _columns(tree):
        parts = column_parts(column)
        if parts[0] in JSON_ROOTS:
            if len(parts) == 1:
                problems.append(
                    FragmentProblem(parts[0], f"{parts[0]!r} needs a key, like {parts[0]}.name")
                )
            continue
        if len(parts) > 1 or parts[0] not in EVENT_COLUMNS:
            name = ".".join(parts)
            problems.append(
                FragmentProblem(
                    name,
                    f"unknown column {name!r}",
                    did_you_mean(name, EVENT_COLUMNS + JSON_ROOTS)
                    or "event columns are " + ", ".join(EVENT_COLUMNS)
                    + "; JSON paths start with properties., context. or traits.",
                )
            )
    aggregates = list(tree.find_all(exp.AggFunc))
    if aggregate:
        if not aggregates:
            problems.append(
                FragmentProblem("sql", "a `sql` trait must aggregate, e.g. count(*) or sum(properties.x)",
                                "use `expression` for SQL over other traits")
            )
        for node in aggregates:
            if node.find_ancestor(exp.AggFunc):
                problems.append(FragmentProblem(node.sql(DIALECT_OF_RECORD), "aggregates cannot be nested"))
        for column in _columns(tree):
            # A column in an aggregate's FILTER (WHERE ...) is per row too.
            if not column.find_ancestor(exp.AggFunc, exp.Filter):
                problems.append(
                    FragmentProblem(
                        column.sql(DIALECT_OF_RECORD),
                        "column used outside an aggregate",
                        "wrap it in an aggregate such as max(...)",
                    )
                )
    elif aggregates:
        problems.append(
            FragmentProblem(aggregates[0].sql(DIALECT_OF_RECORD), "a `where` is per event and cannot aggregate")
        )
    return problems


def json_path(keys: list[str]) -> exp.JSONPath:
    return exp.JSONPath(expressions=[exp.JSONPathRoot(), *(exp.JSONPathKey(this=key) for key in keys)])


def json_text(root: str, keys: list[str], table: str | None = None) -> exp.Expression:
    """The text at ``root.keys...`` (JSON null → SQL NULL)."""
    return exp.JSONExtractScalar(this=exp.column(root, table=table, quoted=True), expression=json_path(keys))


def as_number(value: exp.Expression) -> exp.Expression:
    """Numbers and numeric strings as DOUBLE, anything else NULL (spec: numeric kinds)."""
    # requires_string: the value is JSON text, so Snowflake may keep TRY_CAST (it only
    # accepts strings; sqlglot would otherwise fall back to a failing CAST).
    return exp.TryCast(this=value, to=exp.DataType.build("double"), requires_string=True)


def _is_numeric(node: exp.Expression | None) -> bool:
    if node is None:
        return False
    if isinstance(node, exp.Literal):
        return not node.is_string
    if isinstance(node, (exp.Neg, exp.Paren)):
        return _is_numeric(node.this)
    return isinstance(node, _ARITHMETIC)


def _numeric_context(node: exp.Expression) -> bool:
    parent = node.parent
    while isinstance(parent, exp.Paren):
        node, parent = parent, parent.parent
    if isinstance(parent, (*_ARITHMETIC, *_NUMERIC_AGGREGATES, *_NUMERIC_FUNCTIONS)):
        return True
    if isinstance(parent, _SAME_TYPE_FUNCTIONS):
        siblings = [parent.this, *parent.expressions]
        return any(_is_numeric(sibling) for sibling in siblings if sibling is not node) or _numeric_context(parent)
    if isinstance(parent, _COMPARISON):
        other = parent.expression if parent.this is node else parent.this
        return _is_numeric(other)
    if isinstance(parent, exp.Between):
        return _is_numeric(parent.args.get("low")) or _is_numeric(parent.args.get("high"))
    if isinstance(parent, exp.In):
        return any(_is_numeric(item) for item in parent.expressions)
    return False


def rewrite_event_fragment(tree: exp.Expression, table: str | None = None) -> exp.Expression:
    """JSON paths → extraction (text, or number in a numeric context); ``/`` → null-safe
    true division; event columns quoted and, with ``table``, qualified."""
    tree = tree.copy()
    replacements: list[tuple[exp.Expression, exp.Expression]] = []
    for column in _columns(tree):
        parts = column_parts(column)
        if parts[0] in JSON_ROOTS:
            value = json_text(parts[0], parts[1:], table)
            parent = column.parent
            if type(parent) is exp.Cast:
                # `properties.x::int`: a value that does not convert counts as null (spec
                # section 4), it must not fail the run.
                replacements.append((parent, exp.TryCast(this=value, to=parent.to.copy(), requires_string=True)))
                continue
            replacements.append((column, as_number(value) if _numeric_context(column) else value))
        else:
            replacements.append((column, exp.column(parts[0], table=table, quoted=True)))
    for old, new in replacements:
        old.replace(new)
    return safe_division(tree)


def safe_division(tree: exp.Expression) -> exp.Expression:
    """`/` is true division and ``x / 0`` is NULL in every dialect (spec section 4)."""
    for node in tree.find_all(exp.Div):
        divisor = node.expression.unnest() if isinstance(node.expression, exp.Paren) else node.expression
        if isinstance(divisor, exp.Nullif):
            continue  # already written null-safe by the analyst
        node.set("safe", True)
        node.set("typed", False)
    return tree
