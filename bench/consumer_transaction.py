"""What one consumer transaction costs the consuming service: `python -m bench.consumer_transaction`.

The runtime's EventConsumer applies messages one fetch at a time; under single calls most fetches
hold one message, so this fixed cost is paid per event (docs/performance.md, "Ninth round"). The
measure drives `EventConsumer.process` with one message at a time against a real PostgreSQL (the
embedded one, or the server `DATABASE_URL` names) and a handler that writes one row, and reports the
consumer's CPU and wall time per message: the handler alone, and the handler publishing one event
(the outbox insert and the relay's wake-up). No broker is involved: the messages are stand-ins
that record their ack, as in the tests (tests/support/jetstream.py).

It imports the runtime of the interpreter that runs it, so running it with an older checkout's
virtual environment measures that checkout's consumer: the before and after of a change, on the
same machine in the same hour.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

from evolutivo_runtime.clock import SystemClock
from evolutivo_runtime.db import plain_url
from evolutivo_runtime.messaging import envelope
from evolutivo_runtime.messaging.consumer import EventConsumer, EventHandler, Subscription
from evolutivo_runtime.messaging.tables import messaging_tables
from evolutivo_runtime.uow import UnitOfWork
from evolutivo_stack.embedded import EmbeddedPostgres, create_database, external_or_embedded
from google.protobuf.wrappers_pb2 import StringValue
from nats.aio.msg import Msg
from sqlalchemy import Column, MetaData, Table, Text, insert
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

EVENT_TYPE = StringValue.DESCRIPTOR.full_name


class _Message:
    """A fetched JetStream message as the consumer reads it (headers, data, metadata, ack)."""

    def __init__(self, value: str) -> None:
        event_id = str(uuid.uuid4())
        self.data = StringValue(value=value).SerializeToString()
        self.subject = "evolutivo.bench.v1.thing.happened"
        self.headers = {
            envelope.EVENT_ID: event_id,
            envelope.MSG_ID: event_id,
            envelope.EVENT_TYPE: EVENT_TYPE,
            envelope.OCCURRED_AT: datetime.now(UTC).isoformat(),
        }
        self.metadata = SimpleNamespace(num_delivered=1, num_pending=0, sequence=SimpleNamespace(stream=1, consumer=1))
        self.acked = False

    async def ack(self) -> None:
        self.acked = True

    async def nak(self, delay: float | None = None) -> None:
        raise AssertionError("the handler does not fail")


async def measure(url: str, messages: int, rounds: int, publish: bool) -> list[tuple[float, float]]:
    """(CPU ms, wall ms) per lone message, per round."""
    metadata = MetaData()
    outbox, inbox = messaging_tables(metadata)
    items = Table("items", metadata, Column("id", Text, primary_key=True), Column("value", Text, nullable=False))
    engine = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://", 1))
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def handle(uow: UnitOfWork, message: StringValue, meta: envelope.EventMeta) -> None:
        await uow.session.execute(insert(items).values(id=str(meta.event_id), value=message.value))
        if publish:
            uow.publish("evolutivo.bench.v1.thing.followed", StringValue(value=message.value))

    subscription: Subscription[UnitOfWork] = Subscription(
        durable="bench",
        stream="BENCH",
        subjects=["evolutivo.bench.>"],
        handlers={EVENT_TYPE: EventHandler(StringValue, handle)},
    )
    consumer = EventConsumer(
        js=None,  # type: ignore[arg-type]  # process() never fetches
        subscription=subscription,
        uow_factory=lambda: UnitOfWork(sessions, outbox, SystemClock()),
        inbox=inbox,
        dead_letters=None,  # type: ignore[arg-type]  # nothing fails
        batch_size=10,
        max_deliver=5,
        ack_wait=30,
    )
    results = []
    try:
        for round_ in range(rounds + 1):  # the first round warms the pool and the statement caches
            batch = [_Message(f"v{round_}-{i}") for i in range(messages)]
            cpu, wall = time.process_time(), time.perf_counter()
            for message in batch:
                await consumer.process([cast(Msg, message)])
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            assert all(m.acked for m in batch)
            if round_:
                results.append((1000 * cpu / messages, 1000 * wall / messages))
    finally:
        await engine.dispose()
    return results


@contextmanager
def postgres_server() -> Iterator[str]:
    """A server URL: DATABASE_URL's server, or an embedded PostgreSQL for the run."""
    with external_or_embedded("DATABASE_URL", EmbeddedPostgres(), "bench-postgres") as url:
        yield plain_url(url)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.consumer_transaction", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1500, help="lone messages per round (default 1500)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds after a warm-up round (default 3)")
    args = parser.parse_args(argv)
    with postgres_server() as server_url:
        for publish in (False, True):
            database = asyncio.run(create_database(server_url, f"bench_consumer_{uuid.uuid4().hex[:8]}"))
            found: Any = asyncio.run(measure(database, args.messages, args.rounds, publish))
            what = "handler writes a row and publishes an event" if publish else "handler writes a row"
            figures = ", ".join(f"{cpu:.3f} ms CPU / {wall:.3f} ms wall" for cpu, wall in found)
            print(f"lone message, {what}: {figures} per message")


if __name__ == "__main__":
    main()
