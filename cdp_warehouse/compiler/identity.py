"""Who a message belongs to: the profile key of every landed message.

Provisional rule until identity stitching lands: a profile is ``coalesce(user_id,
anonymous_id)``. Everything downstream reads profiles only through ``profiled_events`` and
``profiles_select``, so stitching replaces this one module.
"""

from __future__ import annotations

from sqlglot import exp

from cdp_warehouse.compiler.fragments import json_text
from cdp_warehouse.specs import ResolvedProject

EVENTS_TABLE = "events"
EVENT_TYPES = ("track", "page", "screen")


def events_table(project: ResolvedProject) -> exp.Table:
    return exp.table_(EVENTS_TABLE, db=project.raw_schema, quoted=True)


def profile_key(table: str | None = None) -> exp.Expression:
    """The profile a message belongs to (replaced by the stitched ``identity_map`` later)."""
    return exp.func(
        "COALESCE",
        exp.column("user_id", table=table, quoted=True),
        exp.column("anonymous_id", table=table, quoted=True),
    )


def before(as_of: exp.Expression, table: str | None = None) -> exp.Expression:
    """Messages of every type at or after as-of are ignored (spec section 2)."""
    return exp.column("timestamp", table=table, quoted=True) < as_of.copy()


def profiled_events(project: ResolvedProject, as_of: exp.Expression) -> exp.Select:
    """Every message before as-of with its ``profile_id``."""
    return (
        exp.select(exp.alias_(profile_key(), "profile_id", quoted=True), exp.Star())
        .from_(events_table(project))
        .where(before(as_of))
    )


def message_email() -> exp.Expression:
    """The email a message carries: identify ``traits.email``, else ``context.traits.email``;
    trimmed and lower-cased (spec section 3)."""
    # Group traits describe the account (a billing address is not the user's email).
    is_identify = exp.column("type", quoted=True).eq(exp.Literal.string("identify"))
    from_identify = exp.Case().when(is_identify, json_text("traits", ["email"]))
    email = exp.func("COALESCE", from_identify, json_text("context", ["traits", "email"]))
    return exp.Lower(this=exp.Trim(this=email))


def profiles_select(project: ResolvedProject, as_of: exp.Expression) -> exp.Select:
    """``profiles(profile_id, user_id, email, anonymous_ids, first_seen, last_seen)``."""
    ts = exp.column("timestamp", quoted=True)
    email = message_email()
    with_email = exp.Case().when(exp.Not(this=exp.Is(this=email.copy(), expression=exp.null())), ts.copy())
    anonymous_id = exp.column("anonymous_id", quoted=True)
    return (
        exp.select(
            exp.column("profile_id", quoted=True),
            exp.alias_(exp.ArgMin(this=exp.column("user_id", quoted=True),
                                  expression=exp.Case().when(exp.column("user_id", quoted=True).is_(exp.null()).not_(), ts.copy())),
                       "user_id", quoted=True),
            exp.alias_(exp.ArgMax(this=email, expression=with_email), "email", quoted=True),
            exp.alias_(
                exp.Filter(
                    this=exp.ArrayAgg(this=exp.Order(
                        this=exp.Distinct(expressions=[anonymous_id.copy()]),
                        # nulls are filtered out; stating NULLS FIRST keeps BigQuery's default
                        expressions=[exp.Ordered(this=anonymous_id.copy(), nulls_first=True)],
                    )),
                    expression=exp.Where(this=exp.Not(this=exp.Is(this=anonymous_id.copy(), expression=exp.null()))),
                ),
                "anonymous_ids", quoted=True,
            ),
            exp.alias_(exp.Min(this=ts.copy()), "first_seen", quoted=True),
            exp.alias_(exp.Max(this=ts.copy()), "last_seen", quoted=True),
        )
        .from_(exp.alias_(profiled_events(project, as_of).subquery(), "e"))
        .group_by(exp.column("profile_id", quoted=True))
    )
