"""The set-based bill run against the per-cycle path it replaces (docs/performance.md): one seeded
billing database is copied (`CREATE DATABASE ... TEMPLATE`), the cycle closer catches up on one
copy with passes closed set-based and on the other with every cycle closed one by one, and the two
databases must then hold the same thing, row for row, and the same events in the same order.

The seeding covers what a bill depends on: several time zones (cycles ending on both sides of a
new year, so two number series in one pass), currencies with 0, 2 and 3 decimals, tax codes with
and without a rate, charges summing to zero, late charges, tiered and unit-priced charges, a bill
now's bill, pending profile changes made before and after their cycle's end, payments (paid,
part-paid, overpaid), credit notes (on the bill, and account credit), units with no charges, units
several cycles behind (the clock jumps two months: one cycle per pass) and more due cycles than a
pass takes. Ids the close generates (new cycles, bills) are compared by what they are (the
account's cycle sequence, the cycle's bill), every other value as it is."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from evolutivo.balance.v1 import events_pb2 as balance_events
from evolutivo.balance.v1 import payment_pb2
from evolutivo.billing.v1 import events_pb2 as billing_events  # noqa: F401  # registers billing's events
from evolutivo.charging.v1 import events_pb2 as charging_events
from evolutivo.charging.v1 import usage_pb2
from evolutivo_billing.adapters import events
from evolutivo_billing.adapters.orm import inbox, outbox
from evolutivo_billing.domain.bills import TaxRates
from evolutivo_billing.domain.credit_notes import CreditLineRequest
from evolutivo_billing.domain.cycles import BillCycle
from evolutivo_billing.domain.model import BillingFrequency, BillingProfile
from evolutivo_billing.entrypoints.app import MIGRATIONS
from evolutivo_billing.entrypoints.consumers import subscriptions
from evolutivo_billing.service_layer import bills as bills_service
from evolutivo_billing.service_layer import handlers
from evolutivo_billing.service_layer.bills import BillPolicy, bill_now
from evolutivo_billing.service_layer.credit_notes import CreditNoteRequest, create_credit_note
from evolutivo_billing.service_layer.cycles import ClosePass, close_due_cycles
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork
from evolutivo_runtime.db import plain_url
from evolutivo_runtime.messaging import envelope
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.money import to_money
from evolutivo_runtime.timestamps import to_timestamp
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.json_format import MessageToDict
from sqlalchemy.engine import make_url
from support.databases import MigratedDatabase, ServiceDb, drop_databases
from support.jetstream import FakeMsg, consumer_for, message, process

DELAY = timedelta(hours=1)
RATES = TaxRates({"standard": Decimal("0.21"), "reduced": Decimal("0.10"), "exempt": Decimal(0)})
# Five zones with five different offsets: with each zone's billing days distinct, no two units'
# cycles end at the same instant, so both paths claim and number the cycles in the same order
# (the claim breaks ties of end time by cycle id, which the close generates at random).
ZONES = ("Europe/Madrid", "America/New_York", "Asia/Kolkata", "Pacific/Auckland", "America/Santiago")
CURRENCIES = {0: "JPY", 2: "EUR", 3: "BHD"}
T0 = datetime(2031, 11, 20, 12, tzinfo=UTC)  # the units are opened
ROUND_1 = datetime(2031, 12, 20, 12, tzinfo=UTC)  # their first cycles are billed (in the seed)
# The run compared: up to three cycles per unit; the second cycles end from 21 December to 20
# January, so their bills (with the charges seeded) are numbered in 2031's and 2032's series.
ROUND_2 = datetime(2032, 2, 21, 12, tzinfo=UTC)
PASS_SIZE = 25


class BillingDb(ServiceDb):
    def uow(self) -> BillingUnitOfWork:
        return BillingUnitOfWork(self.sessions, outbox, self.clock, events.encode)


@dataclass
class Account:
    account_id: uuid.UUID
    currency: str
    zone: str
    profile: BillingProfile


def money(amount: Decimal, currency: str) -> Decimal:
    exponent = next(e for e, c in CURRENCIES.items() if c == currency)
    return amount.quantize(Decimal(1).scaleb(-exponent))


def rated(
    account: Account,
    cycle_id: uuid.UUID,
    amount: Decimal,
    at: datetime,
    code: str = "api_calls",
    tax: str = "standard",
    quantity: str = "1",
    late: bool = False,
    tiers: tuple[tuple[str, str], ...] = (),
) -> usage_pb2.RatedCharge:
    return usage_pb2.RatedCharge(
        charge_id=str(uuid.uuid4()),
        account_id=str(account.account_id),
        kind=usage_pb2.CHARGE_KIND_USAGE,
        event_id=f"evt-{uuid.uuid4().hex[:10]}",
        purchase_id=str(uuid.uuid4()),
        charge_offer_code="api_pro",
        charge_offer_version=1,
        charge_code=code,
        tax_code=tax,
        quantity=quantity,
        amount=to_money(amount, account.currency),
        unrounded_amount=str(amount),
        tiers=[
            usage_pb2.TierLine(tier=i + 1, units=units, unit_price=price, flat_fee="0", amount=str(amount))
            for i, (units, price) in enumerate(tiers)
        ],
        event_time=to_timestamp(at),
        rate_time=to_timestamp(at),
        bill_cycle_id=str(cycle_id),
        late=late,
    )


async def deliver(db: BillingDb, service: str, *msgs: FakeMsg) -> None:
    await process(consumer_for(subscriptions(), stream_name(service), db.uow, inbox), *msgs)
    assert all(m.acked for m in msgs), "every event applies"


async def open_cycle(db: BillingDb, account: Account) -> BillCycle:
    async with db.uow() as uow:
        unit = await uow.bill_units.for_account(account.account_id)
        assert unit is not None
        cycle = await uow.bill_cycles.open_for_unit(unit.bill_unit_id)
    assert cycle is not None
    return cycle


async def closed_cycles(db: BillingDb, account: Account) -> list[BillCycle]:
    async with db.uow() as uow:
        return [c for c in await uow.bill_cycles.list_for_account(account.account_id, None, 100) if c.close_time]


async def charge_cycle(db: BillingDb, rng: random.Random, account: Account, i: int) -> None:
    """A mix of charges in the account's open cycle, chosen by `i`."""
    cycle = await open_cycle(db, account)
    at = max(cycle.start_time, db.clock.now() - timedelta(days=2)) + timedelta(hours=1)

    def amount() -> Decimal:
        return money(Decimal(rng.randint(1, 90_000)) / 1000, account.currency)

    charges: list[usage_pb2.RatedCharge] = []
    kind = i % 7
    if kind == 0:
        return  # no charges: a zero bill
    if kind == 1:  # charges cancelling out: a zero bill with items
        x = amount()
        charges = [rated(account, cycle.bill_cycle_id, x, at), rated(account, cycle.bill_cycle_id, -x, at)]
    else:
        for n in range(rng.randint(2, 9)):
            code, tax = rng.choice([("api_calls", "standard"), ("sms", "reduced"), ("support", "exempt")])
            quantity = str(rng.randint(1, 400))
            if n % 3 == 0:  # one band without a flat fee: a unit price
                charges.append(
                    rated(account, cycle.bill_cycle_id, amount(), at, code, tax, quantity, tiers=((quantity, "0.01"),))
                )
            else:
                charges.append(rated(account, cycle.bill_cycle_id, amount(), at, code, tax, quantity))
        if kind == 2:  # a refund, and a tax code without a rate (taxed at the standard rate)
            charges.append(rated(account, cycle.bill_cycle_id, -amount(), at, "refund", "standard"))
            charges.append(rated(account, cycle.bill_cycle_id, amount(), at, "roaming", "mystery"))
    if kind == 3:  # late usage of the closed cycle, rated into it before charging learnt it closed
        previous = await closed_cycles(db, account)
        if previous:
            last = previous[0]
            charges.append(rated(account, last.bill_cycle_id, amount(), last.end_time - timedelta(hours=3)))
    if charges:
        event = charging_events.ChargesCreated(charges=charges, currency_code=account.currency)
        await deliver(db, "charging", message("evolutivo.charging.v1.charges.created", event, db.clock.now()))


