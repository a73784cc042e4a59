"""Charging against a real, migrated database: its projection of customer's accounts, applied
through the runtime's consumer exactly once, and GetChargingAccount."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import asyncpg
import grpc
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from evolutivo.charging.v1 import charging_account_pb2
from evolutivo.charging.v1 import charging_service_pb2 as pb
from evolutivo.charging.v1 import charging_service_pb2_grpc as pb_grpc
from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_charging.adapters import events
from evolutivo_charging.adapters.orm import charging_accounts, inbox, metadata, outbox
from evolutivo_charging.domain.model import ChargingAccountStatus
from evolutivo_charging.entrypoints.app import MIGRATIONS
from evolutivo_charging.entrypoints.consumers import subscriptions
from evolutivo_charging.entrypoints.grpc_api import ChargingServicer
from evolutivo_charging.service_layer import handlers
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork
from evolutivo_runtime.clock import FixedClock
from evolutivo_runtime.db import create_engine, plain_url, session_factory
from evolutivo_runtime.errors import InvalidArgument, NotFound
from evolutivo_runtime.messaging import envelope
from evolutivo_runtime.messaging.consumer import EventConsumer
from evolutivo_runtime.migrations import upgrade_to_head
from evolutivo_runtime.server.interceptors import ServiceInterceptor
from nats.aio.msg import Msg
from sqlalchemy import func, select
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
# The servicers never read their gRPC context.
NO_CONTEXT: Any = None


@dataclass
class ChargingDb:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    clock: FixedClock

    def uow(self) -> ChargingUnitOfWork:
        return ChargingUnitOfWork(self.sessions, outbox, self.clock, events.encode)

    async def count(self, table: Any) -> int:
        async with self.engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


@pytest.fixture
async def db(new_database: Callable[[str], Awaitable[str]], pg_server_url: str) -> AsyncIterator[ChargingDb]:
    url = await new_database("charging")
    # alembic's env.py runs its own event loop: migrate from a thread.
    await asyncio.to_thread(upgrade_to_head, MIGRATIONS, url)
    engine = create_engine(url, pool_size=5)
    try:
        yield ChargingDb(engine, session_factory(engine), FixedClock(NOW))
    finally:
        await engine.dispose()
        conn = await asyncpg.connect(plain_url(pg_server_url))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
        finally:
            await conn.close()


# What the consumer receives from JetStream: a stand-in for nats.aio.msg.Msg.
@dataclass
class FakeMsg:
    data: bytes
    headers: dict[str, str]
    subject: str = "evolutivo.customer.v1.account.created"
    attempt: int = 1
    acked: bool = False
    naked: bool = False
    metadata: Any = field(init=False)

    def __post_init__(self) -> None:
        self.metadata = SimpleNamespace(
            num_delivered=self.attempt, num_pending=0, sequence=SimpleNamespace(stream=1, consumer=1)
        )

    async def ack(self) -> None:
        self.acked = True

    async def nak(self, delay: float | None = None) -> None:
        self.naked = True


def account_created(
    account_id: uuid.UUID | None = None,
    status: int = account_pb2.ACCOUNT_STATUS_ACTIVE,
    currency_code: str = "EUR",
) -> FakeMsg:
    event = customer_events.AccountCreated(
        account=account_pb2.Account(
            account_id=str(account_id or uuid.uuid4()),
            account_number="A-00000001",
            type=account_pb2.ACCOUNT_TYPE_INDIVIDUAL,
            display_name="Ana García",
            currency_code=currency_code,
            time_zone="Europe/Madrid",
            locale="es-ES",
            status=status,  # type: ignore[arg-type]
            billing_profile=account_pb2.BillingProfile(bill_cycle_day=1, payment_terms_days=30),
        )
    )
    event_id = uuid.uuid4()
    return FakeMsg(
        data=event.SerializeToString(),
        headers={
            envelope.MSG_ID: str(event_id),
            envelope.EVENT_ID: str(event_id),
            envelope.EVENT_TYPE: "evolutivo.customer.v1.AccountCreated",
            envelope.OCCURRED_AT: NOW.isoformat(),
        },
    )


def consumer(db: ChargingDb) -> EventConsumer[ChargingUnitOfWork]:
    subscription, _ = subscriptions()  # customer's stream
    return EventConsumer(
        js=None,  # type: ignore[arg-type]  # process() never touches JetStream
        subscription=subscription,
        uow_factory=db.uow,
        inbox=inbox,
        dead_letters=None,  # type: ignore[arg-type]  # nothing reaches max_deliver here
        batch_size=10,
        max_deliver=5,
        ack_wait=30,
    )


async def deliver(db: ChargingDb, *msgs: FakeMsg) -> None:
    """One fetched batch, applied as the service's consumer applies it."""
    await consumer(db).process(cast(list[Msg], list(msgs)))


