"""The raw ceilings of the servers the suite runs on, measured in the same run: what PostgreSQL and
JetStream do with no service in between. A figure of the suite is read against these."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import nats
from evolutivo_runtime.db import plain_url
from evolutivo_stack.embedded import create_database

from bench.common import Figure, closed_loop

PAYLOAD = b"\x0a\x24" + b"e" * 36 + b"\x12\x24" + b"a" * 36 + b"\x1a\x08api.call\x2a\x013"


async def postgres(server_url: str, seconds: float, concurrency: int, batch: int) -> list[Figure]:
    """Single-row INSERT commits/s (each its own transaction: one WAL fsync each, group commit
    aside), batched INSERT rows/s (executemany, `batch` rows per transaction) and COPY rows/s, into
    a table shaped like a charge (uuid, numeric, jsonb, timestamptz), in a scratch database."""
    url = await create_database(server_url, f"bench_{uuid.uuid4().hex[:8]}")
    pool = await asyncpg.create_pool(plain_url(url), min_size=concurrency, max_size=concurrency)
    assert pool is not None
    try:
        async with pool.acquire() as conn:
            await conn.execute(
                "CREATE TABLE bench_rows (id bigint PRIMARY KEY, account_id uuid NOT NULL, "
                "amount numeric(38, 9) NOT NULL, payload jsonb NOT NULL, created timestamptz NOT NULL)"
            )
        counter = iter(range(1, 10**12))

        def row() -> tuple[int, uuid.UUID, str, str, datetime]:
            return (next(counter), uuid.uuid4(), "0.0150", '{"tiers": []}', datetime.now(UTC))

        sql = "INSERT INTO bench_rows VALUES ($1, $2, $3::numeric, $4::jsonb, $5)"

        async def single_commit(_: int) -> int:
            async with pool.acquire() as conn:
                await conn.execute(sql, *row())  # autocommit: one commit per row
            return 1

        async def batched(_: int) -> int:
            async with pool.acquire() as conn, conn.transaction():
                await conn.executemany(sql, [row() for _ in range(batch)])
            return batch

        async def copied(_: int) -> int:
            rows = [row() for _ in range(batch)]
            async with pool.acquire() as conn, conn.transaction():
                await conn.copy_records_to_table(
                    "bench_rows", records=rows, columns=["id", "account_id", "amount", "payload", "created"]
                )
            return batch

        return [
            await closed_loop(
                seconds, concurrency, single_commit, "PostgreSQL single-row commits", "commits/s", "autocommit INSERT"
            ),
            await closed_loop(
                seconds, concurrency, batched, "PostgreSQL batched INSERT", "rows/s", f"executemany, {batch}/txn"
            ),
            await closed_loop(seconds, concurrency, copied, "PostgreSQL COPY", "rows/s", f"{batch} rows per COPY"),
        ]
    finally:
        await pool.close()
        conn = await asyncpg.connect(plain_url(server_url))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[-1]}" WITH (FORCE)')
        finally:
            await conn.close()


async def jetstream(nats_url: str, seconds: float, concurrency: int, in_flight: int) -> list[Figure]:
    """Publishes/s to a file-storage stream: each ack awaited before the next (sync, from
    `concurrency` publishers) and with up to `in_flight` acks pending (async, one publisher)."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream(publish_async_max_pending=in_flight)
    stream = f"BENCH_{uuid.uuid4().hex[:8].upper()}"
    subject = f"bench.{stream.lower()}"
    await js.add_stream(name=stream, subjects=[subject])
    try:

        async def sync_publish(seq: int) -> int:
            await js.publish(subject, PAYLOAD, headers={"Nats-Msg-Id": f"s{seq}"})
            return 1

        async def async_publish(seq: int) -> int:
            futures = [
                await js.publish_async(subject, PAYLOAD, headers={"Nats-Msg-Id": f"a{seq}-{i}"}) for i in range(1000)
            ]
            await asyncio.gather(*futures)
            return len(futures)

        return [
            await closed_loop(
                seconds, concurrency, sync_publish, "JetStream publish (sync)", "msgs/s", "each ack awaited"
            ),
            await closed_loop(
                seconds, 1, async_publish, "JetStream publish (async)", "msgs/s", f"<= {in_flight} acks in flight"
            ),
        ]
    finally:
        await js.delete_stream(stream)
        await nc.close()
