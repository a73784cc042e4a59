"""Fixtures for the runtime library's integration tests: a fresh database holding the messaging
tables (plus a small state table), a NATS connection, and a stream with unique subjects per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import pytest
from evolutivo_runtime.db import create_engine, session_factory
from evolutivo_runtime.messaging.streams import declare_dlq_stream, declare_service_stream, stream_name
from evolutivo_runtime.messaging.tables import messaging_tables
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from runtime_helpers import DUPLICATE_WINDOW, MessagingDb, ServiceStream  # type: ignore[import-not-found,unused-ignore]
from sqlalchemy import Column, MetaData, Table, Text


@pytest.fixture
async def messaging_db(new_database: Callable[[str], Awaitable[str]]) -> AsyncIterator[MessagingDb]:
    url = await new_database("rt")
    metadata = MetaData()
    outbox, inbox = messaging_tables(metadata)
    items = Table(
        "items",
        metadata,
        Column("id", Text, primary_key=True),
        Column("value", Text, nullable=False),
    )
    engine = create_engine(url, pool_size=5)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        yield MessagingDb(url, engine, session_factory(engine), metadata, outbox, inbox, items)
    finally:
        await engine.dispose()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_url, connect_timeout=5)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def js(nc: NatsClient) -> JetStreamContext:
    return nc.jetstream(timeout=5)


@pytest.fixture
async def service_stream(js: JetStreamContext) -> AsyncIterator[ServiceStream]:
    """A stream of its own (EVOLUTIVO_T<hex> on evolutivo.t<hex>.>) and the shared DLQ stream."""
    service = f"t{uuid.uuid4().hex[:12]}"
    await declare_service_stream(js, service=service, replicas=1, duplicate_window=DUPLICATE_WINDOW)
    await declare_dlq_stream(js, replicas=1, duplicate_window=DUPLICATE_WINDOW)
    stream = ServiceStream(service, stream_name(service))
    try:
        yield stream
    finally:
        await js.delete_stream(stream.stream)
