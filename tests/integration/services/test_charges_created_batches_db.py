"""Billing's and balance's batch handlers for charging's ChargesCreated (`on_charges_created_batch`,
through the runtime consumer's batch handlers), against real, migrated databases: a fetched batch
of ChargesCreated for many accounts, in several currencies, with charges repeated under other event
ids, redelivered messages, reversals and charges recorded before, leaves exactly what the same
messages applied one at a time leave (billing: the bill items with their cycle, late flag, period
and amounts, the threshold marks; balance: the ledger entries with their groups and reasons, the
groups' balances and credit state, the events in the outbox); every message of a batch is acked
and the batch path is the one taken; a poison message in a batch makes the batch handler raise,
the consumer applies the messages one by one and the poison one alone is retried."""

from __future__ import annotations

import dataclasses
import itertools
import random
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import ModuleType
from typing import Any, ClassVar

import pytest
from evolutivo.balance.v1 import balance_service_pb2 as balance_pb
from evolutivo.charging.v1 import events_pb2 as charging_events
from evolutivo.charging.v1 import usage_pb2
from evolutivo_balance.adapters import events as balance_event_codes
from evolutivo_balance.adapters import orm as balance_orm
from evolutivo_balance.entrypoints.app import MIGRATIONS as BALANCE_MIGRATIONS
from evolutivo_billing.adapters import events as billing_event_codes
from evolutivo_billing.adapters import orm as billing_orm
from evolutivo_billing.domain.bills import TaxRates
from evolutivo_billing.domain.model import BillingProfile
from evolutivo_billing.entrypoints import consumers as billing_consumers
from evolutivo_billing.entrypoints.app import MIGRATIONS as BILLING_MIGRATIONS
from evolutivo_billing.entrypoints.cycle_closer import CycleCloser
from evolutivo_billing.service_layer import handlers as billing_handlers
from evolutivo_billing.service_layer.bills import BillPolicy
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork
from evolutivo_runtime.money import to_money
from evolutivo_runtime.timestamps import to_timestamp
from sqlalchemy import func, select
from support.batches import (
    EXPONENTS,
    NO_CONTEXT,
    BalanceBatchesDb,
    ConsumingDb,
    Labels,
    acked,
    in_turn,
    last_outbox_seq,
    normalized,
    published_since,
    random_amount,
    two_databases,
)
from support.databases import MigratedDatabase
from support.jetstream import FakeMsg, message, process

CHARGES_CREATED = "evolutivo.charging.v1.charges.created"
ZONES = ["Europe/Madrid", "America/New_York", "Asia/Kolkata"]

# Billing's timeline: the early accounts' units open at T0 (first cycle to 15 May, local), their
# first cycles close at CLOSE (bills issued, second cycles open), the late accounts' units open at
# T1, and the batch is applied at NOW.
T0 = datetime(2031, 5, 10, 10, tzinfo=UTC)
CLOSE = datetime(2031, 5, 15, 12, tzinfo=UTC)
T1 = datetime(2031, 5, 16, 10, tzinfo=UTC)
NOW = datetime(2031, 5, 20, 9, 30, tzinfo=UTC)
DELAY = timedelta(hours=1)
POLICY = BillPolicy(TaxRates({"standard": Decimal("0.21"), "reduced": Decimal("0.10"), "exempt": Decimal(0)}))

# What both services' comparisons share.


def _rated(
    charge_id: uuid.UUID | str,
    account_id: uuid.UUID,
    amount: Decimal,
    currency: str,
    **fields: Any,
) -> usage_pb2.RatedCharge:
    return usage_pb2.RatedCharge(
        charge_id=str(charge_id),
        account_id=str(account_id),
        amount=to_money(amount, currency),
        **fields,
    )


def _charges_created(event_id: uuid.UUID, currency: str, charges: Sequence[usage_pb2.RatedCharge]) -> FakeMsg:
    return message(
        CHARGES_CREATED, charging_events.ChargesCreated(charges=charges, currency_code=currency), NOW, event_id
    )


@dataclass(frozen=True)
class Sent:
    """A ChargesCreated as charging published it: its event id, currency and charges (specs the
    databases render into RatedCharges; several Sent with one event id are redeliveries)."""

    event_id: uuid.UUID
    currency: str
    charges: tuple[Any, ...]


