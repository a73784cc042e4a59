"""bench.consumer_transaction against a real PostgreSQL: it applies every lone message once (the
row its handler writes, and the event it publishes) and reports one figure per measured round."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from evolutivo_runtime.db import plain_url

from bench.consumer_transaction import measure


@pytest.mark.parametrize("publish", [False, True], ids=["writes", "writes-and-publishes"])
async def test_every_lone_message_is_applied_once_and_each_round_reported(
    new_database: Callable[[str], Awaitable[str]], publish: bool
) -> None:
    url = await new_database("bench_consumer")
    figures = await measure(url, messages=20, rounds=2, publish=publish)
    assert len(figures) == 2
    assert all(cpu > 0 and wall > 0 for cpu, wall in figures)
    conn = await asyncpg.connect(plain_url(url))
    try:
        # Three rounds of 20 (the first warms up): each message applied once, none skipped.
        assert await conn.fetchval("SELECT count(*) FROM items") == 60
        assert await conn.fetchval("SELECT count(*) FROM inbox") == 60
        assert await conn.fetchval("SELECT count(*) FROM outbox") == (60 if publish else 0)
    finally:
        await conn.close()
