"""Cron schedules (5 fields, UTC): checked at validate time, run by the orchestrator."""

from __future__ import annotations

import re

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
_NAMES = {
    "month": ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
    "day of week": ["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
}
_ITEM = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?$")


def check_cron(text: str) -> str:
    """Return ``text`` if it is a valid 5-field cron expression; raise ValueError otherwise."""
    fields = text.split()
    if len(fields) != len(_FIELDS):
        raise ValueError(f"bad schedule {text!r}: a cron expression has 5 fields (minute hour day month weekday)")
    for value, (name, low, high) in zip(fields, _FIELDS, strict=True):
        for item in value.lower().split(","):
            match = _ITEM.match(item)
            if not match or (match.group(2) is not None and int(match.group(2)) == 0):
                raise ValueError(f"bad schedule {text!r}: {item!r} is not a valid {name}")
            if match.group(1) == "*":
                continue
            for bound in match.group(1).split("-"):
                number = _number(bound, name)
                if number is None or not low <= number <= high:
                    raise ValueError(f"bad schedule {text!r}: {name} {bound!r} is outside {low}-{high}")
    return text


def _number(text: str, field: str) -> int | None:
    if text.isdigit():
        return int(text)
    names = _NAMES.get(field, [])
    if text in names:
        return names.index(text) + (1 if field == "month" else 0)
    return None
