"""The bill run's statements against a real, migrated database (docs/performance.md, docs/billing.md
"Items and bills"): a bill's lines name its charges and the items are not written; a bill issued
while its cycle goes on bills the cycle through its last item, and one that finds the cycle moved
meanwhile fails and changes nothing; the unbilled items are read as a range of the cycle's index."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from alembic import command
from evolutivo.charging.v1 import events_pb2 as charging_events
from evolutivo.charging.v1 import usage_pb2
from evolutivo_billing.adapters import events
from evolutivo_billing.adapters.orm import bill_items, bill_lines, inbox, outbox
from evolutivo_billing.adapters.repository import CycleBilledMeanwhile
from evolutivo_billing.domain.bills import TaxRates
from evolutivo_billing.domain.cycles import BillCycleStatus
from evolutivo_billing.domain.model import BillingFrequency, BillingProfile
from evolutivo_billing.entrypoints.app import MIGRATIONS
from evolutivo_billing.entrypoints.consumers import subscriptions
from evolutivo_billing.entrypoints.cycle_closer import CycleCloser
from evolutivo_billing.service_layer import bills, handlers
from evolutivo_billing.service_layer.bills import BillPolicy
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork
from evolutivo_runtime.db import plain_url
from evolutivo_runtime.errors import FailedPrecondition
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.migrations import alembic_config
from evolutivo_runtime.money import to_money
from evolutivo_runtime.timestamps import to_timestamp
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
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


async def deliver_charges(db: BillRunDb, account_id: uuid.UUID, bill_cycle_id: uuid.UUID, start: datetime) -> None:
    """Five charges of the account rated into the cycle, on two charge codes (3 + 2)."""
    charges = [
        usage_pb2.RatedCharge(
            charge_id=str(uuid.uuid4()),
            account_id=str(account_id),
            kind=usage_pb2.CHARGE_KIND_USAGE,
            event_id=f"evt-{code}-{i}-{start.isoformat()}",
            purchase_id=str(uuid.uuid4()),
            charge_offer_code="api_pro",
            charge_offer_version=1,
            charge_code=code,
            tax_code="standard",
            quantity="1",
            amount=to_money(Decimal("1.10"), "EUR"),
            unrounded_amount="1.10",
            event_time=to_timestamp(start + timedelta(hours=i + 1)),
            rate_time=to_timestamp(start + timedelta(hours=i + 1)),
            bill_cycle_id=str(bill_cycle_id),
        )
        for code, count in (("api_calls", 3), ("sms", 2))
        for i in range(count)
    ]
    msg = message(
        "evolutivo.charging.v1.charges.created",
        charging_events.ChargesCreated(charges=charges, currency_code="EUR"),
        start,
    )
    await process(consumer_for(subscriptions(), stream_name("charging"), db.uow, inbox), msg)
    assert msg.acked


async def a_billed_account(db: BillRunDb) -> uuid.UUID:
    """An account whose first cycle is billed with two lines (two charge codes, 3 + 2 charges)."""
    account_id = uuid.uuid4()
    async with db.uow() as uow:
        profile = BillingProfile(15, BillingFrequency.MONTHLY, 30)
        await handlers.open_bill_unit(uow, account_id, "EUR", "Europe/Madrid", profile, NOW, NOW)
        await uow.commit()
        (cycle,) = await uow.bill_cycles.list_for_account(account_id, None, 10)
    await deliver_charges(db, account_id, cycle.bill_cycle_id, NOW)
    db.clock.instant = DUE
    assert await CycleCloser(db.uow, DELAY, check_seconds=0.05, batch_size=10, policy=POLICY).catch_up() == 1
    return account_id


async def test_each_charge_is_on_its_bill_and_line_and_no_item_is_written(db: BillRunDb) -> None:
    account_id = await a_billed_account(db)
    async with db.uow() as uow:
        (listed,) = await uow.bills.list_for_account(account_id, None, 10)
        bill = await uow.bills.get(listed.bill_id)
    assert bill is not None and len(bill.lines) == 2
    items = await db.rows(select(bill_items))
    codes = {r.charge_id: r.charge_code for r in items}
    assert sorted(c for line in bill.lines for c in line.charge_ids) == sorted(codes), "each charge on one line"
    for line in bill.lines:
        assert {codes[c] for c in line.charge_ids} == {line.key.charge_code}
        assert list(line.charge_ids) == sorted(line.charge_ids) and line.charge_count == len(line.charge_ids)
    assert sorted(len(line.charge_ids) for line in bill.lines) == [2, 3]
    assert all(r.bill_id is None and r.bill_line_number is None for r in items), "the pre-0016 columns stay unused"
    updated = await db.scalar(text("SELECT n_tup_upd FROM pg_stat_xact_user_tables WHERE relname = 'bill_items'"))
    assert not updated, "billing the items wrote none of them"


async def test_a_bill_now_bills_the_cycle_through_its_last_item_and_one_finding_it_moved_changes_nothing(
    db: BillRunDb,
) -> None:
    account_id = await a_billed_account(db)
    async with db.uow() as uow:
        open_cycle = (await uow.bill_cycles.list_for_account(account_id, None, 10))[0]
    assert open_cycle.status is BillCycleStatus.OPEN
    await deliver_charges(db, account_id, open_cycle.bill_cycle_id, DUE)
    seqs = await db.rows(select(bill_items.c.seq).where(bill_items.c.bill_cycle_id == open_cycle.bill_cycle_id))
    now_bill = await bills.bill_now(db.uow(), account_id, uuid.uuid4(), POLICY)
    assert sum(line.charge_count for line in now_bill.lines) == 5
    async with db.uow() as uow:
        after = await uow.bill_cycles.get(open_cycle.bill_cycle_id)
        assert after is not None and after.billed_through_seq == max(r.seq for r in seqs)
        assert await uow.bill_items.unbilled_in_cycle(after) == []
        # A transaction that read the cycle before that bill: its bill of the same items fails.
        stale = dataclasses.replace(after, billed_through_seq=0)
        stale.billed_through_seq = after.billed_through_seq + 1
        with pytest.raises(CycleBilledMeanwhile):
            await uow.bill_cycles.save_billed_through(stale, 0)
        await uow.rollback()
    async with db.uow() as uow:
        again = await uow.bill_cycles.get(open_cycle.bill_cycle_id)
    assert again is not None and again.billed_through_seq == after.billed_through_seq
    with pytest.raises(FailedPrecondition):
        await bills.bill_now(db.uow(), account_id, uuid.uuid4(), POLICY)  # nothing left unbilled


async def test_the_unbilled_items_are_a_range_of_the_cycles_index(db: BillRunDb) -> None:
    """`bill_items_unbilled` (bill_cycle_id, seq) since 0016: the items above a cycle's
    billed_through_seq are one range of it, whatever the cycle billed before."""
    account_id = await a_billed_account(db)
    async with db.uow() as uow:
        (cycle, _) = await uow.bill_cycles.list_for_account(account_id, None, 10)
    async with db.sessions() as session:
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            await session.scalars(
                text(f"EXPLAIN SELECT * FROM bill_items WHERE bill_cycle_id = '{cycle.bill_cycle_id}' AND seq > 3")
            )
        )
    assert "bill_items_unbilled" in plan and "seq > 3" in plan, plan


async def unbilled_and_billed(db: BillRunDb) -> tuple[set[uuid.UUID], dict[uuid.UUID, tuple[uuid.UUID, int]]]:
    """The unbilled items (by the cycles' billed_through_seq), and each billed charge's bill and line."""
    unbilled = await db.rows(
        text(
            "SELECT i.charge_id FROM bill_items i JOIN bill_cycles c USING (bill_cycle_id)"
            " WHERE c.status = 'open' AND i.seq > c.billed_through_seq"
        )
    )
    lines = await db.rows(text("SELECT bill_id, line_number, unnest(charge_ids) AS charge_id FROM bill_lines"))
    return {r.charge_id for r in unbilled}, {r.charge_id: (r.bill_id, r.line_number) for r in lines}


async def test_migration_0016_goes_back_and_forth_keeping_what_is_billed_and_where(db: BillRunDb) -> None:
    """Down to 0015 the items name their bill and line again (billed by the cycle's bill or by a
    bill now); up again, the lines name them, the billed items are numbered before the unbilled
    ones and each open cycle is billed through its last billed item, so the same items are
    unbilled; the items received next are numbered after all of them."""
    account_id = await a_billed_account(db)  # cycle 1 closed and billed
    async with db.uow() as uow:
        open_cycle = (await uow.bill_cycles.list_for_account(account_id, None, 10))[0]
    await deliver_charges(db, account_id, open_cycle.bill_cycle_id, DUE)
    await bills.bill_now(db.uow(), account_id, uuid.uuid4(), POLICY)  # cycle 2 billed through them
    await deliver_charges(db, account_id, open_cycle.bill_cycle_id, DUE + timedelta(days=2))  # unbilled
    unbilled, billed = await unbilled_and_billed(db)
    assert (len(unbilled), len(billed)) == (5, 10)

    await db.engine.dispose()  # no pooled connection in the way of the migrations
    config = alembic_config(MIGRATIONS, db.url)
    await asyncio.to_thread(command.downgrade, config, "0015")
    conn = await asyncpg.connect(plain_url(db.url))
    try:
        rows = await conn.fetch("SELECT charge_id, bill_id, bill_line_number FROM bill_items")
        assert {r["charge_id"] for r in rows if r["bill_id"] is None} == unbilled
        assert {r["charge_id"]: (r["bill_id"], r["bill_line_number"]) for r in rows if r["bill_id"]} == billed
        await asyncio.to_thread(command.upgrade, config, "head")
    finally:
        await conn.close()
    assert await unbilled_and_billed(db) == (unbilled, billed)
    seqs = {r.charge_id: r.seq for r in await db.rows(select(bill_items.c.charge_id, bill_items.c.seq))}
    assert max(seqs[c] for c in billed) < min(seqs[c] for c in unbilled), "billed first"
    await deliver_charges(db, account_id, open_cycle.bill_cycle_id, DUE + timedelta(days=3))
    newest = await db.rows(select(bill_items.c.seq).where(bill_items.c.seq > max(seqs.values())))
    assert len(newest) == 5, "the identity goes on after the numbered items"
    cache = "SELECT seqcache FROM pg_sequence WHERE seqrelid = pg_get_serial_sequence('bill_items', 'seq')::regclass"
    assert await db.scalar(text(cache)) == 1, "values in order across sessions (docs/billing.md)"


async def test_migration_0016_refuses_an_unbilled_item_in_a_closed_cycle(db: BillRunDb) -> None:
    """The code never leaves one (a cycle's bill is issued as it closes), but a database that has
    one would lose it to the new model: the upgrade stops and says why."""
    account_id = await a_billed_account(db)
    await db.engine.dispose()
    config = alembic_config(MIGRATIONS, db.url)
    await asyncio.to_thread(command.downgrade, config, "0015")
    conn = await asyncpg.connect(plain_url(db.url))
    try:
        await conn.execute(
            "UPDATE bill_items SET bill_id = NULL, bill_line_number = NULL"
            " WHERE charge_id = (SELECT charge_id FROM bill_items WHERE account_id = $1 LIMIT 1)",
            account_id,
        )
        with pytest.raises(RuntimeError, match="unbilled bill items are in closed cycles"):
            await asyncio.to_thread(command.upgrade, config, "head")
        assert await conn.fetchval("SELECT version_num FROM alembic_version") == "0015", "nothing changed"
    finally:
        await conn.close()


async def test_a_bill_line_without_its_charges_is_refused(db: BillRunDb) -> None:
    """What fences a replica of the release before 0016 during a rolling deploy (deploy/README.md,
    "Upgrades without downtime"): it writes lines without `charge_ids`, so every bill it tries
    to issue fails and rolls back; and a line's charges must be as many as it counts."""
    account_id = await a_billed_account(db)
    async with db.uow() as uow:
        (listed,) = await uow.bills.list_for_account(account_id, None, 10)
    line = {c.name: v for c, v in zip(bill_lines.c, (await db.rows(select(bill_lines)))[0], strict=True)}
    for change in ({"charge_ids": None}, {"charge_ids": [uuid.uuid4()], "charge_count": 2}):
        with pytest.raises(IntegrityError, match=r"charge_ids|bill_lines_charge_count"):
            async with db.engine.begin() as conn:
                await conn.execute(bill_lines.insert().values(**{**line, "line_number": 9, **change}))
    assert len(await db.rows(select(bill_lines).where(bill_lines.c.bill_id == listed.bill_id))) == 2
