"""The Dagster code location: built from the YAML, materialised in-process on DuckDB, with
schedules from the crons, checks that can block syncs, and a webserver that lists it all."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import httpx
import pytest

from cdp_warehouse.orchestration.definitions import build_definitions
from cdp_warehouse.orchestration.keys import audience_key, sync_key
from tests.conftest import MINIMAL_CDP_YAML, REPO, Workspace, identify, track, write_project
from tests.fakes import FakeBraze

BIN = Path(sys.executable).parent
AS_OF = "2026-06-30T00:00:00Z"
CDP_YAML = MINIMAL_CDP_YAML + """\
schedule: "0 6 * * *"
destinations:
  braze:
    type: braze
    rest_endpoint: ${BRAZE_REST_ENDPOINT}
    api_key: ${BRAZE_API_KEY}
checks:
  max_size_change: 0.5
  block_sync_on_size_change: true
"""
AUDIENCES = """
traits:
  - name: plan
    trait: {trait: plan}
  - name: reports
    count: {event: Report}
audiences:
  - name: active
    where: "reports >= 1"
    schedule: "*/15 * * * *"
    sync:
      - to: braze
        mode: mirror
        membership: {attribute: active}
        fields: {plan: plan}
  - name: pro
    where: "in_audience('active') AND plan = 'pro'"