def payment(account: Account, amount: Decimal, at: datetime) -> FakeMsg:
    p = payment_pb2.Payment(
        payment_id=str(uuid.uuid4()),
        account_id=str(account.account_id),
        balance_group_id=str(uuid.uuid4()),
        amount=to_money(amount, account.currency),
        method=payment_pb2.PAYMENT_METHOD_TYPE_BANK_TRANSFER,
        reference=f"ref-{uuid.uuid4().hex[:8]}",
        received_time=to_timestamp(at),
        state=payment_pb2.PAYMENT_STATE_RECORDED,
    )
    return message("evolutivo.balance.v1.payment.recorded", balance_events.PaymentRecorded(payment=p), at)


async def seed(db: BillingDb, policy: BillPolicy) -> list[Account]:
    """Units, a first round of bills (per-cycle path), then what happened before the run compared:
    payments, credit notes, profile changes, a bill now, new units and charges."""
    rng = random.Random(20311120)
    accounts: list[Account] = []
    for z, zone in enumerate(ZONES):
        for day in range(z + 1, 29, 4):
            exponent = (0, 3, 2, 2, 2)[len(accounts) % 5]
            terms = (30, 0, 15, 7)[day % 4]
            accounts.append(
                Account(uuid.uuid4(), CURRENCIES[exponent], zone, BillingProfile(day, payment_terms_days=terms))
            )
    db.clock.instant = T0
    for account in accounts:
        async with db.uow() as uow:
            await handlers.open_bill_unit(
                uow, account.account_id, account.currency, account.zone, account.profile, T0, T0
            )
            await uow.commit()
    for i, account in enumerate(accounts):
        await charge_cycle(db, rng, account, i + 2)

    # Round 1, in the seed: each unit's first cycle billed.
    db.clock.instant = ROUND_1
    while (await close_due_cycles(db.uow(), DELAY, PASS_SIZE, policy=policy, together=False)).closed:
        pass

    # Payments and credit notes on the first bills.
    db.clock.instant = ROUND_1 + timedelta(hours=2)
    for i, account in enumerate(accounts):
        async with db.uow() as uow:
            bills = await uow.bills.list_for_account(account.account_id, None, 10)
        owing = [b for b in bills if b.open_amount > 0]
        if not owing:
            continue
        bill = owing[0]
        case = i % 6
        if case in (0, 5):  # paid in full, then credited in full: the credit note is account credit
            await deliver(db, "balance", payment(account, bill.open_amount, db.clock.now()))
            note = CreditNoteRequest(bill.bill_id, True, (), "goodwill", "agent", uuid.uuid4())
            await create_credit_note(db.uow(), note)
        if case in (1, 5):  # overpaid: payment credit
            extra = money(Decimal("5.5"), account.currency) or Decimal(5)
            await deliver(
                db, "balance", payment(account, bill.open_amount + extra if case == 1 else extra, db.clock.now())
            )
        if case == 2:  # part paid: a previous balance on the next bill
            part = money(bill.open_amount / 3, account.currency)
            if part > 0:
                await deliver(db, "balance", payment(account, part, db.clock.now()))
        if case == 3:  # a credit note on one line of the unpaid bill
            note = CreditNoteRequest(bill.bill_id, False, (CreditLineRequest(1),), "error", "agent", uuid.uuid4())
            await create_credit_note(db.uow(), note)

    # Profile changes: made during the open cycle (in force from the next), or after its end (the one after).
    for i, account in enumerate(accounts[::4]):
        cycle = await open_cycle(db, account)
        facts = handlers.AccountFacts(account.account_id, account.currency, account.zone, account.profile)
        changed = (
            BillingProfile(account.profile.bill_cycle_day, BillingFrequency.QUARTERLY, 10)
            if i % 2
            else BillingProfile(account.profile.bill_cycle_day, payment_terms_days=3)
        )
        when = db.clock.now() if i % 3 else cycle.end_time + timedelta(minutes=30)
        async with db.uow() as uow:
            assert await handlers.schedule_profile_change(uow, facts, changed, when)
            await uow.commit()

    # Charges in the open cycles (late ones among them), and a bill now.
    db.clock.instant = ROUND_1 + timedelta(days=3)
    for i, account in enumerate(accounts):
        await charge_cycle(db, rng, account, i)
    await bill_now(db.uow(), accounts[2].account_id, uuid.uuid4(), policy)

    # Units opened later: their first cycle is billed in the run compared.
    for z, zone in enumerate(ZONES):
        account = Account(uuid.uuid4(), "EUR", zone, BillingProfile(z + 3))
        async with db.uow() as uow:
            await handlers.open_bill_unit(
                uow, account.account_id, "EUR", zone, account.profile, db.clock.now(), db.clock.now()
            )
            await uow.commit()
        accounts.append(account)
        await charge_cycle(db, rng, account, 5)
    return accounts


