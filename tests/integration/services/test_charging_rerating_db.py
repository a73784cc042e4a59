"""Rerating, credit limits, the replicas' rating cache and the idempotency horizon, against a real,
migrated PostgreSQL: RerateUsage after a backdated catalog fix makes reversing and new charges for
the differences, published like any charge, once per request id; balance's credit-limit events
refuse usage landing in a group over its limit unless the charge allows overage; a replica's cache
follows an activated version (and a change applied by another replica) through the database's
notifications; rated usage past the horizon is deleted, unrated usage is kept."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from evolutivo.balance.v1 import balance_pb2
from evolutivo.balance.v1 import events_pb2 as balance_events
from evolutivo.billing.v1 import bill_cycle_pb2
from evolutivo.billing.v1 import events_pb2 as billing_events
from evolutivo.charging.v1 import catalog_pb2 as c
from evolutivo.charging.v1 import charging_service_pb2 as pb
from evolutivo.charging.v1 import events_pb2, usage_pb2
from evolutivo.customer.v1 import account_pb2, purchase_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_charging.adapters import events
from evolutivo_charging.adapters.cache import CacheListener, RatingCache, current_generation
from evolutivo_charging.adapters.orm import inbox, metadata, outbox, request_log, usage_counters, usage_events
from evolutivo_charging.domain.catalog import Graduated, Tier
from evolutivo_charging.domain.pricing import cumulative_cost, round_money
from evolutivo_charging.entrypoints import consumers
from evolutivo_charging.entrypoints.app import MIGRATIONS
from evolutivo_charging.entrypoints.expiry_loop import ExpiryLoop
from evolutivo_charging.entrypoints.grpc_api import ChargingServicer
from evolutivo_charging.service_layer.reads import load_catalog
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork
from evolutivo_runtime.clock import FixedClock
from evolutivo_runtime.db import create_engine, session_factory
from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument
from evolutivo_runtime.messaging.envelope import EventMeta
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.money import from_money, to_money
from evolutivo_runtime.testing import eventually
from evolutivo_runtime.timestamps import to_timestamp
from google.protobuf.message import Message
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from support.databases import schema_diff
from support.jetstream import consumer_for, message, process

NOW = datetime(2031, 5, 20, 9, 30, tzinfo=UTC)
OFFER_FROM = datetime(2031, 3, 1, tzinfo=UTC)
BOUGHT = datetime(2031, 3, 15, tzinfo=UTC)
APRIL_START = datetime(2031, 4, 1, tzinfo=UTC)
MAY_START = datetime(2031, 5, 1, tzinfo=UTC)
JUNE_START = datetime(2031, 6, 1, tzinfo=UTC)
NO_CONTEXT: Any = None

OLD_TIERS = [c.Tier(up_to="1000", unit_price="0"), c.Tier(unit_price="0.0015")]
NEW_TIERS = [c.Tier(up_to="2000", unit_price="0"), c.Tier(unit_price="0.0010")]
NEW_MODEL = Graduated((Tier(Decimal(2000), Decimal(0)), Tier(None, Decimal("0.0010"))))


def api_calls(tiers: Sequence[c.Tier], **fields: Any) -> c.Charge:
    return c.Charge(
        code="api_calls", name="API calls", event_type="api.call", graduated=c.TieredPrice(tiers=tiers), **fields
    )


SMS = c.Charge(code="sms", name="SMS", event_type="sms.sent", flat=c.FlatPrice(amount="0.07"), allow_overage=True)


@dataclass
class Db:
    url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    clock: FixedClock
    cache: RatingCache | None = None

    def uow(self) -> ChargingUnitOfWork:
        return ChargingUnitOfWork(self.sessions, outbox, self.clock, events.encode, request_log, cache=self.cache)

    def plain_uow(self) -> ChargingUnitOfWork:
        """Another replica's: no cache."""
        return ChargingUnitOfWork(self.sessions, outbox, self.clock, events.encode, request_log)

    def servicer(self) -> ChargingServicer:
        return ChargingServicer(self.uow, timedelta(days=100))

    async def scalar(self, query: Any) -> Any:
        async with self.engine.connect() as conn:
            return await conn.scalar(query)

    async def published(self) -> list[usage_pb2.RatedCharge]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(outbox.c.payload)
                    .where(outbox.c.subject == "evolutivo.charging.v1.charges.created")
                    .order_by(outbox.c.seq)
                )
            ).all()
        return [ch for row in rows for ch in events_pb2.ChargesCreated.FromString(row.payload).charges]


