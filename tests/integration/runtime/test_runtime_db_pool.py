"""The services' engine (evolutivo_runtime.db.create_engine) on a real PostgreSQL: a pooled
connection the server dropped while it sat idle is replaced before use (pinged at checkout once
idle for over PING_AFTER_IDLE_SECONDS), and a connection used a moment ago is handed out without
the ping's round trips."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from evolutivo_runtime import db
from evolutivo_runtime.db import create_engine, plain_url, session_factory
from evolutivo_runtime.server.relay_thread import RELAY_SERVER_SETTINGS
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from support.databases import EmptyDatabase


@pytest.fixture
async def engine_url(empty_database: EmptyDatabase) -> AsyncIterator[tuple[AsyncEngine, str]]:
    url = await empty_database("pool")
    engine = create_engine(url, pool_size=1)
    try:
        yield engine, url
    finally:
        await engine.dispose()


async def _backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _terminate(url: str, pid: int) -> None:
    admin = await asyncpg.connect(plain_url(url))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        # Wait until the server has really ended it.
        for _ in range(200):
            if not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
                return
            await admin.execute("SELECT pg_sleep(0.01)")
        raise AssertionError(f"backend {pid} still alive")
    finally:
        await admin.close()


async def test_an_idle_connection_the_server_dropped_is_replaced_before_use(
    engine_url: tuple[AsyncEngine, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, url = engine_url
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)  # every pooled connection counts as idle
    pid = await _backend_pid(engine)
    await _terminate(url, pid)

    # The pool's only connection is dead: the checkout ping finds it so and a new one serves.
    assert await _backend_pid(engine) != pid


async def test_a_connection_used_a_moment_ago_is_not_pinged(
    engine_url: tuple[AsyncEngine, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, url = engine_url
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600.0)  # nothing counts as idle
    pid = await _backend_pid(engine)
    await _terminate(url, pid)

    # Not pinged: the statement meets the dead connection, which is then discarded...
    with pytest.raises(DBAPIError) as failed:
        await _backend_pid(engine)
    assert failed.value.connection_invalidated
    # ...and the next unit of work gets a new one.
    assert await _backend_pid(engine) != pid


async def test_the_connection_returned_last_serves_the_next_unit_of_work(empty_database: EmptyDatabase) -> None:
    """LIFO: below full load the same connection serves one unit of work after another (no idle
    ping, its prepared statements warm); a FIFO pool would rotate through all three."""
    engine = create_engine(await empty_database("pool_lifo"), pool_size=3)
    try:
        async with engine.connect() as first, engine.connect() as second, engine.connect() as third:
            pids = [
                int((await c.execute(text("SELECT pg_backend_pid()"))).scalar_one()) for c in (first, second, third)
            ]
        assert len(set(pids)) == 3
        # Returned third, second, first: the first comes back each time.
        assert [await _backend_pid(engine) for _ in range(5)] == [pids[0]] * 5
    finally:
        await engine.dispose()


async def test_the_engine_s_connections_carry_its_server_settings(empty_database: EmptyDatabase) -> None:
    """The relay's engine turns sequential scans off (relay_thread.RELAY_SERVER_SETTINGS)."""
    url = await empty_database("settings")
    engine = create_engine(url, pool_size=1, server_settings=RELAY_SERVER_SETTINGS)
    plain = create_engine(url, pool_size=1)
    try:
        for each, expected in ((engine, "off"), (plain, "on")):
            async with each.connect() as conn:
                assert (await conn.execute(text("SHOW enable_seqscan"))).scalar_one() == expected
    finally:
        await engine.dispose()
        await plain.dispose()


@pytest.mark.parametrize("first", ["driver", "session"])
async def test_the_driver_connection_reads_inside_the_sessions_transaction(
    engine_url: tuple[AsyncEngine, str], first: str
) -> None:
    """db.driver_connection: asyncpg's connection under a session, in the session's transaction
    whether or not the session sent a statement before (SQLAlchemy begins lazily): it sees the
    session's uncommitted writes, and what it is asked to do goes when the session rolls back."""
    engine, _ = engine_url
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE notes (n int PRIMARY KEY)"))
    sessions = session_factory(engine)
    async with sessions() as session:
        if first == "session":
            await session.execute(text("INSERT INTO notes VALUES (1)"))
        driver = await db.driver_connection(session)
        assert driver.is_in_transaction()
        await driver.execute("INSERT INTO notes VALUES (2)")
        seen = sorted(await session.scalars(text("SELECT n FROM notes")))
        assert seen == ([1, 2] if first == "session" else [2])
        assert await driver.fetchval("SELECT count(*) FROM notes") == len(seen)
        await session.rollback()
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM notes"))).scalar_one() == 0


async def test_the_driver_connection_works_inside_a_savepoint(engine_url: tuple[AsyncEngine, str]) -> None:
    """Inside `begin_nested` (the bill run's pass): what it does goes with the savepoint, and the
    transaction goes on."""
    engine, _ = engine_url
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE notes (n int PRIMARY KEY)"))
    sessions = session_factory(engine)
    async with sessions() as session:
        await session.execute(text("INSERT INTO notes VALUES (1)"))
        savepoint = await session.begin_nested()
        driver = await db.driver_connection(session)
        await driver.execute("INSERT INTO notes VALUES (2)")
        assert await driver.fetchval("SELECT count(*) FROM notes") == 2
        await savepoint.rollback()
        assert sorted(await session.scalars(text("SELECT n FROM notes"))) == [1]
        await session.commit()
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT n FROM notes"))).scalars().all() == [1]
