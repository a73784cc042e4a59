"""Real PostgreSQL and NATS for every suite.

By default the tests start an embedded PostgreSQL and NATS (as a fresh machine has neither);
set EVOLUTIVO_TEST_DATABASE_URL (a server-level URL, e.g. postgresql://postgres@127.0.0.1:5432/postgres)
and EVOLUTIVO_TEST_NATS_URL to run against external servers instead.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from evolutivo_runtime.migrations import upgrade_to_head
from evolutivo_stack.embedded import EmbeddedNats, EmbeddedPostgres, create_database, external_or_embedded
from sqlalchemy.engine import make_url
from support.databases import EmptyDatabase, MigratedDatabase, drop_databases


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    with external_or_embedded("EVOLUTIVO_TEST_DATABASE_URL", EmbeddedPostgres(), "postgres") as url:
        yield url


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    with external_or_embedded("EVOLUTIVO_TEST_NATS_URL", EmbeddedNats(), "nats") as url:
        yield url


@pytest.fixture
def new_database(pg_server_url: str) -> Callable[[str], Awaitable[str]]:
    """Creates a database with a unique name (prefix + random suffix) and returns its URL."""

    async def make(prefix: str = "test") -> str:
        return await create_database(pg_server_url, f"{prefix}_{uuid.uuid4().hex[:12]}")

    return make


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture
async def empty_database(pg_server_url: str) -> AsyncIterator[EmptyDatabase]:
    """Creates a database (prefix + random suffix) with no tables and returns its URL, for tests that
    run a service's migrations step by step; every database made is dropped when the test ends."""
    made: list[str] = []

    async def make(prefix: str) -> str:
        url = await create_database(pg_server_url, f"{prefix}_{uuid.uuid4().hex[:12]}")
        made.append(url)
        return url

    yield make
    if made:
        await drop_databases(pg_server_url, [make_url(url).database or "" for url in made])


@pytest.fixture
def migrated_database(empty_database: EmptyDatabase) -> MigratedDatabase:
    """Creates a database (prefix + random suffix), migrates it to head with the given Alembic
    directory and returns its URL; every database made is dropped when the test ends."""

    async def make(prefix: str, migrations: Path) -> str:
        url = await empty_database(prefix)
        # alembic's env.py runs its own event loop: migrate from a thread.
        await asyncio.to_thread(upgrade_to_head, migrations, url)
        return url

    return make
