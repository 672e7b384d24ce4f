"""One Segment-spec message (HTTP API camelCase, or landing-table snake_case) → a landing row.

The rules of spec section 1 live here so that every way in (``cdp load``, ``cdp serve``)
lands the same row for the same message.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

MESSAGE_TYPES = ("track", "identify", "page", "screen", "group", "alias")
MAX_MESSAGE_ID = 100


class InvalidMessage(ValueError):
    pass


def _field(message: dict[str, Any], camel: str, snake: str) -> Any:
    value = message.get(camel)
    return message.get(snake) if value is None else value


def parse_instant(value: Any, field: str) -> datetime | None:
    """ISO 8601 (offset honoured; naive = UTC) or a datetime → naive UTC, microseconds."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidMessage(f"{field} is not an ISO 8601 timestamp: {value!r}") from None
    else:
        raise InvalidMessage(f"{field} is not an ISO 8601 timestamp: {value!r}")
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value if value != "" else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise InvalidMessage(f"expected a string, got {type(value).__name__}")


def _json(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):  # already-serialised JSON (Parquet exports)
        try:
            value = json.loads(value)
        except ValueError:
            raise InvalidMessage(f"{field} is not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidMessage(f"{field} must be an object")
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def content_message_id(message: dict[str, Any]) -> str:
    """A stable id for a message without ``messageId``, so re-loading it stays idempotent."""
    canonical = json.dumps(message, sort_keys=True, separators=(",", ":"), default=str)
    return "cdp-" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def landing_row(message: dict[str, Any], *, source: str, now: datetime) -> dict[str, Any]:
    """The landing-table row of ``message``; raises InvalidMessage with the reason."""
    if not isinstance(message, dict):
        raise InvalidMessage("a message must be a JSON object")
    kind = message.get("type")
    if kind not in MESSAGE_TYPES:
        raise InvalidMessage(f"type must be one of {', '.join(MESSAGE_TYPES)} (got {kind!r})")
    try:
        user_id = _text(_field(message, "userId", "user_id"))
        anonymous_id = _text(_field(message, "anonymousId", "anonymous_id"))
        previous_id = _text(_field(message, "previousId", "previous_id"))
        group_id = _text(_field(message, "groupId", "group_id"))
        message_id = _text(_field(message, "messageId", "message_id"))
    except InvalidMessage as error:
        raise InvalidMessage(f"an identifier is not a string: {error}") from None
    if kind == "alias":
        if not user_id or not previous_id:
            raise InvalidMessage("an alias needs userId and previousId")
    elif not user_id and not anonymous_id:
        raise InvalidMessage("a message needs userId or anonymousId")
    event = _text(message.get("event"))
    if kind == "track" and not event:
        raise InvalidMessage("a track call needs event")
    if kind in ("page", "screen"):
        event = _text(message.get("name")) or event
    elif kind != "track":
        event = None
    if kind == "group" and not group_id:
        raise InvalidMessage("a group call needs groupId")
    if message_id is None:
        message_id = content_message_id(message)
    elif len(message_id) > MAX_MESSAGE_ID:
        raise InvalidMessage(f"messageId is longer than {MAX_MESSAGE_ID} characters")

    timestamp = parse_instant(_field(message, "timestamp", "timestamp"), "timestamp")
    sent_at = parse_instant(_field(message, "sentAt", "sent_at"), "sentAt")
    received_at = parse_instant(_field(message, "receivedAt", "received_at"), "receivedAt")
    if timestamp is not None and sent_at is not None and received_at is not None:
        # Device clocks drift: shift by how far the device's sentAt is from our receivedAt.
        timestamp = received_at - (sent_at - timestamp)
    stamped = received_at or now.astimezone(UTC).replace(tzinfo=None)
    if timestamp is None:
        timestamp = stamped

    properties = _json(message.get("properties"), "properties")
    if kind in ("page", "screen") and message.get("name") and properties is None:
        properties = json.dumps({"name": message.get("name")})
    return {
        "message_id": message_id,
        "type": kind,
        "event": event,
        "user_id": user_id,
        "anonymous_id": anonymous_id,
        "group_id": group_id,
        "previous_id": previous_id,
        "timestamp": timestamp,
        "received_at": stamped,
        "sent_at": sent_at,
        "properties": properties,
        "traits": _json(message.get("traits"), "traits"),
        "context": _json(message.get("context"), "context"),
        "source": source,
    }
