"""Stateful fake vendor APIs (Braze, Slack) served over real HTTP on loopback, for testing
destinations through their real HTTP client. See ``server.py`` for the shared machinery."""

from __future__ import annotations

from .braze import BrazeUser, FakeBraze
from .server import FakeServer, Fault, RecordedRequest, Response
from .slack import FakeSlack

__all__ = [
    "BrazeUser",
    "FakeBraze",
    "FakeServer",
    "FakeSlack",
    "Fault",
    "RecordedRequest",
    "Response",
]
