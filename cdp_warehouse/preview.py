"""`cdp preview AUDIENCE`: who is in it right now, computed and rolled back, not stored."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlglot import exp

from cdp_warehouse.compiler.fragments import did_you_mean
from cdp_warehouse.compiler.plan import AUDIENCE_MEMBERS, PROFILE_TRAITS, PROFILES, models_table
from cdp_warehouse.compiler.traits import NUMERIC_KINDS, ZERO_DEFAULT_KINDS
from cdp_warehouse.errors import CdpError
from cdp_warehouse.runner import materialise
from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.warehouses.base import Warehouse

SAMPLE_SIZE = 10
BREAKDOWN_TRAITS = 4
TOP_VALUES = 5


@dataclass
class TraitBreakdown:
    trait: str
    numeric: bool
    # numeric: (label, members value, all profiles value); text: (value, members, share)
    rows: list[tuple] = field(default_factory=list)


@dataclass
class Preview:
    audience: str
    as_of: datetime
    size: int
    profiles: int
    sample_columns: list[str]
    sample: list[tuple]
    breakdowns: list[TraitBreakdown]
    splits: dict[str, int]

    @property
    def share(self) -> float:
        return self.size / self.profiles if self.profiles else 0.0


def preview(project: ResolvedProject, warehouse: Warehouse, audience: str, as_of: datetime) -> Preview:
    if audience not in project.audiences:
        raise CdpError(f"no audience named {audience!r}",
                       hint=did_you_mean(audience, list(project.audiences)) or "see `cdp validate`")
    spec = project.audiences[audience]
    traits = list(spec.traits_used) or list(project.traits)
    with warehouse.transaction(rollback=True):
        warehouse.ensure_landing(project)
        # Every trait is computed at this as-of, so the sample never shows stale values.
        materialise(project, warehouse, as_of, [audience, *project.traits])
        members = exp.select("profile_id", "split").from_(models_table(project, AUDIENCE_MEMBERS)).where(
            exp.column("audience").eq(exp.Literal.string(audience)))
        size = warehouse.fetch(exp.select(exp.Count(this=exp.Star())).from_(members.subquery("m")))[0][0]
        profiles = warehouse.fetch(exp.select(exp.Count(this=exp.Star())).from_(models_table(project, PROFILES)))[0][0]
        splits = dict(warehouse.fetch(exp.select("split", exp.Count(this=exp.Star())).from_(members.subquery("m"))
                                      .where(exp.column("split").is_(exp.null()).not_()).group_by("split")))
        columns = ["user_id", "email", *traits]
        sample_query = (
            exp.select(exp.column("profile_id", table="m", quoted=True),
                       *(exp.column(c, table="p", quoted=True) for c in ("user_id", "email")),
                       *(exp.column(t, table="t", quoted=True) for t in traits))
            .from_(members.subquery("m"))
            .join(exp.alias_(models_table(project, PROFILES), "p"), on="p.profile_id = m.profile_id")
            .join(exp.alias_(models_table(project, PROFILE_TRAITS), "t"), on="t.profile_id = m.profile_id")
            .order_by(exp.column("profile_id", table="m")).limit(SAMPLE_SIZE)
        )
        sample = warehouse.fetch(sample_query)
        breakdowns = [_breakdown(project, warehouse, members, trait, size) for trait in traits[:BREAKDOWN_TRAITS]]
    return Preview(audience, as_of, size, profiles, ["profile_id", *columns], sample, breakdowns, splits)


def _breakdown(project, warehouse, members: exp.Select, trait: str, size: int) -> TraitBreakdown:
    kind = project.traits[trait].kind
    value_type = project.traits[trait].value_type
    column = exp.column(trait, table="t", quoted=True)
    source = exp.alias_(models_table(project, PROFILE_TRAITS), "t")
    in_members = exp.column("profile_id", table="t").isin(query=exp.select("profile_id").from_(members.subquery("m")))
    numeric = kind in (*ZERO_DEFAULT_KINDS, *NUMERIC_KINDS) or value_type == "number"
    if numeric:
        stats = [("min", exp.Min), ("avg", exp.Avg), ("max", exp.Max)]
        row_members = warehouse.fetch(exp.select(*(f(this=column.copy()) for _, f in stats)).from_(source).where(in_members))[0]
        row_all = warehouse.fetch(exp.select(*(f(this=column.copy()) for _, f in stats)).from_(source))[0]
        return TraitBreakdown(trait, True, [(label, row_members[i], row_all[i]) for i, (label, _) in enumerate(stats)])
    counts = warehouse.fetch(
        exp.select(exp.cast(column.copy(), "text"), exp.Count(this=exp.Star())).from_(source).where(in_members)
        .group_by(exp.cast(column.copy(), "text")).order_by(exp.Ordered(this=exp.Count(this=exp.Star()), desc=True))
        .limit(TOP_VALUES)
    )
    total = size or 1
    return TraitBreakdown(trait, False, [(value, count, count / total) for value, count in counts])
