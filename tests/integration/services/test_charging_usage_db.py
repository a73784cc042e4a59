"""Usage rating against a real, migrated database: single, batch and stream calls; idempotency on
event_id; tiers counted across events, batches and concurrent calls; unrated and rejected events
kept and re-submitted; late events; the projections of purchases and billing cycles applied in any
order; charges in the outbox; field-named refusals that write nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import grpc
import pytest
from alembic import command
from evolutivo.billing.v1 import bill_cycle_pb2
from evolutivo.billing.v1 import events_pb2 as billing_events
from evolutivo.charging.v1 import catalog_pb2 as c
from evolutivo.charging.v1 import charging_service_pb2 as pb
from evolutivo.charging.v1 import charging_service_pb2_grpc as pb_grpc
from evolutivo.charging.v1 import events_pb2, usage_pb2
from evolutivo.customer.v1 import account_pb2, purchase_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_charging.adapters import events
from evolutivo_charging.adapters.orm import (
    bill_cycles,
    charges,
    inbox,
    outbox,
    purchases,
    request_log,
    usage_counters,
    usage_events,
)
from evolutivo_charging.adapters.usage_repository import Outcome, UsageRaced, UsageRepository
from evolutivo_charging.domain.catalog import Graduated, Package, PerUnit, Tier, Volume
from evolutivo_charging.domain.pricing import cumulative_cost, round_money
from evolutivo_charging.domain.usage import BillCycleStatus, UsageEvent, UsageStatus
from evolutivo_charging.entrypoints import consumers
from evolutivo_charging.entrypoints.app import MIGRATIONS
from evolutivo_charging.entrypoints.grpc_api import ChargingServicer
from evolutivo_charging.service_layer import usage as usage_service
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork
from evolutivo_runtime.errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument
from evolutivo_runtime.messaging.envelope import EventMeta
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.migrations import alembic_config, upgrade_to_head
from evolutivo_runtime.money import from_money, to_money
from evolutivo_runtime.server.interceptors import ServiceInterceptor
from evolutivo_runtime.timestamps import from_timestamp, to_timestamp
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from support.databases import MigratedDatabase, ServiceDb
from support.jetstream import consumer_for, handle, message, process
from support.rpc import bad_request_fields, serving, violated_fields

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
APRIL_START = datetime(2031, 4, 1, tzinfo=UTC)
MAY_START = datetime(2031, 5, 1, tzinfo=UTC)
JUNE_START = datetime(2031, 6, 1, tzinfo=UTC)
OFFER_FROM = datetime(2031, 3, 1, tzinfo=UTC)
BOUGHT = datetime(2031, 3, 15, tzinfo=UTC)
AT = NOW - timedelta(hours=1)
NO_CONTEXT: Any = None

GRADUATED = Graduated(
    (
        Tier(Decimal(1000), Decimal(0)),
        Tier(Decimal(10000), Decimal("0.0015")),
        Tier(None, Decimal("0.001"), Decimal("2.50")),
    )
)
GRADUATED_PB = c.TieredPrice(
    tiers=[
        c.Tier(up_to="1000", unit_price="0"),
        c.Tier(up_to="10000", unit_price="0.0015"),
        c.Tier(unit_price="0.001", flat_fee="2.50"),
    ]
)
API_CALLS = c.Charge(code="api_calls", name="API calls", event_type="api.call", graduated=GRADUATED_PB, tax_code="S")
SMS = c.Charge(code="sms", name="SMS", event_type="sms.sent", flat=c.FlatPrice(amount="0.07"))


class UsageDb(ServiceDb):
    def uow(self) -> ChargingUnitOfWork:
        return ChargingUnitOfWork(self.sessions, outbox, self.clock, events.encode, request_log)

    def servicer(self) -> ChargingServicer:
        return ChargingServicer(self.uow)

    async def published(self) -> list[events_pb2.ChargesCreated]:
        rows = await self.rows(
            select(outbox.c.event_type, outbox.c.payload)
            .where(outbox.c.subject == "evolutivo.charging.v1.charges.created")
            .order_by(outbox.c.seq)
        )
        assert all(row.event_type == "evolutivo.charging.v1.ChargesCreated" for row in rows)
        return [events_pb2.ChargesCreated.FromString(row.payload) for row in rows]


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[UsageDb]:
    async with UsageDb.open(await migrated_database("charging_usage", MIGRATIONS), NOW, pool_size=12) as database:
        yield database


# Other services' events, applied by calling charging's consumer handlers with a unit of work.


async def apply(
    db: UsageDb,
    handler: Callable[[ChargingUnitOfWork, Any, EventMeta], Awaitable[None]],
    event: Message,
    occurred_at: datetime = NOW,
) -> None:
    await handle(db.uow, handler, event, occurred_at)


def customer_account(
    account_id: uuid.UUID, status: int = account_pb2.ACCOUNT_STATUS_ACTIVE, currency_code: str = "EUR"
) -> account_pb2.Account:
    return account_pb2.Account(
        account_id=str(account_id),
        currency_code=currency_code,
        time_zone="Europe/Madrid",
        status=status,  # type: ignore[arg-type]
    )


async def account_created(
    db: UsageDb, account_id: uuid.UUID, status: int = account_pb2.ACCOUNT_STATUS_ACTIVE, currency_code: str = "EUR"
) -> None:
    account = customer_account(account_id, status, currency_code)
    await apply(db, consumers.on_account_created, customer_events.AccountCreated(account=account))


async def status_changed(db: UsageDb, account_id: uuid.UUID, status: int, at: datetime) -> None:
    change = account_pb2.StatusChange(status=status, change_time=to_timestamp(at))  # type: ignore[arg-type]
    await apply(
        db,
        consumers.on_account_status_changed,
        customer_events.AccountStatusChanged(account=customer_account(account_id, status), change=change),
    )


def a_purchase(
    account_id: uuid.UUID,
    code: str = "api_pro",
    purchase_id: uuid.UUID | None = None,
    end: datetime | None = None,
    overrides: Sequence[tuple[str, str]] = (),
) -> purchase_pb2.Purchase:
    return purchase_pb2.Purchase(
        purchase_id=str(purchase_id or uuid.uuid4()),
        account_id=str(account_id),
        charge_offer_code=code,
        charge_offer_version=1,
        quantity="1",
        start_time=to_timestamp(BOUGHT),
        end_time=to_timestamp(end),
        price_overrides=[
            purchase_pb2.PriceOverride(charge_code=code_, price=to_money(Decimal(price), "EUR"))
            for code_, price in overrides
        ],
    )


async def purchase_created(db: UsageDb, purchase: purchase_pb2.Purchase, occurred_at: datetime = NOW) -> None:
    await apply(
        db,
        consumers.on_purchase_created,
        customer_events.PurchaseCreated(purchase=purchase, currency_code="EUR", time_zone="Europe/Madrid"),
        occurred_at,
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


async def cycle_opened(db: UsageDb, cycle: bill_cycle_pb2.BillCycle) -> None:
    await apply(db, consumers.on_bill_cycle_opened, billing_events.BillCycleOpened(bill_cycle=cycle))


async def cycle_closed(db: UsageDb, cycle: bill_cycle_pb2.BillCycle, next_cycle: bill_cycle_pb2.BillCycle) -> None:
    closed = bill_cycle_pb2.BillCycle()
    closed.CopyFrom(cycle)
    closed.status = bill_cycle_pb2.BILL_CYCLE_STATUS_CLOSED
    await apply(
        db,
        consumers.on_bill_cycle_closed,
        billing_events.BillCycleClosed(bill_cycle=closed, next_bill_cycle=next_cycle),
    )


# The catalog and a customer ready to rate.


async def new_offer(
    db: UsageDb, code: str = "api_pro", charges_: Sequence[c.Charge] = (API_CALLS, SMS), currency_code: str = "EUR"
) -> None:
    servicer = db.servicer()
    created = await servicer.CreateChargeOffer(
        pb.CreateChargeOfferRequest(
            charge_offer=c.ChargeOffer(
                code=code,
                name="API Pro",
                currency_code=currency_code,
                valid_from=to_timestamp(OFFER_FROM),
                charges=charges_,
            )
        ),
        NO_CONTEXT,
    )
    await servicer.ActivateChargeOffer(
        pb.ActivateChargeOfferRequest(charge_offer_id=created.charge_offer.charge_offer_id), NO_CONTEXT
    )


@dataclass
class Customer:
    account_id: uuid.UUID
    purchase_id: uuid.UUID
    cycle: bill_cycle_pb2.BillCycle

    @property
    def cycle_id(self) -> str:
        return self.cycle.bill_cycle_id


async def new_customer(db: UsageDb, code: str = "api_pro", currency_code: str = "EUR", **purchase: Any) -> Customer:
    account_id = uuid.uuid4()
    await account_created(db, account_id, currency_code=currency_code)
    bought = a_purchase(account_id, code, **purchase)
    await purchase_created(db, bought)
    may = a_cycle(account_id, MAY_START, JUNE_START)
    await cycle_opened(db, may)
    return Customer(account_id, uuid.UUID(bought.purchase_id), may)


def usage(
    account_id: uuid.UUID,
    quantity: str = "1",
    event_id: str | None = None,
    at: datetime = AT,
    event_type: str = "api.call",
    **properties: str,
) -> usage_pb2.UsageEvent:
    return usage_pb2.UsageEvent(
        event_id=event_id or f"evt-{uuid.uuid4().hex}",
        account_id=str(account_id),
        event_type=event_type,
        event_time=to_timestamp(at),
        quantity=quantity,
        properties=properties,
    )


async def record(db: UsageDb, event: usage_pb2.UsageEvent) -> usage_pb2.UsageResult:
    return (await db.servicer().RecordUsage(pb.RecordUsageRequest(event=event), NO_CONTEXT)).result


async def batch(db: UsageDb, events_: Sequence[usage_pb2.UsageEvent]) -> list[usage_pb2.UsageResult]:
    response = await db.servicer().RecordUsageBatch(pb.RecordUsageBatchRequest(events=events_), NO_CONTEXT)
    return list(response.results)


async def all_charges(db: UsageDb, account_id: uuid.UUID, bill_cycle_id: str = "") -> list[usage_pb2.RatedCharge]:
    found: list[usage_pb2.RatedCharge] = []
    token = ""
    while True:
        page = await db.servicer().ListCharges(
            pb.ListChargesRequest(account_id=str(account_id), bill_cycle_id=bill_cycle_id, page_token=token),
            NO_CONTEXT,
        )
        found += page.charges
        token = page.next_page_token
        if not token:
            return found


async def kept(db: UsageDb, account_id: uuid.UUID | None = None, size: int = 0) -> list[pb.UnratedUsage]:
    found: list[pb.UnratedUsage] = []
    token = ""
    while True:
        page = await db.servicer().ListUnratedUsage(
            pb.ListUnratedUsageRequest(account_id=str(account_id or ""), page_size=size, page_token=token), NO_CONTEXT
        )
        found += page.usage
        token = page.next_page_token
        if not token:
            return found


async def resubmit(db: UsageDb, *event_ids: str) -> list[usage_pb2.UsageResult]:
    response = await db.servicer().ResubmitUsage(pb.ResubmitUsageRequest(event_ids=event_ids), NO_CONTEXT)
    return list(response.results)


def total(charges_: Sequence[usage_pb2.RatedCharge]) -> Decimal:
    return sum((from_money(ch.amount) for ch in charges_), Decimal(0))


def price_of(model: Any, units: Decimal) -> Decimal:
    return round_money(cumulative_cost(model, units)[0], 2)


def error_reason(status: status_pb2.Status) -> str:
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


# Migrations.


async def test_the_usage_migrations_go_down_and_up_again(db: UsageDb) -> None:
    await db.engine.dispose()
    await asyncio.to_thread(command.downgrade, alembic_config(MIGRATIONS, db.url), "0003")
    async with db.engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: sync.dialect.get_table_names(sync))
    assert not {"purchases", "bill_cycles", "usage_events", "usage_counters", "charges"} & set(tables)
    await asyncio.to_thread(upgrade_to_head, MIGRATIONS, db.url)
    assert await db.count(usage_events) == 0


# Rating.


async def test_a_single_event_is_rated_with_its_charges(db: UsageDb) -> None:
    await new_offer(db)
    customer = await new_customer(db)
    result = await record(db, usage(customer.account_id, "1500", event_id="e-1"))
    assert (result.event_id, result.status, result.reason) == ("e-1", usage_pb2.USAGE_STATUS_RATED, "")
    (charge,) = result.charges
    assert uuid.UUID(charge.charge_id)
    assert (charge.account_id, charge.event_id, charge.purchase_id) == (
        str(customer.account_id),
        "e-1",
        str(customer.purchase_id),
    )
    assert charge.kind == usage_pb2.CHARGE_KIND_USAGE
    assert (charge.charge_offer_code, charge.charge_offer_version, charge.charge_code) == ("api_pro", 1, "api_calls")
    assert (charge.tax_code, charge.quantity, charge.unrounded_amount) == ("S", "1500", "0.7500")
    assert charge.amount == to_money(Decimal("0.75"), "EUR")
    assert [(t.tier, t.units, t.unit_price) for t in charge.tiers] == [(0, "1000", "0"), (1, "500", "0.0015")]
    assert (from_timestamp(charge.event_time), from_timestamp(charge.rate_time)) == (AT, NOW)
    assert (charge.bill_cycle_id, charge.late) == (customer.cycle_id, False)
    # Listed, and published with its event id.
    assert await all_charges(db, customer.account_id) == [charge]
    (message,) = await db.published()
    assert (list(message.charges), message.currency_code) == ([charge], "EUR")


async def test_graduated_tiers_across_single_calls_and_batches_give_the_same_cycle_total(db: UsageDb) -> None:
    await new_offer(db)
    quantities = ["400", "700", "1", "8000", "950", "0.5", "2500", "3"]
    expected = price_of(GRADUATED, sum((Decimal(q) for q in quantities), Decimal(0)))

    singles = await new_customer(db)
    for q in quantities:
        assert (await record(db, usage(singles.account_id, q))).status == usage_pb2.USAGE_STATUS_RATED
    one_batch = await new_customer(db)
    await batch(db, [usage(one_batch.account_id, q) for q in quantities])
    mixed = await new_customer(db)
    await batch(db, [usage(mixed.account_id, q) for q in quantities[:3]])
    await record(db, usage(mixed.account_id, quantities[3]))
    await batch(db, [usage(mixed.account_id, q) for q in reversed(quantities[4:])])

    for customer in (singles, one_batch, mixed):
        assert total(await all_charges(db, customer.account_id, customer.cycle_id)) == expected
        async with db.engine.connect() as conn:
            units = await conn.scalar(
                select(usage_counters.c.units).where(usage_counters.c.account_id == customer.account_id)
            )
        assert units == sum((Decimal(q) for q in quantities), Decimal(0))
    # One ChargesCreated per call that made charges, each charge with its own id and event id.
    published = await db.published()
    ids = [ch.charge_id for m in published for ch in m.charges]
    assert len(ids) == len(set(ids)) == await db.count(charges)
    assert all(ch.event_id for m in published for ch in m.charges)


async def test_a_batch_holds_every_charge_in_one_message_and_a_result_per_event(db: UsageDb) -> None:
    await new_offer(db)
    customer = await new_customer(db)
    results = await batch(
        db,
        [
            usage(customer.account_id, "2000", event_id="b-1"),
            usage(customer.account_id, event_id="b-2", event_type="sms.sent"),
            usage(customer.account_id, "10", event_id="b-3"),
        ],
    )
    assert [r.event_id for r in results] == ["b-1", "b-2", "b-3"]
    assert [r.status for r in results] == [usage_pb2.USAGE_STATUS_RATED] * 3
    assert [[from_money(ch.amount) for ch in r.charges] for r in results] == [
        [Decimal("1.50")],
        [Decimal("0.07")],
        [Decimal("0.02")],  # 2010 units cost 1.515, rounded 1.52: 2 cents more than 2000
    ]
    (message,) = await db.published()
    assert [ch.event_id for ch in message.charges] == ["b-1", "b-2", "b-3"]


async def test_a_full_batch_across_currencies_publishes_a_message_per_currency(
    db: UsageDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    await new_offer(db)
    await new_offer(
        db,
        "yen_pro",
        [c.Charge(code="api_calls", name="API", event_type="api.call", per_unit=c.PerUnitPrice(unit_price="0.4"))],
        "JPY",
    )
    euro = await new_customer(db)
    yen = await new_customer(db, "yen_pro", "JPY")
    events_ = [usage(euro.account_id if i % 2 else yen.account_id, "3") for i in range(1000)]
    results = await batch(db, events_)
    assert all(r.status == usage_pb2.USAGE_STATUS_RATED for r in results)
    published = await db.published()
    # The first 1000 euro units are free: no charge for the 333 events inside the allowance.
    assert [(m.currency_code, len(m.charges)) for m in published] == [("EUR", 167), ("JPY", 500)]
    assert {ch.amount.currency_code for ch in published[1].charges} == {"JPY"}
    assert total(list(published[1].charges)) == Decimal(600)  # 1500 units x 0.4, in whole yen

    # Charges too many for one message are split, every charge kept once and in order.
    monkeypatch.setattr(usage_service, "MAX_MESSAGE_BYTES", 2000)
    more = [usage(euro.account_id, "2000") for _ in range(20)]
    results = await batch(db, more)
    split = (await db.published())[2:]
    assert len(split) > 1
    assert [ch.event_id for m in split for ch in m.charges] == [e.event_id for e in more]


async def test_a_late_event_lands_in_the_open_cycle_flagged(db: UsageDb) -> None:
    await new_offer(db)
    account_id = uuid.uuid4()
    await account_created(db, account_id)
    await purchase_created(db, a_purchase(account_id))
    april = a_cycle(account_id, APRIL_START, MAY_START, 1)
    may = a_cycle(account_id, MAY_START, JUNE_START, 2)
    await cycle_opened(db, april)
    await cycle_closed(db, april, may)

    in_april = APRIL_START + timedelta(days=20)
    result = await record(db, usage(account_id, "1200", at=in_april))
    (charge,) = result.charges
    assert (charge.bill_cycle_id, charge.late) == (may.bill_cycle_id, True)
    assert from_timestamp(charge.event_time) == in_april  # its own time is kept
    on_time = (await record(db, usage(account_id, "100"))).charges[0]
    assert (on_time.bill_cycle_id, on_time.late) == (may.bill_cycle_id, False)
    # The late units counted in May's tiers: 1300 units in May.
    assert total(await all_charges(db, account_id, may.bill_cycle_id)) == price_of(GRADUATED, Decimal(1300))
    assert await all_charges(db, account_id, april.bill_cycle_id) == []


async def test_price_overrides_and_offer_versions(db: UsageDb) -> None:
    await new_offer(db)
    customer = await new_customer(db, overrides=[("api_calls", "0.002")])
    (charge,) = (await record(db, usage(customer.account_id, "100"))).charges
    assert (from_money(charge.amount), list(charge.tiers)) == (Decimal("0.20"), [])


# Idempotency.


async def test_replaying_an_event_changes_nothing_and_returns_the_first_charges(db: UsageDb) -> None:
    await new_offer(db)
    customer = await new_customer(db)
    event = usage(customer.account_id, "1500", event_id="same")
    first = await record(db, event)
    db.clock.advance(timedelta(minutes=5))
    counts = [await db.count(t) for t in (charges, usage_events, usage_counters)] + [len(await db.published())]
    # "1500.0" is the same quantity: the same payload.
    again = usage_pb2.UsageEvent()
    again.CopyFrom(event)
    again.quantity = "1500.0"
    assert await record(db, again) == first
    assert await batch(db, [event, event]) == [first, first]
    assert [await db.count(t) for t in (charges, usage_events, usage_counters)] + [len(await db.published())] == counts
    assert total(await all_charges(db, customer.account_id)) == Decimal("0.75")


async def test_the_same_id_with_another_payload_is_refused(db: UsageDb) -> None:
    await new_offer(db)
    customer = await new_customer(db)
    await record(db, usage(customer.account_id, "10", event_id="dup"))
    with pytest.raises(AlreadyExists) as refused:
        await record(db, usage(customer.account_id, "11", event_id="dup"))
    assert refused.value.reason == "USAGE_EVENT_ID_REUSED"

    results = await batch(
        db,
        [
            usage(customer.account_id, "12", event_id="dup"),
            usage(customer.account_id, "5", event_id="new"),
            usage(customer.account_id, "6", event_id="new"),
        ],
    )
    assert results[0].error.code == code_pb2.ALREADY_EXISTS
    assert results[0].status == usage_pb2.USAGE_STATUS_UNSPECIFIED and not results[0].charges
    assert results[1].status == usage_pb2.USAGE_STATUS_RATED
    # Twice in one batch with different payloads: the first wins, the second is refused.
    assert (results[2].error.code, error_reason(results[2].error)) == (code_pb2.ALREADY_EXISTS, "USAGE_EVENT_ID_REUSED")
    assert await db.count(usage_events) == 2


async def test_concurrent_calls_count_every_unit_once(db: UsageDb) -> None:
    await new_offer(db)
    customer = await new_customer(db)
    # Two charges per batch (api.call and sms.sent), in opposite orders: counters are locked in
    # key order, so the calls cannot deadlock.
    calls = []
    for i in range(8):
        pair = [usage(customer.account_id, "700"), usage(customer.account_id, event_type="sms.sent")]
        calls.append(batch(db, pair if i % 2 else pair[::-1]))
    # The same event sent five times at once is rated once.
    replay = usage(customer.account_id, "300", event_id="raced")
    calls += [batch(db, [replay]) for _ in range(5)]
    outcomes = await asyncio.gather(*calls)
    raced = [r[0] for r in outcomes[8:]]
    assert all(r == raced[0] for r in raced) and raced[0].status == usage_pb2.USAGE_STATUS_RATED
    listed = await all_charges(db, customer.account_id)
    # (Inside the free allowance when it went first, the raced event has no charge.)
    assert [ch for ch in listed if ch.event_id == "raced"] == list(raced[0].charges)
    api = [ch for ch in listed if ch.charge_code == "api_calls"]
    assert total(api) == price_of(GRADUATED, Decimal(8 * 700 + 300))
    assert len([ch for ch in listed if ch.charge_code == "sms"]) == 8


# What cannot be rated is kept.


async def test_a_suspended_accounts_usage_is_refused_and_kept_then_rated_once_active(db: UsageDb) -> None:
    await new_offer(db)
    customer = await new_customer(db)
    await status_changed(db, customer.account_id, account_pb2.ACCOUNT_STATUS_SUSPENDED, NOW - timedelta(days=1))

    with pytest.raises(FailedPrecondition) as refused:
        await record(db, usage(customer.account_id, "10", event_id="s-1"))
    assert refused.value.reason == "ACCOUNT_SUSPENDED"
    # A replay gets the same answer.
    with pytest.raises(FailedPrecondition):
        await record(db, usage(customer.account_id, "10", event_id="s-1"))
    (in_batch,) = await batch(db, [usage(customer.account_id, "20", event_id="s-2")])
    assert (in_batch.status, in_batch.reason) == (usage_pb2.USAGE_STATUS_REJECTED, "ACCOUNT_SUSPENDED")
    assert (in_batch.error.code, error_reason(in_batch.error)) == (code_pb2.FAILED_PRECONDITION, "ACCOUNT_SUSPENDED")

    listed = await kept(db, customer.account_id)
    assert [(u.event.event_id, u.status, u.reason) for u in listed] == [
        ("s-1", usage_pb2.USAGE_STATUS_REJECTED, "ACCOUNT_SUSPENDED"),
        ("s-2", usage_pb2.USAGE_STATUS_REJECTED, "ACCOUNT_SUSPENDED"),
    ]
    assert listed[0].event.quantity == "10" and from_timestamp(listed[0].receive_time) == NOW
    assert await db.count(charges) == 0

    # Still suspended: re-submitting changes nothing.
    (still,) = await resubmit(db, "s-1")
    assert still.status == usage_pb2.USAGE_STATUS_REJECTED
    await status_changed(db, customer.account_id, account_pb2.ACCOUNT_STATUS_ACTIVE, NOW)
    results = await resubmit(db, "s-1", "s-2")
    assert [r.status for r in results] == [usage_pb2.USAGE_STATUS_RATED] * 2
    assert await kept(db, customer.account_id) == []
    assert total(await all_charges(db, customer.account_id)) == price_of(GRADUATED, Decimal(30))


async def test_a_closed_accounts_usage_is_rejected(db: UsageDb) -> None:
    await new_offer(db)
    customer = await new_customer(db)
    await status_changed(db, customer.account_id, account_pb2.ACCOUNT_STATUS_CLOSED, NOW)
    with pytest.raises(FailedPrecondition) as refused:
        await record(db, usage(customer.account_id))
    assert refused.value.reason == "ACCOUNT_CLOSED"


async def test_an_unknown_account_is_kept_unrated_then_rated_on_resubmit(db: UsageDb) -> None:
    await new_offer(db)
    account_id = uuid.uuid4()
    result = await record(db, usage(account_id, "1200", event_id="u-1"))
    assert (result.status, result.reason, list(result.charges)) == (
        usage_pb2.USAGE_STATUS_UNRATED,
        "UNKNOWN_ACCOUNT",
        [],
    )
    assert [u.event.event_id for u in await kept(db)] == ["u-1"]

    # Customer's events arrive: the account, its purchase, billing's cycle. A replay still
    # returns the stored result: only ResubmitUsage rates again.
    await account_created(db, account_id)
    assert (await record(db, usage(account_id, "1200", event_id="u-1"))).reason == "UNKNOWN_ACCOUNT"
    (no_purchase,) = await resubmit(db, "u-1")
    assert no_purchase.reason == "NO_MATCHING_PURCHASE"
    await purchase_created(db, a_purchase(account_id))
    (no_cycle,) = await resubmit(db, "u-1")
    assert (no_cycle.status, no_cycle.reason) == (usage_pb2.USAGE_STATUS_UNRATED, "NO_OPEN_CYCLE")
    may = a_cycle(account_id, MAY_START, JUNE_START)
    await cycle_opened(db, may)
    (rated,) = await resubmit(db, "u-1")
    assert rated.status == usage_pb2.USAGE_STATUS_RATED
    assert [from_money(ch.amount) for ch in rated.charges] == [Decimal("0.30")]
    assert await kept(db) == []
    # Rated now: a replay, or another resubmit, returns those charges.
    assert await record(db, usage(account_id, "1200", event_id="u-1")) == rated
    assert await resubmit(db, "u-1") == [rated]
    (published,) = await db.published()
    assert list(published.charges) == list(rated.charges)


async def test_resubmitting_an_unknown_id_is_not_found_in_its_result(db: UsageDb) -> None:
    (result,) = await resubmit(db, "never-seen")
    assert (result.event_id, result.error.code) == ("never-seen", code_pb2.NOT_FOUND)
    with pytest.raises(InvalidArgument) as empty:
        await resubmit(db)
    assert empty.value.field == "event_ids"
    with pytest.raises(InvalidArgument) as blank:
        await resubmit(db, "x", "")
    assert blank.value.field == "event_ids[1]"
    with pytest.raises(InvalidArgument) as too_many:
        await resubmit(db, *[str(i) for i in range(1001)])
    assert too_many.value.field == "event_ids"


async def test_kept_usage_and_charges_are_listed_in_pages(db: UsageDb) -> None:
    await new_offer(db)
    customer = await new_customer(db)
    strangers = [uuid.uuid4(), uuid.uuid4()]
    await batch(db, [usage(strangers[i % 2], event_id=f"k-{i:02}") for i in range(7)])
    await batch(db, [usage(customer.account_id, "2000", event_id=f"c-{i:02}") for i in range(5)])

    pages = await kept(db, size=3)
    assert [u.event.event_id for u in pages] == [f"k-{i:02}" for i in range(7)]
    assert [u.event.event_id for u in await kept(db, strangers[1], size=2)] == ["k-01", "k-03", "k-05"]

    listed = await all_charges(db, customer.account_id)
    assert [ch.event_id for ch in listed] == [f"c-{i:02}" for i in range(5)]
    page = await db.servicer().ListCharges(
        pb.ListChargesRequest(account_id=str(customer.account_id), page_size=2), NO_CONTEXT
    )
    assert len(page.charges) == 2 and page.next_page_token
    with pytest.raises(InvalidArgument) as other_filters:
        await db.servicer().ListCharges(
            pb.ListChargesRequest(account_id=str(strangers[0]), page_token=page.next_page_token), NO_CONTEXT
        )
    assert other_filters.value.field == "page_token"
    with pytest.raises(InvalidArgument) as no_account:
        await db.servicer().ListCharges(pb.ListChargesRequest(), NO_CONTEXT)
    assert no_account.value.field == "account_id"


# Bad input is refused naming the field, and writes nothing.


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"quantity": "NaN"}, "event.quantity"),
        ({"quantity": "-3"}, "event.quantity"),
        ({"quantity": "0"}, "event.quantity"),
        ({"event_id": ""}, "event.event_id"),
        ({"account_id": "nope"}, "event.account_id"),
        ({"event_type": "Not A Type"}, "event.event_type"),
        ({"event_type": "never.rated"}, "event.event_type"),
    ],
)
async def test_bad_events_are_refused_naming_the_field(db: UsageDb, changes: dict[str, str], field: str) -> None:
    await new_offer(db)
    customer = await new_customer(db)
    event = usage(customer.account_id)
    for name, value in changes.items():
        setattr(event, name, value)
    with pytest.raises(InvalidArgument) as refused:
        await record(db, event)
    assert refused.value.field == field
    missing_time = usage(customer.account_id)
    missing_time.ClearField("event_time")
    with pytest.raises(InvalidArgument) as no_time:
        await record(db, missing_time)
    assert no_time.value.field == "event.event_time"
    assert [await db.count(usage_events), await db.count(charges), len(await db.published())] == [0, 0, 0]


async def test_a_bad_event_in_a_batch_is_refused_alone(db: UsageDb) -> None:
    await new_offer(db)
    customer = await new_customer(db)
    events_ = [usage(customer.account_id, "5") for _ in range(5)]
    events_[3].quantity = "NaN"
    events_[1].event_type = "never.rated"
    results = await batch(db, events_)
    assert [r.status for r in results] == [
        usage_pb2.USAGE_STATUS_RATED,
        usage_pb2.USAGE_STATUS_UNSPECIFIED,
        usage_pb2.USAGE_STATUS_RATED,
        usage_pb2.USAGE_STATUS_UNSPECIFIED,
        usage_pb2.USAGE_STATUS_RATED,
    ]
    assert (results[3].error.code, violated_fields(results[3].error)) == (
        code_pb2.INVALID_ARGUMENT,
        ["events[3].quantity"],
    )
    assert violated_fields(results[1].error) == ["events[1].event_type"]
    assert await db.count(usage_events) == 3


async def test_an_oversized_batch_is_refused(db: UsageDb) -> None:
    await new_offer(db)
    customer = await new_customer(db)
    with pytest.raises(InvalidArgument) as refused:
        await batch(db, [usage(customer.account_id) for _ in range(1001)])
    assert refused.value.field == "events"
    assert await batch(db, []) == []
    assert await db.count(usage_events) == 0


# Streams.


async def test_a_stream_rates_each_slice_and_answers_at_the_end(db: UsageDb) -> None:
    await new_offer(db)
    customer = await new_customer(db)
    slices = [
        [usage(customer.account_id, "600", event_id="s-0"), usage(customer.account_id, "600", event_id="s-1")],
        [],
        [usage(customer.account_id, "NaN", event_id="s-2"), usage(customer.account_id, "600", event_id="s-3")],
    ]

    async def requests() -> AsyncIterator[pb.StreamUsageRequest]:
        for piece in slices:
            yield pb.StreamUsageRequest(events=piece)

    response = await db.servicer().StreamUsage(requests(), NO_CONTEXT)
    assert [r.event_id for r in response.results] == ["s-0", "s-1", "s-2", "s-3"]
    # Named by its index in the whole stream.
    assert violated_fields(response.results[2].error) == ["events[2].quantity"]
    assert total(await all_charges(db, customer.account_id)) == price_of(GRADUATED, Decimal(1800))
    assert len(await db.published()) == 2  # one per slice that made charges


# Projections: any order, never back.


async def test_purchase_events_in_any_order(db: UsageDb) -> None:
    account_id = uuid.uuid4()
    purchase_id = uuid.uuid4()
    first_end = a_purchase(account_id, purchase_id=purchase_id, end=NOW + timedelta(days=10))
    later_end = a_purchase(account_id, purchase_id=purchase_id, end=NOW + timedelta(days=3))
    # The later end arrives first, then the earlier one, then the creation.
    await apply(db, consumers.on_purchase_ended, customer_events.PurchaseEnded(purchase=later_end), NOW)
    await apply(
        db, consumers.on_purchase_ended, customer_events.PurchaseEnded(purchase=first_end), NOW - timedelta(hours=1)
    )
    await purchase_created(db, a_purchase(account_id, purchase_id=purchase_id), NOW - timedelta(days=1))
    async with db.uow() as uow:
        found = await uow.purchases.get(purchase_id)
    assert found is not None and found.end_time == NOW + timedelta(days=3)
    assert await db.count(purchases) == 1

    # A cancellation stays.
    cancelled = a_purchase(account_id, purchase_id=purchase_id)
    cancelled.cancel_time.FromDatetime(NOW)
    await apply(db, consumers.on_purchase_ended, customer_events.PurchaseEnded(purchase=cancelled), NOW)
    async with db.uow() as uow:
        found = await uow.purchases.get(purchase_id)
    assert found is not None and found.cancel_time == NOW and not found.active_at(NOW)


async def test_a_closed_cycle_stays_closed(db: UsageDb) -> None:
    account_id = uuid.uuid4()
    april = a_cycle(account_id, APRIL_START, MAY_START, 1)
    may = a_cycle(account_id, MAY_START, JUNE_START, 2)
    await cycle_closed(db, april, may)
    await cycle_opened(db, april)  # delivered late
    await cycle_opened(db, may)
    async with db.uow() as uow:
        found = await uow.bill_cycles.for_accounts([account_id])
    statuses = {str(cy.bill_cycle_id): cy.status for cy in found[account_id]}
    assert statuses == {april.bill_cycle_id: BillCycleStatus.CLOSED, may.bill_cycle_id: BillCycleStatus.OPEN}
    assert await db.count(bill_cycles) == 2


async def test_the_billing_subscription_applies_cycles_through_the_consumer(db: UsageDb) -> None:
    consumer = consumer_for(consumers.subscriptions(), stream_name("billing"), db.uow, inbox)
    account_id = uuid.uuid4()
    opened = billing_events.BillCycleOpened(bill_cycle=a_cycle(account_id, MAY_START, JUNE_START))
    msg = message(consumers.BILL_CYCLE_OPENED, opened, NOW)
    await process(consumer, msg, msg)
    assert not msg.naked, "the event applies"
    assert msg.acked
    assert await db.count(bill_cycles) == 1


# Over real gRPC, through the runtime's interceptor.


async def test_grpc_status_codes_and_the_stream(db: UsageDb) -> None:
    await new_offer(db)
    customer = await new_customer(db)
    async with serving(
        pb_grpc.add_ChargingServiceServicer_to_server, db.servicer(), ServiceInterceptor("charging.evolutivo.io")
    ) as channel:
        stub = pb_grpc.ChargingServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stub.RecordUsage(pb.RecordUsageRequest(event=usage(customer.account_id, "-1")))
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request_fields(invalid.value) == ["event.quantity"]

        event = usage(customer.account_id, "5", event_id="g-1")
        await stub.RecordUsage(pb.RecordUsageRequest(event=event))
        event.quantity = "6"
        with pytest.raises(grpc.aio.AioRpcError) as conflict:
            await stub.RecordUsage(pb.RecordUsageRequest(event=event))
        assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS

        async def requests() -> AsyncIterator[pb.StreamUsageRequest]:
            for i in range(3):
                yield pb.StreamUsageRequest(events=[usage(customer.account_id, "400") for _ in range(2)])
                await asyncio.sleep(0)
                assert i < 3

        streamed = await stub.StreamUsage(requests())
        assert [r.status for r in streamed.results] == [usage_pb2.USAGE_STATUS_RATED] * 6

        await status_changed(db, customer.account_id, account_pb2.ACCOUNT_STATUS_SUSPENDED, NOW)
        with pytest.raises(grpc.aio.AioRpcError) as suspended:
            await stub.RecordUsage(pb.RecordUsageRequest(event=usage(customer.account_id)))
        assert suspended.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert total(await all_charges(db, customer.account_id)) == price_of(GRADUATED, Decimal(2405))


# The sum of a cycle's charges does not depend on how its events are batched or ordered.

MODELS = {
    "graduated": (GRADUATED, c.Charge(code="m", name="m", event_type="api.call", graduated=GRADUATED_PB)),
    "volume": (
        Volume(
            (Tier(Decimal(100), Decimal("0.10")), Tier(Decimal(1000), Decimal("0.08")), Tier(None, Decimal("0.05")))
        ),
        c.Charge(
            code="m",
            name="m",
            event_type="api.call",
            volume=c.TieredPrice(
                tiers=[
                    c.Tier(up_to="100", unit_price="0.10"),
                    c.Tier(up_to="1000", unit_price="0.08"),
                    c.Tier(unit_price="0.05"),
                ]
            ),
        ),
    ),
    "unit": (
        PerUnit(Decimal("0.0004")),
        c.Charge(code="m", name="m", event_type="api.call", per_unit=c.PerUnitPrice(unit_price="0.0004")),
    ),
    "package": (
        Package(Decimal(100), Decimal("1.99"), Decimal(50)),
        c.Charge(
            code="m",
            name="m",
            event_type="api.call",
            package=c.PackagePrice(package_size="100", package_price="1.99", free_units="50"),
        ),
    ),
}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    model=st.sampled_from(sorted(MODELS)),
    quantities=st.lists(
        st.decimals(min_value=Decimal("0.001"), max_value=Decimal(3000), places=3), min_size=1, max_size=12
    ),
    data=st.data(),
)
async def test_the_sum_of_charges_is_independent_of_batching_and_order(
    db: UsageDb, model: str, quantities: list[Decimal], data: st.DataObject
) -> None:
    price, charge = MODELS[model]
    code = f"p{uuid.uuid4().hex[:12]}"
    await new_offer(db, code, [charge])
    expected = price_of(price, sum(quantities, Decimal(0)))

    one_by_one = await new_customer(db, code)
    for q in quantities:
        await record(db, usage(one_by_one.account_id, str(q)))
    batched = await new_customer(db, code)
    shuffled = data.draw(st.permutations(quantities))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(shuffled) - 1)), max_size=len(shuffled))))
    for start, end in zip([0, *cuts], [*cuts, len(shuffled)], strict=True):
        if start < end:
            await batch(db, [usage(batched.account_id, str(q)) for q in shuffled[start:end]])

    assert total(await all_charges(db, one_by_one.account_id)) == expected
    assert total(await all_charges(db, batched.account_id)) == expected


async def test_outcomes_take_rate_seqs_in_the_order_they_were_priced(db: UsageDb) -> None:
    """Rerating replays events in rate_seq order, which must be the order the counters counted
    them in: the order the outcomes are given, whatever the event ids' order; as new events are
    stored and as kept ones are rated again."""
    account_id = uuid.uuid4()
    ids = [f"seq-{uuid.uuid4()}" for _ in range(40)]
    events = [
        UsageEvent(event_id=i, account_id=account_id, event_type="sms.sent", event_time=NOW, quantity=Decimal(1))
        for i in ids
    ]

    async def rate_seqs() -> list[str]:
        rows = await db.rows(
            select(usage_events.c.event_id, usage_events.c.rate_seq).where(usage_events.c.event_id.in_(ids))
        )
        assert len({r.rate_seq for r in rows}) == len(ids)
        return [r.event_id for r in sorted(rows, key=lambda r: r.rate_seq)]

    priced = sorted(events, key=lambda e: e.event_id[::-1])  # an order that is not the ids'
    async with db.uow() as uow:
        assert (await uow.usage.received(events))[0] == {}
        uow.write_at_commit(
            *UsageRepository.insert_statement(
                [(e, Outcome(e.event_id, UsageStatus.UNRATED, "no purchase", ())) for e in priced], NOW
            )
        )
        await uow.commit()
    assert await rate_seqs() == [e.event_id for e in priced]

    again = sorted(ids, key=lambda i: i[len(i) // 2 :])
    async with db.uow() as uow:
        assert set((await uow.usage.received(events))[0]) == set(ids)
        await uow.usage.record([Outcome(i, UsageStatus.UNRATED, "no purchase", ()) for i in again], NOW)
        await uow.commit()
    assert await rate_seqs() == again


async def _until_a_lock_is_awaited(db: UsageDb) -> None:
    """Returns once a backend of the test's database waits for a lock (fails after 10 s)."""
    for _ in range(200):
        async with db.sessions() as session:
            waiting = await session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        if waiting:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no backend waited for the counter's lock")


