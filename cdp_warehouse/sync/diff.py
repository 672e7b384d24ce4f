"""The rows a sync wants in a destination, and how they differ from what it last accepted.

Both are SQL run in the warehouse: the desired rows come from ``audience_members``,
``profiles`` and ``profile_traits``; the diff is a full outer join with ``sync_state`` on
the row key, comparing a hash of the mapped fields, so the work that leaves the warehouse
is proportional to what changed.
"""

from __future__ import annotations

from sqlglot import exp

from cdp_warehouse.compiler.plan import AUDIENCE_MEMBERS, PROFILE_TRAITS, PROFILES, models_table
from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.specs.models import SyncSpec

STATE, REJECTIONS, RUNS, REMOTE_IDS = "sync_state", "sync_rejections", "sync_runs", "sync_remote_ids"
STATE_COLUMNS = (
    ("audience", "text"), ("destination", "text"), ("key_type", "text"), ("row_key", "text"),
    ("profile_id", "text"), ("payload", "text"), ("payload_hash", "text"), ("member", "boolean"),
    ("synced_at", "timestamp"),
)
REJECTION_COLUMNS = (
    ("audience", "text"), ("destination", "text"), ("profile_id", "text"), ("key_type", "text"),
    ("row_key", "text"), ("reason", "text"), ("first_failed_at", "timestamp"), ("last_failed_at", "timestamp"),
    ("attempts", "integer"),
)
RUN_COLUMNS = (
    ("run_id", "text"), ("audience", "text"), ("destination", "text"), ("started_at", "timestamp"),
    ("finished_at", "timestamp"), ("added", "integer"), ("changed", "integer"), ("removed", "integer"),
    ("failed", "integer"), ("status", "text"), ("error", "text"),
)
# a destination's own id for a person (per destination: the same contact serves every audience)
REMOTE_ID_COLUMNS = (("destination", "text"), ("key_type", "text"), ("row_key", "text"), ("remote_id", "text"))
HOLDOUT = "holdout"  # the split whose members are never sent (spec section 6)
PROFILE_FIELDS = ("user_id", "email", "profile_id")


def _col(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table, quoted=True)


def field_value(source: str) -> exp.Expression:
    """The value of one ``fields`` entry: a trait, a profile column, ``split`` or
    ``in_audience`` (always true here: the desired rows are the members)."""
    if source == "in_audience":
        return exp.true()
    if source == "split":
        return _col("split", "m")
    if source in PROFILE_FIELDS:
        return _col(source, "p")
    return _col(source, "t")


def field_column(index: int) -> str:
    return f"_f{index}"


def desired_rows(project: ResolvedProject, audience: str, sync: SyncSpec) -> exp.Select:
    """``(key_type, row_key, profile_id, user_id, email, payload, payload_hash, _f0..)``: one row
    per member that the destination can identify; holdout members are left out."""
    user_id, email = _col("user_id", "p"), _col("email", "p")
    key_type: exp.Expression = exp.Literal.string("user_id")
    key: exp.Expression = user_id.copy()
    if sync.identify_by == "email":
        has_user = exp.Not(this=exp.Is(this=user_id.copy(), expression=exp.null()))
        key_type = exp.Case().when(has_user, exp.Literal.string("user_id")).else_(exp.Literal.string("email"))
        key = exp.func("COALESCE", user_id.copy(), email.copy())
    values = [field_value(source) for source in sync.fields.values()]
    payload = exp.JSONObject(expressions=[
        exp.JSONKeyValue(this=exp.Literal.string(target), expression=value.copy())
        for target, value in zip(sync.fields, values, strict=True)])
    payload_text = exp.cast(payload, "text")
    members = (
        exp.select(
            exp.alias_(key_type, "key_type", quoted=True), exp.alias_(key, "row_key", quoted=True),
            _col("profile_id", "m"), user_id.copy(), email.copy(),
            exp.alias_(payload_text.copy(), "payload", quoted=True),
            exp.alias_(exp.func("MD5", payload_text.copy()), "payload_hash", quoted=True),
            *(exp.alias_(value, field_column(i), quoted=True) for i, value in enumerate(values)),
            # two profiles may share an email: the destination gets one row per key
            exp.alias_(exp.Window(this=exp.RowNumber(), partition_by=[key.copy()],
                                  order=exp.Order(expressions=[exp.Ordered(this=_col("profile_id", "m"))])),
                       "_n", quoted=True),
        )
        .from_(exp.alias_(models_table(project, AUDIENCE_MEMBERS), "m"))
        .join(exp.alias_(models_table(project, PROFILES), "p"), on=_col("profile_id", "p").eq(_col("profile_id", "m")))
        .join(exp.alias_(models_table(project, PROFILE_TRAITS), "t"), on=_col("profile_id", "t").eq(_col("profile_id", "m")),
              join_type="left")
        .where(_col("audience", "m").eq(exp.Literal.string(audience)))
        .where(exp.or_(_col("split", "m").is_(exp.null()), _col("split", "m").neq(exp.Literal.string(HOLDOUT))))
        .where(exp.Not(this=exp.Is(this=key.copy(), expression=exp.null())))
    )
    names = ["key_type", "row_key", "profile_id", "user_id", "email", "payload", "payload_hash",
             *(field_column(i) for i in range(len(values)))]
    return exp.select(*(_col(n) for n in names)).from_(exp.alias_(members.subquery(), "d")).where(
        _col("_n").eq(exp.Literal.number(1)))


