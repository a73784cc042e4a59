"""Charging against a real, migrated database: customer's AccountStatusChanged applied through
the runtime's consumer, in any order and exactly once, and shown by GetChargingAccount."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from evolutivo.charging.v1 import charging_account_pb2
from evolutivo.charging.v1 import charging_service_pb2 as pb
from evolutivo.customer.v1 import account_pb2
from evolutivo_charging.adapters import events
from evolutivo_charging.adapters.orm import charging_accounts, inbox, outbox
from evolutivo_charging.domain.model import ChargingAccount, ChargingAccountStatus
from evolutivo_charging.entrypoints.app import MIGRATIONS
from evolutivo_charging.entrypoints.consumers import subscriptions
from evolutivo_charging.entrypoints.grpc_api import ChargingServicer
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork
from evolutivo_runtime.messaging.consumer import EventConsumer
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.timestamps import to_timestamp
from support.customer_messages import created_message, status_changed_message
from support.databases import MigratedDatabase, ServiceDb
from support.jetstream import FakeMsg, consumer_for, process

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
NO_CONTEXT: Any = None


class ChargingDb(ServiceDb):
    def uow(self) -> ChargingUnitOfWork:
        return ChargingUnitOfWork(self.sessions, outbox, self.clock, events.encode)

    async def account(self, account_id: uuid.UUID) -> ChargingAccount:
        async with self.uow() as uow:
            found = await uow.charging_accounts.get(account_id)
        assert found is not None
        return found


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[ChargingDb]:
    async with ChargingDb.open(await migrated_database("charging", MIGRATIONS), NOW, pool_size=10) as database:
        yield database


def customer_account(account_id: uuid.UUID, status: int = account_pb2.ACCOUNT_STATUS_ACTIVE) -> account_pb2.Account:
    return account_pb2.Account(
        account_id=str(account_id),
        account_number="A-00000042",
        type=account_pb2.ACCOUNT_TYPE_INDIVIDUAL,
        display_name="Ana García",
        currency_code="EUR",
        time_zone="Europe/Madrid",
        status=status,  # type: ignore[arg-type]
        billing_profile=account_pb2.BillingProfile(bill_cycle_day=1, payment_terms_days=30),
    )


def created(account_id: uuid.UUID) -> FakeMsg:
    return created_message(customer_account(account_id), NOW)


def status_changed(account_id: uuid.UUID, status: int, change_time: datetime | None) -> FakeMsg:
    account = customer_account(account_id, status)
    change = account_pb2.StatusChange(
        status=status,  # type: ignore[arg-type]
        reason="fraud check",
        actor=account_pb2.STATUS_ACTOR_FRAUD,
        change_time=to_timestamp(change_time),
    )
    account.last_status_change.CopyFrom(change)
    return status_changed_message(account, change, (change_time or NOW) + timedelta(milliseconds=5))


def consumer(db: ChargingDb) -> EventConsumer[ChargingUnitOfWork]:
    return consumer_for(subscriptions(), stream_name("customer"), db.uow, inbox)


async def deliver(db: ChargingDb, *msgs: FakeMsg) -> None:
    """One fetched batch, applied as the service's consumer applies it."""
    await process(consumer(db), *msgs)
    assert all(m.acked for m in msgs), "every event applies"


async def test_a_suspension_stops_usage_and_shows_in_get_charging_account(db: ChargingDb) -> None:
    account_id = uuid.uuid4()
    await deliver(db, created(account_id))
    db.clock.advance(timedelta(minutes=5))
    await deliver(db, status_changed(account_id, account_pb2.ACCOUNT_STATUS_SUSPENDED, NOW + timedelta(minutes=1)))
    account = await db.account(account_id)
    assert (account.status, account.accepts_usage) == (ChargingAccountStatus.SUSPENDED, False)
    assert account.status_change_time == NOW + timedelta(minutes=1)
    assert account.update_time == NOW + timedelta(minutes=5), "when charging learnt it"
    got = await ChargingServicer(db.uow).GetChargingAccount(
        pb.GetChargingAccountRequest(account_id=str(account_id)), NO_CONTEXT
    )
    assert got.charging_account.status == charging_account_pb2.CHARGING_ACCOUNT_STATUS_SUSPENDED
    assert got.charging_account.status_change_time.ToDatetime(tzinfo=UTC) == NOW + timedelta(minutes=1)
    assert await db.count(outbox) == 0


