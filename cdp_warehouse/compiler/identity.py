"""Who a message belongs to: every landed message with its stitched ``profile_id``.

With ``identity.stitch: true`` in cdp.yaml, ``cdp_warehouse.stitching`` writes
``identity_map`` and ``_anonymous_message_profiles`` (docs/identity.md); otherwise a
profile is the provisional ``coalesce(user_id, anonymous_id)``. Everything downstream reads
profiles only through ``profiled_events`` and ``profiles_select``.
"""

from __future__ import annotations

from sqlglot import exp

from cdp_warehouse.compiler.dialects import binary_order
from cdp_warehouse.compiler.fragments import json_text
from cdp_warehouse.specs import ResolvedProject

EVENTS_TABLE = "events"
IDENTITY_MAP = "identity_map"
ANONYMOUS_MESSAGES = "_anonymous_message_profiles"
PROFILE_KEYS = "_profile_keys"
EVENT_TYPES = ("track", "page", "screen")


def events_table(project: ResolvedProject) -> exp.Table:
    return exp.table_(EVENTS_TABLE, db=project.raw_schema, quoted=True)


def before(as_of: exp.Expression, table: str | None = None) -> exp.Expression:
    """Messages of every type at or after as-of are ignored (spec section 2)."""
    return exp.column("timestamp", table=table, quoted=True) < as_of.copy()


def profile_key(table: str | None = None) -> exp.Expression:
    """The provisional profile of a message, used while ``identity.stitch`` is off."""
    return exp.func(
        "COALESCE",
        exp.column("user_id", table=table, quoted=True),
        exp.column("anonymous_id", table=table, quoted=True),
    )


def profiled_events(project: ResolvedProject, as_of: exp.Expression) -> exp.Select:
    """Every message before as-of with its ``profile_id``. Stitched: by its user id when it
    has one, else by the stitching's choice for messages without one. Otherwise the
    provisional ``coalesce(user_id, anonymous_id)``."""
    if not project.config.identity.stitch:
        return (
            exp.select(exp.alias_(profile_key(), "profile_id", quoted=True), exp.Star())
            .from_(events_table(project))
            .where(before(as_of))
        )
    users = exp.table_(IDENTITY_MAP, db=project.models_schema, quoted=True)
    anonymous = exp.table_(ANONYMOUS_MESSAGES, db=project.models_schema, quoted=True)
    profile = exp.func("COALESCE", exp.column("profile_id", table="u", quoted=True),
                       exp.column("profile_id", table="m", quoted=True))
    user_match = exp.and_(
        exp.column("identifier_type", table="u", quoted=True).eq(exp.Literal.string("user_id")),
        exp.column("identifier", table="u", quoted=True).eq(exp.column("user_id", table="e", quoted=True)),
    )
    return (
        exp.select(exp.alias_(profile, "profile_id", quoted=True), exp.Column(this=exp.Star(), table=exp.to_identifier("e")))
        .from_(exp.alias_(events_table(project), "e"))
        .join(exp.alias_(users, "u"), on=user_match, join_type="left")
        .join(exp.alias_(anonymous, "m"), on=exp.column("message_id", table="m", quoted=True).eq(
            exp.column("message_id", table="e", quoted=True)), join_type="left")
        .where(before(as_of, "e"))
    )


def message_email() -> exp.Expression:
    """The email a message carries: identify ``traits.email``, else ``context.traits.email``;
    trimmed and lower-cased (spec section 3)."""
    # Group traits describe the account (a billing address is not the user's email).
    is_identify = exp.column("type", quoted=True).eq(exp.Literal.string("identify"))
    from_identify = exp.Case().when(is_identify, json_text("traits", ["email"]))
    email = exp.func("COALESCE", from_identify, json_text("context", ["traits", "email"]))
    return exp.Lower(this=exp.Trim(this=email))


