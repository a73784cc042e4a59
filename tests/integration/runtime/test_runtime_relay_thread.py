"""RelayThread: the outbox relay on its own thread, event loop, engine and NATS connection."""

from __future__ import annotations

import asyncio
import threading

import uvloop
from evolutivo_runtime.messaging.tables import messaging_tables
from evolutivo_runtime.server.relay_thread import RelayThread
from evolutivo_runtime.settings import ServiceSettings
from nats.js import JetStreamContext
from runtime_helpers import MessagingDb, ServiceStream, eventually  # type: ignore[import-not-found,unused-ignore]
from sqlalchemy import MetaData
from test_runtime_relay import commit_events, stream_event_ids  # type: ignore[import-not-found,unused-ignore]


def _settings(db: MessagingDb, nats_url: str) -> ServiceSettings:
    return ServiceSettings(database_url=db.url, nats_url=nats_url, outbox_poll_seconds=5.0)


def _relay_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "rt-outbox-relay"]


async def test_publishes_commits_woken_by_notify_and_drains_at_stop(
    messaging_db: MessagingDb, js: JetStreamContext, service_stream: ServiceStream, nats_url: str
) -> None:
    db = messaging_db
    relay = RelayThread("rt", _settings(db, nats_url), db.outbox)
    relay.start()
    try:
        first = await commit_events(db, service_stream, ["a", "b"])
        # Well inside the 5 s poll: the commit's NOTIFY woke the relay on its own loop.
        await eventually(lambda: _published(js, service_stream, 2), within=4.0, what="the relay thread's publishes")
        assert await stream_event_ids(js, service_stream) == [str(i) for i in first]
        assert await db.count(db.outbox) == 0
        second = await commit_events(db, service_stream, ["c"])
    finally:
        relay.stop()
        await asyncio.wait_for(relay.join(), timeout=15)
    # Whatever was committed before the stop left before the thread ended.
    assert await stream_event_ids(js, service_stream) == [str(i) for i in first + second]
    assert await db.count(db.outbox) == 0
    assert _relay_threads() == []


async def test_stop_before_nats_answers_ends_the_thread(messaging_db: MessagingDb) -> None:
    # Nothing listens on port 1: the relay keeps retrying the connection until stopped.
    relay = RelayThread("rt", _settings(messaging_db, "nats://127.0.0.1:1"), messaging_db.outbox)
    relay.start()
    await asyncio.sleep(0.3)
    assert len(_relay_threads()) == 1
    relay.stop()
    await asyncio.wait_for(relay.join(), timeout=15)
    assert _relay_threads() == []


def test_runs_the_callers_kind_of_loop() -> None:
    """A service on uvloop (the default) gets a uvloop relay; one on asyncio's loop an asyncio one."""
    kinds: list[type] = []
    outbox, _ = messaging_tables(MetaData())

    async def main() -> None:
        relay = RelayThread("rt", ServiceSettings(), outbox)
        kinds.append(type(relay._loop_factory()))

    uvloop.run(main())
    asyncio.run(main())
    assert issubclass(kinds[0], uvloop.Loop)
    assert not issubclass(kinds[1], uvloop.Loop)


async def _published(js: JetStreamContext, stream: ServiceStream, count: int) -> bool:
    return await stream.messages(js) >= count
