"""A fake Slack incoming webhook, over real HTTP.

Slack answers webhooks in plain text, not JSON: ``200 ok`` on success, else a short error
string with a status (Slack changelog 2016-05-17 "Improving error conditions for Incoming
Webhooks"): ``400 invalid_payload``, ``403 action_prohibited``, ``404 channel_not_found``,
``410 channel_is_archived``, ``500 rollup_error``. Posting faster than about one message per
second gets ``429`` with ``Retry-After`` (seconds).

The 404 for an unknown webhook path follows /work/shared/reference/destinations.md
(``channel_not_found``); a revoked or mistyped URL on the real Slack answers ``no_service``,
which ``FakeSlack(unknown_webhook_error="no_service")`` reproduces.

Example::

    with FakeSlack() as slack:
        httpx.post(slack.webhook_url, json={"text": "3 people entered churn_risk"})
        assert slack.messages[0]["text"].startswith("3 people")
"""

from __future__ import annotations

import copy
import json
import math
import time
from typing import Any
from urllib.parse import parse_qs

from .server import Body, FakeServer, RecordedRequest, Response

DEFAULT_WEBHOOK_PATH = "/services/T000/B000/XXXX"
MAX_BLOCKS = 50  # Block Kit: at most 50 blocks per message


class FakeSlack(FakeServer):
    """One Slack incoming webhook that keeps the messages it accepted.

    Args:
        path: The webhook's path; ``webhook_url`` is ``url + path``.
        rate_limit: Messages per second accepted before answering 429 (Slack allows about
            one); ``None`` never throttles.
        unknown_webhook_error: Body of the 404 for any other path.

    Attributes:
        webhook_url: The URL to configure as the destination's webhook.
        messages: Payloads accepted, in order (copies).
        throttled: How many 429s were answered (rate limiter and injected).
    """

    def __init__(
        self,
        path: str = DEFAULT_WEBHOOK_PATH,
        rate_limit: float | None = None,
        unknown_webhook_error: str = "channel_not_found",
    ) -> None:
        super().__init__()
        self.path = path
        self.rate_limit = rate_limit
        self.unknown_webhook_error = unknown_webhook_error
        self._messages: list[dict[str, Any]] = []
        self._next_allowed = 0.0  # monotonic time before which a message is throttled

    @property
    def webhook_url(self) -> str:
        return f"{self.url}{self.path}"

    @property
    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._messages)

    @property
    def throttled(self) -> int:
        return sum(1 for r in self.requests if r.status == 429)

    def fault_body(self, status: int) -> Body:
        known = {
            400: "invalid_payload",
            403: "action_prohibited",
            404: "channel_not_found",
            410: "channel_is_archived",
            429: "rate_limited",
            500: "rollup_error",
        }
        return known.get(status) or super().fault_body(status)

    def finalize(self, request: RecordedRequest, response: Response) -> None:
        # An injected 429 should look like Slack's, which always says when to come back.
        if response.status == 429:
            response.headers.setdefault("Retry-After", "1")

    def handle(self, request: RecordedRequest) -> Response:
        if request.path != self.path:
            return Response(404, self.unknown_webhook_error)
        if request.method != "POST":
            return Response(405, "invalid_method")
        payload = _payload(request)
        if payload is None:
            return Response(400, "invalid_payload")
        blocks = payload.get("blocks")
        if blocks is not None and not _valid_blocks(blocks):
            return Response(400, "invalid_blocks")
        with self._lock:
            wait = self._throttle()
            if wait is not None:
                return Response(429, "rate_limited", {"Retry-After": str(wait)})
            self._messages.append(copy.deepcopy(payload))
        return Response(200, "ok")

    def _throttle(self) -> int | None:
        """Seconds to wait (for Retry-After) when over the rate, else ``None`` and count it."""
        if self.rate_limit is None:
            return None
        now = time.monotonic()
        if now < self._next_allowed:
            return max(1, math.ceil(self._next_allowed - now))
        self._next_allowed = now + 1.0 / self.rate_limit
        return None


def _payload(request: RecordedRequest) -> dict[str, Any] | None:
    """The message a webhook request carries, or ``None`` when Slack could not use it.

    Webhooks take a JSON body or a form field ``payload=<json>``; a message needs non-empty
    ``text``, ``blocks`` or ``attachments``.
    """
    body = request.body
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        fields = parse_qs(request.raw.decode("utf-8", errors="replace"))
        body = _json_or_none(fields.get("payload", [""])[0])
    if not isinstance(body, dict):
        return None
    if not any(body.get(key) for key in ("text", "blocks", "attachments")):
        return None
    return body


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _valid_blocks(blocks: Any) -> bool:
    return (
        isinstance(blocks, list)
        and len(blocks) <= MAX_BLOCKS
        and all(isinstance(block, dict) and isinstance(block.get("type"), str) for block in blocks)
    )
