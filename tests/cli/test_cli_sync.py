"""`cdp sync` on the example project: a summary table, exit 1 when a pair fails, secrets
never printed, and a dry run that sends nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.cli.test_cli_validate_load import cdp, example_copy, runner  # noqa: F401 (fixture)
from tests.fakes import FakeBraze, FakeSlack


@pytest.fixture
def example(tmp_path):
    root = example_copy(tmp_path)
    events = tmp_path / "events.jsonl"
    subprocess.run([sys.executable, "-m", "cdp_warehouse.demo", str(events), "--events", "40000"], check=True,
                   capture_output=True)
    return root, events


def test_sync_prints_a_summary_and_a_second_run_sends_nothing(runner, example):  # noqa: F811
    root, events = example
    with FakeBraze(api_key="s3cret-key") as braze, FakeSlack() as slack:
        env = {"CDP_PROJECT": str(root), "BRAZE_REST_ENDPOINT": braze.url, "BRAZE_API_KEY": "s3cret-key",
               "SLACK_WEBHOOK_URL": slack.webhook_url, "CDP_AS_OF": "2026-11-01"}
        assert cdp(runner, "load", events, env=env).exit_code == 0
        assert cdp(runner, "run", env=env).exit_code == 0
        dry = cdp(runner, "sync", "churn_risk", "--to", "braze", "--dry-run", env=env)
        assert dry.exit_code == 0 and "dry run: nothing sent" in dry.output and braze.requests == []
        first = cdp(runner, "sync", "churn_risk", "--to", "braze", "--to", "slack", env=env)
        assert first.exit_code == 0, first.output
        members = {u.external_id for u in braze.users.values() if u.attributes.get("churn_risk") is True}
        # the demo data breaks the example's tracking plan: its alert went to the same webhook
        audience_posts = [m for m in slack.messages if not m["text"].startswith("*Tracking plan*")]
        assert members and len(audience_posts) == 1 and len(slack.messages) == 2
        assert "success" in first.output and "s3cret" not in first.output
        sent = len(braze.requests)
        again = cdp(runner, "sync", "churn_risk", "--to", "braze", "--to", "slack", env=env)
        assert again.exit_code == 0 and len(braze.requests) == sent

        # salesforce's variables are not set: that pair fails, naming the variable; the others succeed
        everywhere = cdp(runner, "sync", "churn_risk", "--to", "braze", "--to", "salesforce", env=env)
        assert everywhere.exit_code == 1
        assert "churn_risk → salesforce: destination salesforce: environment variable SALESFORCE_INSTANCE_URL is not set" \
            in everywhere.output


def test_sync_without_a_run_explains(runner, tmp_path):  # noqa: F811
    root = example_copy(tmp_path)
    result = cdp(runner, "sync", env={"CDP_PROJECT": str(root)})
    assert result.exit_code == 1
    assert "no audiences computed yet" in result.output and "cdp run" in result.output


def test_one_sync_call_sends_churn_risk_to_every_destination(runner, example):  # noqa: F811
    from tests.fakes.intercom import FakeIntercom
    from tests.fakes.salesforce import FakeSalesforce

    root, events = example
    with FakeBraze() as braze, FakeSlack() as slack, FakeIntercom() as intercom, FakeSalesforce() as salesforce:
        env = {"CDP_PROJECT": str(root), "CDP_AS_OF": "2026-11-01",
               "BRAZE_REST_ENDPOINT": braze.url, "BRAZE_API_KEY": braze.api_key,
               "SLACK_WEBHOOK_URL": slack.webhook_url,
               "INTERCOM_BASE_URL": intercom.url, "INTERCOM_TOKEN": intercom.token,
               "SALESFORCE_INSTANCE_URL": salesforce.url, "SALESFORCE_CLIENT_ID": salesforce.client_id,
               "SALESFORCE_CLIENT_SECRET": salesforce.client_secret}
        assert cdp(runner, "load", events, env=env).exit_code == 0
        assert cdp(runner, "run", env=env).exit_code == 0
        result = cdp(runner, "sync", "churn_risk", env=env)
        assert result.exit_code == 0, result.output
        in_braze = {u.external_id for u in braze.users.values() if u.attributes.get("churn_risk") is True}
        in_intercom = intercom.tagged("Churn Risk")
        in_salesforce = {r["External_Id__c"] for r in salesforce.records("Contact").values() if r.get("Churn_Risk__c")}
        assert in_braze and in_braze == in_intercom == in_salesforce
        assert any(m["text"].startswith("*") and "entered" in m["text"] for m in slack.messages)