@pytest.mark.parametrize("existing", [False, True], ids=["new counter", "existing counter"])
async def test_a_counter_locked_by_another_transaction_is_read_as_that_one_commits_it(
    db: UsageDb, existing: bool
) -> None:
    """Two transactions lock the same counter: the second waits, then reads the units the first
    committed, not those it would have seen when it started waiting."""
    key = (uuid.uuid4(), uuid.uuid4(), "api_calls", uuid.uuid4())
    start = Decimal(5) if existing else Decimal(0)
    if existing:
        async with db.uow() as uow:
            assert await uow.counters.lock([key], NOW) == {key: Decimal(0)}
            await uow.counters.save({key: start}, NOW)
            await uow.commit()
    async with db.uow() as first, db.uow() as second:
        assert await first.counters.lock([key], NOW) == {key: start}
        waiting = asyncio.create_task(second.counters.lock([key], NOW))
        await _until_a_lock_is_awaited(db)
        assert not waiting.done()
        await first.counters.save({key: start + 700}, NOW)
        await first.commit()
        assert await waiting == {key: start + 700}
        await second.counters.save({key: start + 1000}, NOW)
        await second.commit()
    async with db.uow() as uow:
        assert await uow.counters.units(key) == start + 1000


async def test_an_event_another_transaction_stores_meanwhile_is_answered_as_that_one_stored_it(
    db: UsageDb,
) -> None:
    """A call finds its event new and rates it; another transaction stores the same id first. The
    call's commit waits for that one, fails on the id, rolls back (its charge too) and runs again,
    to answer with what the other stored: the event is rated once."""
    await new_offer(db)
    customer = await new_customer(db)
    sent = usage(customer.account_id, "1", event_type="sms.sent", event_id="raced-once")
    same = UsageEvent(
        event_id="raced-once",
        account_id=customer.account_id,
        event_type="sms.sent",
        event_time=AT,
        quantity=Decimal(1),
    )
    async with db.uow() as other:
        assert (await other.usage.received([same]))[0] == {}
        stored = UsageRepository.insert_statement(
            [(same, Outcome(same.event_id, UsageStatus.UNRATED, "NO_PURCHASE", ()))], NOW
        )
        assert stored is not None
        await other.session.execute(*stored)
        call = asyncio.create_task(batch(db, [sent]))
        await _until_a_lock_is_awaited(db)
        assert not call.done()
        await other.commit()
    (answered,) = await call
    assert (answered.status, answered.reason, list(answered.charges)) == (
        usage_pb2.USAGE_STATUS_UNRATED,
        "NO_PURCHASE",
        [],
    )
    assert await all_charges(db, customer.account_id) == []
    assert await db.count(usage_events) == 1


