"""The shared `migrated_database` fixture: a database migrated to head, dropped when the test ends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
from evolutivo_balance.entrypoints.app import MIGRATIONS
from evolutivo_runtime.db import plain_url


async def test_database_is_migrated_to_head(migrated_database: Callable[[str, Path], Awaitable[str]]) -> None:
    url = await migrated_database("fixture", MIGRATIONS)
    conn = await asyncpg.connect(plain_url(url))
    try:
        version = await conn.fetchval("SELECT version_num FROM alembic_version")
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    finally:
        await conn.close()
    assert version
    assert {"outbox", "inbox", "ledger_entries"} <= tables