# Comparing two databases.


def _decode(event_type: str, payload: bytes) -> dict[str, Any]:
    descriptor = descriptor_pool.Default().FindMessageTypeByName(event_type)
    message_class = message_factory.GetMessageClass(descriptor)
    return MessageToDict(message_class.FromString(payload), preserving_proto_field_name=True)


def _normal(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, uuid.UUID):
        return names.get(str(value), str(value))
    if isinstance(value, str):
        return names.get(value, value)
    if isinstance(value, list | tuple):
        return [_normal(v, names) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v, names) for k, v in value.items()}
    return value


async def dump(url: str) -> dict[str, Any]:
    """Every table's rows (sorted) and the outbox's events (in order), with the ids the close
    generates (cycles, bills) replaced by what they are."""
    conn = await asyncpg.connect(plain_url(url))
    try:
        names: dict[str, str] = {}
        for row in await conn.fetch("SELECT bill_cycle_id, account_id, sequence FROM bill_cycles"):
            names[str(row["bill_cycle_id"])] = f"cycle:{row['account_id']}:{row['sequence']}"
        for row in await conn.fetch("SELECT bill_id, bill_cycle_id, trigger, request_id FROM bills"):
            cycle = names.get(str(row["bill_cycle_id"]))
            names[str(row["bill_id"])] = f"bill:{cycle}:{row['trigger']}:{row['request_id']}"
        tables = [
            row["tablename"]
            for row in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
            )
        ]
        found: dict[str, Any] = {}
        for table in sorted(tables):
            if table == "outbox":
                continue
            rows = [
                tuple(sorted((k, _normal(v, names)) for k, v in dict(row).items()))
                for row in await conn.fetch(f'SELECT * FROM "{table}"')
            ]
            found[table] = sorted(rows, key=repr)
        found["outbox"] = [
            (
                row["subject"],
                row["event_type"],
                json.loads(row["headers"])[envelope.OCCURRED_AT],
                _normal(_decode(row["event_type"], row["payload"]), names),
            )
            for row in await conn.fetch("SELECT * FROM outbox ORDER BY seq")
        ]
        return found
    finally:
        await conn.close()


