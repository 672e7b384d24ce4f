"""Asset checks beside the assets: an audience's size did not jump, no profile without an
id, landed events are fresh. The size check can block its audience's syncs
(``checks.block_sync_on_size_change``): a broken upstream must not mass-remove people."""

# no `from __future__ import annotations`: Dagster reads these annotations at definition time
from datetime import UTC, datetime

import dagster as dg
from sqlglot import exp

from cdp_warehouse.asof import naive_utc, parse_window
from cdp_warehouse.compiler.plan import AUDIENCE_MEMBERS, AUDIENCE_MEMBERSHIP, PROFILES, models_table
from cdp_warehouse.orchestration.keys import PROFILES as PROFILES_KEY
from cdp_warehouse.orchestration.keys import RAW_EVENTS, audience_key
from cdp_warehouse.orchestration.resources import CdpWarehouse
from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.warehouses.base import Warehouse


def audience_sizes(project: ResolvedProject, warehouse: Warehouse, audience: str) -> tuple[int, int]:
    """(previous run's size, this run's size) from the members and their history: the
    previous size is this size minus who entered plus who exited at the latest instant."""
    name = exp.Literal.string(audience)
    members = models_table(project, AUDIENCE_MEMBERS)
    [(size, as_of)] = warehouse.fetch(exp.select(exp.Count(this=exp.Star()), exp.Max(this=exp.column("as_of")))
                                      .from_(members).where(exp.column("audience").eq(name)))
    if as_of is None:
        return 0, 0
    history = models_table(project, AUDIENCE_MEMBERSHIP)
    instant = exp.cast(exp.Literal.string(as_of.isoformat()), "timestamp")
    [(entered, exited)] = warehouse.fetch(exp.select(
        exp.func("COUNT_IF", exp.column("entered_at").eq(instant.copy())),
        exp.func("COUNT_IF", exp.column("exited_at").eq(instant.copy())),
    ).from_(history).where(exp.column("audience").eq(name)))
    return size - (entered or 0) + (exited or 0), size


def size_checks(project: ResolvedProject) -> list[dg.AssetChecksDefinition]:
    return [_size_check(project, audience) for audience in project.audiences]


def _size_check(project: ResolvedProject, audience: str) -> dg.AssetChecksDefinition:
    settings = project.config.checks
    blocking = settings.block_sync_on_size_change

    @dg.asset_check(asset=audience_key(audience), name="size_change", blocking=blocking,
                    description=f"The size moved at most {settings.max_size_change:.0%} since the previous run"
                                + (" (blocks the syncs when it did not)" if blocking else ""))
    def _size(warehouse: CdpWarehouse) -> dg.AssetCheckResult:
        with warehouse.connect() as connection:
            previous, size = audience_sizes(project, connection, audience)
        change = abs(size - previous) / previous if previous else 0.0
        return dg.AssetCheckResult(
            passed=change <= settings.max_size_change,
            severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN,
            description=None if previous else "no members before this run: nothing to compare",
            metadata={"previous_size": previous, "size": size, "change": round(change, 4),
                      "max_change": settings.max_size_change})

    return _size


def profile_id_check(project: ResolvedProject) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=PROFILES_KEY, name="no_null_profile_id",
                    description="Every profile and every audience member has a profile_id")
    def _no_null(warehouse: CdpWarehouse) -> dg.AssetCheckResult:
        missing = exp.column("profile_id").is_(exp.null())
        with warehouse.connect() as connection:
            counts = [connection.fetch(exp.select(exp.Count(this=exp.Star())).from_(models_table(project, t))
                                       .where(missing.copy()))[0][0] for t in (PROFILES, AUDIENCE_MEMBERS)]
        return dg.AssetCheckResult(passed=sum(counts) == 0, severity=dg.AssetCheckSeverity.ERROR,
                                   metadata={"profiles": counts[0], "audience_members": counts[1]})

    return _no_null


def freshness_check(project: ResolvedProject) -> dg.AssetChecksDefinition:
    window = project.config.checks.events_fresh_within

    @dg.asset_check(asset=RAW_EVENTS, name="fresh", description=f"An event landed within the last {window}")
    def _fresh(warehouse: CdpWarehouse) -> dg.AssetCheckResult:
        events = exp.table_("events", db=project.raw_schema, quoted=True)
        with warehouse.connect() as connection:
            connection.ensure_landing(project)
            [(latest,)] = connection.fetch(exp.select(exp.Max(this=exp.column("received_at"))).from_(events))
        now = naive_utc(datetime.now(UTC))
        age = None if latest is None else (now - latest).total_seconds()
        return dg.AssetCheckResult(
            passed=age is not None and age <= parse_window(window).start.total_seconds(),
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"latest_received_at": latest.isoformat() if latest else "none", "age_seconds": age or -1})

    return _fresh