def changes(project: ResolvedProject, audience: str, destination: str, sync: SyncSpec, *, removals: bool,
            full_resync: bool) -> exp.Select:
    """``(kind, key_type, row_key, profile_id, user_id, email, payload, previous, payload_hash, _f0..)``.

    added: a member the destination does not have from us (never accepted, or exited);
    changed: a member whose mapped fields' hash differs from the accepted one; removed (when
    ``removals``): a row this engine synced as a member that is no longer one. Rejected rows
    were never accepted, so they come back by themselves until they are.
    """
    d, s = "d", "s"
    state = (
        exp.select("*").from_(models_table(project, STATE))
        .where(_col("audience").eq(exp.Literal.string(audience)))
        .where(_col("destination").eq(exp.Literal.string(destination)))
    )
    same_key = exp.and_(_col("key_type", s).eq(_col("key_type", d)), _col("row_key", s).eq(_col("row_key", d)))
    missing_s = _col("row_key", s).is_(exp.null())
    missing_d = _col("row_key", d).is_(exp.null())
    was_member = _col("member", s).eq(exp.true())
    new = exp.or_(missing_s.copy(), exp.Not(this=was_member.copy()))
    if full_resync:
        new = exp.true()
    kind = (exp.Case().when(missing_d.copy(), exp.Literal.string("removed"))
            .when(new.copy(), exp.Literal.string("added")).else_(exp.Literal.string("changed")))
    wanted = exp.and_(exp.Not(this=missing_d.copy()),
                      exp.or_(new.copy(), _col("payload_hash", s).neq(_col("payload_hash", d))))
    if removals:
        wanted = exp.or_(wanted, exp.and_(missing_d.copy(), was_member.copy()))
    return (
        exp.select(
            exp.alias_(kind, "kind", quoted=True),
            exp.alias_(exp.func("COALESCE", _col("key_type", d), _col("key_type", s)), "key_type", quoted=True),
            exp.alias_(exp.func("COALESCE", _col("row_key", d), _col("row_key", s)), "row_key", quoted=True),
            exp.alias_(exp.func("COALESCE", _col("profile_id", d), _col("profile_id", s)), "profile_id", quoted=True),
            _col("user_id", d), _col("email", d), _col("payload", d),
            exp.alias_(_col("payload", s), "previous", quoted=True),
            exp.alias_(exp.func("COALESCE", _col("payload_hash", d), _col("payload_hash", s)), "payload_hash", quoted=True),
            exp.alias_(exp.Not(this=missing_s.copy()), "in_state", quoted=True),
            *(_col(field_column(i), d) for i in range(len(sync.fields))),
        )
        .from_(exp.alias_(desired_rows(project, audience, sync).subquery(), d))
        .join(exp.alias_(state.subquery(), s), on=same_key, join_type="full")
        .where(wanted)
    )
