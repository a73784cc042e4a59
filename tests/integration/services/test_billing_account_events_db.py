"""Billing against a real, migrated database: customer's AccountStatusChanged and
BillingProfileChanged applied through the runtime's consumer (in any order, exactly once), the
0002 migration over existing bill units, and GetBillingSummary."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from alembic import command
from evolutivo.billing.v1 import bill_unit_pb2
from evolutivo.billing.v1 import billing_service_pb2 as pb
from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_billing.adapters import events
from evolutivo_billing.adapters.orm import inbox, outbox
from evolutivo_billing.domain.model import AccountStatus, BillingFrequency, BillingProfile, BillUnit
from evolutivo_billing.entrypoints.app import MIGRATIONS
from evolutivo_billing.entrypoints.consumers import subscriptions
from evolutivo_billing.entrypoints.grpc_api import BillingServicer
from evolutivo_billing.service_layer import handlers
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork
from evolutivo_runtime.db import plain_url
from evolutivo_runtime.errors import InvalidArgument, NotFound
from evolutivo_runtime.messaging.consumer import EventConsumer
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.migrations import alembic_config
from evolutivo_runtime.timestamps import to_timestamp
from support.billing import billing_stub
from support.customer_messages import created_message, status_changed_message
from support.databases import EmptyDatabase, MigratedDatabase, ServiceDb
from support.jetstream import FakeMsg, consumer_for, message, process

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
NO_CONTEXT: Any = None


class BillingDb(ServiceDb):
    def uow(self) -> BillingUnitOfWork:
        return BillingUnitOfWork(self.sessions, outbox, self.clock, events.encode)

    async def unit(self, account_id: uuid.UUID) -> BillUnit:
        async with self.uow() as uow:
            found = await uow.bill_units.for_account(account_id)
        assert found is not None
        return found


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[BillingDb]:
    async with BillingDb.open(await migrated_database("billing", MIGRATIONS), NOW, pool_size=10) as database:
        yield database


def customer_account(
    account_id: uuid.UUID, status: int = account_pb2.ACCOUNT_STATUS_ACTIVE, bill_cycle_day: int = 15
) -> account_pb2.Account:
    return account_pb2.Account(
        account_id=str(account_id),
        account_number="A-00000042",
        type=account_pb2.ACCOUNT_TYPE_BUSINESS,
        display_name="Acme Distribuciones SL",
        currency_code="EUR",
        time_zone="Europe/Madrid",
        status=status,  # type: ignore[arg-type]
        billing_profile=account_pb2.BillingProfile(
            bill_cycle_day=bill_cycle_day, frequency=account_pb2.BILLING_FREQUENCY_MONTHLY, payment_terms_days=30
        ),
    )


def created(account_id: uuid.UUID) -> FakeMsg:
    return created_message(customer_account(account_id), NOW)


def status_changed(account_id: uuid.UUID, status: int, change_time: datetime | None) -> FakeMsg:
    account = customer_account(account_id, status)
    change = account_pb2.StatusChange(
        status=status,  # type: ignore[arg-type]
        reason="unpaid",
        actor=account_pb2.STATUS_ACTOR_COLLECTIONS,
        change_time=to_timestamp(change_time),
    )
    account.last_status_change.CopyFrom(change)
    return status_changed_message(account, change, (change_time or NOW) + timedelta(milliseconds=5))


def profile_changed(account_id: uuid.UUID, new_day: int, change_time: datetime, previous_day: int = 15) -> FakeMsg:
    account = customer_account(account_id, bill_cycle_day=new_day)
    account.billing_profile.frequency = account_pb2.BILLING_FREQUENCY_QUARTERLY
    return message(
        "evolutivo.customer.v1.account.billing_profile_changed",
        customer_events.BillingProfileChanged(
            account=account,
            previous=account_pb2.BillingProfile(bill_cycle_day=previous_day, payment_terms_days=30),
            change_time=to_timestamp(change_time),
            effective_from_next_cycle=True,
        ),
        NOW,
    )


def consumer(db: BillingDb) -> EventConsumer[BillingUnitOfWork]:
    return consumer_for(subscriptions(), stream_name("customer"), db.uow, inbox)


async def deliver(db: BillingDb, *msgs: FakeMsg) -> None:
    """One fetched batch, applied as the service's consumer applies it."""
    await process(consumer(db), *msgs)
    assert all(m.acked for m in msgs), "every event applies"


# Account status.


async def test_a_status_change_reaches_the_bill_unit(db: BillingDb) -> None:
    account_id = uuid.uuid4()
    await deliver(db, created(account_id))
    await deliver(db, status_changed(account_id, account_pb2.ACCOUNT_STATUS_SUSPENDED, NOW + timedelta(minutes=1)))
    unit = await db.unit(account_id)
    assert unit.account_status is AccountStatus.SUSPENDED
    assert unit.account_status_change_time == NOW + timedelta(minutes=1)
    assert await db.count(outbox) == 2, "only BillUnitCreated and BillCycleOpened: a status change publishes nothing"