async def test_an_older_status_event_applied_later_changes_nothing(db: ChargingDb) -> None:
    account_id = uuid.uuid4()
    suspended = status_changed(account_id, account_pb2.ACCOUNT_STATUS_SUSPENDED, NOW + timedelta(minutes=1))
    reinstated = status_changed(account_id, account_pb2.ACCOUNT_STATUS_ACTIVE, NOW + timedelta(minutes=2))
    await deliver(db, created(account_id))
    await deliver(db, reinstated)
    await deliver(db, suspended)
    account = await db.account(account_id)
    assert (account.status, account.status_change_time) == (ChargingAccountStatus.ACTIVE, NOW + timedelta(minutes=2))
    # A redelivery is skipped by the inbox; a newer change still applies.
    await deliver(db, suspended.again())
    await deliver(db, status_changed(account_id, account_pb2.ACCOUNT_STATUS_CLOSED, NOW + timedelta(minutes=3)))
    assert (await db.account(account_id)).status is ChargingAccountStatus.CLOSED
    assert await db.count(inbox) == 4


async def test_concurrent_status_events_keep_the_newest(db: ChargingDb) -> None:
    account_id = uuid.uuid4()
    statuses = [account_pb2.ACCOUNT_STATUS_SUSPENDED, account_pb2.ACCOUNT_STATUS_ACTIVE] * 4
    msgs = [status_changed(account_id, s, NOW + timedelta(seconds=i + 1)) for i, s in enumerate(statuses)]
    # Replicas applying an account's events at once, before its AccountCreated: each in its own transaction.
    await asyncio.gather(*(process(consumer(db), m) for m in reversed(msgs)))
    assert all(m.acked for m in msgs)
    await deliver(db, created(account_id))
    assert await db.count(charging_accounts) == 1
    account = await db.account(account_id)
    assert (account.status, account.status_change_time) == (
        ChargingAccountStatus.ACTIVE,
        NOW + timedelta(seconds=len(msgs)),
    )


async def test_a_status_event_that_overtook_account_created_teaches_charging_the_account(db: ChargingDb) -> None:
    account_id = uuid.uuid4()
    await deliver(db, status_changed(account_id, account_pb2.ACCOUNT_STATUS_SUSPENDED, NOW + timedelta(minutes=1)))
    await deliver(db, created(account_id))
    account = await db.account(account_id)
    assert (account.currency_code, account.time_zone) == ("EUR", "Europe/Madrid")
    assert account.status is ChargingAccountStatus.SUSPENDED, "the later AccountCreated does not undo it"


async def test_a_status_event_without_a_change_time_is_ordered_by_when_it_occurred(db: ChargingDb) -> None:
    account_id = uuid.uuid4()
    await deliver(db, created(account_id))
    await deliver(db, status_changed(account_id, account_pb2.ACCOUNT_STATUS_CLOSED, None))
    account = await db.account(account_id)
    assert (account.status, account.status_change_time) == (
        ChargingAccountStatus.CLOSED,
        NOW + timedelta(milliseconds=5),
    )


async def test_a_broken_status_event_is_retried(db: ChargingDb) -> None:
    broken = status_changed(uuid.uuid4(), account_pb2.ACCOUNT_STATUS_UNSPECIFIED, NOW)
    await process(consumer(db), broken)
    assert broken.naked and not broken.acked
    assert await db.count(charging_accounts) == 0
    assert await db.count(inbox) == 0