async def test_migrations_create_exactly_the_tables_the_code_uses(db: ChargingDb) -> None:
    def diff(connection: Connection) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), metadata))

    async with db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_account_created_is_recorded_for_rating(db: ChargingDb) -> None:
    account_id = uuid.uuid4()
    msg = account_created(account_id)
    await deliver(db, msg)
    assert msg.acked
    async with db.uow() as uow:
        account = await uow.charging_accounts.get(account_id)
    assert account is not None
    assert (account.currency_code, account.time_zone) == ("EUR", "Europe/Madrid")
    assert account.status is ChargingAccountStatus.ACTIVE
    assert account.accepts_usage
    assert account.update_time == NOW
    assert await db.count(outbox) == 0  # charging publishes nothing yet


async def test_the_handler_applied_twice_keeps_the_first_record(db: ChargingDb) -> None:
    account_id = uuid.uuid4()
    first = account_created(account_id)
    await deliver(db, first)
    db.clock.advance(timedelta(hours=1))
    # A redelivery (same event id) and a second event for the account (new id, other data).
    redelivered = FakeMsg(first.data, dict(first.headers), attempt=2)
    other = account_created(account_id, currency_code="USD")
    await deliver(db, redelivered, other)
    assert redelivered.acked and other.acked
    assert await db.count(charging_accounts) == 1
    async with db.uow() as uow:
        account = await uow.charging_accounts.get(account_id)
    assert account is not None
    assert (account.currency_code, account.update_time) == ("EUR", NOW)
    assert await db.count(inbox) == 2


async def test_concurrent_handlers_for_one_account_make_one_record(db: ChargingDb) -> None:
    account_id = uuid.uuid4()

    async def apply() -> bool:
        async with db.uow() as uow:
            added = await handlers.learn_account(
                uow, account_id, "EUR", "UTC", ChargingAccountStatus.ACTIVE, uow.clock.now()
            )
            await uow.commit()
            return added

    assert sorted(await asyncio.gather(*(apply() for _ in range(8)))) == [False] * 7 + [True]
    assert await db.count(charging_accounts) == 1


async def test_a_broken_event_is_retried_and_does_not_block_the_batch(db: ChargingDb) -> None:
    good, broken = account_created(), account_created(status=account_pb2.ACCOUNT_STATUS_UNSPECIFIED)
    await deliver(db, broken, good)
    assert good.acked and broken.naked and not broken.acked
    assert await db.count(charging_accounts) == 1
    assert await db.count(inbox) == 1


async def test_get_charging_account(db: ChargingDb) -> None:
    account_id = uuid.uuid4()
    await deliver(db, account_created(account_id, status=account_pb2.ACCOUNT_STATUS_SUSPENDED))
    got = await ChargingServicer(db.uow).GetChargingAccount(
        pb.GetChargingAccountRequest(account_id=str(account_id)),
        NO_CONTEXT,
    )
    assert got.charging_account.account_id == str(account_id)
    assert got.charging_account.status == charging_account_pb2.CHARGING_ACCOUNT_STATUS_SUSPENDED
    assert got.charging_account.update_time.ToDatetime(tzinfo=UTC) == NOW


async def test_an_unknown_account_is_not_found(db: ChargingDb) -> None:
    with pytest.raises(NotFound) as missing:
        await ChargingServicer(db.uow).GetChargingAccount(
            pb.GetChargingAccountRequest(account_id=str(uuid.uuid4())),
            NO_CONTEXT,
        )
    assert missing.value.reason == "CHARGING_ACCOUNT_NOT_FOUND"


@pytest.mark.parametrize("account_id", ["", "not-a-uuid"])
async def test_a_bad_account_id_names_the_field(db: ChargingDb, account_id: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await ChargingServicer(db.uow).GetChargingAccount(
            pb.GetChargingAccountRequest(account_id=account_id),
            NO_CONTEXT,
        )
    assert refused.value.field == "account_id"


async def test_grpc_status_codes(db: ChargingDb) -> None:
    server = grpc.aio.server(interceptors=[ServiceInterceptor("charging.evolutivo.io")])
    pb_grpc.add_ChargingServiceServicer_to_server(ChargingServicer(db.uow), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ChargingServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as invalid:
                await stub.GetChargingAccount(pb.GetChargingAccountRequest(account_id="x"))
            assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "account_id" in (invalid.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.GetChargingAccount(pb.GetChargingAccountRequest(account_id=str(uuid.uuid4())))
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await server.stop(None)
