"""Per-dialect lowering: our trees use a few DuckDB constructs; rewrite them for the others.

The compiler, the identity stitching and the sync diff build their SQL with DuckDB's
vocabulary where it is the clearest (``ARG_MIN`` over a ``STRUCT`` of ordering keys,
``TRY_CAST``, ``ANY_VALUE``). sqlglot renders most nodes for every dialect, but some render to
SQL that a target does not run (PostgreSQL has no ``ARG_MIN``, no ``TRY_CAST`` and, before 16,
no ``ANY_VALUE``). ``lower(tree, dialect)`` rewrites those nodes into equivalent trees the
dialect runs, with the same results; for DuckDB it returns the tree untouched, so DuckDB's SQL
never changes.

Applied by ``compile_project`` (so ``cdp compile --dialect postgres`` writes runnable SQL) and
by ``Warehouse.render`` (every statement a warehouse runs). Idempotent.
"""

from __future__ import annotations

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
    if dialect != "postgres":
        return tree
    counter = iter(range(1_000_000))
    root = tree.copy()
    # Children before their parents, so a rewritten node embeds rewritten parts.
    for node in reversed(list(root.dfs())):
        new = _postgres(node, counter)
        if new is node:
            continue
        if node is root:
            root = new
        else:
            node.replace(new)
    leftover = root.find(exp.Struct, exp.StructExtract)
    if leftover is not None:
        raise CdpError(f"{leftover.sql('duckdb')[:80]}: STRUCT values are not supported on postgres",
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