@pytest.fixture
async def db(migrated_database: Callable[..., Awaitable[str]]) -> AsyncIterator[Db]:
    url = await migrated_database("charging_rerating", MIGRATIONS)
    engine = create_engine(url, pool_size=8)
    try:
        yield Db(url, engine, session_factory(engine), FixedClock(NOW))
    finally:
        await engine.dispose()


async def apply(
    db: Db,
    handler: Callable[[ChargingUnitOfWork, Any, EventMeta], Awaitable[None]],
    event: Message,
    plain: bool = False,
) -> None:
    meta = EventMeta(uuid.uuid4(), event.DESCRIPTOR.full_name, "test", NOW, 1)
    async with db.plain_uow() if plain else db.uow() as uow:
        await handler(uow, event, meta)
        await uow.commit()


async def new_offer(
    db: Db, charges: Sequence[c.Charge], code: str = "api_pro", valid_from: datetime = OFFER_FROM
) -> pb.ActivateChargeOfferResponse:
    servicer = db.servicer()
    created = await servicer.CreateChargeOffer(
        pb.CreateChargeOfferRequest(
            charge_offer=c.ChargeOffer(
                code=code, name="API Pro", currency_code="EUR", valid_from=to_timestamp(valid_from), charges=charges
            )
        ),
        NO_CONTEXT,
    )
    return await servicer.ActivateChargeOffer(
        pb.ActivateChargeOfferRequest(charge_offer_id=created.charge_offer.charge_offer_id), NO_CONTEXT
    )


def a_cycle(account_id: uuid.UUID, start: datetime, end: datetime) -> bill_cycle_pb2.BillCycle:
    return bill_cycle_pb2.BillCycle(
        bill_cycle_id=str(uuid.uuid4()),
        account_id=str(account_id),
        sequence=1,
        start_time=to_timestamp(start),
        end_time=to_timestamp(end),
        status=bill_cycle_pb2.BILL_CYCLE_STATUS_OPEN,
        time_zone="Europe/Madrid",
    )


async def new_customer(
    db: Db, *codes: str, start: datetime = MAY_START, end: datetime = JUNE_START, plain: bool = False
) -> uuid.UUID:
    account_id = uuid.uuid4()
    account = account_pb2.Account(
        account_id=str(account_id),
        currency_code="EUR",
        time_zone="Europe/Madrid",
        status=account_pb2.ACCOUNT_STATUS_ACTIVE,
    )
    await apply(db, consumers.on_account_created, customer_events.AccountCreated(account=account), plain)
    for code in codes or ("api_pro",):
        await buy(db, account_id, code, plain)
    cycle = a_cycle(account_id, start, end)
    await apply(db, consumers.on_bill_cycle_opened, billing_events.BillCycleOpened(bill_cycle=cycle), plain)
    return account_id


async def buy(db: Db, account_id: uuid.UUID, code: str, plain: bool = False) -> None:
    purchase = purchase_pb2.Purchase(
        purchase_id=str(uuid.uuid4()),
        account_id=str(account_id),
        charge_offer_code=code,
        charge_offer_version=1,
        quantity="1",
        start_time=to_timestamp(BOUGHT),
    )
    await apply(db, consumers.on_purchase_created, customer_events.PurchaseCreated(purchase=purchase), plain)


def usage(account_id: uuid.UUID, quantity: str, at: datetime, event_type: str = "api.call") -> usage_pb2.UsageEvent:
    return usage_pb2.UsageEvent(
        event_id=f"evt-{uuid.uuid4().hex}",
        account_id=str(account_id),
        event_type=event_type,
        event_time=to_timestamp(at),
        quantity=quantity,
    )