def _stream(
    rng: random.Random,
    pool: dict[str, list[Any]],
    fresh: Callable[[str, list[Any]], Any],
    currencies: Sequence[str],
    messages: int,
    before: Sequence[Sent] = (),
) -> list[Sent]:
    """`messages` ChargesCreated of 1 to 5 charges in one currency each: mostly new charges
    (`fresh(currency, earlier charges)`), some sent before (in another message, so under another
    event id: recorded before the batch or earlier in it), and some messages delivered twice
    (the same event id: a redelivery) in the batch."""
    sent: list[Sent] = []
    for _ in range(messages):
        currency = rng.choice(currencies)
        charges: list[Any] = []
        for _ in range(rng.randint(1, 5)):
            earlier = pool.setdefault(currency, [])
            if earlier and rng.random() < 0.12:
                charges.append(rng.choice(earlier))  # the same charge again, under another event id
            else:
                charge = fresh(currency, earlier)
                earlier.append(charge)
                charges.append(charge)
        sent.append(Sent(uuid.UUID(int=rng.getrandbits(128)), currency, tuple(charges)))
    for _ in range(3):  # redelivered: the same message, later in the batch
        at = rng.randrange(len(sent))
        sent.insert(rng.randint(at + 1, len(sent)), sent[at])
    if before:  # a message of the set-up again (its event id applied already)
        sent.insert(rng.randrange(len(sent)), rng.choice(list(before)))
    return sent


def _check_repeats(before: Sequence[Sent], batch: Sequence[Sent]) -> None:
    """The batch has what makes a batch handler's bookkeeping differ from a message's: a charge
    recorded before it again, a charge twice in it under two event ids, a message delivered twice
    in it (one event id) and a message of the set-up again."""
    recorded = {c for s in before for c in s.charges}
    first_seen: dict[Any, uuid.UUID] = {}
    twice_in_batch = False
    for sent in batch:
        for charge in sent.charges:
            seen = first_seen.setdefault(charge, sent.event_id)
            twice_in_batch |= seen != sent.event_id and charge not in recorded
    ids = [s.event_id for s in batch]
    assert any(c in recorded for s in batch for c in s.charges if s not in before), "recorded before, sent again"
    assert twice_in_batch, "a charge in two messages of the batch"
    assert len(set(ids)) < len(ids), "a message redelivered in the batch"
    assert any(s in before for s in batch), "a message of the set-up redelivered"


# Billing.


@dataclass(frozen=True)
class BillingAccount:
    account_id: uuid.UUID
    currency: str
    zone: str
    profile: BillingProfile
    threshold: Decimal | None
    # Opened at T0 (its first cycle closed before the batch), else at T1 (still in its first).
    early: bool

    @property
    def open_sequence(self) -> int:
        return 2 if self.early else 1


# A cycle a charge names: (account, sequence) for one billing knows, a UUID for one it does not,
# None for none.
CycleRef = tuple[uuid.UUID, int] | uuid.UUID | None


@dataclass(frozen=True)
class BillingCharge:
    charge_id: uuid.UUID
    account: BillingAccount
    kind: int
    cycle: CycleRef
    amount: Decimal
    event_time: datetime
    late: bool
    charge_code: str
    tax_code: str
    quantity: str
    reverses: uuid.UUID | None = None


