"""bench.relay_pass against real PostgreSQL and JetStream: every committed event is published once
by its pass and leaves the outbox, and each measured round gives a figure."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from evolutivo_runtime.db import plain_url

from bench.relay_pass import measure


@pytest.mark.parametrize("events", [1, 5])
async def test_every_event_is_published_once_by_the_pass_after_its_commit(
    new_database: Callable[[str], Awaitable[str]], nats_url: str, events: int
) -> None:
    """One event per pass, or `--events N` committed together and published by one pass."""
    url = await new_database("bench_relay")
    # Asserts each pass published its events and the stream holds 30 * events messages.
    figures = await measure(url, nats_url, passes=10, rounds=2, events=events)
    assert len(figures) == 2 and all(cpu > 0 for cpu in figures)
    conn = await asyncpg.connect(plain_url(url))
    try:
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
    finally:
        await conn.close()
