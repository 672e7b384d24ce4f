"""Build the Definitions of one project: the factory behind `cdp_warehouse.definitions`."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from cdp_warehouse.orchestration import assets, checks, schedules, sensors
from cdp_warehouse.orchestration.keys import RAW_EVENTS, destination_resource
from cdp_warehouse.orchestration.resources import CdpDestination, CdpWarehouse
from cdp_warehouse.specs import load_project


def build_definitions(project_dir: str | Path) -> dg.Definitions:
    project = load_project(project_dir)
    everything = dg.define_asset_job("cdp_all", selection=dg.AssetSelection.all() - dg.AssetSelection.assets(RAW_EVENTS),
                                     description="Identity, traits, every audience and every sync")
    freshness = dg.define_asset_job("events_freshness", selection=dg.AssetSelection.checks_for_assets(RAW_EVENTS))
    resources = {"warehouse": CdpWarehouse(project_dir=str(Path(project_dir).resolve()))}
    resources.update({destination_resource(name): CdpDestination(name=name) for name in project.config.destinations})
    return dg.Definitions(
        assets=[assets.raw_events_spec(project), assets.cdp_run_asset(project), *assets.sync_assets(project)],
        asset_checks=[*checks.size_checks(project), checks.profile_id_check(project), checks.freshness_check(project)],
        jobs=[everything, freshness],
        schedules=schedules.schedules(project),
        sensors=[sensors.new_events_sensor(project, everything), sensors.failed_sync_sensor(project)],
        resources=resources,
    )
