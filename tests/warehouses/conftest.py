"""A PostgreSQL server for the warehouse tests: ``$CDP_TEST_POSTGRES_DSN`` (default: the role
and database `.ci/postgres.sh` creates). Unreachable → the tests are skipped, except where
``CDP_REQUIRE_POSTGRES=1`` (CI), where they fail."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

DEFAULT_DSN = "host=127.0.0.1 port=5432 user=cdp password=cdp dbname=cdp_test connect_timeout=3"


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    dsn = os.environ.get("CDP_TEST_POSTGRES_DSN", DEFAULT_DSN)
    try:
        psycopg.connect(dsn, autocommit=True).close()
    except psycopg.Error as error:
        reason = f"PostgreSQL not reachable ({str(error).strip().splitlines()[0]}); start it with `bash .ci/postgres.sh`"
        if os.environ.get("CDP_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return dsn


@pytest.fixture
def pg_schemas(postgres_dsn) -> Iterator[Callable[[str], str]]:
    """``pg_schemas("raw")`` → a fresh schema name (``raw_3f2a9c1b``), dropped after the test,
    so tests never see each other's tables and can run again and again."""
    names: list[str] = []

    def make(prefix: str) -> str:
        names.append(f"{prefix}_{uuid.uuid4().hex[:8]}")
        return names[-1]

    yield make
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        for name in names:
            connection.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def demo_halves(folder: Path, count: int, end: datetime) -> list[Path]:
    """The demo's events in two JSONL halves (a second load extends what the first landed)."""
    from cdp_warehouse.demo.generator import generate_events

    messages = list(generate_events(count, end=end))
    halves = [folder / "first.jsonl", folder / "second.jsonl"]
    for path, part in zip(halves, (messages[::2], messages[1::2]), strict=True):
        path.write_text("".join(json.dumps(m) + "\n" for m in part))
    return halves
