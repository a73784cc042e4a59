"""Billing against a real, migrated database: the AccountCreated handler (through the runtime's
consumer), the repository's idempotency and keyset pagination, and the gRPC servicer's errors."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from evolutivo.billing.v1 import bill_unit_pb2, events_pb2
from evolutivo.billing.v1 import billing_service_pb2 as pb
from evolutivo.billing.v1 import billing_service_pb2_grpc as pb_grpc
from evolutivo.customer.v1 import account_pb2
from evolutivo_billing.adapters import events
from evolutivo_billing.adapters.orm import bill_units, inbox, metadata, outbox
from evolutivo_billing.domain.model import BillingProfile
from evolutivo_billing.entrypoints.app import MIGRATIONS
from evolutivo_billing.entrypoints.consumers import subscriptions
from evolutivo_billing.entrypoints.grpc_api import BillingServicer
from evolutivo_billing.service_layer import handlers
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork
from evolutivo_runtime.errors import InvalidArgument, NotFound
from evolutivo_runtime.messaging.streams import stream_name
from sqlalchemy import func, select
from support.billing import billing_stub
from support.customer_messages import business_account, created_message
from support.databases import MigratedDatabase, ServiceDb
from support.jetstream import FakeMsg, consumer_for, process
from support.rpc import bad_request_fields

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
# The servicers never read their gRPC context.
NO_CONTEXT: Any = None


class BillingDb(ServiceDb):
    def uow(self) -> BillingUnitOfWork:
        return BillingUnitOfWork(self.sessions, outbox, self.clock, events.encode)


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[BillingDb]:
    async with BillingDb.open(await migrated_database("billing", MIGRATIONS), NOW) as database:
        yield database


def account_created(
    account_id: uuid.UUID | None = None, event_id: uuid.UUID | None = None, bill_cycle_day: int = 31
) -> FakeMsg:
    profile = account_pb2.BillingProfile(
        bill_cycle_day=bill_cycle_day, frequency=account_pb2.BILLING_FREQUENCY_QUARTERLY, payment_terms_days=15
    )
    account = business_account(account_id, profile)
    return created_message(account, NOW, event_id)


async def deliver(db: BillingDb, *msgs: FakeMsg) -> None:
    """One fetched batch, applied as the service's consumer applies it."""
    await process(consumer_for(subscriptions(), stream_name("customer"), db.uow, inbox), *msgs)


async def count_units(db: BillingDb, account_id: uuid.UUID | None = None) -> int:
    query = select(func.count()).select_from(bill_units)
    if account_id is not None:
        query = query.where(bill_units.c.account_id == account_id)
    return int(await db.scalar(query))


# Migrations.


async def test_migrations_create_exactly_the_tables_the_code_uses(db: BillingDb) -> None:
    assert await db.schema_diff(metadata) == []


# The AccountCreated handler, through the runtime's consumer.


async def test_account_created_opens_one_bill_unit_and_publishes_it(db: BillingDb) -> None:
    account_id = uuid.uuid4()
    msg = account_created(account_id)
    await deliver(db, msg)
    assert msg.acked

    async with db.uow() as uow:
        (unit,) = await uow.bill_units.list(account_id, None, 10)
    assert (unit.currency_code, unit.time_zone) == ("EUR", "Europe/Madrid")
    assert (unit.profile.bill_cycle_day, unit.profile.payment_terms_days) == (31, 15)
    assert unit.profile.frequency.value == "quarterly"
    assert unit.create_time == NOW  # the unit of work's clock

    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(outbox).order_by(outbox.c.seq))).all()
    assert [r.subject for r in rows] == [
        "evolutivo.billing.v1.bill_unit.created",
        "evolutivo.billing.v1.bill_cycle.opened",  # the unit's first cycle (test_billing_cycles_db.py)
    ]
    assert rows[0].subject == "evolutivo.billing.v1.bill_unit.created"
    assert rows[0].event_type == "evolutivo.billing.v1.BillUnitCreated"
    published = events_pb2.BillUnitCreated.FromString(rows[0].payload).bill_unit
    assert published.bill_unit_id == str(unit.bill_unit_id)
    assert published.account_id == str(account_id)
    assert published.frequency == bill_unit_pb2.BILLING_FREQUENCY_QUARTERLY