async def batch(db: Db, events_: Sequence[usage_pb2.UsageEvent]) -> list[usage_pb2.UsageResult]:
    return list((await db.servicer().RecordUsageBatch(pb.RecordUsageBatchRequest(events=events_), NO_CONTEXT)).results)


async def rerate(
    db: Db, account_id: uuid.UUID, request_id: uuid.UUID, start: datetime = MAY_START, end: datetime = JUNE_START
) -> usage_pb2.RerateRun:
    request = pb.RerateUsageRequest(
        account_id=str(account_id),
        start_time=to_timestamp(start),
        end_time=to_timestamp(end),
        request_id=str(request_id),
    )
    return (await db.servicer().RerateUsage(request, NO_CONTEXT)).rerate_run


async def all_charges(db: Db, account_id: uuid.UUID) -> list[usage_pb2.RatedCharge]:
    found: list[usage_pb2.RatedCharge] = []
    token = ""
    while True:
        page = await db.servicer().ListCharges(
            pb.ListChargesRequest(account_id=str(account_id), page_token=token), NO_CONTEXT
        )
        found += page.charges
        token = page.next_page_token
        if not token:
            return found


def total(charges: Sequence[usage_pb2.RatedCharge]) -> Decimal:
    return sum((from_money(ch.amount) for ch in charges), Decimal(0))


# The schema.


async def test_the_migrations_give_the_tables_the_code_declares(db: Db) -> None:
    assert await schema_diff(db.engine, metadata) == []


# Rerating.


async def test_rerating_after_a_backdated_fix_reverses_and_recharges_only_the_differences(db: Db) -> None:
    await new_offer(db, [api_calls(OLD_TIERS)])
    account_id = await new_customer(db)
    quantities = ["800", "700", "900", "50"]
    days = [2, 3, 4, 25]  # the last one after the window
    results = await batch(
        db, [usage(account_id, q, MAY_START + timedelta(days=d)) for q, d in zip(quantities, days, strict=True)]
    )
    assert [len(r.charges) for r in results] == [0, 1, 1, 1]
    original = await all_charges(db, account_id)
    # The fix: a version 2 in force from May 1st, with a larger free allowance and a cheaper band.
    await new_offer(db, [api_calls(NEW_TIERS)], valid_from=MAY_START)
    published_before = len(await db.published())

    request_id = uuid.uuid4()
    run = await rerate(db, account_id, request_id, MAY_START, MAY_START + timedelta(days=20))
    assert (run.account_id, run.request_id) == (str(account_id), str(request_id))
    # Units 1-800 stay free; 801-1500 (event 2) were 0.75, now free; 1501-2400 (event 3) were 1.35,
    # now 0.40; event 4 is out of the window (its 0.075 rounds as before: unchanged anyway).
    assert (run.events_rerated, run.events_changed, run.charges_reversed, run.charges_created) == (3, 2, 2, 1)
    assert from_money(run.net_amount) == Decimal("-1.70")

    after = await all_charges(db, account_id)
    made = after[len(original) :]
    assert [(ch.kind, ch.event_id) for ch in made] == [
        (usage_pb2.CHARGE_KIND_REVERSAL, results[1].event_id),
        (usage_pb2.CHARGE_KIND_REVERSAL, results[2].event_id),
        (usage_pb2.CHARGE_KIND_USAGE, results[2].event_id),
    ]
    assert [ch.reverses_charge_id for ch in made[:2]] == [original[0].charge_id, original[1].charge_id]
    assert [from_money(ch.amount) for ch in made] == [Decimal("-0.75"), Decimal("-1.35"), Decimal("0.40")]
    assert (made[2].replaces_charge_id, made[2].charge_offer_version) == (original[1].charge_id, 2)
    assert {ch.rerate_run_id for ch in made} == {run.rerate_run_id}
    assert all(ch.bill_cycle_id == original[0].bill_cycle_id and not ch.late for ch in made)
    # Never an edit: the original charges are listed as they were.
    assert after[: len(original)] == original
    # Published like any charge, each with its id, for balance and billing.
    assert [ch.charge_id for ch in (await db.published())[published_before:]] == [ch.charge_id for ch in made]

    # A retry returns the first run; another run over the window finds nothing to correct.
    assert await rerate(db, account_id, request_id, MAY_START, MAY_START + timedelta(days=20)) == run
    again = await rerate(db, account_id, uuid.uuid4(), MAY_START, MAY_START + timedelta(days=20))
    assert (again.events_rerated, again.events_changed, again.charges_created, again.charges_reversed) == (3, 0, 0, 0)
    assert len(await all_charges(db, account_id)) == len(after)
    # The whole cycle: the last event (units 2401-2450) was 0.08 with the old tiers, 0.05 now.
    whole = await rerate(db, account_id, uuid.uuid4())
    assert (whole.events_rerated, whole.events_changed, from_money(whole.net_amount)) == (4, 1, Decimal("-0.03"))

    # The counters follow: new usage prices on top of the cycle's units as the new tiers count them.
    (late,) = await batch(db, [usage(account_id, "600", MAY_START + timedelta(days=26))])
    standing = total(await all_charges(db, account_id))
    assert standing == round_money(cumulative_cost(NEW_MODEL, Decimal(3050))[0], 2)
    assert from_money(late.charges[0].amount) == Decimal("0.60")