def _order_key() -> exp.Expression:
    """A message's place in time: its timestamp, ties broken by message id, so "latest" and
    "earliest" picks do not change from run to run (a flapping email would re-sync a
    profile to every destination)."""
    return exp.Struct(expressions=[
        exp.PropertyEQ(this=exp.to_identifier("ts"), expression=exp.column("timestamp", quoted=True)),
        exp.PropertyEQ(this=exp.to_identifier("m"), expression=exp.column("message_id", quoted=True)),
    ])


def _when_present(value: exp.Expression, then: exp.Expression) -> exp.Case:
    return exp.Case().when(exp.Not(this=exp.Is(this=value.copy(), expression=exp.null())), then)


def profiles_select(project: ResolvedProject, as_of: exp.Expression, dialect: str = "duckdb") -> exp.Select:
    """``profiles(profile_id, user_id, email, anonymous_ids, first_seen, last_seen)``."""
    if project.config.identity.stitch:
        return _profiles_stitched(project, as_of, dialect)
    if dialect == "postgres":
        return _profiles_one_pass(project, as_of)
    return _profiles_from_messages(project, as_of)


def _profiles_stitched(project: ResolvedProject, as_of: exp.Expression, dialect: str) -> exp.Select:
    """Stitched profiles: ``user_id`` is the user id that keys the profile (its earliest),
    ``email`` the latest from its messages, ``anonymous_ids`` are those the identity map gives the profile (a shared device is listed
    once, on the profile that owns it).
    """
    ts = exp.column("timestamp", quoted=True)
    email = message_email()

    def col(name: str, table: str | None = None) -> exp.Column:
        return exp.column(name, table=table, quoted=True)

    def alias(expression: exp.Expression, name: str) -> exp.Alias:
        return exp.alias_(expression, name, quoted=True)

    per_profile = (
        exp.select(
            col("profile_id"),
            alias(exp.ArgMax(this=email.copy(), expression=_when_present(email, _order_key())), "email"),
            alias(exp.Min(this=ts.copy()), "first_seen"),
            alias(exp.Max(this=ts.copy()), "last_seen"),
        )
        .from_(exp.alias_(profiled_events(project, as_of).subquery(), "e"))
        .group_by(col("profile_id"))
    )
    devices = (
        exp.select(
            col("profile_id"),
            # stating NULLS FIRST keeps BigQuery's default (there are no nulls)
            alias(exp.ArrayAgg(this=exp.Order(this=col("identifier"), expressions=[
                exp.Ordered(this=binary_order(col("identifier"), dialect), nulls_first=True)])), "anonymous_ids"),
        )
        .from_(exp.table_(IDENTITY_MAP, db=project.models_schema, quoted=True))
        .where(col("identifier_type").eq(exp.Literal.string("anonymous_id")))
        .group_by(col("profile_id"))
    )
    user_key = exp.Case().when(col("key_type", "k").eq(exp.Literal.string("user_id")), col("key", "k"))
    return (
        exp.select(col("profile_id", "m"), alias(user_key, "user_id"), col("email", "m"), col("anonymous_ids", "d"),
                   col("first_seen", "m"), col("last_seen", "m"))
        .from_(exp.alias_(per_profile.subquery(), "m"))
        .join(exp.alias_(devices.subquery(), "d"), on=col("profile_id", "d").eq(col("profile_id", "m")), join_type="left")
        .join(exp.alias_(exp.table_(PROFILE_KEYS, db=project.models_schema, quoted=True), "k"),
              on=col("profile_id", "k").eq(col("profile_id", "m")), join_type="left")
    )


