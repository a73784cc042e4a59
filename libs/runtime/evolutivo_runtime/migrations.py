"""Alembic plumbing shared by every service's migrations.

Each service keeps its own migrations (its package's `migrations/` folder); this module only runs
them: from the service's env.py, from `python -m evolutivo_<svc> migrate`, and to check readiness.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command, context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from evolutivo_runtime import transient_errors
from evolutivo_runtime.db import async_url

log = logging.getLogger(__name__)

# Serialises concurrent `migrate` runs against one database (two replicas or a retried Job).
MIGRATION_LOCK_KEY = 0x0E7010B1


def alembic_config(migrations_dir: Path, database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("sqlalchemy.url", async_url(database_url).replace("%", "%%"))
    return config


def run_env(target_metadata: sa.MetaData, settings_url: Callable[[], str]) -> None:
    """Body of every service's migrations/env.py (online mode only: we always have a database).

    The URL comes from the caller's config (`migrate` sets it) or, for the alembic command line,
    from the service's settings (e.g. CUSTOMER_DATABASE_URL)."""
    url = context.config.get_main_option("sqlalchemy.url") or async_url(settings_url())
    lock_timeout: float | None = context.config.attributes.get("lock_timeout")

    def migrate(connection: Connection) -> None:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            # Held until the migration transaction ends: a second runner waits, then finds head.
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
            if lock_timeout is not None:
                # After the advisory lock (a second runner may wait as long as the first one takes):
                # a table lock queued behind a long transaction stalls every query on that table
                # behind it, so a migration gives up (and is retried) rather than queue for long.
                connection.execute(
                    sa.select(sa.func.set_config("lock_timeout", f"{max(1, round(lock_timeout * 1000))}ms", True))
                )
            context.run_migrations()

    async def main() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                await connection.run_sync(migrate)
                await connection.commit()
        finally:
            await engine.dispose()  # a failed attempt too: `upgrade_to_head` may try again

    existing = context.config.attributes.get("connection")
    if existing is not None:
        migrate(existing)
    else:
        asyncio.run(main())


def upgrade_to_head(
    migrations_dir: Path,
    database_url: str,
    lock_timeout: float | None = None,
    attempts: int = 1,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Migrates to head. With `lock_timeout`, a migration that waits longer than that for a lock
    (an ALTER TABLE behind a long transaction) rolls back whole and is tried again, up to
    `attempts` times in all, 1, 2, 4... (at most 30) seconds apart; the last failure is raised."""
    config = alembic_config(migrations_dir, database_url)
    config.attributes["lock_timeout"] = lock_timeout
    for attempt in range(1, attempts + 1):
        try:
            command.upgrade(config, "head")
            return
        except Exception as error:
            if attempt == attempts or transient_errors.sqlstate(error) != transient_errors.LOCK_NOT_AVAILABLE:
                raise
            wait = float(min(2 ** (attempt - 1), 30))
            log.warning(
                "migration gave up waiting for a lock; trying again",
                extra={"attempt": attempt, "attempts": attempts, "retry_in_seconds": wait},
            )
            sleep(wait)


def head_revision(migrations_dir: Path) -> str | None:
    return ScriptDirectory.from_config(alembic_config(migrations_dir, "postgresql://localhost/x")).get_current_head()


async def is_migrated(engine: AsyncEngine, migrations_dir: Path) -> bool:
    """True when the database stands at the head revision of the service's migrations."""
    head = head_revision(migrations_dir)

    def current(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(current) == head


def create_messaging_tables(op: Any) -> None:  # alembic's `op` proxy module, typed loosely by alembic
    """The outbox and inbox as of migration 0001 of every service. Frozen: later changes to these
    tables go in new migrations of each service, never here."""
    op.create_table(
        "outbox",
        sa.Column("seq", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("event_id", sa.Uuid, nullable=False, unique=True),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("headers", postgresql.JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.Text, primary_key=True),
        sa.Column("event_id", sa.Uuid, primary_key=True),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