async def test_a_redelivered_event_changes_nothing(db: BillingDb) -> None:
    msg = account_created()
    await deliver(db, msg)
    again = msg.again()
    await deliver(db, again)
    assert again.acked
    assert await count_units(db) == 1
    assert await db.count(outbox) == 2  # BillUnitCreated, BillCycleOpened


async def test_the_handler_applied_twice_still_makes_one_bill_unit(db: BillingDb) -> None:
    """Two events for the same account (a republished event under a new id): the unique account
    keeps one unit and only the first publishes BillUnitCreated."""
    account_id = uuid.uuid4()
    await deliver(db, account_created(account_id))
    db.clock.advance(timedelta(minutes=5))
    await deliver(db, account_created(account_id))
    await deliver(db, account_created(account_id), account_created(account_id))
    assert await count_units(db, account_id) == 1
    assert await db.count(outbox) == 2  # BillUnitCreated, BillCycleOpened
    assert await db.count(inbox) == 4


async def test_concurrent_handlers_for_one_account_make_one_bill_unit(db: BillingDb) -> None:
    account_id = uuid.uuid4()
    profile = BillingProfile(bill_cycle_day=3)

    async def apply() -> None:
        async with db.uow() as uow:
            await handlers.open_bill_unit(uow, account_id, "EUR", "UTC", profile, uow.clock.now())
            await uow.commit()

    await asyncio.gather(*(apply() for _ in range(8)))
    assert await count_units(db, account_id) == 1
    assert await db.count(outbox) == 2  # BillUnitCreated, BillCycleOpened


async def test_a_broken_event_is_retried_and_does_not_block_the_batch(db: BillingDb) -> None:
    good, broken = account_created(), account_created(bill_cycle_day=0)
    await deliver(db, broken, good)
    assert good.acked and not broken.acked and broken.naked
    assert await count_units(db) == 1
    # Its savepoint was rolled back with its inbox row, so a redelivery applies it afresh.
    assert await db.count(inbox) == 1


# Reading.


async def test_get_bill_unit(db: BillingDb) -> None:
    account_id = uuid.uuid4()
    await deliver(db, account_created(account_id))
    listed = await BillingServicer(db.uow).ListBillUnits(
        pb.ListBillUnitsRequest(account_id=str(account_id)), NO_CONTEXT
    )
    (unit,) = listed.bill_units
    got = await BillingServicer(db.uow).GetBillUnit(pb.GetBillUnitRequest(bill_unit_id=unit.bill_unit_id), NO_CONTEXT)
    assert got.bill_unit == unit
    assert listed.next_page_token == ""


async def test_an_unknown_bill_unit_is_not_found(db: BillingDb) -> None:
    with pytest.raises(NotFound) as missing:
        await BillingServicer(db.uow).GetBillUnit(pb.GetBillUnitRequest(bill_unit_id=str(uuid.uuid4())), NO_CONTEXT)
    assert missing.value.reason == "BILL_UNIT_NOT_FOUND"


@pytest.mark.parametrize(
    ("request_", "field_name"),
    [
        (pb.GetBillUnitRequest(bill_unit_id=""), "bill_unit_id"),
        (pb.GetBillUnitRequest(bill_unit_id="not-a-uuid"), "bill_unit_id"),
        (pb.ListBillUnitsRequest(account_id="not-a-uuid"), "account_id"),
        (pb.ListBillUnitsRequest(page_size=-1), "page_size"),
        (pb.ListBillUnitsRequest(page_token="!!!!"), "page_token"),
    ],
)
async def test_bad_input_names_the_field(db: BillingDb, request_: Any, field_name: str) -> None:
    servicer = BillingServicer(db.uow)
    method = servicer.GetBillUnit if isinstance(request_, pb.GetBillUnitRequest) else servicer.ListBillUnits
    with pytest.raises(InvalidArgument) as refused:
        await method(request_, NO_CONTEXT)
    assert refused.value.field == field_name


async def open_units(db: BillingDb, count: int, same_instant_every: int = 3) -> None:
    """`count` bill units; every `same_instant_every` share one create_time, so ties are paged by id."""
    for i in range(count):
        if i % same_instant_every == 0:
            db.clock.advance(timedelta(seconds=1))
        async with db.uow() as uow:
            await handlers.open_bill_unit(uow, uuid.uuid4(), "EUR", "UTC", BillingProfile(1), uow.clock.now())
            await uow.commit()


