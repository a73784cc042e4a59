"""migrations.create_messaging_tables (frozen migration 0001 body) builds the same tables as
messaging.tables.messaging_tables, which the services' code uses; `migrate` gives up on a lock it
waits too long for, and tries again."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from evolutivo_runtime import transient_errors
from evolutivo_runtime.db import create_engine, plain_url
from evolutivo_runtime.messaging.tables import messaging_tables
from evolutivo_runtime.migrations import create_messaging_tables, upgrade_to_head
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

COLUMNS = text(
    """
    SELECT table_name, ordinal_position, column_name, data_type, is_nullable, column_default,
           is_identity, identity_generation
    FROM information_schema.columns
    WHERE table_schema = 'public' AND table_name IN ('outbox', 'inbox')
    ORDER BY table_name, ordinal_position
    """
)
CONSTRAINTS = text(
    """
    SELECT c.conrelid::regclass::text AS table_name, c.conname, c.contype, pg_get_constraintdef(c.oid) AS definition
    FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
    WHERE n.nspname = 'public' AND c.conrelid::regclass::text IN ('outbox', 'inbox')
    ORDER BY 1, 2
    """
)
INDEXES = text(
    "SELECT tablename, indexname, indexdef FROM pg_indexes "
    "WHERE schemaname = 'public' AND tablename IN ('outbox', 'inbox') ORDER BY 1, 2"
)


async def describe(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    async with engine.connect() as conn:
        return {
            name: [tuple(row) for row in (await conn.execute(query)).all()]
            for name, query in (("columns", COLUMNS), ("constraints", CONSTRAINTS), ("indexes", INDEXES))
        }


def _migrate(connection: Connection) -> None:
    create_messaging_tables(Operations(MigrationContext.configure(connection)))


def _diff(connection: Connection) -> list[Any]:
    metadata = MetaData()
    messaging_tables(metadata)
    context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": True})
    return list(compare_metadata(context, metadata))


async def test_migration_matches_table_definitions(new_database: Callable[[str], Awaitable[str]]) -> None:
    migrated = create_engine(await new_database("mig"), pool_size=1)
    declared = create_engine(await new_database("decl"), pool_size=1)
    try:
        async with migrated.begin() as conn:
            await conn.run_sync(_migrate)
        metadata = MetaData()
        messaging_tables(metadata)
        async with declared.begin() as conn:
            await conn.run_sync(metadata.create_all)

        from_migration = await describe(migrated)
        from_metadata = await describe(declared)
        assert [c[2] for c in from_migration["columns"] if c[0] == "outbox"] == [
            "seq", "event_id", "subject", "event_type", "payload", "headers", "created_at",
        ]  # fmt: skip
        assert [c[2] for c in from_migration["columns"] if c[0] == "inbox"] == [
            "consumer", "event_id", "event_type", "applied_at",
        ]  # fmt: skip
        assert from_migration == from_metadata

        # Alembic's autogenerate finds nothing to change either.
        async with migrated.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await migrated.dispose()
        await declared.dispose()


# `migrate`'s lock timeout: a migration queued behind a long transaction gives up and is retried.

_ENV = """
import sqlalchemy as sa
from evolutivo_runtime.migrations import run_env

run_env(sa.MetaData(), lambda: "")
"""
_ADD_COLUMN = """
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("held", sa.Column("extra", sa.Text))


def downgrade() -> None:
    op.drop_column("held", "extra")
"""


def _migrations(directory: Path) -> Path:
    (directory / "versions").mkdir(parents=True)
    (directory / "env.py").write_text(_ENV)
    (directory / "versions" / "0001_add_column.py").write_text(_ADD_COLUMN)
    return directory


async def _columns(url: str) -> list[str]:
    conn = await asyncpg.connect(plain_url(url))
    try:
        rows = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'held' ORDER BY ordinal_position"
        )
        return [r["column_name"] for r in rows]
    finally:
        await conn.close()


@pytest.mark.parametrize("released_after_first_try", [True, False])
async def test_a_migration_blocked_by_a_long_transaction_gives_up_and_is_retried(
    new_database: Callable[[str], Awaitable[str]], tmp_path: Path, released_after_first_try: bool
) -> None:
    """A transaction reading the table keeps the migration's ALTER waiting: after the lock timeout
    the whole migration rolls back and, after a backoff, is tried again; it succeeds once the
    reader has finished, and its last failure is raised when it never does."""
    url = await new_database("miglock")
    holder = await asyncpg.connect(plain_url(url))
    await holder.execute("CREATE TABLE held (id int PRIMARY KEY)")
    reading = holder.transaction()
    await reading.start()
    await holder.fetch("SELECT * FROM held")  # ACCESS SHARE until the transaction ends
    loop = asyncio.get_running_loop()
    backing_off, go_on = asyncio.Event(), threading.Event()
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # in the migration's thread, between two attempts
        waits.append(seconds)
        loop.call_soon_threadsafe(backing_off.set)
        assert go_on.wait(30)

    migrating = asyncio.create_task(
        asyncio.to_thread(upgrade_to_head, _migrations(tmp_path / "m"), url, lock_timeout=0.2, attempts=2, sleep=sleep)
    )
    try:
        await asyncio.wait_for(backing_off.wait(), 30)
        assert await _columns(url) == ["id"], "the first attempt rolled back"
        if released_after_first_try:
            await reading.rollback()
        go_on.set()
        if released_after_first_try:
            await asyncio.wait_for(migrating, 30)
            assert await _columns(url) == ["id", "extra"]
        else:
            with pytest.raises(Exception) as failed:  # which one: asserted below
                await asyncio.wait_for(migrating, 30)
            assert transient_errors.sqlstate(failed.value) == transient_errors.LOCK_NOT_AVAILABLE
            assert await _columns(url) == ["id"]
        assert waits == [1.0]
    finally:
        go_on.set()
        await holder.close()
