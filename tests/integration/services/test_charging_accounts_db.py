"""Charging against a real, migrated database: its projection of customer's accounts, applied
through the runtime's consumer exactly once, and GetChargingAccount."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from evolutivo.charging.v1 import charging_account_pb2
from evolutivo.charging.v1 import charging_service_pb2 as pb
from evolutivo.charging.v1 import charging_service_pb2_grpc as pb_grpc
from evolutivo.customer.v1 import account_pb2
from evolutivo_charging.adapters import events
from evolutivo_charging.adapters.orm import charging_accounts, inbox, metadata, outbox
from evolutivo_charging.domain.model import ChargingAccountStatus
from evolutivo_charging.entrypoints.app import MIGRATIONS
from evolutivo_charging.entrypoints.consumers import subscriptions
from evolutivo_charging.entrypoints.grpc_api import ChargingServicer
from evolutivo_charging.service_layer import handlers
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork
from evolutivo_runtime.errors import InvalidArgument, NotFound
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.server.interceptors import ServiceInterceptor
from support.customer_messages import created_message
from support.databases import MigratedDatabase, ServiceDb
from support.jetstream import FakeMsg, consumer_for, process
from support.rpc import serving

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
# The servicers never read their gRPC context.
NO_CONTEXT: Any = None


class ChargingDb(ServiceDb):
    def uow(self) -> ChargingUnitOfWork:
        return ChargingUnitOfWork(self.sessions, outbox, self.clock, events.encode)


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[ChargingDb]:
    async with ChargingDb.open(await migrated_database("charging", MIGRATIONS), NOW) as database:
        yield database


def account_created(
    account_id: uuid.UUID | None = None,
    status: int = account_pb2.ACCOUNT_STATUS_ACTIVE,
    currency_code: str = "EUR",
) -> FakeMsg:
    account = account_pb2.Account(
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
    return created_message(account, NOW)


async def deliver(db: ChargingDb, *msgs: FakeMsg) -> None:
    """One fetched batch, applied as the service's consumer applies it."""
    await process(consumer_for(subscriptions(), stream_name("customer"), db.uow, inbox), *msgs)


async def test_migrations_create_exactly_the_tables_the_code_uses(db: ChargingDb) -> None:
    assert await db.schema_diff(metadata) == []


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
    redelivered = first.again()
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
    async with serving(
        pb_grpc.add_ChargingServiceServicer_to_server,
        ChargingServicer(db.uow),
        ServiceInterceptor("charging.evolutivo.io"),
    ) as channel:
        stub = pb_grpc.ChargingServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stub.GetChargingAccount(pb.GetChargingAccountRequest(account_id="x"))
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "account_id" in (invalid.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetChargingAccount(pb.GetChargingAccountRequest(account_id=str(uuid.uuid4())))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
