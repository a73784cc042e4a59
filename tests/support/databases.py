"""A service's migrated database as the integration tests drive it: the engine, the sessions its
unit of work opens and the clock that unit of work reads, with the queries every suite asks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from evolutivo_runtime.clock import FixedClock
from evolutivo_runtime.db import create_engine, plain_url, session_factory
from evolutivo_runtime.security.audit import audit_log
from sqlalchemy import MetaData, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

# The `migrated_database` fixture: (prefix, migrations folder) -> URL of a database migrated to head.
MigratedDatabase = Callable[[str, Path], Awaitable[str]]
# The `empty_database` fixture: prefix -> URL of a database with no tables (for migration tests).
EmptyDatabase = Callable[[str], Awaitable[str]]


@dataclass
class ServiceDb:
    """Subclassed per suite with the service's `uow()` and the suite's own queries."""

    url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    clock: FixedClock

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, now: datetime, pool_size: int = 5) -> AsyncIterator[Self]:
        """The database at `url` with the clock fixed at `now`; the engine is disposed on exit
        (before the fixture that made the database drops it)."""
        engine = create_engine(url, pool_size=pool_size)
        try:
            yield cls(url, engine, session_factory(engine), FixedClock(now))
        finally:
            await engine.dispose()

    async def scalar(self, query: Any) -> Any:
        async with self.engine.connect() as conn:
            return await conn.scalar(query)

    async def count(self, table: Any) -> int:
        return int(await self.scalar(select(func.count()).select_from(table)) or 0)

    async def rows(self, query: Any) -> list[Any]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).all())

    async def schema_diff(self, metadata: MetaData) -> list[Any]:
        return await schema_diff(self.engine, metadata)


async def schema_diff(engine: AsyncEngine, metadata: MetaData) -> list[Any]:
    """What the migrated schema lacks or has beyond `metadata` (the tables the code uses) and the
    runtime's audit log, which every service's migrations create but no service's model holds."""
    expected = MetaData()
    for table in (*metadata.tables.values(), audit_log):
        table.to_metadata(expected)

    def diff(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, expected))

    async with engine.connect() as conn:
        return await conn.run_sync(diff)


async def drop_databases(server_url: str, names: Iterable[str]) -> None:
    """Drops the named databases, closing whatever connections are still open on them."""
    conn = await asyncpg.connect(plain_url(server_url))
    try:
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
