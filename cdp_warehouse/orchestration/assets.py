"""Assets built from the parsed project: landed events (external), identity, profiles,
traits, one asset per audience, and one per (audience, destination) sync.

Identity, profiles, traits and audiences are computed together by `cdp run` (one fused
query, one transaction), so they are one subsettable multi-asset: materialising a few
audiences runs `cdp run --select` for them. Each asset's description shows its SQL.
"""

# no `from __future__ import annotations`: Dagster reads these annotations at definition time
from datetime import timedelta

import dagster as dg

from cdp_warehouse.asof import parse_window, resolve_as_of
from cdp_warehouse.compiler.plan import AUDIENCE_MEMBERS, PROFILE_TRAITS, PROFILES, compile_project
from cdp_warehouse.compiler.render import render_plan
from cdp_warehouse.orchestration.keys import (
    IDENTITY,
    RAW_EVENTS,
    audience_key,
    destination_resource,
    sync_key,
)
from cdp_warehouse.orchestration.keys import PROFILE_TRAITS as TRAITS_KEY
from cdp_warehouse.orchestration.keys import PROFILES as PROFILES_KEY
from cdp_warehouse.orchestration.resources import CdpWarehouse
from cdp_warehouse.runner import run
from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.sync.engine import Job, sync

MODELS_GROUP, AUDIENCES_GROUP, SYNCS_GROUP = "profiles", "audiences", "syncs"


def _sql_block(sql: str) -> str:
    return f"```sql\n{sql.strip()}\n```"


def _models_sql(project: ResolvedProject, dialect: str, select: list[str] | None = None) -> dict[str, str]:
    """``{table: SQL}`` of the compiled plan (all of it, or the ``select``ed part)."""
    plan = compile_project(project, None, select, dialect=dialect)
    files = render_plan(plan, project.models_schema)  # one file per model, in plan order
    return {model.table: sql for model, sql in zip(plan.models, files.values(), strict=True)}


def raw_events_spec(project: ResolvedProject) -> dg.AssetSpec:
    window = parse_window(project.config.checks.events_fresh_within)
    return dg.AssetSpec(
        RAW_EVENTS, group_name="collection", kinds={project.config.warehouse.type},
        description=f"Every Segment-spec message (`{project.raw_schema}.events`), landed by `cdp load` and "
                    "`cdp serve`. The new-events sensor records a materialisation when more have landed.",
        freshness_policy=dg.FreshnessPolicy.time_window(fail_window=max(window.start, timedelta(minutes=1))),
    )


def cdp_run_asset(project: ResolvedProject) -> dg.AssetsDefinition:
    dialect = project.config.warehouse.type
    kinds = {dialect, "sql"}
    models = _models_sql(project, dialect)
    stitched = "stitched by docs/identity.md" if project.config.identity.stitch else "coalesce(user_id, anonymous_id)"
    specs = [
        dg.AssetSpec(IDENTITY, deps=[RAW_EVENTS], group_name=MODELS_GROUP, kinds=kinds,
                     description=f"`{project.models_schema}.identity_map`: every identifier and its profile ({stitched})."),
        dg.AssetSpec(PROFILES_KEY, deps=[IDENTITY], group_name=MODELS_GROUP, kinds=kinds,
                     description="One row per profile.\n\n" + _sql_block(models[PROFILES])),
        dg.AssetSpec(TRAITS_KEY, deps=[PROFILES_KEY], group_name=MODELS_GROUP, kinds=kinds,
                     description="One row per profile, one column per trait.\n\n"
                                 + _sql_block(models[PROFILE_TRAITS])),
    ]
    for name, audience in project.audiences.items():
        spec = audience.spec
        about = spec.description or spec.title or ""
        specs.append(dg.AssetSpec(
            audience_key(name), group_name=AUDIENCES_GROUP, kinds=kinds,
            deps=[TRAITS_KEY, *(audience_key(used) for used in audience.audiences_used)],
            description=f"{about}\n\n" + _sql_block(_models_sql(project, dialect, [name])[AUDIENCE_MEMBERS]),
            metadata={"where": spec.where.strip(), "schedule": spec.schedule or project.config.schedule},
        ))
    all_keys = {spec.key for spec in specs}

    @dg.multi_asset(specs=specs, name="cdp_run", can_subset=True)
    def cdp_run(context: dg.AssetExecutionContext, warehouse: CdpWarehouse):
        selected = set(context.selected_asset_keys)
        audiences = [name for name in project.audiences if audience_key(name) in selected]
        if selected == all_keys:
            names = None
        else:  # only what was asked for (and what it reads); other results are kept
            names = audiences or list(project.traits)
        as_of = resolve_as_of(None)  # $CDP_AS_OF pins it, else now
        with warehouse.connect() as connection:
            result = run(warehouse.project, connection, as_of, names,
                         on_step=lambda step: context.log.debug(f"building {step}"))
        context.log.info(f"as of {as_of.isoformat()}: {result.profiles:,} profiles, "
                         f"{len(result.traits)} traits, {len(result.audiences)} audiences")
        common = {"as_of": as_of.isoformat()}
        if IDENTITY in selected:
            yield dg.MaterializeResult(asset_key=IDENTITY, metadata={
                **common, "identifiers": result.identifiers, "rounds": result.rounds,
                "rebuilt": result.identity_rebuilt, "messages_stitched": result.messages_stitched})
        if PROFILES_KEY in selected:
            yield dg.MaterializeResult(asset_key=PROFILES_KEY, metadata={**common, "dagster/row_count": result.profiles})
        if TRAITS_KEY in selected:
            yield dg.MaterializeResult(asset_key=TRAITS_KEY, metadata={
                **common, "dagster/row_count": result.profiles, "traits": len(result.traits)})
        for name in audiences:
            yield dg.MaterializeResult(asset_key=audience_key(name), metadata={
                **common, "size": result.audience_sizes.get(name, 0), "dagster/row_count": result.audience_sizes.get(name, 0),
                "entered": result.entered.get(name, 0), "exited": result.exited.get(name, 0)})

    return cdp_run


def sync_assets(project: ResolvedProject) -> list[dg.AssetsDefinition]:
    """One asset per (audience, destination); it fails when any row failed."""
    assets = []
    for name, audience in project.audiences.items():
        for spec in audience.spec.sync:
            assets.append(_sync_asset(name, spec))
    return assets


def _sync_asset(audience: str, spec) -> dg.AssetsDefinition:
    destination = spec.to
    resource = destination_resource(destination)

    @dg.asset(key=sync_key(audience, destination), deps=[audience_key(audience)], group_name=SYNCS_GROUP,
              kinds={"python"}, required_resource_keys={"warehouse", resource},
              description=f"Changes of `{audience}` sent to `{destination}` ({spec.mode}); see docs/sync.md.")
    def _sync(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        warehouse: CdpWarehouse = context.resources.warehouse
        environ = getattr(context.resources, resource).environ()
        with warehouse.connect() as connection:
            [outcome] = sync(warehouse.project, connection, [Job(audience, destination, spec)], environ=environ)
        metadata = {"added": outcome.added, "changed": outcome.changed, "removed": outcome.removed,
                    "failed": outcome.failed, "requests": outcome.requests, "status": outcome.status,
                    "run_id": outcome.run_id or ""}
        if outcome.status != "success":
            # partial failure is never reported as success
            raise dg.Failure(description=f"{audience} → {destination}: "
                                         f"{outcome.error or f'{outcome.failed} rows rejected (see sync_rejections)'}",
                             metadata=metadata)
        return dg.MaterializeResult(metadata=metadata)

    return _sync
