"""Rows each service's database wrote during a measure, by table, from PostgreSQL's own counters.

PostgreSQL's CPU per bill is the largest cost of the bill run, and most of it is row writes
(each insert, update and delete writes a tuple, its index entries and WAL). `pg_stat_user_tables`
counts them per table: read before and after, the difference says which tables a bill writes and
how often, which is where fewer writes would come from.

A backend reports its counters when it goes idle, at most once a second; one that went idle
sooner than that reports within 10 s (PostgreSQL 15's PGSTAT_IDLE_INTERVAL), so the reading after
a measure waits that long once the services are quiet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
from evolutivo_runtime.db import plain_url
from evolutivo_stack.stack import SERVICES, Stack

COUNTERS = """
SELECT relname, n_tup_ins + n_tup_upd + n_tup_del AS written
FROM pg_stat_user_tables
"""


async def _read(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        return {r["relname"]: r["written"] for r in await conn.fetch(COUNTERS)}
    finally:
        await conn.close()


async def reading(stack: Stack, services: Sequence[str] = SERVICES) -> dict[str, int]:
    """Rows written so far, by "service.table"."""
    found = await asyncio.gather(*(_read(plain_url(stack.database_url(s))) for s in services))
    return {f"{s}.{table}": n for s, tables in zip(services, found, strict=True) for table, n in tables.items()}


# PostgreSQL 15's PGSTAT_IDLE_INTERVAL (10 s), and a second to spare.
REPORTED_WITHIN_SECONDS = 11.0


async def settled_reading(stack: Stack) -> dict[str, int]:
    """`reading` once the (now idle) backends have reported what they wrote."""
    await asyncio.sleep(REPORTED_WITHIN_SECONDS)
    return await reading(stack)


def per_operation(before: dict[str, int], after: dict[str, int], operations: int) -> dict[str, float]:
    """Rows written per operation between the readings, by "service.table", largest first."""
    written = {k: (n - before.get(k, 0)) / max(operations, 1) for k, n in after.items() if n > before.get(k, 0)}
    return dict(sorted(written.items(), key=lambda kv: -kv[1]))


def by_service(per_table: dict[str, float]) -> dict[str, float]:
    """The per-table figures summed by service."""
    total: dict[str, float] = {}
    for key, n in per_table.items():
        service = key.split(".", 1)[0]
        total[service] = total.get(service, 0.0) + n
    return total
