"""Fees on the calendar against a real, migrated database, driven through charging's consumer
handlers and its fee loop: in-advance fees when a cycle opens, in-arrears fees when it closes
(billed in the next cycle), one-time fees when a purchase starts (at once, or by the fee loop once
the clock passes its start), proration, quantity and overrides; a redelivered cycle event, two
concurrent appliers and two fee loops charge each fee once; fee charges go out in ChargesCreated."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from evolutivo.billing.v1 import bill_cycle_pb2
from evolutivo.billing.v1 import events_pb2 as billing_events
from evolutivo.charging.v1 import catalog_pb2 as c
from evolutivo.charging.v1 import charging_service_pb2 as pb
from evolutivo.charging.v1 import events_pb2, usage_pb2
from evolutivo.customer.v1 import account_pb2, purchase_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_charging.adapters import events
from evolutivo_charging.adapters.orm import charges, fee_charges, inbox, outbox, purchases, request_log
from evolutivo_charging.entrypoints import consumers
from evolutivo_charging.entrypoints.app import MIGRATIONS
from evolutivo_charging.entrypoints.fee_loop import FeeLoop
from evolutivo_charging.entrypoints.grpc_api import ChargingServicer
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork
from evolutivo_runtime.messaging.envelope import EventMeta
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.money import from_money, to_money
from evolutivo_runtime.timestamps import from_timestamp, to_timestamp
from google.protobuf.message import Message
from sqlalchemy import func, select
from support.databases import MigratedDatabase, ServiceDb
from support.jetstream import consumer_for, handle, message, process

MADRID = ZoneInfo("Europe/Madrid")
NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
APRIL_START = datetime(2031, 4, 1, tzinfo=MADRID)
MAY_START = datetime(2031, 5, 1, tzinfo=MADRID)
JUNE_START = datetime(2031, 6, 1, tzinfo=MADRID)
JULY_START = datetime(2031, 7, 1, tzinfo=MADRID)
OFFER_FROM = datetime(2031, 3, 1, tzinfo=UTC)
NO_CONTEXT: Any = None
RECURRING, ONE_TIME = usage_pb2.CHARGE_KIND_RECURRING, usage_pb2.CHARGE_KIND_ONE_TIME

MONTHLY = c.Charge(
    code="monthly",
    name="Monthly fee",
    recurring=c.RecurringFee(amount="31", timing=c.RECURRING_TIMING_IN_ADVANCE, prorate=True),
    tax_code="S",
)
SUPPORT = c.Charge(
    code="support",
    name="Support",
    recurring=c.RecurringFee(amount="9.30", timing=c.RECURRING_TIMING_IN_ARREARS, prorate=True),
)
SETUP = c.Charge(code="setup", name="Set-up", one_time=c.OneTimeFee(amount="50"), balance_group="fees")
CALLS = c.Charge(code="calls", name="Calls", event_type="api.call", flat=c.FlatPrice(amount="0.10"))


class FeesDb(ServiceDb):
    def uow(self) -> ChargingUnitOfWork:
        return ChargingUnitOfWork(self.sessions, outbox, self.clock, events.encode, request_log)

    def servicer(self) -> ChargingServicer:
        return ChargingServicer(self.uow)

    def fee_loop(self, batch_size: int = 100) -> FeeLoop:
        return FeeLoop(self.uow, check_seconds=0.1, batch_size=batch_size)

    async def published(self) -> list[events_pb2.ChargesCreated]:
        rows = await self.rows(
            select(outbox.c.payload)
            .where(outbox.c.subject == "evolutivo.charging.v1.charges.created")
            .order_by(outbox.c.seq)
        )
        return [events_pb2.ChargesCreated.FromString(row.payload) for row in rows]


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[FeesDb]:
    async with FeesDb.open(await migrated_database("charging_fees", MIGRATIONS), NOW, pool_size=12) as database:
        yield database


async def apply(
    db: FeesDb, handler: Callable[[ChargingUnitOfWork, Any, EventMeta], Awaitable[None]], event: Message
) -> None:
    await handle(db.uow, handler, event, db.clock.now())


async def new_offer(db: FeesDb, charges_: Sequence[c.Charge], code: str = "hosting") -> None:
    servicer = db.servicer()
    created = await servicer.CreateChargeOffer(
        pb.CreateChargeOfferRequest(
            charge_offer=c.ChargeOffer(
                code=code, name="Hosting", currency_code="EUR", valid_from=to_timestamp(OFFER_FROM), charges=charges_
            )
        ),
        NO_CONTEXT,
    )
    await servicer.ActivateChargeOffer(
        pb.ActivateChargeOfferRequest(charge_offer_id=created.charge_offer.charge_offer_id), NO_CONTEXT
    )


async def new_account(db: FeesDb) -> uuid.UUID:
    account_id = uuid.uuid4()
    account = account_pb2.Account(
        account_id=str(account_id),
        currency_code="EUR",
        time_zone="Europe/Madrid",
        status=account_pb2.ACCOUNT_STATUS_ACTIVE,
    )
    await apply(db, consumers.on_account_created, customer_events.AccountCreated(account=account))
    return account_id


def a_purchase(
    account_id: uuid.UUID,
    start: datetime,
    end: datetime | None = None,
    quantity: str = "1",
    overrides: Sequence[tuple[str, str]] = (),
    code: str = "hosting",
) -> purchase_pb2.Purchase:
    return purchase_pb2.Purchase(
        purchase_id=str(uuid.uuid4()),
        account_id=str(account_id),
        charge_offer_code=code,
        charge_offer_version=1,
        quantity=quantity,
        start_time=to_timestamp(start),
        end_time=to_timestamp(end),
        price_overrides=[
            purchase_pb2.PriceOverride(charge_code=code_, price=to_money(Decimal(price), "EUR"))
            for code_, price in overrides
        ],
    )


async def purchase_created(db: FeesDb, purchase: purchase_pb2.Purchase) -> None:
    await apply(
        db,
        consumers.on_purchase_created,
        customer_events.PurchaseCreated(purchase=purchase, currency_code="EUR", time_zone="Europe/Madrid"),
    )


def a_cycle(account_id: uuid.UUID, start: datetime, end: datetime, sequence: int = 1) -> bill_cycle_pb2.BillCycle:
    return bill_cycle_pb2.BillCycle(
        bill_cycle_id=str(uuid.uuid4()),
        bill_unit_id=str(uuid.uuid4()),
        account_id=str(account_id),
        sequence=sequence,
        start_time=to_timestamp(start),
        end_time=to_timestamp(end),
        status=bill_cycle_pb2.BILL_CYCLE_STATUS_OPEN,
        time_zone="Europe/Madrid",
    )


def opened(cycle: bill_cycle_pb2.BillCycle) -> billing_events.BillCycleOpened:
    return billing_events.BillCycleOpened(bill_cycle=cycle)


def closed(cycle: bill_cycle_pb2.BillCycle, next_cycle: bill_cycle_pb2.BillCycle) -> billing_events.BillCycleClosed:
    done = bill_cycle_pb2.BillCycle()
    done.CopyFrom(cycle)
    done.status = bill_cycle_pb2.BILL_CYCLE_STATUS_CLOSED
    return billing_events.BillCycleClosed(bill_cycle=done, next_bill_cycle=next_cycle)


async def cycle_opened(db: FeesDb, cycle: bill_cycle_pb2.BillCycle) -> None:
    await apply(db, consumers.on_bill_cycle_opened, opened(cycle))


async def cycle_closed(db: FeesDb, cycle: bill_cycle_pb2.BillCycle, next_cycle: bill_cycle_pb2.BillCycle) -> None:
    await apply(db, consumers.on_bill_cycle_closed, closed(cycle, next_cycle))


async def all_charges(db: FeesDb, account_id: uuid.UUID) -> list[usage_pb2.RatedCharge]:
    page = await db.servicer().ListCharges(
        pb.ListChargesRequest(account_id=str(account_id), page_size=1000), NO_CONTEXT
    )
    return list(page.charges)


def summary(found: Sequence[usage_pb2.RatedCharge]) -> list[tuple[str, int, Decimal, str, bool]]:
    """(charge code, kind, amount, billed in cycle, late) of each charge, in order."""
    return [(ch.charge_code, ch.kind, from_money(ch.amount), ch.bill_cycle_id, ch.late) for ch in found]


async def start_fees_pending(db: FeesDb) -> int:
    async with db.engine.connect() as conn:
        return int(
            await conn.scalar(select(func.count()).select_from(purchases).where(purchases.c.start_fees_time.is_(None)))
            or 0
        )


# In advance and in arrears.


async def test_an_in_advance_fee_when_the_cycle_opens_and_an_in_arrears_one_when_it_closes(db: FeesDb) -> None:
    await new_offer(db, [MONTHLY, SUPPORT, CALLS])
    account_id = await new_account(db)
    # Bought in April, ends on 11 June; charging learns it before any cycle.
    bought = a_purchase(account_id, APRIL_START + timedelta(days=2), end=datetime(2031, 6, 11, tzinfo=MADRID))
    await purchase_created(db, bought)
    assert await all_charges(db, account_id) == []

    may = a_cycle(account_id, MAY_START, JUNE_START)
    await cycle_opened(db, may)
    (monthly,) = await all_charges(db, account_id)
    assert summary([monthly]) == [("monthly", RECURRING, Decimal("31.00"), may.bill_cycle_id, False)]
    assert (monthly.purchase_id, monthly.event_id, monthly.tax_code) == (bought.purchase_id, "", "S")
    assert (monthly.charge_offer_code, monthly.charge_offer_version, monthly.quantity) == ("hosting", 1, "1")
    assert (from_timestamp(monthly.event_time), from_timestamp(monthly.rate_time)) == (MAY_START, NOW)
    (message,) = await db.published()
    assert (list(message.charges), message.currency_code) == ([monthly], "EUR")

    # May closes: May's support in arrears, billed in June; June's monthly fee in advance, for
    # the 10 days until the purchase ends (1..10 June of 30).
    db.clock.advance(timedelta(days=15, hours=2))
    june = a_cycle(account_id, JUNE_START, JULY_START, 2)
    await cycle_closed(db, may, june)
    found = await all_charges(db, account_id)
    assert summary(found[1:]) == [
        ("support", RECURRING, Decimal("9.30"), june.bill_cycle_id, False),
        ("monthly", RECURRING, Decimal("10.33"), june.bill_cycle_id, False),
    ]
    assert found[2].unrounded_amount.startswith("10.333333")
    assert [from_timestamp(ch.event_time) for ch in found[1:]] == [MAY_START, JUNE_START]
    # One ChargesCreated for the fees the close charged.
    assert [list(m.charges) for m in await db.published()] == [[monthly], found[1:]]

    # June closes: its support fee, prorated to the purchase's end; nothing for July.
    db.clock.advance(timedelta(days=31))
    july = a_cycle(account_id, JULY_START, datetime(2031, 8, 1, tzinfo=MADRID), 3)
    await cycle_closed(db, june, july)
    (last,) = (await all_charges(db, account_id))[3:]
    assert summary([last]) == [("support", RECURRING, Decimal("3.10"), july.bill_cycle_id, False)]


async def test_a_redelivered_cycle_event_charges_nothing_twice(db: FeesDb) -> None:
    await new_offer(db, [MONTHLY, SUPPORT, SETUP])
    account_id = await new_account(db)
    may = a_cycle(account_id, MAY_START, JUNE_START)
    await cycle_opened(db, may)
    await purchase_created(db, a_purchase(account_id, MAY_START + timedelta(days=3)))
    june = a_cycle(account_id, JUNE_START, JULY_START, 2)
    db.clock.advance(timedelta(days=16))
    await cycle_closed(db, may, june)
    charged = await all_charges(db, account_id)
    assert sorted(ch.charge_code for ch in charged) == ["monthly", "monthly", "setup", "support"]
    messages = len(await db.published())

    # Billing's events again, under new event ids (the inbox cannot tell), in any order.
    await cycle_closed(db, may, june)
    await cycle_opened(db, june)
    await cycle_opened(db, may)
    # And the same event twice through the consumer: the inbox skips the second.
    consumer = consumer_for(consumers.subscriptions(), stream_name("billing"), db.uow, inbox)
    msg = message(consumers.BILL_CYCLE_CLOSED, closed(may, june), NOW)
    await process(consumer, msg, msg)
    assert not msg.naked, "the event applies"
    assert msg.acked
    assert await all_charges(db, account_id) == charged
    assert len(await db.published()) == messages
    assert await db.count(fee_charges) == await db.count(charges) == 4


async def test_two_concurrent_appliers_of_a_cycle_charge_once(db: FeesDb) -> None:
    await new_offer(db, [MONTHLY, SUPPORT])
    for _ in range(3):  # a few accounts, so the transactions really overlap somewhere
        account_id = await new_account(db)
        for day in range(5):
            await purchase_created(db, a_purchase(account_id, APRIL_START + timedelta(days=day)))
        may = a_cycle(account_id, MAY_START, JUNE_START)
        june = a_cycle(account_id, JUNE_START, JULY_START, 2)
        await asyncio.gather(*(cycle_opened(db, may) for _ in range(2)))
        await asyncio.gather(cycle_closed(db, may, june), cycle_closed(db, may, june), cycle_opened(db, june))
        # 5 monthly fees for May, 5 support fees for May, 5 monthly fees for June.
        found = await all_charges(db, account_id)
        keys = [(ch.purchase_id, ch.charge_code, from_timestamp(ch.event_time)) for ch in found]
        assert len(keys) == len(set(keys)) == 15
    assert await db.count(charges) == await db.count(fee_charges) == 45
    published = [ch.charge_id for m in await db.published() for ch in m.charges]
    assert len(published) == len(set(published)) == 45


async def test_a_purchase_learnt_after_its_cycle_opened_is_charged_from_its_start(db: FeesDb) -> None:
    await new_offer(db, [MONTHLY, SETUP])
    account_id = await new_account(db)
    may = a_cycle(account_id, MAY_START, JUNE_START)
    await cycle_opened(db, may)
    # Started on 10 May (22 local days of 31 left), two of them, the monthly fee negotiated at 12.
    bought = a_purchase(
        account_id, datetime(2031, 5, 10, 15, tzinfo=MADRID), quantity="2", overrides=[("monthly", "12")]
    )
    await purchase_created(db, bought)
    found = await all_charges(db, account_id)
    assert summary(found) == [
        ("setup", ONE_TIME, Decimal("100.00"), may.bill_cycle_id, False),
        ("monthly", RECURRING, Decimal("17.03"), may.bill_cycle_id, False),  # 24 x 22 / 31
    ]
    assert found[0].balance_group == "fees"
    assert from_timestamp(found[0].event_time) == from_timestamp(bought.start_time)
    assert await start_fees_pending(db) == 0
    # Learning it again (a PurchaseEnded that carries it) changes nothing.
    await apply(db, consumers.on_purchase_ended, customer_events.PurchaseEnded(purchase=bought))
    assert await all_charges(db, account_id) == found


async def test_a_purchase_learnt_after_its_cycle_closed_is_billed_in_the_open_one_late(db: FeesDb) -> None:
    await new_offer(db, [MONTHLY, SUPPORT])
    account_id = await new_account(db)
    april = a_cycle(account_id, APRIL_START, MAY_START)
    may = a_cycle(account_id, MAY_START, JUNE_START, 2)
    await cycle_opened(db, april)
    await cycle_closed(db, april, may)
    # Backdated to 21 April (10 local days of 30).
    await purchase_created(db, a_purchase(account_id, datetime(2031, 4, 21, tzinfo=MADRID)))
    assert summary(await all_charges(db, account_id)) == [
        ("monthly", RECURRING, Decimal("10.33"), may.bill_cycle_id, True),
        ("support", RECURRING, Decimal("3.10"), may.bill_cycle_id, False),  # April's, in arrears: on time
        ("monthly", RECURRING, Decimal("31.00"), may.bill_cycle_id, False),
    ]


# One-time fees and the fee loop.


async def test_a_one_time_fee_when_the_purchase_starts(db: FeesDb) -> None:
    await new_offer(db, [SETUP, MONTHLY])
    account_id = await new_account(db)
    may = a_cycle(account_id, MAY_START, JUNE_START)
    await cycle_opened(db, may)
    later = NOW + timedelta(days=3, hours=5)  # 20 May, 16:30 in Madrid
    await purchase_created(db, a_purchase(account_id, later))
    loop = db.fee_loop()
    assert await loop.catch_up() == 0
    assert await all_charges(db, account_id) == []
    assert await start_fees_pending(db) == 1

    db.clock.advance(timedelta(days=3, hours=5))
    assert await loop.catch_up() == 1
    found = await all_charges(db, account_id)
    assert summary(found) == [
        ("setup", ONE_TIME, Decimal("50.00"), may.bill_cycle_id, False),
        ("monthly", RECURRING, Decimal("12.00"), may.bill_cycle_id, False),  # 20..31 May
    ]
    (message,) = await db.published()
    assert list(message.charges) == found
    # Settled: later passes find nothing.
    db.clock.advance(timedelta(hours=1))
    assert await loop.catch_up() == 0
    assert await db.count(charges) == 2


async def test_a_started_purchase_without_an_open_cycle_waits_for_it(db: FeesDb) -> None:
    await new_offer(db, [SETUP])
    account_id = await new_account(db)
    await purchase_created(db, a_purchase(account_id, NOW - timedelta(hours=1)))
    loop = db.fee_loop()
    assert await loop.catch_up() == 0  # left pending: no cycle to bill it in
    assert await start_fees_pending(db) == 1
    may = a_cycle(account_id, MAY_START, JUNE_START)
    await cycle_opened(db, may)
    assert summary(await all_charges(db, account_id)) == [
        ("setup", ONE_TIME, Decimal("50.00"), may.bill_cycle_id, False)
    ]
    assert await loop.catch_up() == 1  # settles it, charging nothing again
    assert await db.count(charges) == 1


async def test_a_purchase_cancelled_before_its_start_is_never_charged(db: FeesDb) -> None:
    await new_offer(db, [SETUP, MONTHLY])
    account_id = await new_account(db)
    await cycle_opened(db, a_cycle(account_id, MAY_START, JUNE_START))
    bought = a_purchase(account_id, NOW + timedelta(days=2))
    await purchase_created(db, bought)
    cancelled = purchase_pb2.Purchase()
    cancelled.CopyFrom(bought)
    cancelled.cancel_time.FromDatetime(NOW)
    await apply(db, consumers.on_purchase_ended, customer_events.PurchaseEnded(purchase=cancelled))
    db.clock.advance(timedelta(days=3))
    await db.fee_loop().catch_up()
    assert await all_charges(db, account_id) == []
    assert await start_fees_pending(db) == 0


async def test_two_fee_loops_charge_each_purchase_once(db: FeesDb) -> None:
    await new_offer(db, [SETUP, MONTHLY])
    accounts = [await new_account(db) for _ in range(4)]
    for account_id in accounts:
        await cycle_opened(db, a_cycle(account_id, MAY_START, JUNE_START))
        for hours in range(1, 6):
            await purchase_created(db, a_purchase(account_id, NOW + timedelta(hours=hours)))
    db.clock.advance(timedelta(hours=6))
    settled = await asyncio.gather(db.fee_loop(batch_size=3).catch_up(), db.fee_loop(batch_size=3).catch_up())
    assert sum(settled) == 20
    assert await db.count(charges) == await db.count(fee_charges) == 40
    assert await start_fees_pending(db) == 0
    published = [ch.charge_id for m in await db.published() for ch in m.charges]
    assert len(published) == len(set(published)) == 40


async def test_the_fee_loop_runs_until_stopped(db: FeesDb) -> None:
    await new_offer(db, [SETUP])
    account_id = await new_account(db)
    await cycle_opened(db, a_cycle(account_id, MAY_START, JUNE_START))
    await purchase_created(db, a_purchase(account_id, NOW + timedelta(minutes=1)))
    stop = asyncio.Event()
    task = asyncio.create_task(db.fee_loop().run(stop))
    try:
        db.clock.advance(timedelta(minutes=2))
        for _ in range(100):
            if await db.count(charges):
                break
            await asyncio.sleep(0.05)
        assert await db.count(charges) == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
