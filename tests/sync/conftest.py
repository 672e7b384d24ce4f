"""A project whose audience syncs to fake Braze, Intercom, Salesforce and Slack servers on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from cdp_warehouse.sync.engine import SyncOutcome, jobs, sync
from tests.conftest import MINIMAL_CDP_YAML, Workspace
from tests.fakes import FakeBraze, FakeSlack
from tests.fakes.intercom import FakeIntercom
from tests.fakes.salesforce import FakeSalesforce

SYNC_CDP_YAML = MINIMAL_CDP_YAML + """\
destinations:
  braze:
    type: braze
    rest_endpoint: ${BRAZE_REST_ENDPOINT}
    api_key: ${BRAZE_API_KEY}
    timeout: 2
  salesforce:
    type: salesforce
    instance_url: ${SALESFORCE_INSTANCE_URL}
    client_id: ${SALESFORCE_CLIENT_ID}
    client_secret: ${SALESFORCE_CLIENT_SECRET}
    timeout: 3
  intercom:
    type: intercom
    base_url: ${INTERCOM_BASE_URL}
    access_token: ${INTERCOM_TOKEN}
    timeout: 5
  slack:
    type: slack
    webhook_url: ${SLACK_WEBHOOK_URL}
"""

# `active`: anyone with a report; mirrored to Braze with two mapped traits, reported to Slack.
ACTIVE = """
traits:
  - name: plan
    trait: {trait: plan}
  - name: reports
    count: {event: Report}
audiences:
  - name: active
    title: Active users
    where: "reports >= 1"
    sync:
      - to: braze
        mode: mirror
        membership: {attribute: active}
        fields: {plan: plan, reports: reports}
      - to: salesforce
        mode: "mirror"    # quoted, so that tests which rewrite Braze's mode leave it alone
        object: Contact
        match: {External_Id__c: user_id}
        fields: {LastName: user_id, Active__c: in_audience, Plan__c: plan, Reports__c: reports}
      - to: intercom
        mode: "mirror"    # quoted, like salesforce's
        membership: {tag: Active}
        fields: {plan: plan, reports: reports}
      - to: slack
        on: both
"""


@dataclass
class Synced:
    """A workspace plus the fakes its destinations point at."""

    ws: Workspace
    braze: FakeBraze
    slack: FakeSlack
    salesforce: FakeSalesforce
    intercom: FakeIntercom | None = None

    @property
    def environ(self) -> dict[str, str]:
        return {"BRAZE_REST_ENDPOINT": self.braze.url, "BRAZE_API_KEY": self.braze.api_key,
                "SLACK_WEBHOOK_URL": self.slack.webhook_url,
                "SALESFORCE_INSTANCE_URL": self.salesforce.url, "SALESFORCE_CLIENT_ID": self.salesforce.client_id,
                "SALESFORCE_CLIENT_SECRET": self.salesforce.client_secret,
                **({"INTERCOM_BASE_URL": self.intercom.url, "INTERCOM_TOKEN": self.intercom.token}
                   if self.intercom else {})}

    def sync(self, *audiences: str, to: tuple[str, ...] = (), **options) -> dict[str, SyncOutcome]:
        project = self.ws.project
        outcomes = sync(project, self.ws.warehouse, jobs(project, audiences, to), environ=self.environ, **options)
        return {o.destination: o for o in outcomes}

    def state(self, destination: str = "braze") -> dict[str, tuple]:
        rows = self.ws.query("SELECT row_key, member, payload FROM cdp.sync_state WHERE destination = ?", destination)
        return {key: (member, payload) for key, member, payload in rows}

    def rejections(self) -> dict[str, tuple]:
        rows = self.ws.query("SELECT row_key, reason, attempts FROM cdp.sync_rejections")
        return {key: (reason, attempts) for key, reason, attempts in rows}


@pytest.fixture
def synced(workspace) -> Iterator:
    """``synced(audiences_yaml=ACTIVE, braze=FakeBraze(...))`` → Synced, fakes started."""
    started: list = []

    def make(audiences_yaml: str = ACTIVE, braze: FakeBraze | None = None, slack: FakeSlack | None = None,
             salesforce: FakeSalesforce | None = None, intercom: FakeIntercom | None = None) -> Synced:
        fakes = (braze or FakeBraze()).start(), (slack or FakeSlack()).start()
        sf = (salesforce or FakeSalesforce()).start()
        ic = (intercom or FakeIntercom()).start()
        started.extend((*fakes, sf, ic))
        return Synced(workspace(audiences_yaml, SYNC_CDP_YAML), *fakes, salesforce=sf, intercom=ic)

    yield make
    for fake in started:
        fake.stop()


def sync_entry_problem(tmp_path, entry: str, cdp_yaml: str, key: str, *, plan_trait: bool = False):
    """``(yaml, problem)``: the one problem `cdp validate` reports at
    ``audiences[0].sync[0].<key>`` for an audience synced with ``entry`` (YAML lines), and the
    audiences YAML it was found in (to look lines up)."""
    from tests.specs.test_validation import one, problems

    traits = """\
        traits:
          - name: plan
            trait: {trait: plan}
""" if plan_trait else ""
    indented = entry.replace("\n", "\n" + " " * 14)
    yaml = traits + f"""\
        audiences:
          - name: everyone
            where: user_id IS NOT NULL
            sync:
              {indented}
        """
    return yaml, one(problems(tmp_path, yaml, cdp_yaml), f"audiences[0].sync[0].{key}")
