"""What one outbox relay pass costs the publishing service: `python -m bench.relay_pass`.

Under single calls at low rates each commit wakes a pass of its own (docs/performance.md, "Ninth
round"), so its fixed cost is paid per event. The measure commits one event (`--events N`: N
events) through a unit of work, then times `OutboxRelay.publish_batch` publishing them (the leader
lock and the read, the publishes and their acks, the delete, the commit) against a real PostgreSQL
and JetStream: the embedded ones, or the servers `DATABASE_URL` and `NATS_URL` name. It reports the
relay's CPU per pass, and with N > 1 per event too (the bill run's full passes).

As bench.consumer_transaction, it imports the runtime of the interpreter that runs it: an older
checkout's virtual environment measures that checkout's relay.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import nats
from evolutivo_runtime.clock import SystemClock
from evolutivo_runtime.db import create_engine, session_factory
from evolutivo_runtime.messaging.relay import OutboxRelay
from evolutivo_runtime.messaging.tables import messaging_tables
from evolutivo_runtime.uow import UnitOfWork
from evolutivo_stack.embedded import EmbeddedNats, create_database, external_or_embedded
from google.protobuf.wrappers_pb2 import StringValue
from sqlalchemy import MetaData

from bench.consumer_transaction import postgres_server


async def measure(database_url: str, nats_url: str, passes: int, rounds: int, events: int = 1) -> list[float]:
    """CPU ms per pass of `events` rows, per round."""
    metadata = MetaData()
    outbox, _ = messaging_tables(metadata)
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    stream = f"BENCH_RELAY_{uuid.uuid4().hex[:8].upper()}"
    subject = f"evolutivo.bench{stream.lower()}.v1.thing.happened"
    await js.add_stream(name=stream, subjects=[subject])
    relay = OutboxRelay(engine, database_url, outbox, js, batch_size=max(100, events), poll_seconds=60)
    payload = StringValue(value="published")
    results = []
    try:
        for round_ in range(rounds + 1):  # the first round warms the pool and the statement caches
            cpu = 0.0
            for _ in range(passes):
                async with UnitOfWork(sessions, outbox, SystemClock()) as uow:
                    for _ in range(events):
                        uow.publish(subject, payload)
                    await uow.commit()
                started = time.process_time()
                published = await relay.publish_batch()
                cpu += time.process_time() - started
                assert published == events
            if round_:
                results.append(1000 * cpu / passes)
        info = await js.stream_info(stream)
        assert info.state.messages == passes * (rounds + 1) * events, "each event published once"
    finally:
        await js.delete_stream(stream)
        await nc.close()
        await engine.dispose()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.relay_pass", description=__doc__.split("\n\n")[0])
    parser.add_argument("--passes", type=int, default=500, help="passes per round (default 500)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds after a warm-up round (default 3)")
    parser.add_argument("--events", type=int, default=1, help="events committed together, then published by one pass")
    args = parser.parse_args(argv)
    if args.events < 1:
        parser.error("--events must be at least 1")
    with (
        postgres_server() as server_url,
        external_or_embedded("NATS_URL", EmbeddedNats(), "bench-nats") as nats_url,
    ):
        database = asyncio.run(create_database(server_url, f"bench_relay_{uuid.uuid4().hex[:8]}"))
        found = asyncio.run(measure(database, nats_url, args.passes, args.rounds, args.events))
        if args.events == 1:
            print("relay pass publishing one event: " + ", ".join(f"{cpu:.3f} ms CPU" for cpu in found) + " per pass")
        else:
            print(
                f"relay pass publishing {args.events} events: "
                + ", ".join(f"{cpu:.3f} ms CPU per pass ({1000 * cpu / args.events:.1f} us per event)" for cpu in found)
            )


if __name__ == "__main__":
    main()