async def test_corrections_of_a_closed_cycle_are_billed_in_the_open_cycle_flagged_late(db: Db) -> None:
    await new_offer(db, [api_calls(OLD_TIERS)])
    account_id = await new_customer(db, start=APRIL_START, end=MAY_START)
    (rated,) = await batch(db, [usage(account_id, "3000", APRIL_START + timedelta(days=3))])
    april = rated.charges[0].bill_cycle_id
    # Billing closes April, opening May.
    april_cycle = a_cycle(account_id, APRIL_START, MAY_START)
    april_cycle.bill_cycle_id = april
    april_cycle.status = bill_cycle_pb2.BILL_CYCLE_STATUS_CLOSED
    may = a_cycle(account_id, MAY_START, JUNE_START)
    closed = billing_events.BillCycleClosed(bill_cycle=april_cycle, next_bill_cycle=may)
    await apply(db, consumers.on_bill_cycle_closed, closed)
    await new_offer(db, [api_calls(NEW_TIERS)], valid_from=APRIL_START)

    run = await rerate(db, account_id, uuid.uuid4(), APRIL_START, MAY_START)
    assert (run.events_changed, from_money(run.net_amount)) == (1, Decimal("-2.00"))
    made = [ch for ch in await all_charges(db, account_id) if ch.rerate_run_id]
    assert [(from_money(ch.amount), ch.bill_cycle_id, ch.late) for ch in made] == [
        (Decimal("-3.00"), may.bill_cycle_id, True),
        (Decimal("1.00"), may.bill_cycle_id, True),
    ]
    # April's counter is rebuilt; May's usage counts from zero.
    counted = await db.scalar(select(usage_counters.c.units).where(usage_counters.c.bill_cycle_id == uuid.UUID(april)))
    assert counted == Decimal(3000)


async def test_rerating_refuses_bad_requests_naming_the_field(db: Db) -> None:
    account_id = uuid.uuid4()
    cases = {
        "start_time": pb.RerateUsageRequest(account_id=str(account_id), request_id=str(uuid.uuid4())),
        "end_time": pb.RerateUsageRequest(
            account_id=str(account_id),
            start_time=to_timestamp(JUNE_START),
            end_time=to_timestamp(MAY_START),
            request_id=str(uuid.uuid4()),
        ),
        "request_id": pb.RerateUsageRequest(
            account_id=str(account_id), start_time=to_timestamp(MAY_START), end_time=to_timestamp(JUNE_START)
        ),
        "account_id": pb.RerateUsageRequest(account_id="nope", request_id=str(uuid.uuid4())),
        "charge_offer_code": pb.RerateUsageRequest(
            account_id=str(account_id),
            start_time=to_timestamp(MAY_START),
            end_time=to_timestamp(JUNE_START),
            charge_offer_code="Not A Code",
            request_id=str(uuid.uuid4()),
        ),
    }
    for field, request in cases.items():
        with pytest.raises(InvalidArgument) as refused:
            await db.servicer().RerateUsage(request, NO_CONTEXT)
        assert refused.value.field == field