"""


def people(count: int, plan: str = "pro") -> list[dict]:
    out = []
    for i in range(count):
        out += [identify(f"u{i}", "2026-06-01T00:00:00Z", plan=plan), track(f"u{i}", "Report", "2026-06-02T00:00:00Z")]
    return out


@pytest.fixture
def project_dir(tmp_path, monkeypatch):
    root = write_project(tmp_path / "project", AUDIENCES, CDP_YAML)
    monkeypatch.setenv("CDP_AS_OF", AS_OF)
    return root


@pytest.fixture
def braze(monkeypatch):
    with FakeBraze() as fake:
        monkeypatch.setenv("BRAZE_REST_ENDPOINT", fake.url)
        monkeypatch.setenv("BRAZE_API_KEY", fake.api_key)
        yield fake


def land(root: Path, messages: list[dict]) -> None:
    from cdp_warehouse.specs import load_project

    ws = Workspace(load_project(root, environ={}))
    try:
        ws.land(*messages)
    finally:
        ws.warehouse.close()


def tables(root: Path) -> dict[str, set]:
    from cdp_warehouse.specs import load_project

    ws = Workspace(load_project(root, environ={}))
    try:
        return {name: set(ws.query(f"SELECT * FROM cdp.{name}")) for name in ("profile_traits", "audience_members")}
    finally:
        ws.warehouse.close()


def run_job(defs: dg.Definitions, name: str) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(name).execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


def test_the_asset_graph_follows_the_yaml(project_dir):
    defs = build_definitions(project_dir)
    graph = {spec.key: {dep.asset_key for dep in spec.deps} for spec in defs.resolve_all_asset_specs()}
    assert graph[audience_key("pro")] == {dg.AssetKey(["cdp", "profile_traits"]), audience_key("active")}
    assert graph[sync_key("active", "braze")] == {audience_key("active")}
    assert graph[dg.AssetKey(["cdp", "identity_map"])] == {dg.AssetKey(["raw", "events"])}
    spec = next(s for s in defs.resolve_all_asset_specs() if s.key == audience_key("active"))
    assert "```sql" in spec.description and "reports" in spec.description


def test_schedules_have_the_crons_of_the_yaml(project_dir):
    defs = build_definitions(project_dir)
    crons = {s.name: s.cron_schedule for s in defs.schedules}
    assert crons == {"active_schedule": "*/15 * * * *", "pro_schedule": "0 6 * * *"}
    job = defs.resolve_job_def("active_job")
    assert set(job.asset_layer.executable_asset_keys) >= {audience_key("active"), sync_key("active", "braze")}
    assert audience_key("pro") not in set(job.asset_layer.selected_asset_keys)


def test_materialising_everything_gives_the_tables_of_cdp_run(project_dir, braze, tmp_path):
    land(project_dir, people(3) + people(1, plan="free")[:0])
    result = run_job(build_definitions(project_dir), "cdp_all")
    assert result.success
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert {audience_key("active"), audience_key("pro"), sync_key("active", "braze")} <= materialized
    sizes = {e.asset_key: e.step_materialization_data.materialization.metadata["size"].value
             for e in result.get_asset_materialization_events() if e.asset_key.path[0] == "audience"}
    assert sizes == {audience_key("active"): 3, audience_key("pro"): 3}
    assert {u.external_id for u in braze.users.values()} == {"u0", "u1", "u2"}

    # the same events through `cdp run`
    other = write_project(tmp_path / "other", AUDIENCES, CDP_YAML)
    land(other, people(3))
    from cdp_warehouse.runner import run
    from cdp_warehouse.specs import load_project

    ws = Workspace(load_project(other, environ={}))
    try:
        run(ws.project, ws.warehouse, datetime(2026, 6, 30, tzinfo=UTC))
    finally:
        ws.warehouse.close()
    assert tables(project_dir) == tables(other)


def test_a_failing_size_check_blocks_the_sync(project_dir, braze, monkeypatch):
    land(project_dir, people(10))
    defs = build_definitions(project_dir)
    assert run_job(defs, "cdp_all").success
    sent = len(braze.requests)
    # most people's reports fall out of reach: the audience would shrink from 10 to 2
    from cdp_warehouse.specs import load_project

    ws = Workspace(load_project(project_dir, environ={}))
    try:
        ws.warehouse.execute("DELETE FROM raw.events WHERE type = 'track' AND user_id NOT IN ('u0', 'u1')")
    finally:
        ws.warehouse.close()
    monkeypatch.setenv("CDP_AS_OF", "2026-07-01T00:00:00Z")
    result = run_job(defs, "cdp_all")
    checks = {e.asset_check_evaluation_data.asset_check_key.asset_key: e.asset_check_evaluation_data.passed
              for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert checks[audience_key("active")] is False
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert audience_key("active") in materialized and sync_key("active", "braze") not in materialized
    assert len(braze.requests) == sent  # nobody was removed from Braze


def test_a_failed_sync_fails_its_asset(project_dir, braze):
    land(project_dir, people(2))
    braze.reject(lambda obj: obj.get("external_id") == "u1")
    result = run_job(build_definitions(project_dir), "cdp_all")
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1 and "1 rows rejected" in failures[0].event_specific_data.error.message


def test_dagster_validates_the_repo_project(tmp_path):
    for name in ("cdp.yaml", "tracking_plan.yaml"):
        (tmp_path / name).write_text((REPO / name).read_text())
    (tmp_path / "audiences").mkdir()
    for file in (REPO / "audiences").glob("*.yaml"):
        (tmp_path / "audiences" / file.name).write_text(file.read_text())
    env = {**os.environ, "CDP_PROJECT": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    result = subprocess.run([str(BIN / "dagster"), "definitions", "validate", "-m", "cdp_warehouse.definitions"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Validation successful" in result.stderr + result.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_webserver_lists_the_assets_over_graphql(project_dir, tmp_path):
    port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "CDP_PROJECT": str(project_dir), "DAGSTER_HOME": str(home)}
    server = subprocess.Popen([str(BIN / "dagster-webserver"), "-m", "cdp_warehouse.definitions", "-h", "127.0.0.1",
                               "-p", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, answer = time.monotonic() + 120, None
        while time.monotonic() < deadline:
            try:
                answer = httpx.post(f"http://127.0.0.1:{port}/graphql", timeout=10,
                                    json={"query": "{ assetNodes { assetKey { path } } }"})
                if answer.status_code == 200 and answer.json().get("data", {}).get("assetNodes"):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        assert answer is not None and answer.status_code == 200
        keys = {"/".join(node["assetKey"]["path"]) for node in answer.json()["data"]["assetNodes"]}
        assert {"raw/events", "cdp/identity_map", "audience/active", "audience/pro", "sync/active/braze"} <= keys
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_new_events_sensor_starts_a_run_only_when_events_landed(project_dir):
    defs = build_definitions(project_dir)
    sensor = next(s for s in defs.sensors if s.name == "new_events")
    resources = {"warehouse": defs.resources["warehouse"]}
    with dg.build_sensor_context(resources=resources) as context:
        assert isinstance(sensor(context), dg.SkipReason)  # nothing landed yet
    land(project_dir, people(1))
    with dg.build_sensor_context(resources=resources) as context:
        result = sensor(context)
        cursor = context.cursor
    assert len(result.run_requests) == 1 and result.asset_events[0].asset_key == dg.AssetKey(["raw", "events"])
    with dg.build_sensor_context(cursor=cursor, resources=resources) as context:
        assert isinstance(sensor(context), dg.SkipReason)
    land(project_dir, people(2))
    with dg.build_sensor_context(cursor=cursor, resources=resources) as context:
        assert len(sensor(context).run_requests) == 1


def test_failed_syncs_are_reported_to_slack(tmp_path, monkeypatch, braze):
    from tests.fakes import FakeSlack

    cdp = CDP_YAML.replace("destinations:\n", "destinations:\n  slack:\n    type: slack\n    webhook_url: ${SLACK_WEBHOOK_URL}\n")
    root = write_project(tmp_path / "p", AUDIENCES, cdp)
    monkeypatch.setenv("CDP_AS_OF", AS_OF)
    land(root, people(2))
    braze.reject(lambda obj: obj.get("external_id") == "u1")
    defs = build_definitions(root)
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("cdp_all").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(record.dagster_event for record in instance.all_logs(result.run_id)
                   if record.dagster_event and record.dagster_event.event_type_value in ("RUN_FAILURE", "PIPELINE_FAILURE"))
    sensor = next(s for s in defs.sensors if s.name == "failed_syncs")
    with FakeSlack() as slack:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.webhook_url)
        context = dg.build_run_status_sensor_context(
            sensor_name="failed_syncs", dagster_instance=instance, dagster_run=result.dagster_run,
            dagster_event=failure, resources={"warehouse": defs.resources["warehouse"]}).for_run_failure()
        sensor(context)
        assert len(slack.messages) == 1
        assert "active → braze: partial, 1 failed" in slack.messages[0]["text"]
