"""Real PostgreSQL and NATS for every suite.

By default the tests start an embedded PostgreSQL and NATS (as a fresh machine has neither);
set EVOLUTIVO_TEST_DATABASE_URL (a server-level URL, e.g. postgresql://postgres@127.0.0.1:5432/postgres)
and EVOLUTIVO_TEST_NATS_URL to run against external servers instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from evolutivo_stack.embedded import EmbeddedNats, EmbeddedPostgres, create_database, scratch_dir


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    external = os.environ.get("EVOLUTIVO_TEST_DATABASE_URL")
    if external:
        yield external
        return
    with scratch_dir("postgres") as data_dir:
        server = EmbeddedPostgres()
        yield server.start(data_dir)
        server.stop()


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("EVOLUTIVO_TEST_NATS_URL")
    if external:
        yield external
        return
    server = EmbeddedNats()
    yield server.start(tmp_path_factory.mktemp("nats"))
    server.stop()


@pytest.fixture
def new_database(pg_server_url: str) -> Callable[[str], Awaitable[str]]:
    """Creates a database with a unique name (prefix + random suffix) and returns its URL."""

    async def make(prefix: str = "test") -> str:
        return await create_database(pg_server_url, f"{prefix}_{uuid.uuid4().hex[:12]}")

    return make


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
