"""The bill run's set-wise statements against a real, migrated database (docs/performance.md): a
bill's charges are put on it, each on its own line, in one statement, and a charge that is on a
bill already makes the whole marking fail (ItemAlreadyBilled) and change nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from evolutivo.charging.v1 import events_pb2 as charging_events
from evolutivo.charging.v1 import usage_pb2
from evolutivo_billing.adapters import events
from evolutivo_billing.adapters.bills_repository import ItemAlreadyBilled
from evolutivo_billing.adapters.orm import bill_items, inbox, outbox
from evolutivo_billing.domain.bills import TaxRates
from evolutivo_billing.domain.model import BillingFrequency, BillingProfile
from evolutivo_billing.entrypoints.app import MIGRATIONS
from evolutivo_billing.entrypoints.consumers import subscriptions
from evolutivo_billing.entrypoints.cycle_closer import CycleCloser
from evolutivo_billing.service_layer import handlers
from evolutivo_billing.service_layer.bills import BillPolicy
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.money import to_money
from evolutivo_runtime.timestamps import to_timestamp
from sqlalchemy import select, text
from support.databases import MigratedDatabase, ServiceDb
from support.jetstream import consumer_for, message, process

MADRID = ZoneInfo("Europe/Madrid")
DELAY = timedelta(hours=1)
NOW = datetime(2031, 5, 10, 12, tzinfo=MADRID).astimezone(UTC)
# The first cycle of a unit opened at NOW (billing day 15) ends on 15 May, Madrid.
DUE = datetime(2031, 5, 15, tzinfo=MADRID).astimezone(UTC) + DELAY
POLICY = BillPolicy(TaxRates({"standard": Decimal("0.21")}))


class BillRunDb(ServiceDb):
    def uow(self) -> BillingUnitOfWork:
        return BillingUnitOfWork(self.sessions, outbox, self.clock, events.encode)


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[BillRunDb]:
    async with BillRunDb.open(await migrated_database("billing_statements", MIGRATIONS), NOW) as database:
        yield database


async def a_billed_account(db: BillRunDb) -> uuid.UUID:
    """An account whose first cycle is billed with two lines (two charge codes, 3 + 2 charges)."""
    account_id = uuid.uuid4()
    async with db.uow() as uow:
        profile = BillingProfile(15, BillingFrequency.MONTHLY, 30)
        await handlers.open_bill_unit(uow, account_id, "EUR", "Europe/Madrid", profile, NOW, NOW)
        await uow.commit()
        (cycle,) = await uow.bill_cycles.list_for_account(account_id, None, 10)
    charges = [
        usage_pb2.RatedCharge(
            charge_id=str(uuid.uuid4()),
            account_id=str(account_id),
            kind=usage_pb2.CHARGE_KIND_USAGE,
            event_id=f"evt-{code}-{i}",
            purchase_id=str(uuid.uuid4()),
            charge_offer_code="api_pro",
            charge_offer_version=1,
            charge_code=code,
            tax_code="standard",
            quantity="1",
            amount=to_money(Decimal("1.10"), "EUR"),
            unrounded_amount="1.10",
            event_time=to_timestamp(NOW + timedelta(hours=i + 1)),
            rate_time=to_timestamp(NOW + timedelta(hours=i + 1)),
            bill_cycle_id=str(cycle.bill_cycle_id),
        )
        for code, count in (("api_calls", 3), ("sms", 2))
        for i in range(count)
    ]
    msg = message(
        "evolutivo.charging.v1.charges.created",
        charging_events.ChargesCreated(charges=charges, currency_code="EUR"),
        NOW,
    )
    await process(consumer_for(subscriptions(), stream_name("charging"), db.uow, inbox), msg)
    assert msg.acked
    db.clock.instant = DUE
    assert await CycleCloser(db.uow, DELAY, check_seconds=0.05, batch_size=10, policy=POLICY).catch_up() == 1
    return account_id


async def test_each_charge_is_on_its_bill_and_line(db: BillRunDb) -> None:
    account_id = await a_billed_account(db)
    async with db.uow() as uow:
        (listed,) = await uow.bills.list_for_account(account_id, None, 10)
        bill = await uow.bills.get(listed.bill_id)
    assert bill is not None and len(bill.lines) == 2
    expected = {c: (bill.bill_id, line.line_number) for line in bill.lines for c in line.charge_ids}
    rows = await db.rows(select(bill_items.c.charge_id, bill_items.c.bill_id, bill_items.c.bill_line_number))
    assert {r.charge_id: (r.bill_id, r.bill_line_number) for r in rows} == expected
    assert sorted(len(line.charge_ids) for line in bill.lines) == [2, 3]


async def test_a_charge_billed_already_fails_the_whole_marking(db: BillRunDb) -> None:
    account_id = await a_billed_account(db)
    before = await db.rows(select(bill_items).order_by(bill_items.c.charge_id))
    async with db.uow() as uow:
        (listed,) = await uow.bills.list_for_account(account_id, None, 10)
        bill = await uow.bills.get(listed.bill_id)
        assert bill is not None
        with pytest.raises(ItemAlreadyBilled):
            await uow.bill_items.mark_billed(uuid.uuid4(), bill.lines)
        await uow.rollback()
    assert await db.rows(select(bill_items).order_by(bill_items.c.charge_id)) == before


async def test_a_bills_charges_are_read_through_the_index_of_billed_items(db: BillRunDb) -> None:
    """`bill_items_billed` holds billed items only (migration 0015): a read of bills' charges
    (`bill_id IN (...)`, BillRepository's `with_charge_ids`) implies its predicate and can use it."""
    account_id = await a_billed_account(db)
    async with db.uow() as uow:
        (listed,) = await uow.bills.list_for_account(account_id, None, 10)
        bill = await uow.bills.get(listed.bill_id, with_charge_ids=True)
    assert bill is not None
    assert sorted(len(line.charge_ids) for line in bill.lines) == [2, 3]
    async with db.sessions() as session:
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            await session.scalars(
                text(
                    "EXPLAIN SELECT bill_id, bill_line_number, charge_id FROM bill_items"
                    f" WHERE bill_id IN ('{listed.bill_id}') ORDER BY bill_id, bill_line_number, charge_id"
                )
            )
        )
    assert "bill_items_billed" in plan, plan