async def test_a_call_that_keeps_racing_is_aborted_to_be_retried(db: UsageDb, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each race runs the call again; the fifth in a row answers ABORTED (USAGE_RACED)."""
    attempts: list[int] = []

    async def raced(*_: Any) -> list[Any]:
        attempts.append(len(attempts))
        raise UsageRaced

    monkeypatch.setattr(usage_service, "_record_once", raced)
    with pytest.raises(Aborted) as aborted:
        await usage_service.record_usage(db.uow(), [])
    assert aborted.value.reason == "USAGE_RACED"
    assert attempts == [0, 1, 2, 3, 4]


async def test_usage_of_an_account_being_rerated_waits_for_the_run_then_is_rated(db: UsageDb) -> None:
    """A rerating run holds its account's lock exclusive: usage of that account is rated only
    once the run ends (the read of the events received before takes the share lock first), other
    accounts' is not held up."""
    await new_offer(db)
    customer = await new_customer(db)
    other = await new_customer(db)
    async with db.uow() as run:
        await run.account_locks.exclusive(customer.account_id)
        waiting = asyncio.create_task(
            batch(db, [usage(customer.account_id, "1", event_type="sms.sent", event_id="during-run")])
        )
        await _until_a_lock_is_awaited(db)
        # It waits before writing its event: another transaction inserting that id does not
        # wait for it (it would, behind an uncommitted insert of the id).
        await _insert_usage_event_without_waiting(db, "during-run", customer.account_id)
        (elsewhere,) = await batch(db, [usage(other.account_id, "700", event_id="other-account")])
        assert elsewhere.status == usage_pb2.USAGE_STATUS_RATED
        assert not waiting.done()
        await run.commit()
    (rated,) = await waiting
    assert rated.status == usage_pb2.USAGE_STATUS_RATED
    assert [ch.charge_code for ch in rated.charges] == ["sms"]
    assert [(ch.event_id, ch.charge_code) for ch in await all_charges(db, customer.account_id)] == [
        ("during-run", "sms")
    ]


async def _insert_usage_event_without_waiting(db: UsageDb, event_id: str, account_id: uuid.UUID) -> None:
    """Inserts the id in a transaction that rolls back; fails if the insert has to wait."""
    async with db.sessions() as session:
        await session.execute(text("SET LOCAL lock_timeout = '2s'"))
        await session.execute(
            text(
                "INSERT INTO usage_events (event_id, payload_sha256, account_id, payload, event_time, status,"
                " reason, charge_ids, receive_time, rate_time, attempts)"
                " VALUES (:event_id, 'x', :account_id, '{}', now(), 'unrated', '', '{}', now(), now(), 0)"
                " ON CONFLICT (event_id) DO NOTHING"
            ),
            {"event_id": event_id, "account_id": account_id},
        )
        await session.rollback()


async def test_counters_cannot_be_locked_again_once_their_save_is_deferred(db: UsageDb) -> None:
    """A second lock would read units without the deferred save, and two saves of one counter in
    the commit's statement would not both apply: the repository refuses it."""
    key = (uuid.uuid4(), uuid.uuid4(), "api_calls", uuid.uuid4())
    async with db.uow() as uow:
        assert await uow.counters.lock([key], NOW) == {key: Decimal(0)}
        uow.counters.save_at_commit({key: Decimal(7)}, NOW, uow.write_at_commit)
        with pytest.raises(RuntimeError, match="deferred"):
            await uow.counters.lock([key], NOW)
        await uow.commit()
    async with db.uow() as uow:
        assert await uow.counters.units(key) == Decimal(7)
