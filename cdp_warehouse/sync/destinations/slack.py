"""Slack: one message per (audience, destination) run to an incoming webhook, naming who
entered (and/or exited), capped with "and N more"; nothing is posted when nobody did."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from cdp_warehouse.errors import CdpError
from cdp_warehouse.specs import ResolvedProject
from cdp_warehouse.specs.models import SyncSpec
from cdp_warehouse.sync.changes import Change, FatalError, RowResult
from cdp_warehouse.sync.destinations.base import Destination, Request, accepted
from cdp_warehouse.sync.http import HttpClient, RetryPolicy

NAMES_SHOWN = 20


class Slack(Destination):
    type = "slack"
    modes = frozenset({"upsert"})  # it reports who entered/exited (`on:`); it removes nothing
    always_removals = True
    one_request_per_run = True

    @classmethod
    def check(cls, sync: SyncSpec) -> list[tuple[tuple[str, ...], str]]:
        problems = super().check(sync)
        if problems:
            problems = [(("mode",), "slack posts who entered or exited; choose it with `on: entered | exited | both`, "
                                    "not `mode`")]
        for key in ("membership", "object", "match"):
            if getattr(sync, key) is not None:
                problems.append(((key,), f"`{key}` does not apply to slack"))
        if sync.fields:
            problems.append((("fields",), "`fields` does not apply to slack"))
        return problems

    def connect(self) -> HttpClient:
        parts = urlsplit(self.settings.base_url or self.settings.webhook_url)
        # one message per run: no concurrency; Slack allows about one message a second
        return HttpClient(f"{parts.scheme}://{parts.netloc}", concurrency=1,
                          policy=RetryPolicy(timeout=self.settings.timeout))

    def batch_size(self, total: int) -> int:
        return max(total, 1)

    def requests(self, rows: Sequence[Change]) -> list[Request]:
        on = self.context.sync.on
        entered = [row for row in rows if row.kind == "added"] if on in ("entered", "both") else []
        exited = [row for row in rows if row.kind == "removed"] if on in ("exited", "both") else []
        if not entered and not exited:
            return [Request("POST", "", None, tuple(rows))]  # state only: nothing to say
        lines = [f"*{self.context.title}*"]
        for verb, group in (("entered", entered), ("exited", exited)):
            if group:
                names = [_name(row) for row in sorted(group, key=_name)]
                shown = ", ".join(names[:NAMES_SHOWN])
                more = f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else ""
                lines.append(f"{len(names)} {verb}: {shown}{more}")
        text = "\n".join(lines)
        body = {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}
        path = urlsplit(self.settings.webhook_url).path
        return [Request("POST", path, body, tuple(rows))]

    def send(self, request: Request) -> list[RowResult]:
        if request.body is None:
            return accepted(request.rows)
        response = self.http.request(request.method, request.url, json=request.body)
        if response.status_code != 200:
            # Slack's errors are plain text: invalid_payload, channel_not_found, ...
            raise FatalError(f"slack answered {response.status_code}: {response.text[:200]}",
                             hint="check the webhook URL (SLACK_WEBHOOK_URL) and that its channel exists")
        return accepted(request.rows)


def _name(row: Change) -> str:
    return row.user_id or row.email or row.profile_id


def post_notice(project: ResolvedProject, text: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Post ``text`` to the project's first Slack destination (operational notices: failed
    syncs, new kinds of tracking-plan violations). Returns why it was not posted, or None."""
    from cdp_warehouse.sync.destinations import settings  # noqa: PLC0415 (the registry imports this module)

    name = next((name for name, spec in project.config.destinations.items() if spec.type == "slack"), None)
    if name is None:
        return "no slack destination in cdp.yaml"
    try:
        webhook = settings(project, name, os.environ if environ is None else environ).webhook_url
    except CdpError as error:
        return str(error)  # not configured in this environment
    parts = urlsplit(webhook)
    client = HttpClient(f"{parts.scheme}://{parts.netloc}", concurrency=1)
    try:
        response = client.request("POST", parts.path, json={"text": text})
    except CdpError as error:
        return str(error)
    finally:
        client.close()
    return None if response.status_code == 200 else f"slack answered {response.status_code}: {response.text[:200]}"
