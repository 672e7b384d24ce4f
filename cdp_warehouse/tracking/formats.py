"""The string ``format`` checks of a tracking plan (the JSON Schema names).

Deliberately pragmatic, as tracking-plan tools are: they catch a name where an email belongs,
not every RFC corner case.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import date, datetime

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
# RFC 3339 date-time: a date, `T` (or a space, as many SDKs send), a time, an offset or Z.
_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]+$")


def _is_email(text: str) -> bool:
    return _EMAIL.match(text) is not None


def _is_date_time(text: str) -> bool:
    if _DATE_TIME.match(text) is None:
        return False
    try:  # the regex checks the shape; this rejects month 13 and friends
        datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    return True


def _is_date(text: str) -> bool:
    if len(text) != 10:
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _is_uri(text: str) -> bool:
    return _URI.match(text) is not None


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) in (32, 36)


FORMATS: dict[str, Callable[[str], bool]] = {
    "email": _is_email,
    "date-time": _is_date_time,
    "date": _is_date,
    "uri": _is_uri,
    "uuid": _is_uuid,
}
