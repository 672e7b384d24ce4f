"""Per-dialect lowering: our trees use a few DuckDB constructs; rewrite them for the others.

The compiler, the identity stitching and the sync diff build their SQL with DuckDB's
vocabulary where it is the clearest (``ARG_MIN`` over a ``STRUCT`` of ordering keys,
``TRY_CAST``, ``ANY_VALUE``). sqlglot renders most nodes for every dialect, but some render to
SQL that a target does not run (PostgreSQL has no ``ARG_MIN``, no ``TRY_CAST`` and, before 16,
no ``ANY_VALUE``). ``lower(tree, dialect)`` rewrites those nodes into equivalent trees the
dialect runs, with the same results; for DuckDB it returns the tree untouched, so DuckDB's SQL
never changes.

Snowflake and BigQuery have ``MIN_BY``/``MAX_BY``, ``TRY_CAST``/``SAFE_CAST`` and
``ANY_VALUE``, but neither orders by a STRUCT (Snowflake's OBJECT and BigQuery's STRUCT are not
comparable) nor has an aggregate ``FILTER`` clause that sqlglot could keep in ``MIN_BY``; their
JSON columns (VARIANT, JSON) are read with their own path functions. ``lower`` rewrites those
(``_warehouse``); the rest sqlglot renders itself.

Applied by ``compile_project`` (so ``cdp compile --dialect postgres`` writes runnable SQL) and
by ``Warehouse.render`` (every statement a warehouse runs). Idempotent.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sqlglot import exp

from cdp_warehouse.errors import CdpError

# What DuckDB's TRY_CAST(text AS DOUBLE) accepts, bounded so that PostgreSQL's CAST can never
# overflow or underflow (1e400 fails there): at most 200 digits on either side of the point
# and a two-digit exponent. Outside these bounds the value counts as null (DuckDB: inf or 0).
NUMBER_PATTERN = r"^\s*[+-]?([0-9]{1,200}(\.[0-9]{0,200})?|\.[0-9]{1,200})([eE][+-]?[0-9]{1,2})?\s*$"
# DuckDB's boolean spellings (case-insensitive, no surrounding blanks).
TRUE_TEXTS, FALSE_TEXTS = ("true", "t", "yes", "y", "1"), ("false", "f", "no", "n", "0")
# ISO 8601 dates and instants as DuckDB reads them (1-2 digit month/day, 'T' or ' ', an
# optional fraction and offset). An impossible day (Feb 30) still fails the CAST on PostgreSQL.
DATE_PATTERN = r"[0-9]{4}-(0?[1-9]|1[0-2])-(0?[1-9]|[12][0-9]|3[01])"
INSTANT_PATTERN = (
    "^" + DATE_PATTERN + r"([T ]([01]?[0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]+)?)?)?"
    r"\s*(Z|[+-]([01][0-9]|2[0-3])(:?[0-5][0-9])?)?$"
)
_INTEGER_LIMITS = {
    exp.DataType.Type.TINYINT: 2**7, exp.DataType.Type.SMALLINT: 2**15,
    exp.DataType.Type.INT: 2**31, exp.DataType.Type.BIGINT: 2**63,
}
BINARY_COLLATION = "C"  # code-point order, as DuckDB compares text


def lower(tree: exp.Expression, dialect: str) -> exp.Expression:
    """``tree`` rewritten to run on ``dialect`` (a copy; DuckDB's tree as it is)."""
    if dialect in WAREHOUSE_DIALECTS:
        return _rewritten(tree, dialect, lambda node: _snowflake_bigquery(node, dialect))
    if dialect != "postgres":
        return tree
    counter = iter(range(1_000_000))
    return _rewritten(tree, dialect, lambda node: _postgres(node, counter))


def _rewritten(tree: exp.Expression, dialect: str,
               rewrite: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
    """A copy of ``tree`` with every node passed through ``rewrite``; no STRUCT may remain."""
    root = tree.copy()
    # Children before their parents, so a rewritten node embeds rewritten parts.
    for node in reversed(list(root.dfs())):
        new = rewrite(node)
        if new is node:
            continue
        if node is root:
            root = new
        else:
            node.replace(new)
    leftover = root.find(exp.Struct, exp.StructExtract)
    if leftover is not None:
        raise CdpError(f"{leftover.sql('duckdb')[:80]}: STRUCT values are not supported on {dialect}",
                       hint="this is a bug in cdp_warehouse: the statement needs a portable form")
    return root


def binary_order(value: exp.Expression, dialect: str) -> exp.Expression:
    """``value`` compared in code-point order (spec: ``unique`` sorts so). DuckDB already
    does; PostgreSQL sorts text by the database's collation unless told otherwise."""
    if dialect != "postgres":
        return value
    return exp.Collate(this=exp.paren(value), expression=exp.to_identifier(BINARY_COLLATION, quoted=True))


def _postgres(node: exp.Expression, counter) -> exp.Expression:
    if isinstance(node, exp.Filter) and isinstance(node.this, (exp.ArgMin, exp.ArgMax)):
        return _pick(node.this, node.expression.this)
    if isinstance(node, (exp.ArgMin, exp.ArgMax)):
        if isinstance(node.parent, exp.Filter) and node.arg_key == "this":
            return node  # rewritten with its FILTER, when the parent's turn comes
        return _pick(node, None)
    if isinstance(node, exp.AnyValue):
        # PostgreSQL 15 has no ANY_VALUE; MAX is one of the values, which is all it promises.
        return exp.Max(this=node.this)
    if isinstance(node, exp.IgnoreNulls) and isinstance(node.this, (exp.Max, exp.Min)):
        return node.this  # MIN and MAX ignore nulls anyway
    if isinstance(node, exp.TryCast):
        return _try_cast(node.this, node.to)
    if isinstance(node, exp.JSONExtractScalar) and isinstance(node.expression, exp.JSONPath):
        # `->` / `->>` operators work on json and jsonb columns alike (the *_PATH_TEXT
        # functions take one or the other): `context -> 'traits' ->> 'email'`.
        keys = [part.this for part in node.expression.expressions if isinstance(part, exp.JSONPathKey)]
        if len(keys) == len(node.expression.expressions) - 1 and keys:
            value = node.this
            for key in keys[:-1]:
                value = exp.JSONExtract(this=value, expression=exp.Literal.string(key))
            # In parentheses: these operators bind looser than `||` and arithmetic.
            return exp.paren(exp.JSONExtractScalar(this=value, expression=exp.Literal.string(keys[-1])))
    if isinstance(node, exp.ArraySlice):
        return exp.Bracket(this=exp.paren(node.this), offset=1, expressions=[
            exp.Slice(this=node.args.get("start"), expression=node.args.get("end"))])
    if isinstance(node, exp.JSONObject):
        arguments: list[exp.Expression] = []
        for pair in node.expressions:
            arguments += [pair.this, pair.expression]
        return exp.Anonymous(this="JSON_BUILD_OBJECT", expressions=arguments)
    if isinstance(node, exp.RegexpReplace) and isinstance(node.args.get("position"), exp.Literal) \
            and node.args["position"].is_string:
        # `exp.func("REGEXP_REPLACE", s, p, r, 'g')` puts DuckDB's options in the position;
        # sqlglot's node means "every match" unless single_replace, and adds the 'g' itself.
        options = node.args["position"].name
        node = node.copy()
        node.set("position", None)
        node.set("single_replace", "g" not in options)
        rest = options.replace("g", "")
        node.set("modifiers", exp.Literal.string(rest) if rest else None)
        return node
    if isinstance(node, exp.Subquery) and not node.alias and isinstance(node.parent, (exp.From, exp.Join)):
        # PostgreSQL before 16 needs an alias on every subquery in FROM.
        return exp.alias_(node, f"_q{next(counter)}", table=True)
    return node


def _order_keys(key: exp.Expression) -> tuple[exp.Expression | None, list[exp.Expression]]:
    """``CASE WHEN c THEN STRUCT(a, b) END`` → (c, [a, b]); a bare key → (None, [key])."""
    condition = None
    if isinstance(key, exp.Case) and len(key.args.get("ifs") or []) == 1 and not key.args.get("default"):
        branch = key.args["ifs"][0]
        condition, key = branch.this, branch.args["true"]
    if isinstance(key, exp.Struct):
        return condition, [field.expression if isinstance(field, exp.PropertyEQ) else field
                           for field in key.expressions]
    return condition, [key]


def _pick(node: exp.ArgMin | exp.ArgMax, condition: exp.Expression | None) -> exp.Expression:
    """``ARG_MIN(v, k)``: v on the row with the smallest k, rows whose k is NULL left out →
    ``(ARRAY_AGG(v ORDER BY k1, k2, ...) FILTER (WHERE ...))[1]``. A STRUCT key orders by its
    fields in turn, as DuckDB compares structs."""
    when, keys = _order_keys(node.expression)
    if when is None and not isinstance(node.expression, exp.Struct):
        when = exp.Not(this=exp.Is(this=node.expression.copy(), expression=exp.null()))
    conditions = [c for c in (condition, when) if c is not None]
    descending = isinstance(node, exp.ArgMax)
    ordered = exp.ArrayAgg(this=exp.Order(this=node.this.copy(), expressions=[
        exp.Ordered(this=key.copy(), desc=descending, nulls_first=False) for key in keys]))
    aggregate: exp.Expression = ordered
    if conditions:
        aggregate = exp.Filter(this=ordered, expression=exp.Where(
            this=exp.and_(*(exp.paren(c.copy()) for c in conditions))))
    return exp.Bracket(this=exp.paren(aggregate), expressions=[exp.Literal.number(1)], offset=1)


def _try_cast(value: exp.Expression, to: exp.DataType) -> exp.Expression:
    """TRY_CAST for PostgreSQL (15 has no error-free cast): test the text first, then CAST."""
    text = value.copy()
    kind = to.this
    if kind in (exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT, exp.DataType.Type.DECIMAL):
        return exp.Case().when(_matches(text, NUMBER_PATTERN), exp.Cast(this=text.copy(), to=to.copy()))
    if kind in _INTEGER_LIMITS:
        # DuckDB rounds a decimal text to the nearest integer and gives NULL out of range.
        number = exp.Cast(this=text.copy(), to=exp.DataType.build("double"))
        in_range = exp.Abs(this=exp.Round(this=number.copy())) < exp.Literal.number(_INTEGER_LIMITS[kind] - 1)
        return exp.Case().when(_matches(text, NUMBER_PATTERN), exp.Case().when(
            in_range, exp.Cast(this=exp.Round(this=number), to=to.copy())))
    if kind == exp.DataType.Type.BOOLEAN:
        lowered = exp.Lower(this=text)
        return (exp.Case()
                .when(lowered.isin(*map(exp.Literal.string, TRUE_TEXTS)), exp.true())
                .when(lowered.copy().isin(*map(exp.Literal.string, FALSE_TEXTS)), exp.false()))
    if kind in (exp.DataType.Type.TIMESTAMPTZ, exp.DataType.Type.TIMESTAMP):
        return exp.Case().when(_matches(text, INSTANT_PATTERN), exp.Cast(this=text.copy(), to=to.copy()))
    if kind == exp.DataType.Type.DATE:
        return exp.Case().when(_matches(text, "^" + DATE_PATTERN + "$"), exp.Cast(this=text.copy(), to=to.copy()))
    return exp.Cast(this=text, to=to.copy())  # text types: a cast that cannot fail


def _matches(text: exp.Expression, pattern: str) -> exp.Expression:
    if not isinstance(text.unnest(), exp.JSONExtractScalar):  # JSON text is text already
        text = exp.cast(text.copy(), "text")
    return exp.RegexpLike(this=text.copy(), expression=exp.Literal.string(pattern))


# ---------------------------------------------------------------- Snowflake and BigQuery

WAREHOUSE_DIALECTS = ("snowflake", "bigquery")
# Microseconds from 0001-01-01 to the Unix epoch: added to an epoch so every instant of
# years 1-9999 is a non-negative number of at most 20 digits, zero-padded to sort as text.
EPOCH_OFFSET_MICROS = 62_135_596_800_000_000
SORTABLE_WIDTH = 20
INTEGER_OFFSET = 2**62  # integer fields (ranks) of order keys: |value| < 2**62 sorts as text
# Snowflake compiles at most 16,384 expressions in one list (error 001795 "maximum number of
# expressions in a list exceeded"); `cdp sync` deletes the keys a destination accepted by list.
SNOWFLAKE_IN_LIST = 16_384
_PLAIN_KEY = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _snowflake_bigquery(node: exp.Expression, dialect: str) -> exp.Expression:
    if isinstance(node, exp.Filter) and isinstance(node.this, (exp.ArgMin, exp.ArgMax)):
        # No FILTER clause on either: rows outside it get a NULL key, which MIN_BY skips.
        picker = node.this
        key = exp.Case().when(node.expression.this.copy(), picker.expression.copy())
        return type(picker)(this=picker.this.copy(), expression=key)
    if isinstance(node, exp.Struct):
        return _sortable(node, dialect)
    if isinstance(node, exp.TryCast):
        kind = node.to.this
        if kind == exp.DataType.Type.BOOLEAN or kind in _INTEGER_LIMITS:
            # DuckDB's spellings of booleans, and its rounding of decimal text to integers
            # (SAFE_CAST('1.5' AS INT64) is NULL on BigQuery), written out.
            return _try_cast_portable(node.this, node.to)
        if not _is_text(node.this):
            # Snowflake's TRY_CAST takes text only (sqlglot renders it as a CAST otherwise).
            return exp.TryCast(this=exp.cast(node.this.copy(), "text"), to=node.to.copy())
        return node
    if isinstance(node, exp.JSONExtractScalar) and isinstance(node.expression, exp.JSONPath):
        keys = [part.this for part in node.expression.expressions if isinstance(part, exp.JSONPathKey)]
        if keys and len(keys) == len(node.expression.expressions) - 1:
            return _json_text(node.this, keys, dialect)
    if isinstance(node, exp.ArraySlice):
        return _array_head(node, dialect)
    if (dialect == "bigquery" and isinstance(node, exp.Cast) and isinstance(node.this, exp.JSONObject)
            and node.to.this in (exp.DataType.Type.TEXT, exp.DataType.Type.VARCHAR)):
        # BigQuery has no CAST from JSON to STRING ("Invalid cast from JSON to STRING").
        return exp.Anonymous(this="TO_JSON_STRING", expressions=[node.this.copy()])
    if dialect == "snowflake" and isinstance(node, exp.In) and len(node.expressions) > SNOWFLAKE_IN_LIST:
        items = node.expressions
        return exp.paren(exp.or_(*(exp.In(this=node.this.copy(), expressions=items[start:start + SNOWFLAKE_IN_LIST])
                                   for start in range(0, len(items), SNOWFLAKE_IN_LIST))))
    return node


def _sortable(struct: exp.Struct, dialect: str) -> exp.Expression:
    """A STRUCT order key as one text that sorts as DuckDB compares the STRUCT, field by field.

    The trees carry no types, so a field's kind comes from its name (our order keys name
    them so): ``ts``/``*_ts``/``timestamp`` are instants, written as zero-padded microseconds
    since year 1 (fixed width); ``r``/``*rank`` are integers, zero-padded after an offset; any
    other field is text, followed by CHR(1) unless last (ids and values have no control
    characters, so a shorter text sorts first, as in the STRUCT). Strings compare by code
    point on both warehouses, as DuckDB's do."""
    fields = [(field.this.name if isinstance(field, exp.PropertyEQ) else field.alias_or_name,
               field.expression if isinstance(field, exp.PropertyEQ) else field) for field in struct.expressions]
    parts: list[exp.Expression] = []
    for index, (name, field) in enumerate(fields):
        column = field.name if isinstance(field, exp.Column) else ""
        if any(n == "ts" or n.endswith("_ts") or n == "timestamp" for n in (name, column)):
            if dialect == "snowflake":
                micros: exp.Expression = exp.Extract(this=exp.var("EPOCH_MICROSECOND"), expression=field.copy())
            else:
                micros = exp.func("UNIX_MICROS", exp.func("TIMESTAMP", field.copy()))
            parts.append(_padded(exp.paren(micros + exp.Literal.number(EPOCH_OFFSET_MICROS))))
        elif any(n == "r" or n.endswith("rank") for n in (name, column)):
            parts.append(_padded(exp.paren(field.copy() + exp.Literal.number(INTEGER_OFFSET))))
        else:
            text = exp.cast(field.copy(), "text")
            parts.append(text if index == len(fields) - 1 else
                         exp.DPipe(this=text, expression=exp.func("CHR", exp.Literal.number(1)), safe=True))
    text = parts[0]
    for part in parts[1:]:
        text = exp.DPipe(this=text, expression=part, safe=True)
    return text


def _padded(number: exp.Expression) -> exp.Expression:
    return exp.func("LPAD", exp.cast(number, "text"), exp.Literal.number(SORTABLE_WIDTH), exp.Literal.string("0"))


def _json_text(value: exp.Expression, keys: list[str], dialect: str) -> exp.Expression:
    """The text at a path of object keys, as DuckDB's ``->>`` gives it (a JSON null is NULL).
    Snowflake: ``GET_PATH(variant, '"a"."b"')::VARCHAR`` (docs.snowflake.com/en/sql-reference/
    functions/get_path); BigQuery: ``JSON_VALUE(json, '$.a."b-c"')``."""
    if dialect == "snowflake":
        path = ".".join('"' + key.replace('"', '""') + '"' for key in keys)
        return exp.cast(exp.Anonymous(this="GET_PATH", expressions=[value.copy(), exp.Literal.string(path)]), "text")
    path = "$" + "".join("." + (key if re.match(_PLAIN_KEY, key) else '"' + key + '"') for key in keys)
    return exp.Anonymous(this="JSON_VALUE", expressions=[value.copy(), exp.Literal.string(path)])


def _array_head(node: exp.ArraySlice, dialect: str) -> exp.Expression:
    """DuckDB's ``list[1:n]`` (1-based, inclusive): the first n elements."""
    start, end = node.args.get("start"), node.args.get("end")
    if not (isinstance(start, exp.Literal) and start.name == "1" and isinstance(end, exp.Literal)):
        raise CdpError(f"{node.sql('duckdb')[:80]}: only a prefix slice is supported on {dialect}",
                       hint="this is a bug in cdp_warehouse: the statement needs a portable form")
    if dialect == "snowflake":
        return exp.Anonymous(this="ARRAY_SLICE", expressions=[node.this.copy(), exp.Literal.number(0), end.copy()])
    # BigQuery has no slice: ARRAY(SELECT x FROM UNNEST(a) AS x WITH OFFSET AS o WHERE o < n ORDER BY o)
    item, offset = exp.to_identifier("_x"), exp.to_identifier("_o")
    unnest = exp.Unnest(expressions=[node.this.copy()], alias=exp.TableAlias(columns=[item]), offset=offset)
    query = (exp.select(exp.column(item)).from_(unnest).where(exp.column(offset) < end.copy())
             .order_by(exp.column(offset)))
    return exp.Array(expressions=[query])


def _try_cast_portable(value: exp.Expression, to: exp.DataType) -> exp.Expression:
    if to.this == exp.DataType.Type.BOOLEAN:
        lowered = exp.Lower(this=value.copy())
        return (exp.Case()
                .when(lowered.isin(*map(exp.Literal.string, TRUE_TEXTS)), exp.true())
                .when(lowered.copy().isin(*map(exp.Literal.string, FALSE_TEXTS)), exp.false()))
    text = value.copy() if _is_text(value) else exp.cast(value.copy(), "text")
    number = exp.TryCast(this=text, to=exp.DataType.build("double"))
    in_range = exp.Abs(this=exp.Round(this=number.copy())) < exp.Literal.number(_INTEGER_LIMITS[to.this] - 1)
    return exp.Case().when(in_range, exp.Cast(this=exp.Round(this=number), to=to.copy()))


def _is_text(value: exp.Expression) -> bool:
    return isinstance(value, exp.Cast) and value.to.this in (exp.DataType.Type.TEXT, exp.DataType.Type.VARCHAR)
