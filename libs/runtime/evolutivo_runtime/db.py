"""Database engine for a service's own PostgreSQL database (SQLAlchemy 2 async on asyncpg)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def async_url(url: str) -> str:
    """Accepts plain postgresql:// URLs (as operators write them) and selects the asyncpg driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def plain_url(url: str) -> str:
    """The libpq form of a URL, for asyncpg.connect (LISTEN connections, admin tasks)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# A pooled connection idle longer than this is pinged before it is handed out (see create_engine).
PING_AFTER_IDLE_SECONDS = 1.0


def create_engine(url: str, pool_size: int = 10, server_settings: Mapping[str, str] | None = None) -> AsyncEngine:
    """The service's engine. Instead of SQLAlchemy's pre-ping on every checkout (for asyncpg a
    BEGIN, a ping and a ROLLBACK: three round trips before each unit of work, ~5% of a single
    call's CPU), only a connection that sat idle in the pool for over PING_AFTER_IDLE_SECONDS is
    pinged: one a restarted or failed-over PostgreSQL dropped meanwhile is replaced before use.
    A connection back in the pool within the second was just used successfully; should the server
    drop it in that second, its error invalidates it as any disconnect does.

    The pool hands out the connection returned last (LIFO): below full load the same few
    connections serve every unit of work, so they stay within that second (no ping) and keep their
    prepared statements warm, while the rest sit idle at the bottom (pinged if ever needed).

    `server_settings`: PostgreSQL settings of every connection (an engine for one task's queries)."""
    engine = create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_use_lifo=True,
        connect_args={"server_settings": dict(server_settings)} if server_settings else {},
    )
    dialect = engine.sync_engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info["checkin_time"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.get("checkin_time")
        if idle_since is None or time.monotonic() - idle_since <= PING_AFTER_IDLE_SECONDS:
            return  # new (just connected), or used a moment ago
        try:
            alive = dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                alive = False
            else:
                raise
        if not alive:
            # The pool discards this connection and checks out another (a new one if need be).
            raise DisconnectionError("pooled connection was closed by the server")

    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under `session`, inside its transaction: for a hot read of many rows,
    where SQLAlchemy's execution and row layers add a third to the cost of the rows themselves
    (asyncpg's own prepared-statement cache, its records as they are; docs/performance.md). For
    reads: what goes this way bypasses SQLAlchemy, so its errors are asyncpg's own (not
    DBAPIError; transient_errors reads both), the pool learns of a broken connection only at the
    session's next statement or its rollback, and no engine events fire. SQLAlchemy begins the
    transaction at the first statement, so one is sent first when none has been."""
    connection = await session.connection()
    driver: asyncpg.Connection = (await connection.get_raw_connection()).driver_connection
    if not driver.is_in_transaction():
        await connection.exec_driver_sql("SELECT 1")
    return driver