async def list_all(db: BillingDb, size: int, account_id: str = "") -> list[pb.ListBillUnitsResponse]:
    servicer, pages, token = BillingServicer(db.uow), [], ""
    while True:
        page = await servicer.ListBillUnits(
            pb.ListBillUnitsRequest(account_id=account_id, page_size=size, page_token=token),
            NO_CONTEXT,
        )
        pages.append(page)
        token = page.next_page_token
        if not token:
            return pages
        assert len(pages) < 100, "pagination does not end"


@pytest.mark.parametrize(("count", "size", "sizes"), [(7, 3, [3, 3, 1]), (6, 3, [3, 3]), (2, 5, [2]), (0, 5, [0])])
async def test_pages_return_every_unit_once_oldest_first(
    db: BillingDb, count: int, size: int, sizes: list[int]
) -> None:
    await open_units(db, count)
    pages = await list_all(db, size)
    assert [len(p.bill_units) for p in pages] == sizes
    assert pages[-1].next_page_token == ""
    listed = [u for p in pages for u in p.bill_units]
    ids = [u.bill_unit_id for u in listed]
    assert len(set(ids)) == len(ids) == count
    keys = [(u.create_time.ToDatetime(), uuid.UUID(u.bill_unit_id)) for u in listed]
    assert keys == sorted(keys)


async def test_units_opened_after_a_page_appear_on_a_later_page(db: BillingDb) -> None:
    await open_units(db, 4)
    servicer = BillingServicer(db.uow)
    first = await servicer.ListBillUnits(pb.ListBillUnitsRequest(page_size=3), NO_CONTEXT)
    await open_units(db, 2)
    rest = await list_all(db, 3)
    second = await servicer.ListBillUnits(
        pb.ListBillUnitsRequest(page_size=10, page_token=first.next_page_token),
        NO_CONTEXT,
    )
    assert len(second.bill_units) == 3
    assert {u.bill_unit_id for u in first.bill_units} | {u.bill_unit_id for u in second.bill_units} == {
        u.bill_unit_id for p in rest for u in p.bill_units
    }


async def test_the_default_page_size_is_one_hundred(db: BillingDb) -> None:
    await open_units(db, 101, same_instant_every=50)
    page = await BillingServicer(db.uow).ListBillUnits(pb.ListBillUnitsRequest(), NO_CONTEXT)
    assert len(page.bill_units) == 100
    assert page.next_page_token


async def test_filter_by_account(db: BillingDb) -> None:
    await open_units(db, 3)
    account_id = uuid.uuid4()
    await deliver(db, account_created(account_id))
    (page,) = await list_all(db, 1, str(account_id))
    assert [u.account_id for u in page.bill_units] == [str(account_id)]
    (none,) = await list_all(db, 1, str(uuid.uuid4()))
    assert list(none.bill_units) == []


async def test_a_token_is_refused_with_another_filter(db: BillingDb) -> None:
    await open_units(db, 3)
    page = await BillingServicer(db.uow).ListBillUnits(pb.ListBillUnitsRequest(page_size=1), NO_CONTEXT)
    with pytest.raises(InvalidArgument) as refused:
        await BillingServicer(db.uow).ListBillUnits(
            pb.ListBillUnitsRequest(account_id=str(uuid.uuid4()), page_token=page.next_page_token),
            NO_CONTEXT,
        )
    assert refused.value.field == "page_token"


# Over real gRPC, through the runtime's interceptor.


@pytest.fixture
async def stub(db: BillingDb) -> AsyncIterator[pb_grpc.BillingServiceAsyncStub]:
    async with billing_stub(db.uow) as stub:
        yield stub


async def test_grpc_status_codes(stub: pb_grpc.BillingServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await stub.GetBillUnit(pb.GetBillUnitRequest(bill_unit_id="nope"))
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(invalid.value) == ["bill_unit_id"]
    with pytest.raises(grpc.aio.AioRpcError) as token:
        await stub.ListBillUnits(pb.ListBillUnitsRequest(page_token="garbage"))
    assert token.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(token.value) == ["page_token"]
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetBillUnit(pb.GetBillUnitRequest(bill_unit_id=str(uuid.uuid4())))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    empty = await stub.ListBillUnits(pb.ListBillUnitsRequest())
    assert (list(empty.bill_units), empty.next_page_token) == ([], "")