@pytest.fixture
async def source(migrated_database: MigratedDatabase) -> AsyncIterator[str]:
    yield await migrated_database("billing_bill_run", MIGRATIONS)


async def copy_of(server_url: str, url: str) -> str:
    name = f"{make_url(url).database}_copy"
    conn = await asyncpg.connect(plain_url(server_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{make_url(url).database}"')
    finally:
        await conn.close()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def run(url: str, policy: BillPolicy, together: bool) -> list[ClosePass]:
    """The closer catching up at ROUND_2 (passes until one closes nothing, as CycleCloser.catch_up)."""
    async with BillingDb.open(url, ROUND_2) as db:
        passes = []
        while (done := await close_due_cycles(db.uow(), DELAY, PASS_SIZE, policy=policy, together=together)).closed:
            passes.append(done)
        return passes


@pytest.mark.parametrize(
    ("suppress_zero_bills", "group_items"),
    [(False, None), (True, None), (False, 40)],
    ids=["zero-bills-issued", "zero-bills-suppressed", "small-item-groups"],
)
async def test_the_set_based_run_bills_as_the_per_cycle_path_does(
    source: str, pg_server_url: str, monkeypatch: pytest.MonkeyPatch, suppress_zero_bills: bool, group_items: int | None
) -> None:
    """With `group_items`, the set-based run bills each pass in groups of about that many items
    (several groups a pass, some cycles over the limit alone): the same result again."""
    if group_items is not None:
        monkeypatch.setattr(bills_service, "BILL_RUN_GROUP_ITEMS", group_items)
    policy = BillPolicy(RATES, suppress_zero_bills=suppress_zero_bills)
    async with BillingDb.open(source, T0) as db:
        accounts = await seed(db, policy)
    per_cycle_url = await copy_of(pg_server_url, source)
    try:
        together = await run(source, policy, together=True)
        one_by_one = await run(per_cycle_url, policy, together=False)
        set_based, reference = await dump(source), await dump(per_cycle_url)
    finally:
        await drop_databases(pg_server_url, [make_url(per_cycle_url).database or ""])

    # The run: every pass set-based, several full ones, the same passes as the per-cycle path's.
    assert all(p.together and not p.failed for p in together)
    assert not any(p.together for p in one_by_one)
    assert [(p.closed, p.issued, p.suppressed) for p in together] == [
        (p.closed, p.issued, p.suppressed) for p in one_by_one
    ]
    assert sum(p.closed for p in together) > len(accounts), "units several cycles behind"
    assert len(together) >= 3 and together[0].closed == PASS_SIZE
    assert sum(p.suppressed for p in together) > 0 if suppress_zero_bills else sum(p.issued for p in together) > 0
    bills = [dict(row) for row in set_based["bills"]]
    assert {b["number_series"] for b in bills if b["number_series"]} == {"F-2031", "F-2032"}, "bills of both years"
    assert any(b["credit_applied"] > 0 for b in bills), "account credit applied by the run"

    # The result: the same rows everywhere and the same events in the same order.
    assert set_based.keys() == reference.keys()
    for table in reference:
        assert set_based[table] == reference[table], f"{table} differs"
