"""One schedule per audience, on its `schedule` cron (else cdp.yaml's): the audience, what
it reads upstream (identity, traits, audiences it uses) and its syncs."""

from __future__ import annotations

import dagster as dg

from cdp_warehouse.orchestration.keys import RAW_EVENTS, audience_key, sync_key
from cdp_warehouse.specs import ResolvedProject


def audience_selection(project: ResolvedProject, audience: str) -> dg.AssetSelection:
    syncs = [sync_key(audience, spec.to) for spec in project.audiences[audience].spec.sync]
    return (dg.AssetSelection.assets(audience_key(audience)).upstream() - dg.AssetSelection.assets(RAW_EVENTS)
            | dg.AssetSelection.assets(*syncs))


def schedules(project: ResolvedProject) -> list[dg.ScheduleDefinition]:
    out = []
    for name, audience in project.audiences.items():
        job = dg.define_asset_job(f"{name}_job", selection=audience_selection(project, name),
                                  description=f"Compute {name} and what it reads, then sync it")
        out.append(dg.ScheduleDefinition(name=f"{name}_schedule", job=job, execution_timezone="UTC",
                                         cron_schedule=audience.spec.schedule or project.config.schedule))
    return out