async def test_an_older_status_event_applied_later_changes_nothing(db: BillingDb) -> None:
    account_id = uuid.uuid4()
    suspended = status_changed(account_id, account_pb2.ACCOUNT_STATUS_SUSPENDED, NOW + timedelta(minutes=1))
    reinstated = status_changed(account_id, account_pb2.ACCOUNT_STATUS_ACTIVE, NOW + timedelta(minutes=2))
    closed = status_changed(account_id, account_pb2.ACCOUNT_STATUS_CLOSED, NOW + timedelta(minutes=3))
    await deliver(db, created(account_id))
    await deliver(db, reinstated, suspended)  # one batch, out of order
    unit = await db.unit(account_id)
    assert (unit.account_status, unit.account_status_change_time) == (AccountStatus.ACTIVE, NOW + timedelta(minutes=2))
    await deliver(db, closed)
    await deliver(db, suspended.again())
    assert (await db.unit(account_id)).account_status is AccountStatus.CLOSED


async def test_concurrent_status_events_keep_the_newest(db: BillingDb) -> None:
    account_id = uuid.uuid4()
    await deliver(db, created(account_id))
    statuses = [account_pb2.ACCOUNT_STATUS_SUSPENDED, account_pb2.ACCOUNT_STATUS_ACTIVE] * 4
    msgs = [status_changed(account_id, s, NOW + timedelta(seconds=i + 1)) for i, s in enumerate(statuses)]
    # Replicas applying an account's events at once: each in its own transaction.
    await asyncio.gather(*(process(consumer(db), m) for m in reversed(msgs)))
    unit = await db.unit(account_id)
    assert (unit.account_status, unit.account_status_change_time) == (
        AccountStatus.ACTIVE,
        NOW + timedelta(seconds=len(msgs)),
    )


async def test_a_status_event_without_a_change_time_is_ordered_by_when_it_occurred(db: BillingDb) -> None:
    account_id = uuid.uuid4()
    await deliver(db, created(account_id))
    await deliver(db, status_changed(account_id, account_pb2.ACCOUNT_STATUS_SUSPENDED, None))
    unit = await db.unit(account_id)
    assert (unit.account_status, unit.account_status_change_time) == (
        AccountStatus.SUSPENDED,
        NOW + timedelta(milliseconds=5),
    )


async def test_a_status_event_that_overtook_account_created_opens_the_unit(db: BillingDb) -> None:
    account_id = uuid.uuid4()
    await deliver(db, status_changed(account_id, account_pb2.ACCOUNT_STATUS_SUSPENDED, NOW + timedelta(minutes=1)))
    await deliver(db, created(account_id))
    unit = await db.unit(account_id)
    assert unit.account_status is AccountStatus.SUSPENDED
    assert (unit.currency_code, unit.time_zone, unit.profile.bill_cycle_day) == ("EUR", "Europe/Madrid", 15)
    assert await db.count(outbox) == 2, "one BillUnitCreated and BillCycleOpened, whichever event opened the unit"


async def test_a_broken_status_event_is_retried(db: BillingDb) -> None:
    account_id = uuid.uuid4()
    broken = status_changed(account_id, account_pb2.ACCOUNT_STATUS_UNSPECIFIED, NOW + timedelta(minutes=1))
    await process(consumer(db), broken)
    assert broken.naked and not broken.acked
    assert await db.count(inbox) == 0


# Billing profile changes.


async def test_a_profile_change_waits_as_pending(db: BillingDb) -> None:
    account_id = uuid.uuid4()
    await deliver(db, created(account_id))
    await deliver(db, profile_changed(account_id, 1, NOW + timedelta(days=1)))
    unit = await db.unit(account_id)
    assert unit.profile == BillingProfile(15, BillingFrequency.MONTHLY, 30), "the current cycle keeps its profile"
    assert unit.pending_profile == BillingProfile(1, BillingFrequency.QUARTERLY, 30)
    assert unit.profile_change_time == NOW + timedelta(days=1)
    # An older change applied after it changes nothing; a newer one replaces it.
    await deliver(db, profile_changed(account_id, 5, NOW + timedelta(hours=1)))
    assert (await db.unit(account_id)).pending_profile == BillingProfile(1, BillingFrequency.QUARTERLY, 30)
    await deliver(db, profile_changed(account_id, 9, NOW + timedelta(days=2)))
    assert (await db.unit(account_id)).pending_profile == BillingProfile(9, BillingFrequency.QUARTERLY, 30)


async def test_a_profile_event_that_overtook_account_created_opens_the_unit_on_the_previous_profile(
    db: BillingDb,
) -> None:
    account_id = uuid.uuid4()
    await deliver(db, profile_changed(account_id, 1, NOW + timedelta(days=1), previous_day=20))
    await deliver(db, created(account_id))
    unit = await db.unit(account_id)
    assert unit.profile == BillingProfile(20, BillingFrequency.MONTHLY, 30)
    assert unit.pending_profile == BillingProfile(1, BillingFrequency.QUARTERLY, 30)