class BillingDb(ConsumingDb[BillingUnitOfWork]):
    consumers_module: ClassVar[ModuleType] = billing_consumers
    stream = "charging"
    inbox_table = billing_orm.inbox
    per_message_handlers = ("on_charges_created",)
    cycle_ids: dict[tuple[uuid.UUID, int], uuid.UUID]

    def uow(self) -> BillingUnitOfWork:
        return BillingUnitOfWork(self.sessions, billing_orm.outbox, self.clock, billing_event_codes.encode)

    async def learn_cycles(self) -> None:
        t = billing_orm.bill_cycles
        self.cycle_ids = {
            (row.account_id, row.sequence): row.bill_cycle_id
            for row in await self.rows(select(t.c.account_id, t.c.sequence, t.c.bill_cycle_id))
        }

    def rated(self, charge: BillingCharge) -> usage_pb2.RatedCharge:
        cycle = charge.cycle
        cycle_id = self.cycle_ids[cycle] if isinstance(cycle, tuple) else cycle
        return _rated(
            charge.charge_id,
            charge.account.account_id,
            charge.amount,
            charge.account.currency,
            kind=charge.kind,
            event_id=f"usage-{charge.charge_id.hex[:12]}",
            purchase_id=str(uuid.uuid5(charge.account.account_id, "purchase")),
            charge_offer_code="api_pro",
            charge_offer_version=1,
            charge_code=charge.charge_code,
            tax_code=charge.tax_code,
            quantity=charge.quantity,
            unrounded_amount=str(charge.amount),
            event_time=to_timestamp(charge.event_time),
            rate_time=to_timestamp(charge.event_time + timedelta(seconds=3)),
            bill_cycle_id=str(cycle_id or ""),
            late=charge.late,
            reverses_charge_id=str(charge.reverses or ""),
        )

    def messages(self, sent: Sequence[Sent]) -> list[FakeMsg]:
        return [_charges_created(s.event_id, s.currency, [self.rated(c) for c in s.charges]) for s in sent]

    async def labels(self) -> Labels:
        units = billing_orm.bill_units
        cycles = billing_orm.bill_cycles
        found = {
            str(row.bill_unit_id): f"unit of {row.account_id}"
            for row in await self.rows(select(units.c.bill_unit_id, units.c.account_id))
        }
        for row in await self.rows(select(cycles.c.bill_cycle_id, cycles.c.account_id, cycles.c.sequence)):
            found[str(row.bill_cycle_id)] = f"cycle {row.sequence} of {row.account_id}"
        bills = billing_orm.bills
        for row in await self.rows(select(bills.c.bill_id, bills.c.bill_cycle_id)):
            found[str(row.bill_id)] = f"bill of {found[str(row.bill_cycle_id)]}"
        return found

    async def state(self, outbox_after: int) -> dict[str, Any]:
        """Everything ChargesCreated changes, with the ids billing drew at random (units, cycles)
        replaced by what they identify: the items (charge id, cycle, rated cycle, late flag,
        period, amounts, quantities, receive time...), the units' threshold marks, the cycles, the
        events published since `outbox_after`."""
        labels = await self.labels()
        items = billing_orm.bill_items
        units = billing_orm.bill_units
        cycles = billing_orm.bill_cycles
        return {
            # Not their `seq`: the order a batch inserts its items in is its own (what `seq` decides,
            # billed or not against the cycles' billed_through_seq, is no ChargesCreated's to change).
            "items": [
                normalized({k: v for k, v in row._mapping.items() if k != "seq"}, labels)
                for row in await self.rows(select(items).order_by(items.c.charge_id))
            ],
            "thresholds": [
                tuple(row)
                for row in await self.rows(
                    select(units.c.account_id, units.c.threshold_amount, units.c.threshold_reached_time).order_by(
                        units.c.account_id
                    )
                )
            ],
            "cycles": [
                normalized(dict(row._mapping), labels)
                for row in await self.rows(select(cycles).order_by(cycles.c.account_id, cycles.c.sequence))
            ],
            "bills": await self.count(billing_orm.bills),
            "published": await published_since(self, billing_orm.outbox, outbox_after, labels),
        }


@dataclass
class BillingWorld:
    """The accounts and the ChargesCreated before the batch (`before_close` into the early
    accounts' first cycles, billed at their close; `before_batch` after it) and the batch's."""

    accounts: list[BillingAccount]
    before_close: list[Sent] = field(default_factory=list)
    before_batch: list[Sent] = field(default_factory=list)
    batch: list[Sent] = field(default_factory=list)

    def by_currency(self, currency: str) -> list[BillingAccount]:
        return [a for a in self.accounts if a.currency == currency]

    @property
    def currencies(self) -> list[str]:
        return sorted({a.currency for a in self.accounts})

    async def prepare(self, db: BillingDb) -> int:
        """The same set-up in each database, by the consumer's own handlers: units, cycles (some
        closed and billed), charges recorded before the batch. Returns the outbox's last seq."""
        await self.open_units(db, early=True, at=T0)
        await in_turn(db.consumer(), db.messages(self.before_close))
        db.clock.instant = CLOSE
        closer = CycleCloser(db.uow, DELAY, check_seconds=0.05, batch_size=100, policy=POLICY)
        assert await closer.catch_up() == sum(1 for a in self.accounts if a.early)
        await self.open_units(db, early=False, at=T1)
        await in_turn(db.consumer(), db.messages(self.before_batch))
        db.clock.instant = NOW
        return await last_outbox_seq(db, billing_orm.outbox)

    async def open_units(self, db: BillingDb, early: bool, at: datetime) -> None:
        """At `at`, the units of the early accounts (or of the late ones), each with its first cycle."""
        db.clock.instant = at
        async with db.uow() as uow:
            for a in self.accounts:
                if a.early == early:
                    await billing_handlers.open_bill_unit(
                        uow, a.account_id, a.currency, a.zone, a.profile, at, at, a.threshold
                    )
            await uow.commit()
        await db.learn_cycles()