# Credit limits.


def credit_event(account_id: uuid.UUID, exceeded: bool, version: int, name: str = "default") -> Message:
    group = balance_pb2.BalanceGroup(
        balance_group_id=str(uuid.uuid4()),
        account_id=str(account_id),
        name=name,
        is_default=name == "default",
        balance=to_money(Decimal("120.00"), "EUR"),
    )
    limit = to_money(Decimal(100), "EUR")
    if exceeded:
        return balance_events.CreditLimitExceeded(balance_group=group, credit_limit=limit, credit_state_version=version)
    return balance_events.CreditLimitRestored(balance_group=group, credit_limit=limit, credit_state_version=version)


async def balance_says(db: Db, *events_: Message) -> None:
    consumer = consumer_for(consumers.balance_subscriptions(), stream_name("balance"), db.uow, inbox)
    msgs = [
        message(
            consumers.CREDIT_LIMIT_EXCEEDED
            if isinstance(e, balance_events.CreditLimitExceeded)
            else consumers.CREDIT_LIMIT_RESTORED,
            e,
            NOW,
        )
        for e in events_
    ]
    await process(consumer, *msgs)
    assert all(m.acked for m in msgs)


async def test_usage_in_a_group_over_its_credit_limit_is_refused_unless_the_charge_allows_overage(db: Db) -> None:
    await new_offer(db, [api_calls(OLD_TIERS), SMS])
    account_id = await new_customer(db)
    at = MAY_START + timedelta(days=5)
    await balance_says(db, credit_event(account_id, True, 1))

    single = usage(account_id, "10", at)
    with pytest.raises(FailedPrecondition) as refused:
        await db.servicer().RecordUsage(pb.RecordUsageRequest(event=single), NO_CONTEXT)
    assert refused.value.reason == "CREDIT_LIMIT_EXCEEDED"
    assert refused.value.metadata["account_id"] == str(account_id)
    assert refused.value.metadata["balance_group"] == "default"

    api, sms = await batch(db, [usage(account_id, "5", at), usage(account_id, "1", at, "sms.sent")])
    assert (api.status, api.reason, api.error.code) == (usage_pb2.USAGE_STATUS_REJECTED, "CREDIT_LIMIT_EXCEEDED", 9)
    assert (sms.status, from_money(sms.charges[0].amount)) == (usage_pb2.USAGE_STATUS_RATED, Decimal("0.07"))

    # Out of order: the restoration (version 2) wins over a redelivered older crossing.
    await balance_says(db, credit_event(account_id, False, 2), credit_event(account_id, True, 1))
    (resubmitted,) = (
        await db.servicer().ResubmitUsage(pb.ResubmitUsageRequest(event_ids=[single.event_id]), NO_CONTEXT)
    ).results
    assert resubmitted.status == usage_pb2.USAGE_STATUS_RATED
    # Another group's limit does not hold back usage landing in the default group.
    await balance_says(db, credit_event(account_id, True, 1, name="project"))
    (other,) = await batch(db, [usage(account_id, "5", at)])
    assert other.status == usage_pb2.USAGE_STATUS_RATED


# The replicas' cache.


