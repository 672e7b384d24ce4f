"""`cdp profile IDENTIFIER`: one person as the last run stitched them — identifiers, traits,
audience memberships and latest events."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from cdp_warehouse.compiler.identity import ANONYMOUS_MESSAGES, IDENTITY_MAP, events_table
from cdp_warehouse.compiler.plan import (
    AUDIENCE_MEMBERS,
    AUDIENCE_MEMBERSHIP,
    PROFILE_TRAITS,
    PROFILES,
    models_table,
)
from cdp_warehouse.errors import CdpError
from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.warehouses.base import Warehouse

LATEST_EVENTS = 10


@dataclass
class ProfileCard:
    profile_id: str
    identifiers: list[tuple[str, str]]
    profile: dict
    traits: dict
    memberships: list[dict] = field(default_factory=list)  # audience, split, entered_at, exited_at
    events: list[dict] = field(default_factory=list)


def _col(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table, quoted=True)


def find_profiles(project: ResolvedProject, warehouse: Warehouse, identifier: str) -> list[str]:
    """Profile ids whose identifiers include ``identifier`` (any type), or that are it."""
    identity = models_table(project, IDENTITY_MAP)
    email = identifier.strip().lower()
    matches = exp.or_(
        _col("identifier").eq(exp.Literal.string(identifier)),
        exp.and_(_col("identifier_type").eq(exp.Literal.string("email")), _col("identifier").eq(exp.Literal.string(email))),
        _col("profile_id").eq(exp.Literal.string(identifier)),
    )
    rows = warehouse.fetch(exp.select(_col("profile_id")).distinct().from_(identity).where(matches).order_by(_col("profile_id")))
    return [row[0] for row in rows]


def profile_card(project: ResolvedProject, warehouse: Warehouse, identifier: str) -> ProfileCard:
    if not project.config.identity.stitch:
        raise CdpError("`cdp profile` shows stitched profiles", hint="set `identity: {stitch: true}` in cdp.yaml and run `cdp run`")
    if not warehouse.table_exists(project.models_schema, IDENTITY_MAP):
        raise CdpError("no profiles yet", hint="run `cdp run` first")
    found = find_profiles(project, warehouse, identifier)
    if not found:
        raise CdpError(f"no profile has the identifier {identifier!r}",
                       hint="profiles are as of the last `cdp run`; try a user id, anonymous id or email")
    if len(found) > 1:
        raise CdpError(f"{identifier!r} names {len(found)} profiles: {', '.join(found)}",
                       hint="pass one of these profile ids")
    profile_id = found[0]
    this = exp.Literal.string(profile_id)
    identifiers = warehouse.fetch(
        exp.select(_col("identifier_type"), _col("identifier")).from_(models_table(project, IDENTITY_MAP))
        .where(_col("profile_id").eq(this)).order_by(_col("identifier_type"), _col("identifier")))
    profile = warehouse.fetch_dicts(exp.select("*").from_(models_table(project, PROFILES)).where(_col("profile_id").eq(this)))
    traits = warehouse.fetch_dicts(exp.select("*").from_(models_table(project, PROFILE_TRAITS)).where(_col("profile_id").eq(this)))
    memberships = warehouse.fetch_dicts(
        exp.select(_col("audience", "h"), _col("split", "m"), _col("entered_at", "h"), _col("exited_at", "h"))
        .from_(exp.alias_(models_table(project, AUDIENCE_MEMBERSHIP), "h"))
        .join(exp.alias_(models_table(project, AUDIENCE_MEMBERS), "m"),
              on=exp.and_(_col("audience", "m").eq(_col("audience", "h")), _col("profile_id", "m").eq(_col("profile_id", "h")),
                          _col("exited_at", "h").is_(exp.null())), join_type="left")
        .where(_col("profile_id", "h").eq(this))
        .order_by(_col("entered_at", "h"), _col("audience", "h")))
    # The profile's messages: by its user ids, or (without a user id) as the stitching chose.
    user_ids = exp.select(_col("identifier")).from_(models_table(project, IDENTITY_MAP)).where(
        exp.and_(_col("profile_id").eq(this.copy()), _col("identifier_type").eq(exp.Literal.string("user_id"))))
    anonymous = exp.select(_col("message_id")).from_(models_table(project, ANONYMOUS_MESSAGES)).where(
        _col("profile_id").eq(this.copy()))
    events = warehouse.fetch_dicts(
        exp.select(_col("timestamp"), _col("type"), _col("event"), _col("user_id"), _col("anonymous_id"), _col("properties"))
        .from_(events_table(project))
        .where(exp.or_(_col("user_id").isin(query=user_ids), _col("message_id").isin(query=anonymous)))
        .order_by(exp.Ordered(this=_col("timestamp"), desc=True)).limit(LATEST_EVENTS))
    return ProfileCard(profile_id, [tuple(row) for row in identifiers], profile[0] if profile else {},
                       traits[0] if traits else {}, memberships, events)
