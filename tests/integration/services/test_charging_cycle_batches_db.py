"""Charging's batch handler for billing's cycle events (fees.cycle_events_learnt through the
runtime consumer's batch handlers), against real, migrated databases: a fetched batch of
BillCycleOpened / BillCycleClosed for many accounts leaves exactly what the same events applied
one message at a time leave (cycles, fee keys, charges in their order, ChargesCreated); a poison
message in a batch fails, is retried and dead-lettered alone while the others apply; a batch it
cannot reproduce goes one by one; two replicas applying the same cycles at once charge each fee
once."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import ModuleType
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import pytest
from evolutivo.billing.v1 import bill_cycle_pb2
from evolutivo.billing.v1 import events_pb2 as billing_events
from evolutivo.charging.v1 import catalog_pb2 as c
from evolutivo.charging.v1 import charging_service_pb2 as pb
from evolutivo.charging.v1 import events_pb2
from evolutivo.customer.v1 import account_pb2, purchase_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_charging.adapters import events
from evolutivo_charging.adapters.orm import bill_cycles, charges, fee_charges, inbox, outbox, purchases, request_log
from evolutivo_charging.entrypoints import consumers
from evolutivo_charging.entrypoints.app import MIGRATIONS
from evolutivo_charging.entrypoints.grpc_api import ChargingServicer
from evolutivo_charging.service_layer import fees
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork
from evolutivo_runtime.money import to_money
from evolutivo_runtime.timestamps import to_timestamp
from google.protobuf.message import Message
from nats.aio.msg import Msg
from sqlalchemy import select
from support.batches import ConsumingDb, batch_fallbacks, two_databases
from support.databases import MigratedDatabase
from support.jetstream import FakeMsg, handle, message, process

MADRID = ZoneInfo("Europe/Madrid")
NOW = datetime(2031, 7, 5, 9, 30, tzinfo=UTC)
OFFER_FROM = datetime(2031, 1, 1, tzinfo=UTC)
# Cycle boundaries: March to August 2031, local midnight in Madrid.
MONTHS = [datetime(2031, month, 1, tzinfo=MADRID) for month in range(3, 9)]
NO_CONTEXT: Any = None

HOSTING = [
    c.Charge(
        code="monthly",
        name="Monthly fee",
        recurring=c.RecurringFee(amount="31", timing=c.RECURRING_TIMING_IN_ADVANCE, prorate=True),
        tax_code="S",
    ),
    c.Charge(
        code="support",
        name="Support",
        recurring=c.RecurringFee(amount="9.30", timing=c.RECURRING_TIMING_IN_ARREARS, prorate=True),
    ),
    c.Charge(code="setup", name="Set-up", one_time=c.OneTimeFee(amount="50"), balance_group="fees"),
]
FLAT = [
    c.Charge(
        code="line",
        name="Line rental",
        recurring=c.RecurringFee(amount="12.5", timing=c.RECURRING_TIMING_IN_ADVANCE, prorate=False),
    ),
    c.Charge(
        code="care",
        name="Care",
        recurring=c.RecurringFee(amount="4.99", timing=c.RECURRING_TIMING_IN_ARREARS, prorate=False),
    ),
]


class CyclesDb(ConsumingDb[ChargingUnitOfWork]):
    consumers_module: ClassVar[ModuleType] = consumers
    stream = "billing"
    inbox_table = inbox
    per_message_handlers = ("on_bill_cycle_opened", "on_bill_cycle_closed")

    def uow(self) -> ChargingUnitOfWork:
        return ChargingUnitOfWork(self.sessions, outbox, self.clock, events.encode, request_log)

    async def apply(self, handler: Callable[..., Any], event: Message) -> None:
        await handle(self.uow, handler, event, self.clock.now())

    async def state(self) -> dict[str, Any]:
        """Everything cycle events change, without what differs between two runs by nature (charge
        ids are random; the update times)."""
        charge_rows = await self.rows(select(charges).order_by(charges.c.seq))
        keys = await self.rows(select(fee_charges))
        cycle_rows = await self.rows(select(bill_cycles).order_by(bill_cycles.c.bill_cycle_id))
        published = await self.rows(
            select(outbox.c.payload)
            .where(outbox.c.subject == "evolutivo.charging.v1.charges.created")
            .order_by(outbox.c.seq)
        )
        published_charges = [
            ch for row in published for ch in events_pb2.ChargesCreated.FromString(row.payload).charges
        ]
        charge_ids = [row.charge_id for row in charge_rows]
        assert [uuid.UUID(ch.charge_id) for ch in published_charges] == charge_ids, "published as stored"
        assert sorted(k.charge_id for k in keys) == sorted(charge_ids), "one key per fee charge"
        by_id = {row.charge_id: i for i, row in enumerate(charge_rows)}
        for ch in published_charges:
            ch.ClearField("charge_id")
        return {
            "charges": [_without(row._mapping, "charge_id", "seq") for row in charge_rows],
            "keys": sorted(
                (k.purchase_id, k.charge_code, k.period_cycle_id, k.kind, k.account_id, by_id[k.charge_id])
                for k in keys
            ),
            "cycles": [_without(row._mapping, "update_time") for row in cycle_rows],
            "published": [ch.SerializeToString(deterministic=True) for ch in published_charges],
            "start_fees": sorted(
                (row.purchase_id, row.start_fees_time)
                for row in await self.rows(select(purchases.c.purchase_id, purchases.c.start_fees_time))
            ),
        }


def _without(row: Any, *names: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in names}


@pytest.fixture
async def databases(migrated_database: MigratedDatabase) -> AsyncIterator[tuple[CyclesDb, CyclesDb]]:
    """Two databases with the same catalog: one for message-by-message, one for batches."""
    async with two_databases(CyclesDb, migrated_database, "charging_cycles", MIGRATIONS, NOW, pool_size=6) as both:
        for db in both:
            await new_offer(db, "hosting", HOSTING)
            await new_offer(db, "flat", FLAT)
        yield both


async def new_offer(db: CyclesDb, code: str, charges_: Sequence[c.Charge]) -> None:
    servicer = ChargingServicer(db.uow)
    created = await servicer.CreateChargeOffer(
        pb.CreateChargeOfferRequest(
            charge_offer=c.ChargeOffer(
                code=code, name=code, currency_code="EUR", valid_from=to_timestamp(OFFER_FROM), charges=charges_
            )
        ),
        NO_CONTEXT,
    )
    await servicer.ActivateChargeOffer(
        pb.ActivateChargeOfferRequest(charge_offer_id=created.charge_offer.charge_offer_id), NO_CONTEXT
    )


def a_cycle(account_id: uuid.UUID, month: int) -> bill_cycle_pb2.BillCycle:
    """The account's cycle starting at MONTHS[month] (ids derived from the account: the same
    cycle in every event that names it)."""
    return bill_cycle_pb2.BillCycle(
        bill_cycle_id=str(uuid.uuid5(account_id, f"cycle-{month}")),
        bill_unit_id=str(uuid.uuid5(account_id, "unit")),
        account_id=str(account_id),
        sequence=month + 1,
        start_time=to_timestamp(MONTHS[month]),
        end_time=to_timestamp(MONTHS[month + 1]),
        status=bill_cycle_pb2.BILL_CYCLE_STATUS_OPEN,
        time_zone="Europe/Madrid",
    )


def opened(cycle: bill_cycle_pb2.BillCycle) -> billing_events.BillCycleOpened:
    return billing_events.BillCycleOpened(bill_cycle=cycle)


def closed(
    cycle: bill_cycle_pb2.BillCycle, next_cycle: bill_cycle_pb2.BillCycle | None
) -> billing_events.BillCycleClosed:
    done = bill_cycle_pb2.BillCycle()
    done.CopyFrom(cycle)
    done.status = bill_cycle_pb2.BILL_CYCLE_STATUS_CLOSED
    done.close_time.CopyFrom(cycle.end_time)
    event = billing_events.BillCycleClosed(bill_cycle=done)
    if next_cycle is not None:
        event.next_bill_cycle.CopyFrom(next_cycle)
    return event


@dataclass
class Scenario:
    """What the two databases learn the same way before (`setup`, handler by handler), and the
    cycle events under test (`events`, in stream order)."""

    setup: list[tuple[Callable[..., Any], Message]] = field(default_factory=list)
    events: list[tuple[str, Message]] = field(default_factory=list)

    async def prepare(self, db: CyclesDb) -> None:
        for handler, event in self.setup:
            await db.apply(handler, event)


def _purchase(rng: random.Random, account_id: uuid.UUID) -> purchase_pb2.Purchase:
    start = rng.choice(
        [
            datetime(2031, 2, 20, tzinfo=MADRID),  # before every cycle
            MONTHS[1],
            datetime(2031, 4, 21, 15, tzinfo=MADRID),
            datetime(2031, 5, 10, tzinfo=MADRID),
            datetime(2031, 6, 12, 8, tzinfo=MADRID),
            NOW + timedelta(days=3),  # not started: no fee yet
        ]
    )
    ends = [None, None, datetime(2031, 5, 20, tzinfo=MADRID), datetime(2031, 6, 11, tzinfo=MADRID)]
    end = rng.choice([e for e in ends if e is None or e > start])
    code = rng.choice(["hosting", "flat"])
    overrides = [("monthly", "12"), ("line", "0")] if rng.random() < 0.25 else []
    return purchase_pb2.Purchase(
        purchase_id=str(uuid.UUID(int=rng.getrandbits(128))),
        account_id=str(account_id),
        charge_offer_code=code,
        charge_offer_version=1,
        quantity=rng.choice(["1", "2", "3"]),
        start_time=to_timestamp(start),
        end_time=to_timestamp(end),
        price_overrides=[
            purchase_pb2.PriceOverride(charge_code=code_, price=to_money(Decimal(price), "EUR"))
            for code_, price in overrides
        ],
    )


def scenario(seed: int, accounts: int, shuffled: bool) -> Scenario:
    """Accounts in every state (no cycle yet, a cycle open, a cycle closed already), with started,
    future, ended and waiting purchases, learnt before or after their cycles; then each one's next
    cycle events: one close and open (the bill run), two of them, the open before the close, a
    close naming no next cycle, an event again under a new id, an opened cycle known already."""
    rng = random.Random(seed)
    built = Scenario()
    streams: list[list[tuple[str, Message]]] = []
    for _ in range(accounts):
        account_id = uuid.UUID(int=rng.getrandbits(128))
        if rng.random() < 0.8:  # else charging does not know the account: fees prorate in UTC
            account = account_pb2.Account(
                account_id=str(account_id),
                currency_code="EUR",
                time_zone="Europe/Madrid",
                status=account_pb2.ACCOUNT_STATUS_ACTIVE,
            )
            built.setup.append((consumers.on_account_created, customer_events.AccountCreated(account=account)))
        cycle = [a_cycle(account_id, m) for m in range(5)]
        known = rng.choice([None, 0, 1])  # the last cycle opened before the batch (0: March)
        setup_cycles: list[tuple[Callable[..., Any], Message]] = []
        if known is not None:
            setup_cycles.append((consumers.on_bill_cycle_opened, opened(cycle[0])))
            for m in range(known):
                setup_cycles.append((consumers.on_bill_cycle_closed, closed(cycle[m], cycle[m + 1])))
        learnt: list[tuple[Callable[..., Any], Message]] = [
            (consumers.on_purchase_created, customer_events.PurchaseCreated(purchase=_purchase(rng, account_id)))
            for _ in range(rng.randint(0, 3))
        ]
        before = rng.randint(0, len(learnt))  # learnt before any cycle: their start's fees wait
        built.setup += learnt[:before] + setup_cycles + learnt[before:]

        first = 0 if known is None else known
        stream: list[tuple[str, Message]] = []
        if known is None:
            stream.append((consumers.BILL_CYCLE_OPENED, opened(cycle[0])))
        for m in range(first, first + rng.choice([1, 1, 2])):
            pair = [
                (consumers.BILL_CYCLE_CLOSED, closed(cycle[m], cycle[m + 1] if rng.random() < 0.85 else None)),
                (consumers.BILL_CYCLE_OPENED, opened(cycle[m + 1])),
            ]
            if rng.random() < 0.2:
                pair.reverse()
            stream += pair
        if rng.random() < 0.2:
            stream.insert(rng.randrange(len(stream) + 1), rng.choice(stream))  # again, under a new event id
        if known is not None and rng.random() < 0.2:
            stream.insert(0, (consumers.BILL_CYCLE_OPENED, opened(cycle[known])))  # known already
        streams.append(stream)
    if shuffled:
        built.events = [e for s in streams for e in s]
        rng.shuffle(built.events)
    else:  # each account's events in order, the accounts interleaved
        while any(streams):
            stream = rng.choice([s for s in streams if s])
            built.events.append(stream.pop(0))
    return built


def _messages(events_: Sequence[tuple[str, Message]]) -> list[FakeMsg]:
    return [message(subject, event, NOW) for subject, event in events_]


async def _one_by_one(db: CyclesDb, msgs: Sequence[FakeMsg]) -> None:
    for msg in msgs:
        await process(db.consumer(), msg)
    assert all(m.acked and not m.naked for m in msgs)


@pytest.mark.parametrize(("seed", "shuffled"), [(1, False), (2, True), (3, False), (4, True)])
async def test_a_batch_of_cycle_events_charges_exactly_what_one_by_one_does(
    databases: tuple[CyclesDb, CyclesDb], seed: int, shuffled: bool
) -> None:
    one, batch = databases
    built = scenario(seed, accounts=30, shuffled=shuffled)
    for db in databases:
        await built.prepare(db)
    assert await one.state() == await batch.state()
    before = await one.state()

    await _one_by_one(one, _messages(built.events))
    msgs = _messages(built.events)
    await process(batch.batch_only(), *msgs)
    assert all(m.acked and not m.naked for m in msgs)

    expected = await one.state()
    assert len(expected["charges"]) > len(before["charges"]) + 30, "the batch charges fees"
    made = expected["charges"][len(before["charges"]) :]
    # Fees of pending purchases (one-time ones among them) and recurring ones, some late.
    assert {row["kind"] for row in made} == {"one_time", "recurring"}
    assert {row["late"] for row in expected["charges"]} == {False, True}
    assert await batch.state() == expected
    assert await batch.count(inbox) == len(msgs)

    # Redelivered, the inbox skips them; republished under new ids, they are computed again from
    # what charging knows now, in the batch as one by one.
    await process(batch.consumer(), *msgs)
    assert await batch.state() == expected
    await _one_by_one(one, _messages(built.events))
    republished = _messages(built.events)
    await process(batch.batch_only(), *republished)
    assert all(m.acked and not m.naked for m in republished)
    assert await batch.state() == await one.state()


@dataclass
class Letters:
    """A dead-letter queue that keeps what it is sent."""

    # What it was sent: the test's FakeMsg stands for the Msg.
    sent: list[tuple[Any, str, BaseException]] = field(default_factory=list)

    async def send(self, msg: Msg, consumer: str, error: BaseException) -> None:
        self.sent.append((msg, consumer, error))


def _poison(account_id: uuid.UUID) -> billing_events.BillCycleClosed:
    broken = closed(a_cycle(account_id, 0), a_cycle(account_id, 1))
    broken.bill_cycle.end_time.CopyFrom(broken.bill_cycle.start_time)  # ends where it starts
    return broken


async def test_a_poison_message_in_a_batch_is_retried_and_dead_lettered_alone(
    databases: tuple[CyclesDb, CyclesDb],
) -> None:
    one, batch = databases
    built = scenario(5, accounts=12, shuffled=False)
    for db in databases:
        await built.prepare(db)
    await _one_by_one(one, _messages(built.events))
    expected = await one.state()

    poison = message(consumers.BILL_CYCLE_CLOSED, _poison(uuid.uuid4()), NOW)
    msgs = _messages(built.events)
    msgs.insert(len(msgs) // 2, poison)
    consumer = batch.consumer()
    letters = Letters()
    consumer._dead_letters = letters  # type: ignore[assignment]
    await process(consumer, *msgs)
    assert poison.naked and not poison.acked, "retried later"
    assert all(m.acked and not m.naked for m in msgs if m is not poison)
    assert await batch.state() == expected, "the others applied, as one by one"
    assert await batch.count(inbox) == len(msgs) - 1, "the poison's inbox row given back"
    assert letters.sent == []

    # Redelivered with later good events: it fails again, alone; at the last attempt it is
    # dead-lettered (and acked).
    later = scenario(6, accounts=4, shuffled=False)
    for db in databases:
        await later.prepare(db)
    await _one_by_one(one, _messages(later.events))
    expected = await one.state()
    again = poison
    for attempt in range(2, 6):
        again = again.again()
        fresh = _messages(later.events) if attempt == 2 else []
        await process(consumer, again, *fresh)
        assert all(m.acked for m in fresh)
        if attempt < 5:
            assert again.naked and not again.acked
    assert again.acked and not again.naked
    [(letter, durable, error)] = letters.sent
    assert (letter, durable) == (again, "charging")
    assert isinstance(error, ValueError) and "end after start" in str(error)
    assert await batch.state() == expected


async def test_a_batch_it_cannot_reproduce_is_applied_one_by_one(databases: tuple[CyclesDb, CyclesDb]) -> None:
    """A close whose next cycle names another account (billing never sends one): the batch
    handler declines the batch and the events' own handlers apply it, with the same result."""
    one, batch = databases
    built = scenario(7, accounts=6, shuffled=False)
    odd_account = uuid.uuid4()
    odd = closed(a_cycle(odd_account, 0), a_cycle(uuid.uuid4(), 1))
    built.events.insert(2, (consumers.BILL_CYCLE_CLOSED, odd))
    for db in databases:
        await built.prepare(db)
    await _one_by_one(one, _messages(built.events))
    msgs = _messages(built.events)
    fallbacks = batch_fallbacks("charging")
    await process(batch.consumer(), *msgs)
    assert batch_fallbacks("charging") == fallbacks + 1, "the batch handler declined"
    assert all(m.acked and not m.naked for m in msgs)
    assert await batch.state() == await one.state()