@contextlib.asynccontextmanager
async def listening(db: Db) -> AsyncIterator[RatingCache]:
    cache = RatingCache()
    db.cache = cache
    listener = CacheListener(cache, db.url, lambda g: load_catalog(db.uow(), g), retry_seconds=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    try:
        await eventually(lambda: asyncio.sleep(0, cache.catalog), timeout=10, what="the cache to load")
        yield cache
    finally:
        stop.set()
        await task
        db.cache = None


async def in_step(db: Db, cache: RatingCache) -> None:
    async def probe() -> bool | None:
        async with db.sessions() as session:
            return True if cache.generation == await current_generation(session) else None

    await eventually(probe, timeout=10, what="the cache to follow the database")


async def test_the_cache_follows_an_activated_version_and_another_replicas_changes(db: Db) -> None:
    await new_offer(db, [c.Charge(code="sms", name="SMS", event_type="sms.sent", flat=c.FlatPrice(amount="0.07"))])
    async with listening(db) as cache:
        account_id = await new_customer(db)
        await in_step(db, cache)
        at = MAY_START + timedelta(days=10)
        (first,) = await batch(db, [usage(account_id, "1", at, "sms.sent")])
        (second,) = await batch(db, [usage(account_id, "1", at, "sms.sent")])
        assert [from_money(r.charges[0].amount) for r in (first, second)] == [Decimal("0.07"), Decimal("0.07")]
        assert cache.hits >= 1 and account_id in cache._accounts

        # Version 2 from May 10th; rated right away, whether the listener has caught up or not.
        v2 = c.Charge(code="sms", name="SMS", event_type="sms.sent", flat=c.FlatPrice(amount="0.05"))
        await new_offer(db, [v2], valid_from=MAY_START + timedelta(days=9))
        (third,) = await batch(db, [usage(account_id, "1", at, "sms.sent")])
        assert (from_money(third.charges[0].amount), third.charges[0].charge_offer_version) == (Decimal("0.05"), 2)
        await in_step(db, cache)
        hits = cache.hits
        (fourth,) = await batch(db, [usage(account_id, "1", at, "sms.sent")])
        assert from_money(fourth.charges[0].amount) == Decimal("0.05")
        assert cache.hits > hits and cache.catalog is not None and len(cache.catalog.versions["api_pro"]) == 2

        # Another replica (no cache here) learns that the account was suspended: this one follows.
        suspended = account_pb2.Account(
            account_id=str(account_id),
            currency_code="EUR",
            time_zone="Europe/Madrid",
            status=account_pb2.ACCOUNT_STATUS_SUSPENDED,
        )
        change = account_pb2.StatusChange(status=account_pb2.ACCOUNT_STATUS_SUSPENDED, change_time=to_timestamp(NOW))
        await apply(
            db,
            consumers.on_account_status_changed,
            customer_events.AccountStatusChanged(account=suspended, change=change),
            plain=True,
        )
        (refused,) = await batch(db, [usage(account_id, "1", at, "sms.sent")])
        assert refused.reason == "ACCOUNT_SUSPENDED"
        await in_step(db, cache)
        (refused,) = await batch(db, [usage(account_id, "1", at, "sms.sent")])
        assert refused.reason == "ACCOUNT_SUSPENDED"
        assert cache._accounts[account_id].account is not None
        assert cache._accounts[account_id].account.status.value == "suspended"  # type: ignore[union-attr]
    # Not listening: the cache is off and rating reads the database.
    assert cache.generation is None


# The idempotency horizon.


async def test_rated_usage_past_the_horizon_is_deleted_and_its_id_can_come_back(db: Db) -> None:
    await new_offer(db, [api_calls(OLD_TIERS)])
    account_id = await new_customer(db)
    old = usage(account_id, "1500", MAY_START + timedelta(days=1))
    stranger = usage(uuid.uuid4(), "1", MAY_START + timedelta(days=1))  # unknown account: kept unrated
    await batch(db, [old, stranger])
    db.clock.advance(timedelta(days=60))
    recent = usage(account_id, "1", MAY_START + timedelta(days=2))
    await batch(db, [recent])
    loop = ExpiryLoop(db.uow, timedelta(days=100), check_seconds=60, batch_size=1)

    assert await loop.catch_up() == 0  # nothing is 100 days old yet
    db.clock.advance(timedelta(days=41))
    assert await loop.catch_up() == 1
    async with db.engine.connect() as conn:
        kept = set((await conn.scalars(select(usage_events.c.event_id))).all())
    assert kept == {stranger.event_id, recent.event_id}
    charged = await all_charges(db, account_id)
    assert old.event_id in {c.event_id for c in charged}  # its charge stays for good
    # Past the horizon the id is new again: rated as a new event.
    (again,) = await batch(db, [old])
    assert again.status == usage_pb2.USAGE_STATUS_RATED
