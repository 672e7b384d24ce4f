"""A new kind of violation (event × type × path) is posted to Slack once, not per event."""

from __future__ import annotations

import textwrap

from cdp_warehouse.collect.loader import land_messages
from cdp_warehouse.specs import load_project
from tests.conftest import Workspace, write_project
from tests.fakes import FakeSlack, Fault
from tests.tracking.conftest import PLAN, cdp_yaml, payment

SLACK = "destinations:\n  slack:\n    type: slack\n    webhook_url: ${SLACK_WEBHOOK_URL}\n"


def workspace_with_slack(tmp_path) -> Workspace:
    root = write_project(tmp_path / "p", "traits: []\n", cdp_yaml() + SLACK)
    (root / "tracking_plan.yaml").write_text(textwrap.dedent(PLAN))
    return Workspace(load_project(root, environ={}))


def test_each_new_kind_is_posted_once(tmp_path, monkeypatch):
    ws = workspace_with_slack(tmp_path)
    with FakeSlack() as slack:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.webhook_url)
        land_messages(ws.project, ws.warehouse, [payment(f"m{i}", revenue="12", currency="USD") for i in range(5)])
        assert len(slack.messages) == 1
        text = slack.messages[0]["text"]
        assert "1 new kind(s)" in text and "Payment Processed — wrong_type at `properties.revenue`" in text

        # the same kind again: nothing; a new kind among old ones: one message naming only it
        land_messages(ws.project, ws.warehouse, [payment("m10", revenue="1", currency="USD"),
                                                 payment("m11", revenue=1, currency="GBP")])
        assert len(slack.messages) == 2
        assert "not_in_enum at `properties.currency`" in slack.messages[1]["text"]
        assert "revenue" not in slack.messages[1]["text"]
    ws.warehouse.close()


def test_an_alert_that_could_not_be_posted_is_posted_later(tmp_path, monkeypatch):
    ws = workspace_with_slack(tmp_path)
    monkeypatch.delenv("SLACK_WEBHOOK_URL", raising=False)
    land_messages(ws.project, ws.warehouse, [payment("m1", revenue="12", currency="USD")])  # no webhook: kept
    with FakeSlack() as slack:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.webhook_url)
        slack.inject(Fault(status=404, body="channel_not_found"))
        land_messages(ws.project, ws.warehouse, [payment("m2", revenue=1, currency="GBP")])  # Slack refuses
        assert slack.messages == []
        land_messages(ws.project, ws.warehouse, [payment("m3", revenue=1, currency="USD", extra=1)])
        assert len(slack.messages) == 1
        assert "3 new kind(s)" in slack.messages[0]["text"]
    assert ws.query("SELECT COUNT(*) FROM raw.tracking_plan_alerts WHERE alerted_at IS NULL") == [(0,)]
    ws.warehouse.close()


def test_array_positions_do_not_make_new_kinds(tmp_path, monkeypatch):
    plan = PLAN.replace("      coupon: {type: [string, null]}\n",
                        "      coupon: {type: [string, null]}\n      items:\n        type: array\n"
                        "        items: {type: object, properties: {sku: {type: string}}}\n")
    ws = workspace_with_slack(tmp_path)
    (ws.project.root / "tracking_plan.yaml").write_text(textwrap.dedent(plan))
    with FakeSlack() as slack:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.webhook_url)
        items = [{"sku": 1}, {"sku": 2}, {"sku": 3}]
        land_messages(ws.project, ws.warehouse, [payment("m1", revenue=1, currency="USD", items=items)])
        assert len(slack.messages) == 1 and "properties.items[].sku" in slack.messages[0]["text"]
    assert ws.query("SELECT COUNT(*) FROM raw.tracking_plan_alerts") == [(1,)]
    ws.warehouse.close()
