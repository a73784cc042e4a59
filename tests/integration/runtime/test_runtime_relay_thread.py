"""RelayThread: the outbox relay on its own thread, event loop, engine and NATS connection."""

from __future__ import annotations

import asyncio
import threading
import uuid

import uvloop
from evolutivo_runtime.messaging import envelope
from evolutivo_runtime.messaging.tables import messaging_tables
from evolutivo_runtime.server.relay_thread import RelayThread
from evolutivo_runtime.settings import ServiceSettings
from google.protobuf.wrappers_pb2 import StringValue
from nats.js import JetStreamContext
from runtime_helpers import MessagingDb, ServiceStream, eventually  # type: ignore[import-not-found,unused-ignore]
from sqlalchemy import MetaData, insert
from test_runtime_relay import commit_events, stream_event_ids  # type: ignore[import-not-found,unused-ignore]

# Far longer than any wait below: what is published in time was woken by a NOTIFY or drained at
# the stop, never found by the poll.
POLL_SECONDS = 60.0


def _settings(db: MessagingDb, nats_url: str) -> ServiceSettings:
    return ServiceSettings(database_url=db.url, nats_url=nats_url, outbox_poll_seconds=POLL_SECONDS)


def _relay_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "rt-outbox-relay"]


class Crashes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


async def test_a_commit_wakes_it_and_a_stop_drains_what_no_notify_announced(
    messaging_db: MessagingDb, js: JetStreamContext, service_stream: ServiceStream, nats_url: str
) -> None:
    db = messaging_db
    crashes = Crashes()
    relay = RelayThread("rt", _settings(db, nats_url), db.outbox, crashes)
    relay.start()
    try:
        assert await asyncio.to_thread(relay.connected.wait, 10), "the relay did not connect"
        # Published by its first pass or by the NOTIFY, whichever comes first...
        first = await commit_events(db, service_stream, ["a"])
        await eventually(lambda: _published(js, service_stream, 1), within=10.0, what="the first publish")
        # ...but these come after that pass: only the NOTIFY can wake it (the poll is a minute).
        first += await commit_events(db, service_stream, ["b"])
        await eventually(lambda: _published(js, service_stream, 2), within=10.0, what="the woken relay's publish")
        assert await stream_event_ids(js, service_stream) == [str(i) for i in first]
        await eventually(lambda: _outbox_empty(db), within=10.0, what="the published rows deleted")
        # A row no NOTIFY announces: only the drain at the stop publishes it (the poll is a minute).
        silent = uuid.uuid4()
        async with db.engine.begin() as conn:
            await conn.execute(
                insert(db.outbox).values(
                    event_id=silent,
                    subject=service_stream.subject(),
                    event_type="google.protobuf.StringValue",
                    payload=StringValue(value="c").SerializeToString(),
                    headers={envelope.MSG_ID: str(silent), envelope.EVENT_ID: str(silent)},
                )
            )
        await asyncio.sleep(0.5)  # a negative check: nothing wakes the relay for this row
        assert await service_stream.messages(js) == 2
    finally:
        relay.stop()
        assert await relay.join(timeout=15)
    assert await stream_event_ids(js, service_stream) == [str(i) for i in [*first, silent]]
    assert await db.count(db.outbox) == 0
    assert relay.error is None and crashes.count == 0
    assert _relay_threads() == []
    relay.stop()  # after the thread ended: nothing to wake, no error


async def test_stop_before_the_thread_starts_or_nats_answers(messaging_db: MessagingDb) -> None:
    # Nothing listens on port 1: the relay keeps retrying the connection until stopped.
    crashes = Crashes()
    relay = RelayThread("rt", _settings(messaging_db, "nats://127.0.0.1:1"), messaging_db.outbox, crashes)
    relay.start()
    await asyncio.sleep(0.3)
    assert len(_relay_threads()) == 1 and not relay.connected.is_set()
    relay.stop()
    assert await relay.join(timeout=15)
    assert relay.error is None and crashes.count == 0

    early = RelayThread("rt", _settings(messaging_db, "nats://127.0.0.1:1"), messaging_db.outbox, crashes)
    early.stop()
    early.start()
    assert await early.join(timeout=15)
    assert early.error is None and crashes.count == 0 and not early.connected.is_set()


async def test_a_thread_ending_on_an_error_is_reported(nats_url: str) -> None:
    """An error outside the relay's own retries (here: a database URL no engine can be made of)
    ends the thread, is kept, and calls on_crash, so the service stops instead of serving
    without a relay."""
    crashes = Crashes()
    outbox, _ = messaging_tables(MetaData())
    relay = RelayThread("rt", ServiceSettings(database_url="nosuchdriver://x", nats_url=nats_url), outbox, crashes)
    relay.start()
    assert await relay.join(timeout=15)
    assert relay.error is not None
    assert crashes.count == 1
    relay.stop()  # safe after the crash


def test_runs_the_callers_kind_of_loop() -> None:
    """A service on uvloop (the default) gets a uvloop relay; one on asyncio's loop an asyncio one."""
    kinds: list[type] = []
    outbox, _ = messaging_tables(MetaData())

    async def main() -> None:
        relay = RelayThread("rt", ServiceSettings(), outbox, Crashes())
        kinds.append(type(relay._loop_factory()))

    uvloop.run(main())
    asyncio.run(main())
    assert issubclass(kinds[0], uvloop.Loop)
    assert not issubclass(kinds[1], uvloop.Loop)


async def _published(js: JetStreamContext, stream: ServiceStream, count: int) -> bool:
    return await stream.messages(js) >= count


async def _outbox_empty(db: MessagingDb) -> bool:
    return await db.count(db.outbox) == 0