async def test_the_stored_unit_round_trips_every_field(db: BillingDb) -> None:
    account_id = uuid.uuid4()
    async with db.uow() as uow:
        await handlers.open_bill_unit(uow, account_id, "EUR", "UTC", BillingProfile(3), NOW)
        await uow.commit()
    facts = handlers.AccountFacts(account_id, "EUR", "UTC", BillingProfile(3))
    async with db.uow() as uow:
        assert await handlers.record_account_status(uow, facts, AccountStatus.CLOSED, NOW + timedelta(hours=1))
        assert await handlers.schedule_profile_change(uow, facts, BillingProfile(7, BillingFrequency.ANNUAL, 0), NOW)
        await uow.commit()
    unit = await db.unit(account_id)
    assert unit.account_status is AccountStatus.CLOSED
    assert unit.pending_profile == BillingProfile(7, BillingFrequency.ANNUAL, 0)
    async with db.uow() as uow:
        locked = await uow.bill_units.for_account(account_id, for_update=True)
        assert locked is not None and locked.apply_pending_profile()
        await uow.bill_units.save(locked)
        await uow.commit()
    unit = await db.unit(account_id)
    assert (unit.profile, unit.pending_profile) == (BillingProfile(7, BillingFrequency.ANNUAL, 0), None)


# The 0002 migration over units opened before it.


async def test_migration_0002_keeps_existing_units_active_and_goes_back(empty_database: EmptyDatabase) -> None:
    url = await empty_database("billing")
    config = alembic_config(MIGRATIONS, url)
    await asyncio.to_thread(command.upgrade, config, "0001")
    conn = await asyncpg.connect(plain_url(url))
    try:
        await conn.execute(
            "insert into bill_units values ($1, $2, 'EUR', 'UTC', 5, 'monthly', 30, now())",
            uuid.uuid4(),
            uuid.uuid4(),
        )
        await asyncio.to_thread(command.upgrade, config, "head")
        row = await conn.fetchrow("select * from bill_units")
        assert row is not None
        assert (row["account_status"], row["account_status_change_time"], row["pending_bill_cycle_day"]) == (
            "active",
            None,
            None,
        )
        await asyncio.to_thread(command.downgrade, config, "0001")
        assert await conn.fetchval("select count(*) from bill_units") == 1
        await asyncio.to_thread(command.upgrade, config, "head")
    finally:
        await conn.close()


# GetBillingSummary.


async def test_the_summary_of_an_account_without_bills(db: BillingDb) -> None:
    account_id = uuid.uuid4()
    await deliver(db, created(account_id))
    await deliver(db, status_changed(account_id, account_pb2.ACCOUNT_STATUS_SUSPENDED, NOW + timedelta(minutes=1)))
    summary = await BillingServicer(db.uow).GetBillingSummary(
        pb.GetBillingSummaryRequest(account_id=str(account_id)), NO_CONTEXT
    )
    assert summary.bill_unit.account_id == str(account_id)
    assert summary.bill_unit.account_status == bill_unit_pb2.ACCOUNT_STATUS_SUSPENDED
    assert list(summary.open_bills) == []
    assert (summary.overdue_total.currency_code, summary.overdue_total.units, summary.overdue_total.nanos) == (
        "EUR",
        0,
        0,
    )
    assert summary.HasField("collections") and not summary.collections.in_collections


async def test_the_summary_of_an_unknown_account_is_not_found(db: BillingDb) -> None:
    with pytest.raises(NotFound) as missing:
        await BillingServicer(db.uow).GetBillingSummary(
            pb.GetBillingSummaryRequest(account_id=str(uuid.uuid4())), NO_CONTEXT
        )
    assert missing.value.reason == "ACCOUNT_NOT_FOUND"


@pytest.mark.parametrize("account_id", ["", "not-a-uuid"])
async def test_the_summary_of_a_bad_account_id_names_the_field(db: BillingDb, account_id: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await BillingServicer(db.uow).GetBillingSummary(pb.GetBillingSummaryRequest(account_id=account_id), NO_CONTEXT)
    assert refused.value.field == "account_id"


async def test_summary_status_codes_over_grpc(db: BillingDb) -> None:
    account_id = uuid.uuid4()
    await deliver(db, created(account_id))
    async with billing_stub(db.uow) as stub:
        got = await stub.GetBillingSummary(pb.GetBillingSummaryRequest(account_id=str(account_id)))
        assert got.bill_unit.account_id == str(account_id)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetBillingSummary(pb.GetBillingSummaryRequest(account_id=str(uuid.uuid4())))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stub.GetBillingSummary(pb.GetBillingSummaryRequest(account_id="x"))
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