async def test_two_replicas_applying_the_same_cycles_in_batches_charge_each_fee_once(
    databases: tuple[CyclesDb, CyclesDb],
) -> None:
    """Billing's events published twice (under other ids: the inbox cannot tell), each copy in
    another replica's batch, applied at the same time: one batch waits on the other's cycles and
    finds them applied, as the second copy one by one would."""
    one, batch = databases
    built = scenario(8, accounts=20, shuffled=False)
    for db in databases:
        await built.prepare(db)
    for _ in range(2):
        await _one_by_one(one, _messages(built.events))

    copies = [_messages(built.events) for _ in range(2)]
    await asyncio.gather(*(process(batch.batch_only(), *copy) for copy in copies))
    assert all(m.acked and not m.naked for copy in copies for m in copy)
    assert await batch.state() == await one.state()


async def test_the_bill_runs_opened_cycle_is_applied_once_in_a_batch(
    databases: tuple[CyclesDb, CyclesDb], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bill run publishes BillCycleClosed naming the next cycle, then BillCycleOpened of it:
    in one batch the handler leaves out an open that comes right after the close naming it (the
    close recorded the cycle and charged its fees), and the batch leaves what one by one leaves.
    An open before its close, of a cycle no close named, or after another event of its account
    (which may have changed what the open charges) is applied."""
    one, batch = databases
    accounts = [uuid.UUID(int=n + 1) for n in range(6)]
    rng = random.Random(11)
    built = Scenario()
    for account_id in accounts:
        built.setup.append(
            (consumers.on_purchase_created, customer_events.PurchaseCreated(purchase=_purchase(rng, account_id)))
        )
        built.setup.append((consumers.on_bill_cycle_opened, opened(a_cycle(account_id, 0))))
    first, second, third, fourth, fifth, sixth = accounts
    # Hosting since before every cycle: in arrears, its support fee of a cycle is charged in the
    # cycle open after it.
    supported = purchase_pb2.Purchase(
        purchase_id=str(uuid.uuid5(fifth, "hosting")),
        account_id=str(fifth),
        charge_offer_code="hosting",
        charge_offer_version=1,
        quantity="1",
        start_time=to_timestamp(datetime(2031, 2, 20, tzinfo=MADRID)),
    )
    built.setup.append((consumers.on_purchase_created, customer_events.PurchaseCreated(purchase=supported)))
    built.events = [
        (consumers.BILL_CYCLE_CLOSED, closed(a_cycle(sixth, 0), a_cycle(sixth, 1))),
        (consumers.BILL_CYCLE_CLOSED, closed(a_cycle(first, 0), a_cycle(first, 1))),
        (consumers.BILL_CYCLE_OPENED, opened(a_cycle(first, 1))),  # left out
        (consumers.BILL_CYCLE_OPENED, opened(a_cycle(second, 1))),  # before its close: applied
        (consumers.BILL_CYCLE_CLOSED, closed(a_cycle(second, 0), a_cycle(second, 1))),
        (consumers.BILL_CYCLE_OPENED, opened(a_cycle(sixth, 1))),  # other accounts' between: left out
        (consumers.BILL_CYCLE_CLOSED, closed(a_cycle(third, 0), None)),
        (consumers.BILL_CYCLE_OPENED, opened(a_cycle(third, 1))),  # no close named it: applied
        (consumers.BILL_CYCLE_CLOSED, closed(a_cycle(fourth, 0), a_cycle(fourth, 1))),
        (consumers.BILL_CYCLE_OPENED, opened(a_cycle(fourth, 1))),  # left out
        # Out of billing's order (a replay): the second cycle closes, then the third opens, and
        # only then comes the second's open, which now charges its support fee (billed in the
        # third): applied.
        (consumers.BILL_CYCLE_CLOSED, closed(a_cycle(fifth, 0), a_cycle(fifth, 1))),
        (consumers.BILL_CYCLE_CLOSED, closed(a_cycle(fifth, 1), None)),
        (consumers.BILL_CYCLE_OPENED, opened(a_cycle(fifth, 2))),
        (consumers.BILL_CYCLE_OPENED, opened(a_cycle(fifth, 1))),
    ]
    for db in databases:
        await built.prepare(db)
    await _one_by_one(one, _messages(built.events))
    expected = await one.state()
    second_cycle = uuid.UUID(a_cycle(fifth, 1).bill_cycle_id)
    assert (uuid.UUID(supported.purchase_id), "support", second_cycle) in {k[:3] for k in expected["keys"]}

    learnt: list[list[fees.CycleEvent]] = []
    real = fees.cycle_events_learnt

    async def recording(uow: ChargingUnitOfWork, events_: Sequence[fees.CycleEvent], now: datetime) -> Any:
        learnt.append(list(events_))
        return await real(uow, events_, now)

    monkeypatch.setattr(fees, "cycle_events_learnt", recording)
    msgs = _messages(built.events)
    await process(batch.batch_only(), *msgs)
    assert all(m.acked and not m.naked for m in msgs)
    assert len(learnt) == 1
    assert [(e.account_id, len(e.cycles)) for e in learnt[0]] == [
        (sixth, 2),
        (first, 2),
        (second, 1),
        (second, 2),
        (third, 1),
        (third, 1),
        (fourth, 2),
        (fifth, 2),
        (fifth, 1),
        (fifth, 1),
        (fifth, 1),
    ]
    assert await batch.count(inbox) == len(msgs), "every event is recorded as applied"
    assert await batch.state() == expected