def billing_world(seed: int, accounts: int, messages: int) -> BillingWorld:
    """Accounts in four currencies and three time zones, about half opened early (their first
    cycle closed and billed) and half late, some with a threshold; charges of every kind naming
    their own open or closed cycle, another account's, an unknown one or none, with event times
    before the unit, in the closed cycle or in the open one, charging's late flag now and then,
    and reversals of earlier charges (negative)."""
    rng = random.Random(seed)
    currencies = list(EXPONENTS)
    made = []
    for i in range(accounts):
        currency = currencies[i % len(currencies)]
        early = rng.random() < 0.55
        threshold = random_amount(rng, currency, 40, 90) if rng.random() < 0.35 else None
        day = 15 if early else rng.choice([1, 15, 28])
        made.append(
            BillingAccount(
                uuid.UUID(int=rng.getrandbits(128)),
                currency,
                rng.choice(ZONES),
                BillingProfile(day, payment_terms_days=rng.choice([14, 30])),
                threshold,
                early,
            )
        )
    world = BillingWorld(made)

    def minutes(days: int) -> timedelta:
        """A random time within `days` days."""
        return timedelta(minutes=rng.randint(0, days * 24 * 60))

    def charge(account: BillingAccount, before: bool, earlier: list[Any]) -> BillingCharge:
        """A new charge for `account` (`before`: before the batch, as charging rated it then)."""
        mine: list[BillingCharge] = [c for c in earlier if c.account == account and c.reverses is None and c.amount > 0]
        if mine and not before and rng.random() < 0.12:  # rerated: the charge reversed
            old = rng.choice(mine)
            return dataclasses.replace(
                old,
                charge_id=uuid.UUID(int=rng.getrandbits(128)),
                kind=usage_pb2.CHARGE_KIND_REVERSAL,
                amount=-old.amount,
                reverses=old.charge_id,
            )
        others = [a for a in world.accounts if a is not account]
        when = rng.random()
        cycle: CycleRef
        if account.early and when < 0.35:  # in the first cycle: rated into it (closed since) or elsewhere
            event_time = T0 + minutes(4)
            cycle = rng.choice([(account.account_id, 1)] * 3 + [uuid.UUID(int=rng.getrandbits(128)), None])
        elif when < 0.5:  # before the unit's first cycle
            event_time = (T0 if account.early else T1) - timedelta(days=1) - minutes(6)
            cycle = rng.choice([uuid.UUID(int=rng.getrandbits(128)), None, (account.account_id, 1)])
        else:  # in the open cycle
            start = CLOSE if account.early else T1
            event_time = start + timedelta(minutes=rng.randint(0, int((NOW - start).total_seconds() // 60)))
            cycle = rng.choice(
                [(account.account_id, account.open_sequence)] * 4
                + [uuid.UUID(int=rng.getrandbits(128)), None]
                + [(other.account_id, 1) for other in rng.sample(others, 1)]  # another unit's: as unknown
            )
        code, tax = rng.choice([("api_calls", "standard"), ("sms", "reduced"), ("support", "exempt"), ("fee", "")])
        return BillingCharge(
            charge_id=uuid.UUID(int=rng.getrandbits(128)),
            account=account,
            kind=rng.choice([usage_pb2.CHARGE_KIND_USAGE] * 4 + [usage_pb2.CHARGE_KIND_RECURRING]),
            cycle=cycle,
            amount=random_amount(rng, account.currency, 0, 25) or random_amount(rng, account.currency, 1, 2),
            event_time=event_time,
            late=rng.random() < 0.1,
            charge_code=code,
            tax_code=tax,
            quantity=str(rng.randint(1, 500)),
        )

    # Before the close: into the early accounts' first cycles (billed when they close).
    pool: dict[str, list[Any]] = {}
    for a in rng.sample([a for a in world.accounts if a.early], 5):
        first = [
            BillingCharge(
                uuid.UUID(int=rng.getrandbits(128)),
                a,
                usage_pb2.CHARGE_KIND_USAGE,
                (a.account_id, 1),
                random_amount(rng, a.currency, 1, 20),
                T0 + minutes(4),
                False,
                "api_calls",
                "standard",
                "10",
            )
            for _ in range(rng.randint(1, 3))
        ]
        pool.setdefault(a.currency, []).extend(first)
        world.before_close.append(Sent(uuid.UUID(int=rng.getrandbits(128)), a.currency, tuple(first)))

    def fresh_before(currency: str, earlier: list[Any]) -> BillingCharge:
        return charge(rng.choice(world.by_currency(currency)), True, earlier)

    def fresh(currency: str, earlier: list[Any]) -> BillingCharge:
        return charge(rng.choice(world.by_currency(currency)), False, earlier)

    world.before_batch = _stream(rng, pool, fresh_before, world.currencies, 8)
    world.before_batch = list(dict.fromkeys(world.before_batch))  # no redelivery before the batch
    world.batch = _stream(rng, pool, fresh, world.currencies, messages, world.before_batch)
    return world


@pytest.fixture
async def billing(migrated_database: MigratedDatabase) -> AsyncIterator[tuple[BillingDb, BillingDb]]:
    """Two billing databases: one for message by message, one for batches."""
    async with two_databases(BillingDb, migrated_database, "billing_charges", BILLING_MIGRATIONS, T0) as both:
        yield both


@pytest.mark.parametrize("seed", [11, 12, 13])
async def test_billing_records_a_batch_of_charges_as_it_records_them_one_by_one(
    billing: tuple[BillingDb, BillingDb], seed: int
) -> None:
    one, batch = billing
    world = billing_world(seed, accounts=24, messages=45)
    _check_repeats([*world.before_close, *world.before_batch], world.batch)
    after = await world.prepare(one)
    assert await world.prepare(batch) == after
    assert await batch.state(after) == await one.state(after), "the same set-up"
    before = await one.state(after)

    await in_turn(one.consumer(), one.messages(world.batch))
    msgs = batch.messages(world.batch)
    await batch.apply_batch(msgs)

    expected = await one.state(after)
    known = {i["charge_id"] for i in before["items"]}
    made = [i for i in expected["items"] if i["charge_id"] not in known]
    # The scenario covers what record_charges decides: late items moved out of a closed or unknown
    # cycle, items in their own cycle, reversals, every currency, marks reached by the batch.
    assert len(made) > 60
    assert {i["late"] for i in made} == {False, True}
    assert {i["currency_code"] for i in made} == set(EXPONENTS)
    assert any(i["amount"] < 0 for i in made)
    assert any(i["rated_bill_cycle_id"] is None for i in made), "naming no cycle"
    assert any(isinstance(i["rated_bill_cycle_id"], uuid.UUID) for i in made), "naming a cycle billing does not know"
    assert any(str(i["rated_bill_cycle_id"]).startswith("cycle 1") and i["late"] for i in made), "naming a closed one"
    assert any(i["rated_bill_cycle_id"] == i["bill_cycle_id"] for i in made), "in their own cycle"
    assert any(mark == NOW for _, _, mark in expected["thresholds"]), "a threshold the batch reaches"
    assert await batch.state(after) == expected

    # Redelivered, the inbox skips them all.
    again = [m.again() for m in msgs]
    await process(batch.consumer(), *again)
    assert acked(again)
    assert await batch.state(after) == expected


def _poison_for_billing(kind: str, world: BillingWorld) -> Sent:
    """A ChargesCreated record_charges refuses: for an account billing has no unit for, or in
    another currency than its account's."""
    if kind == "no bill unit":
        stranger = BillingAccount(
            uuid.uuid4(), "EUR", "Europe/Madrid", BillingProfile(15), None, early=False
        )  # known to no database
        spec = BillingCharge(
            uuid.uuid4(), stranger, usage_pb2.CHARGE_KIND_USAGE, None, Decimal("3.00"), NOW, False, "x", "", "1"
        )
        return Sent(uuid.uuid4(), "EUR", (spec,))
    account = next(a for a in world.accounts if a.currency == "EUR")
    spec = BillingCharge(
        uuid.uuid4(),
        dataclasses.replace(account, currency="USD"),
        usage_pb2.CHARGE_KIND_USAGE,
        (account.account_id, account.open_sequence),
        Decimal("3.00"),
        NOW,
        False,
        "x",
        "",
        "1",
    )
    return Sent(uuid.uuid4(), "USD", (spec,))


@pytest.mark.parametrize("poison_kind", ["no bill unit", "another currency"])
async def test_billing_applies_a_batch_with_a_poison_message_one_by_one(
    billing: tuple[BillingDb, BillingDb], poison_kind: str
) -> None:
    one, batch = billing
    world = billing_world(21, accounts=12, messages=20)
    poison = _poison_for_billing(poison_kind, world)
    world.batch.insert(len(world.batch) // 2, poison)
    after = await world.prepare(one)
    await world.prepare(batch)

    expected_msgs = one.messages(world.batch)
    for msg in expected_msgs:
        await process(one.consumer(), msg)
    bad = expected_msgs[world.batch.index(poison)]
    assert bad.naked and acked(expected_msgs, but=[bad])

    msgs = batch.messages(world.batch)
    poisoned = msgs[world.batch.index(poison)]
    await batch.apply_poisoned_batch(msgs, poisoned)
    assert await batch.state(after) == await one.state(after)
    assert await batch.count(billing_orm.inbox) == await one.count(billing_orm.inbox)


async def test_billing_marks_a_threshold_by_what_is_unbilled_after_the_batch(
    billing: tuple[BillingDb, BillingDb],
) -> None:
    """A charge takes the unit over its threshold and, in a later message of the same batch, its
    reversal (a rerating) takes it back under. One by one, the first message marks the unit and
    the threshold biller then finds nothing to bill and clears the mark; the batch checks the
    threshold once, after all its items, and leaves no mark (docs/billing.md, "Threshold
    billing"): no bill either way, everything else the same."""
    one, batch = billing
    account = BillingAccount(uuid.uuid4(), "EUR", "Europe/Madrid", BillingProfile(15), Decimal("50.00"), early=False)
    world = BillingWorld([account])
    over = BillingCharge(
        uuid.uuid4(),
        account,
        usage_pb2.CHARGE_KIND_USAGE,
        (account.account_id, 1),
        Decimal("60.00"),
        T1 + timedelta(days=1),
        False,
        "api_calls",
        "standard",
        "1",
    )
    back = dataclasses.replace(
        over, charge_id=uuid.uuid4(), kind=usage_pb2.CHARGE_KIND_REVERSAL, amount=-over.amount, reverses=over.charge_id
    )
    world.batch = [Sent(uuid.uuid4(), "EUR", (over,)), Sent(uuid.uuid4(), "EUR", (back,))]
    after = await world.prepare(one)
    await world.prepare(batch)

    await in_turn(one.consumer(), one.messages(world.batch))
    expected = await one.state(after)
    [(_, _, mark)] = expected["thresholds"]
    assert mark == NOW, "one by one, the first message marks the unit"
    msgs = batch.messages(world.batch)
    await process(batch.batch_only(), *msgs)
    assert acked(msgs)
    got = await batch.state(after)
    assert got["thresholds"] == [(m[0], m[1], None) for m in expected["thresholds"]]
    assert {k: v for k, v in got.items() if k != "thresholds"} == {
        k: v for k, v in expected.items() if k != "thresholds"
    }


# Balance.


@dataclass(frozen=True)
class BalanceAccount:
    account_id: uuid.UUID
    currency: str
    # Known to balance (AccountCreated applied) before the batch; else its charges open its default group.
    known: bool
    # Open named groups; `closed` is a closed group's name.
    groups: tuple[str, ...] = ()
    closed: bool = False
    # (group name, limit, thresholds) set with SetCreditLimit.
    limits: tuple[tuple[str, Decimal, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class BalanceCharge:
    charge_id: uuid.UUID | str
    account: BalanceAccount
    group: str
    amount: Decimal
    rate_time: datetime | None
    reverses: uuid.UUID | str | None = None
    # The currency the charge says it is in (its account's but for a broken one).
    currency: str = ""


class BalanceDb(BalanceBatchesDb):
    stream = "charging"
    per_message_handlers = ("on_charges_created",)

    def messages(self, sent: Sequence[Sent]) -> list[FakeMsg]:
        return [_charges_created(s.event_id, s.currency, [_balance_rated(c) for c in s.charges]) for s in sent]

    async def listed(self) -> dict[uuid.UUID, list[str]]:
        """Each account's entries as ListLedgerEntries lists them (newest effective time first,
        then the latest booked): their sources."""
        t = balance_orm.ledger_entries
        found: dict[uuid.UUID, list[str]] = {}
        for row in await self.rows(
            select(t.c.account_id, t.c.source_id).order_by(t.c.account_id, t.c.effective_time.desc(), t.c.seq.desc())
        ):
            found.setdefault(row.account_id, []).append(row.source_id)
        return found

    async def last_seq(self) -> int:
        t = balance_orm.ledger_entries
        return int((await self.rows(select(func.coalesce(func.max(t.c.seq), 0).label("seq"))))[0].seq)

    async def listed_with_times(self, after_seq: int) -> dict[uuid.UUID, list[tuple[datetime, str]]]:
        """`listed`, with each entry's effective time: the entries booked after `after_seq`."""
        t = balance_orm.ledger_entries
        found: dict[uuid.UUID, list[tuple[datetime, str]]] = {}
        for row in await self.rows(
            select(t.c.account_id, t.c.effective_time, t.c.source_id)
            .where(t.c.seq > after_seq)
            .order_by(t.c.account_id, t.c.effective_time.desc(), t.c.seq.desc())
        ):
            found.setdefault(row.account_id, []).append((row.effective_time, row.source_id))
        return found


def _balance_rated(charge: BalanceCharge) -> usage_pb2.RatedCharge:
    return _rated(
        charge.charge_id,
        charge.account.account_id,
        charge.amount,
        charge.currency or charge.account.currency,
        kind=usage_pb2.CHARGE_KIND_REVERSAL if charge.reverses else usage_pb2.CHARGE_KIND_USAGE,
        balance_group=charge.group,
        rate_time=to_timestamp(charge.rate_time),
        reverses_charge_id=str(charge.reverses or ""),
    )


@dataclass
class BalanceWorld:
    accounts: list[BalanceAccount]
    before_batch: list[Sent] = field(default_factory=list)
    batch: list[Sent] = field(default_factory=list)

    async def prepare(self, db: BalanceDb) -> int:
        """The same set-up in each database: the known accounts (AccountCreated through the
        consumer), their groups (one closed), credit limits and thresholds, charges booked before
        the batch. Returns the outbox's last seq."""
        db.clock.instant = NOW - timedelta(days=1)
        for a in self.accounts:
            if not a.known:
                continue
            await db.create_account(a.account_id, a.currency)
            for name in a.groups + (("old",) if a.closed else ()):
                await db.create_group(a.account_id, name)
            if a.closed:
                await db.api.CloseBalanceGroup(
                    balance_pb.CloseBalanceGroupRequest(balance_group_id=await db.group_id(a.account_id, "old")),
                    NO_CONTEXT,
                )
            for name, limit, thresholds in a.limits:
                await db.set_credit_limit(await db.group_id(a.account_id, name), limit, a.currency, thresholds)
        db.clock.instant = NOW - timedelta(hours=1)
        await in_turn(db.consumer(), db.messages(self.before_batch))
        db.clock.instant = NOW
        return await last_outbox_seq(db, balance_orm.outbox)


def balance_world(seed: int, accounts: int, messages: int) -> BalanceWorld:
    """Accounts in four currencies, most known to balance with named groups (one closed), credit
    limits and thresholds, some unknown (their default group opened by their first charge); charges
    naming the default group, a named one, a closed one or one the account does not have, with
    their rating time or without (booked effective now), and reversals of earlier ones."""
    rng = random.Random(seed)
    currencies = list(EXPONENTS)
    made = []
    for i in range(accounts):
        currency = currencies[i % len(currencies)]
        known = rng.random() < 0.75
        groups = tuple(name for name in ("roaming", "project") if known and rng.random() < 0.5)
        limits = []
        for name in ("default", *groups):
            if known and rng.random() < 0.45:
                limit = random_amount(rng, currency, 30, 90)
                levels = rng.sample(
                    [str(random_amount(rng, currency, 10, 40)), "50%", "80%", "100%"], rng.randint(0, 2)
                )
                limits.append((name, limit, tuple(levels)))
        made.append(
            BalanceAccount(
                uuid.UUID(int=rng.getrandbits(128)),
                currency,
                known,
                groups,
                known and rng.random() < 0.3,
                tuple(limits),
            )
        )
    world = BalanceWorld(made)

    def fresh(currency: str, earlier: list[Any]) -> BalanceCharge:
        account = rng.choice([a for a in world.accounts if a.currency == currency])
        mine: list[BalanceCharge] = [c for c in earlier if c.account == account and c.reverses is None and c.amount > 0]
        if mine and rng.random() < 0.15:  # rerated: the charge reversed
            old = rng.choice(mine)
            return dataclasses.replace(
                old, charge_id=uuid.UUID(int=rng.getrandbits(128)), amount=-old.amount, reverses=old.charge_id
            )
        # Rated a few minutes apart, some at the same instant; without a rating time: effective now.
        rate_time = NOW - timedelta(minutes=rng.randint(1, 40)) if rng.random() < 0.85 else None
        return BalanceCharge(
            uuid.UUID(int=rng.getrandbits(128)),
            account,
            rng.choice(["", "", "", "roaming", "project", "old", "no-such-group"]),
            random_amount(rng, currency, 0, 25) or random_amount(rng, currency, 1, 2),
            rate_time,
        )

    pool: dict[str, list[Any]] = {}
    world.before_batch = list(dict.fromkeys(_stream(rng, pool, fresh, currencies, 8)))
    world.batch = _stream(rng, pool, fresh, currencies, messages, world.before_batch)
    return world


@pytest.fixture
async def balance(migrated_database: MigratedDatabase) -> AsyncIterator[tuple[BalanceDb, BalanceDb]]:
    """Two balance databases: one for message by message, one for batches."""
    async with two_databases(BalanceDb, migrated_database, "balance_charges", BALANCE_MIGRATIONS, NOW) as both:
        yield both


@pytest.mark.parametrize("seed", [31, 32, 33])
async def test_balance_books_a_batch_of_charges_as_it_books_them_one_by_one(
    balance: tuple[BalanceDb, BalanceDb], seed: int
) -> None:
    one, batch = balance
    world = balance_world(seed, accounts=26, messages=50)
    _check_repeats(world.before_batch, world.batch)
    after = await world.prepare(one)
    assert await world.prepare(batch) == after
    assert await batch.state(after) == await one.state(after), "the same set-up"
    before = await one.state(after)

    reference = one.messages(world.batch)
    await one.one_by_one(reference)
    assert acked(reference)
    msgs = batch.messages(world.batch)
    await batch.apply_batch(msgs)

    expected = await one.state(after)
    known = {e["source_id"] for e in before["entries"]}
    made = [e for e in expected["entries"] if e["source_id"] not in known]
    assert len(made) > 60
    assert {e["currency_code"] for e in made} == set(EXPONENTS)
    assert any(e["amount"] < 0 for e in made), "reversals"
    assert any("not an open group" in e["reason"] for e in made)
    assert any(e["reason"].startswith("reverses charge") for e in made)
    assert any(e["effective_time"] == NOW for e in made), "charges without a rating time"
    subjects = [subject for events in expected["published"].values() for subject, _, _ in events]
    assert balance_event_codes.BALANCE_GROUP_CREATED in subjects, "default groups opened by charges"
    assert {balance_event_codes.CREDIT_LIMIT_EXCEEDED, balance_event_codes.CREDIT_THRESHOLD_CROSSED} <= set(subjects)
    assert await batch.state(after) == expected
    for db in balance:
        await db.check_invariant()

    # Redelivered, the inbox skips them all.
    again = [m.again() for m in msgs]
    await process(batch.consumer(), *again)
    assert acked(again)
    assert await batch.state(after) == expected


async def test_balance_books_the_same_entries_ties_in_charge_id_order(
    balance: tuple[BalanceDb, BalanceDb],
) -> None:
    """The booking order (ledger_entries.seq) breaks ties between equal effective times in
    ListLedgerEntries. One insert books its entries in charge id order, one message's as a whole
    batch's (docs/balance.md): a batch lists each account's entries as one by one does, but
    for the order of entries with the same effective time, which is charge id order."""
    one, batch = balance
    world = balance_world(31, accounts=26, messages=50)
    await world.prepare(one)
    await world.prepare(batch)
    await one.one_by_one(one.messages(world.batch))
    before = await batch.last_seq()
    await process(batch.batch_only(), *batch.messages(world.batch))
    expected, got = await one.listed(), await batch.listed()
    assert {a: sorted(sources) for a, sources in got.items()} == {a: sorted(s) for a, s in expected.items()}
    for account_id, sources in (await batch.listed_with_times(before)).items():
        for (time_a, source_a), (time_b, source_b) in itertools.pairwise(sources):
            if time_a == time_b:
                assert source_a > source_b, f"{account_id}: ties listed latest booked first, booked in source order"


def _poison_for_balance(kind: str, world: BalanceWorld) -> Sent:
    """A ChargesCreated balance refuses: a charge id that is no UUID, or a charge in another
    currency than its account's."""
    account = next(a for a in world.accounts if a.known and a.currency == "EUR")
    if kind == "malformed charge id":
        spec = BalanceCharge("charge-7", account, "", Decimal("3.00"), NOW)
        return Sent(uuid.uuid4(), "EUR", (spec,))
    spec = BalanceCharge(uuid.uuid4(), account, "", Decimal("3.00"), NOW, currency="USD")
    return Sent(uuid.uuid4(), "USD", (spec,))


@pytest.mark.parametrize("poison_kind", ["malformed charge id", "another currency"])
async def test_balance_applies_a_batch_with_a_poison_message_one_by_one(
    balance: tuple[BalanceDb, BalanceDb], poison_kind: str
) -> None:
    one, batch = balance
    world = balance_world(41, accounts=12, messages=20)
    poison = _poison_for_balance(poison_kind, world)
    world.batch.insert(len(world.batch) // 2, poison)
    after = await world.prepare(one)
    await world.prepare(batch)

    reference = one.messages(world.batch)
    await one.one_by_one(reference)
    bad = reference[world.batch.index(poison)]
    assert bad.naked and acked(reference, but=[bad])

    msgs = batch.messages(world.batch)
    poisoned = msgs[world.batch.index(poison)]
    await batch.apply_poisoned_batch(msgs, poisoned)
    assert await batch.state(after) == await one.state(after)
    assert await batch.count(balance_orm.inbox) == await one.count(balance_orm.inbox)
