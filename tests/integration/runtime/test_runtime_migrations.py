"""migrations.create_messaging_tables (frozen migration 0001 body) builds the same tables as
messaging.tables.messaging_tables, which the services' code uses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from evolutivo_runtime.db import create_engine
from evolutivo_runtime.messaging.tables import messaging_tables
from evolutivo_runtime.migrations import create_messaging_tables
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