def _profiles_one_pass(project: ResolvedProject, as_of: exp.Expression) -> exp.Select:
    """Profiles keyed ``coalesce(user_id, anonymous_id)`` in one GROUP BY, for warehouses whose
    aggregates cannot return a STRUCT (the two-stage form below keeps one per device).
    Same rows as ``_profiles_from_messages``."""
    ts = exp.column("timestamp", quoted=True)
    user_id, email, anonymous_id = exp.column("user_id", quoted=True), message_email(), exp.column("anonymous_id", quoted=True)
    ordered_id = binary_order(anonymous_id.copy(), "postgres")
    anonymous_ids = exp.Filter(
        this=exp.ArrayAgg(this=exp.Order(this=exp.Distinct(expressions=[ordered_id]),
                                         expressions=[exp.Ordered(this=ordered_id.copy(), nulls_first=True)])),
        expression=exp.Where(this=exp.Not(this=exp.Is(this=anonymous_id.copy(), expression=exp.null()))),
    )
    return (
        exp.select(
            exp.column("profile_id", quoted=True),
            exp.alias_(exp.ArgMin(this=user_id.copy(), expression=_when_present(user_id, _order_key())), "user_id",
                       quoted=True),
            exp.alias_(exp.ArgMax(this=email.copy(), expression=_when_present(email, _order_key())), "email", quoted=True),
            exp.alias_(anonymous_ids, "anonymous_ids", quoted=True),
            exp.alias_(exp.Min(this=ts.copy()), "first_seen", quoted=True),
            exp.alias_(exp.Max(this=ts.copy()), "last_seen", quoted=True),
        )
        .from_(exp.alias_(profiled_events(project, as_of).subquery(), "e"))
        .group_by(exp.column("profile_id", quoted=True))
    )


def _profiles_from_messages(project: ResolvedProject, as_of: exp.Expression) -> exp.Select:
    """Profiles keyed ``coalesce(user_id, anonymous_id)`` (``identity.stitch: false``).

    Two stages: per (profile, anonymous_id) first, then per profile. A profile's messages
    mostly share a few anonymous ids, so the first stage shrinks the rows and the list of
    anonymous ids needs no DISTINCT (measured 15% less CPU than one DISTINCT aggregate).
    """
    ts = exp.column("timestamp", quoted=True)
    user_id, email = exp.column("user_id", quoted=True), message_email()

    def col(name: str) -> exp.Column:
        return exp.column(name, quoted=True)

    def alias(expression: exp.Expression, name: str) -> exp.Alias:
        return exp.alias_(expression, name, quoted=True)

    per_device = (
        exp.select(
            col("profile_id"), col("anonymous_id"),
            alias(exp.ArgMin(this=user_id.copy(), expression=_when_present(user_id, _order_key())), "user_id"),
            alias(exp.Min(this=_when_present(user_id, _order_key())), "user_at"),
            alias(exp.ArgMax(this=email.copy(), expression=_when_present(email, _order_key())), "email"),
            alias(exp.Max(this=_when_present(email, _order_key())), "email_at"),
            alias(exp.Min(this=ts.copy()), "first_seen"),
            alias(exp.Max(this=ts.copy()), "last_seen"),
        )
        .from_(exp.alias_(profiled_events(project, as_of).subquery(), "e"))
        .group_by(col("profile_id"), col("anonymous_id"))
    )
    anonymous_ids = exp.Filter(
        # nulls are filtered out; stating NULLS FIRST keeps BigQuery's default
        this=exp.ArrayAgg(this=exp.Order(this=col("anonymous_id"),
                                         expressions=[exp.Ordered(this=col("anonymous_id"), nulls_first=True)])),
        expression=exp.Where(this=exp.Not(this=exp.Is(this=col("anonymous_id"), expression=exp.null()))),
    )
    return (
        exp.select(
            col("profile_id"),
            alias(exp.ArgMin(this=col("user_id"), expression=col("user_at")), "user_id"),
            alias(exp.ArgMax(this=col("email"), expression=col("email_at")), "email"),
            alias(anonymous_ids, "anonymous_ids"),
            alias(exp.Min(this=col("first_seen")), "first_seen"),
            alias(exp.Max(this=col("last_seen")), "last_seen"),
        )
        .from_(exp.alias_(per_device.subquery(), "per_device"))
        .group_by(col("profile_id"))
    )
