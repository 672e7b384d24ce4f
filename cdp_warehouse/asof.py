"""The as-of instant of a computation and the windows relative to it (spec section 2)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from cdp_warehouse.errors import CdpError

_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_WINDOW = re.compile(r"^\s*(\d+)\s*([mhdw])\s*(?:\.\.\s*(\d+)\s*([mhdw])\s*)?$")


@dataclass(frozen=True)
class Window:
    """``as_of - start <= timestamp < as_of - end`` (``end`` is zero for ``'30d'``)."""

    start: timedelta
    end: timedelta
    text: str


def parse_window(text: str | int) -> Window:
    """Parse ``'30d'`` or ``'60d..30d'``; raises ValueError with a readable reason."""
    raw = str(text)
    match = _WINDOW.match(raw)
    if not match:
        raise ValueError(
            f"bad window {raw!r}: write a number and a unit (m, h, d, w) like '30d', "
            "or a range like '60d..30d'"
        )
    start = int(match.group(1)) * _UNITS[match.group(2)]
    end = int(match.group(3)) * _UNITS[match.group(4)] if match.group(3) else timedelta(0)
    if start <= end:
        raise ValueError(f"bad window {raw!r}: the range must go from older to newer, like '60d..30d'")
    return Window(start=start, end=end, text=raw.strip())


def parse_as_of(text: str) -> datetime:
    """ISO 8601 instant (``Z``, an offset, or naive = UTC) or a date (midnight UTC) → aware UTC."""
    raw = text.strip()
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as error:
        raise CdpError(
            f"bad as-of {text!r}: {error}", hint="use ISO 8601, e.g. 2026-06-30T00:00:00Z or 2026-06-30"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def pinned_as_of(flag: str | None) -> datetime | None:
    """``--as-of`` if given, else ``$CDP_AS_OF``, else None (not pinned)."""
    text = flag or os.environ.get("CDP_AS_OF")
    return parse_as_of(text) if text else None


def resolve_as_of(flag: str | None) -> datetime:
    """The pinned as-of, else now; always UTC, microsecond precision."""
    return pinned_as_of(flag) or datetime.now(UTC)


def naive_utc(instant: datetime) -> datetime:
    """The naive UTC datetime the warehouse stores; a naive input is already UTC."""
    return instant if instant.tzinfo is None else instant.astimezone(UTC).replace(tzinfo=None)
