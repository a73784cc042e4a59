"""Helpers shared by the runtime library's integration tests (imported by conftest and the tests).

A uniquely named module, not conftest, so that `from ... import` never resolves to another conftest."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from evolutivo_runtime.messaging import envelope
from nats.js import JetStreamContext
from sqlalchemy import MetaData, Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

DUPLICATE_WINDOW = 120.0


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float, what: str = "condition", interval: float = 0.05
) -> float:
    """Polls `check` until it is true; fails the test after `within` seconds. Returns the wait."""
    started = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - started
        if time.monotonic() - started > within:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class MessagingDb:
    url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    metadata: MetaData
    outbox: Table
    inbox: Table
    items: Table  # a service's own state

    async def count(self, table: Table) -> int:
        async with self.engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


@dataclass
class ServiceStream:
    service: str
    stream: str

    def subject(self, suffix: str = "v1.thing.happened") -> str:
        return f"evolutivo.{self.service}.{suffix}"

    @property
    def all_subjects(self) -> str:
        return f"evolutivo.{self.service}.>"

    async def messages(self, js: JetStreamContext) -> int:
        return int((await js.stream_info(self.stream)).state.messages)


def event_headers(
    event_id: uuid.UUID, event_type: str, msg_id: str | None = None, occurred_at: datetime | None = None
) -> dict[str, str]:
    """The headers an upstream relay sends with an event (see OutgoingEvent.headers)."""
    return {
        envelope.MSG_ID: msg_id or str(event_id),
        envelope.EVENT_ID: str(event_id),
        envelope.EVENT_TYPE: event_type,
        envelope.OCCURRED_AT: (occurred_at or datetime.now(UTC)).isoformat(),
    }
