"""Balance keeps each account's status from customer's events (AccountCreated, AccountUpdated,
AccountStatusChanged, through the service's consumer) against a real, migrated database, and
CreateBalanceGroup refuses a closed account (FAILED_PRECONDITION, ACCOUNT_CLOSED) changing nothing;
what settles a closed account's last debt or credit is still taken (docs/balance.md)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from evolutivo.balance.v1 import balance_service_pb2 as pb
from evolutivo.balance.v1 import payment_pb2
from evolutivo.charging.v1 import events_pb2 as charging_events
from evolutivo.charging.v1 import usage_pb2
from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_balance.adapters import events
from evolutivo_balance.adapters.orm import (
    account_statuses,
    balance_groups,
    ledger_entries,
    metadata,
    outbox,
    payments,
    request_log,
)
from evolutivo_balance.adapters.orm import inbox as inbox_table
from evolutivo_balance.domain.model import AccountStatus
from evolutivo_balance.entrypoints.app import MIGRATIONS
from evolutivo_balance.entrypoints.consumers import subscriptions
from evolutivo_balance.entrypoints.grpc_api import BalanceServicer
from evolutivo_balance.service_layer.unit_of_work import BalanceUnitOfWork
from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.money import to_money
from evolutivo_runtime.timestamps import to_timestamp
from google.protobuf.message import Message
from support.databases import MigratedDatabase, ServiceDb
from support.jetstream import FakeMsg, consumer_for, message, process

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
NO_CONTEXT: Any = None
ACTIVE, SUSPENDED, CLOSED = (
    account_pb2.ACCOUNT_STATUS_ACTIVE,
    account_pb2.ACCOUNT_STATUS_SUSPENDED,
    account_pb2.ACCOUNT_STATUS_CLOSED,
)


class BalanceDb(ServiceDb):
    def uow(self) -> BalanceUnitOfWork:
        return BalanceUnitOfWork(self.sessions, outbox, self.clock, events.encode, request_log)

    @property
    def api(self) -> BalanceServicer:
        return BalanceServicer(self.uow)

    async def counts(self) -> list[int]:
        """What a refused call must leave unchanged."""
        return [await self.count(t) for t in (balance_groups, ledger_entries, payments, outbox, request_log)]

    async def status(self, account_id: uuid.UUID) -> AccountStatus | None:
        async with self.uow() as uow:
            return await uow.account_statuses.status_of(account_id)

    async def deliver(self, stream: str, *msgs: FakeMsg) -> None:
        await process(consumer_for(subscriptions(), stream_name(stream), self.uow, inbox_table), *msgs)
        assert all(m.acked for m in msgs), "every event applied"


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[BalanceDb]:
    async with BalanceDb.open(await migrated_database("balance", MIGRATIONS), NOW) as database:
        yield database


def account(account_id: uuid.UUID, status: int, at: datetime) -> account_pb2.Account:
    return account_pb2.Account(
        account_id=str(account_id),
        currency_code="EUR",
        time_zone="Europe/Madrid",
        status=status,  # type: ignore[arg-type]
        create_time=to_timestamp(NOW - timedelta(days=30)),
        update_time=to_timestamp(at),
    )


def created(account_id: uuid.UUID, at: datetime = NOW - timedelta(days=30)) -> FakeMsg:
    event = customer_events.AccountCreated(account=account(account_id, ACTIVE, at))
    return message("evolutivo.customer.v1.account.created", event, at)


def updated(account_id: uuid.UUID, status: int, at: datetime) -> FakeMsg:
    event = customer_events.AccountUpdated(account=account(account_id, status, at), changed_fields=["display_name"])
    return message("evolutivo.customer.v1.account.updated", event, at)


def status_changed(account_id: uuid.UUID, status: int, at: datetime, previous: int = ACTIVE) -> FakeMsg:
    after = account(account_id, status, at)
    change = account_pb2.StatusChange(status=status, reason="r", change_time=to_timestamp(at))  # type: ignore[arg-type]
    after.last_status_change.CopyFrom(change)
    event = customer_events.AccountStatusChanged(account=after, previous_status=previous, change=change)  # type: ignore[arg-type]
    return message("evolutivo.customer.v1.account.status_changed", event, at)


async def new_group(db: BalanceDb, account_id: uuid.UUID, name: str) -> pb.CreateBalanceGroupResponse:
    return await db.api.CreateBalanceGroup(
        pb.CreateBalanceGroupRequest(account_id=str(account_id), name=name, request_id=str(uuid.uuid4())), NO_CONTEXT
    )


def eur(amount: str) -> Any:
    return to_money(Decimal(amount), "EUR")


async def call(db: BalanceDb, method: str, request: Message) -> Any:
    return await getattr(db.api, method)(request, NO_CONTEXT)


async def test_the_migrations_create_exactly_the_tables_the_code_uses(db: BalanceDb) -> None:
    assert await db.schema_diff(metadata) == []


async def test_a_closed_account_gets_no_new_group_and_the_refusal_changes_nothing(db: BalanceDb) -> None:
    account_id = uuid.uuid4()
    await db.deliver("customer", created(account_id))
    assert await db.status(account_id) is AccountStatus.ACTIVE
    project = (await new_group(db, account_id, "project-x")).balance_group
    await db.deliver("charging", charged(account_id, "30.00"))
    await db.deliver("customer", status_changed(account_id, CLOSED, NOW - timedelta(days=1)))
    assert await db.status(account_id) is AccountStatus.CLOSED

    before = await db.counts()
    with pytest.raises(FailedPrecondition) as caught:
        await new_group(db, account_id, "project-y")
    assert (caught.value.reason, caught.value.metadata) == ("ACCOUNT_CLOSED", {"account_id": str(account_id)})
    # The request's fields come first: a bad name is named, closed or not.
    with pytest.raises(InvalidArgument) as bad_name:
        await new_group(db, account_id, " spaced ")
    assert bad_name.value.field == "name"
    assert await db.counts() == before

    # What settles the closed account's last debt or credit still goes through.
    account = str(account_id)
    await call(
        db,
        "RecordPayment",
        pb.RecordPaymentRequest(
            account_id=account,
            amount=eur("10.00"),
            method=payment_pb2.PAYMENT_METHOD_TYPE_BANK_TRANSFER,
            reference=f"ref-{uuid.uuid4().hex}",
        ),
    )
    await call(
        db,
        "CreateAdjustment",
        pb.CreateAdjustmentRequest(account_id=account, amount=eur("-5.00"), reason_code="GOODWILL", actor="ops"),
    )
    await call(
        db,
        "WriteOff",
        pb.WriteOffRequest(
            account_id=account,
            amount=eur("15.00"),
            source_type="collections_case",
            source_id=str(uuid.uuid4()),
            reason_code="UNCOLLECTIBLE",
            actor="collections",
        ),
    )
    closed = await call(db, "CloseBalanceGroup", pb.CloseBalanceGroupRequest(balance_group_id=project.balance_group_id))
    assert closed.balance_group.HasField("close_time")
    balance = await call(db, "GetBalance", pb.GetBalanceRequest(account_id=account))
    assert [(g.name, g.balance) for g in balance.balance_groups] == [("default", eur("0"))]


def charged(account_id: uuid.UUID, amount: str) -> FakeMsg:
    charge = usage_pb2.RatedCharge(
        charge_id=str(uuid.uuid4()),
        account_id=str(account_id),
        kind=usage_pb2.CHARGE_KIND_USAGE,
        amount=eur(amount),
        rate_time=to_timestamp(NOW - timedelta(days=2)),
    )
    return message(
        "evolutivo.charging.v1.charges.created",
        charging_events.ChargesCreated(charges=[charge], currency_code="EUR"),
        NOW - timedelta(days=2),
    )


async def test_a_suspended_or_reinstated_account_still_opens_groups(db: BalanceDb) -> None:
    account_id = uuid.uuid4()
    await db.deliver("customer", created(account_id))
    await db.deliver("customer", status_changed(account_id, SUSPENDED, NOW - timedelta(days=3)))
    assert await db.status(account_id) is AccountStatus.SUSPENDED
    await new_group(db, account_id, "while-suspended")
    await db.deliver("customer", status_changed(account_id, ACTIVE, NOW - timedelta(days=2), previous=SUSPENDED))
    assert await db.status(account_id) is AccountStatus.ACTIVE
    await new_group(db, account_id, "reinstated")


async def test_an_account_balance_knows_only_from_its_charges_is_taken_as_open(db: BalanceDb) -> None:
    account_id = uuid.uuid4()
    await db.deliver("charging", charged(account_id, "4.00"))
    assert await db.status(account_id) is None
    await new_group(db, account_id, "cost-centre")


async def test_status_events_applied_out_of_order_keep_the_latest_and_closed_is_final(db: BalanceDb) -> None:
    account_id = uuid.uuid4()
    t = NOW - timedelta(days=10)
    # The suspension (t+2) is applied before the account's creation (t) and an update made
    # before it (t+1): the older ones change nothing.
    await db.deliver("customer", status_changed(account_id, SUSPENDED, t + timedelta(days=2)))
    await db.deliver("customer", created(account_id, t), updated(account_id, ACTIVE, t + timedelta(days=1)))
    assert await db.status(account_id) is AccountStatus.SUSPENDED
    # A reinstatement (t+4) overtaken by a later update showing the account active (t+5), then
    # the reinstatement arrives: still active.
    await db.deliver("customer", updated(account_id, ACTIVE, t + timedelta(days=5)))
    await db.deliver("customer", status_changed(account_id, ACTIVE, t + timedelta(days=4), previous=SUSPENDED))
    assert await db.status(account_id) is AccountStatus.ACTIVE
    # Closing (t+6), then events stamped later than it (a clock skewed between two replicas of
    # customer) cannot reopen it: customer never reopens an account.
    await db.deliver("customer", status_changed(account_id, CLOSED, t + timedelta(days=6)))
    await db.deliver(
        "customer",
        updated(account_id, ACTIVE, t + timedelta(days=7)),
        status_changed(account_id, ACTIVE, t + timedelta(days=8), previous=SUSPENDED),
    )
    assert await db.status(account_id) is AccountStatus.CLOSED
    with pytest.raises(FailedPrecondition):
        await new_group(db, account_id, "too-late")


async def test_a_closing_stamped_with_the_same_instant_as_the_last_update_still_closes(db: BalanceDb) -> None:
    account_id = uuid.uuid4()
    # The account's update at t+1 is applied first; its closing, stamped with the same instant (a
    # clock that stood still), is applied after it and wins.
    t = NOW - timedelta(days=10)
    await db.deliver("customer", updated(account_id, ACTIVE, t + timedelta(days=1)))
    await db.deliver("customer", status_changed(account_id, CLOSED, t + timedelta(days=1)))
    assert await db.status(account_id) is AccountStatus.CLOSED
    assert await db.count(account_statuses) == 1
