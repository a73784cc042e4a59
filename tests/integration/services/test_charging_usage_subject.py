"""The NATS usage subject against real PostgreSQL and JetStream: UsageEvent messages published
straight to the usage stream (no Evolutivo-* headers) are rated a fetched batch per transaction
through the same service function as RecordUsageBatch, kept unrated or rejected like calls, are
idempotent on event_id, and the ones a call would refuse are dead-lettered naming the field."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import nats
import pytest
from evolutivo.billing.v1 import bill_cycle_pb2
from evolutivo.billing.v1 import events_pb2 as billing_events
from evolutivo.charging.v1 import catalog_pb2 as c
from evolutivo.charging.v1 import charging_service_pb2 as pb
from evolutivo.charging.v1 import events_pb2, usage_pb2
from evolutivo.customer.v1 import account_pb2, purchase_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_charging.adapters import events
from evolutivo_charging.adapters.orm import charges, outbox, request_log, usage_events
from evolutivo_charging.entrypoints import consumers
from evolutivo_charging.entrypoints.app import MIGRATIONS
from evolutivo_charging.entrypoints.grpc_api import ChargingServicer
from evolutivo_charging.entrypoints.usage_subject import UsageSubscriber
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork
from evolutivo_runtime.messaging.dead_letters import DeadLetter, DeadLetterQueue
from evolutivo_runtime.messaging.envelope import EventMeta
from evolutivo_runtime.messaging.streams import declare_dlq_stream
from evolutivo_runtime.money import from_money
from evolutivo_runtime.timestamps import to_timestamp
from google.protobuf.message import Message
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from sqlalchemy import select
from support.databases import MigratedDatabase, ServiceDb
from support.jetstream import handle

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
MAY_START = datetime(2031, 5, 1, tzinfo=UTC)
JUNE_START = datetime(2031, 6, 1, tzinfo=UTC)
AT = NOW - timedelta(hours=1)
NO_CONTEXT: Any = None


class ChargingDb(ServiceDb):
    def uow(self) -> ChargingUnitOfWork:
        return ChargingUnitOfWork(self.sessions, outbox, self.clock, events.encode, request_log)

    async def published(self) -> list[events_pb2.ChargesCreated]:
        rows = await self.rows(
            select(outbox.c.payload)
            .where(outbox.c.subject == "evolutivo.charging.v1.charges.created")
            .order_by(outbox.c.seq)
        )
        return [events_pb2.ChargesCreated.FromString(row.payload) for row in rows]


@dataclass
class Setup(ChargingDb):
    js: JetStreamContext
    subscriber: UsageSubscriber
    dead_letters: DeadLetterQueue

    async def publish(self, event: usage_pb2.UsageEvent | bytes, msg_id: str | None = None) -> None:
        """As a platform publishes: the protobuf payload, Nats-Msg-Id = the event id."""
        data = event if isinstance(event, bytes) else event.SerializeToString()
        default_id = uuid.uuid4().hex if isinstance(event, bytes) else event.event_id
        ack = await self.js.publish(self.subscriber.subject, data, headers={"Nats-Msg-Id": msg_id or default_id})
        assert ack.stream == self.subscriber.stream

    async def letters(self) -> list[DeadLetter]:
        found = await self.dead_letters.list(0, 10_000)
        return [d for d in found if d.consumer == self.subscriber.durable]


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_url, connect_timeout=5)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def setup(migrated_database: MigratedDatabase, nc: NatsClient) -> AsyncIterator[Setup]:
    async with ChargingDb.open(await migrated_database("charging_usage_subject", MIGRATIONS), NOW) as db:
        js = nc.jetstream(timeout=5)
        await declare_dlq_stream(js, replicas=1, duplicate_window=120.0)
        dead_letters = DeadLetterQueue(js, "charging", db.clock)
        # A stream and durable of this test's own (the service uses EVOLUTIVO_USAGE, charging-usage).
        source = f"usaget{uuid.uuid4().hex[:10]}"
        subscriber = UsageSubscriber(
            js,
            db.uow,
            dead_letters,
            batch_size=50,
            max_deliver=3,
            ack_wait=30,
            source=source,
            durable=f"charging-{source}",
        )
        await subscriber.setup()
        try:
            yield Setup(db.url, db.engine, db.sessions, db.clock, js, subscriber, dead_letters)
        finally:
            await js.delete_stream(subscriber.stream)


async def apply(
    s: Setup, handler: Callable[[ChargingUnitOfWork, Any, EventMeta], Awaitable[None]], event: Message
) -> None:
    await handle(s.uow, handler, event, NOW)


async def customer(s: Setup, status: int = account_pb2.ACCOUNT_STATUS_ACTIVE) -> uuid.UUID:
    """An account with an api_pro purchase and an open May cycle, as charging learns them."""
    account_id = uuid.uuid4()
    account = account_pb2.Account(
        account_id=str(account_id),
        currency_code="EUR",
        time_zone="Europe/Madrid",
        status=status,  # type: ignore[arg-type]
    )
    await apply(s, consumers.on_account_created, customer_events.AccountCreated(account=account))
    purchase = purchase_pb2.Purchase(
        purchase_id=str(uuid.uuid4()),
        account_id=str(account_id),
        charge_offer_code="api_pro",
        charge_offer_version=1,
        quantity="1",
        start_time=to_timestamp(MAY_START - timedelta(days=20)),
    )
    await apply(s, consumers.on_purchase_created, customer_events.PurchaseCreated(purchase=purchase))
    cycle = bill_cycle_pb2.BillCycle(
        bill_cycle_id=str(uuid.uuid4()),
        account_id=str(account_id),
        sequence=1,
        start_time=to_timestamp(MAY_START),
        end_time=to_timestamp(JUNE_START),
        status=bill_cycle_pb2.BILL_CYCLE_STATUS_OPEN,
        time_zone="Europe/Madrid",
    )
    await apply(s, consumers.on_bill_cycle_opened, billing_events.BillCycleOpened(bill_cycle=cycle))
    return account_id


async def new_offer(s: Setup) -> None:
    servicer = ChargingServicer(s.uow)
    created = await servicer.CreateChargeOffer(
        pb.CreateChargeOfferRequest(
            charge_offer=c.ChargeOffer(
                code="api_pro",
                name="API Pro",
                currency_code="EUR",
                valid_from=to_timestamp(datetime(2031, 1, 1, tzinfo=UTC)),
                charges=[
                    c.Charge(
                        code="api_calls",
                        name="API calls",
                        event_type="api.call",
                        per_unit=c.PerUnitPrice(unit_price="0.002"),
                    )
                ],
            )
        ),
        NO_CONTEXT,
    )
    await servicer.ActivateChargeOffer(
        pb.ActivateChargeOfferRequest(charge_offer_id=created.charge_offer.charge_offer_id), NO_CONTEXT
    )


def usage(account_id: uuid.UUID, quantity: str, event_id: str | None = None) -> usage_pb2.UsageEvent:
    return usage_pb2.UsageEvent(
        event_id=event_id or f"nats-{uuid.uuid4().hex}",
        account_id=str(account_id),
        event_type="api.call",
        event_time=to_timestamp(AT),
        quantity=quantity,
    )


async def stored(s: Setup) -> dict[str, tuple[str, str, int]]:
    """event_id -> (status, reason, number of charges) of every usage event kept."""
    async with s.engine.connect() as conn:
        rows = (await conn.execute(select(usage_events))).all()
    return {r.event_id: (r.status, r.reason, len(r.charge_ids)) for r in rows}


async def test_usage_published_on_the_subject_is_rated_in_one_transaction_per_batch(setup: Setup) -> None:
    s = setup
    await new_offer(s)
    account_id = await customer(s)
    suspended = await customer(s, account_pb2.ACCOUNT_STATUS_SUSPENDED)
    rated = [usage(account_id, q, f"n-{i}") for i, q in enumerate(["100", "250", "0.5"])]
    for event in rated:
        await s.publish(event)
    stranger = usage(uuid.uuid4(), "3", "n-stranger")
    refused_account = usage(suspended, "3", "n-suspended")
    await s.publish(stranger)
    await s.publish(refused_account)

    assert await s.subscriber.poll() == 5
    assert await stored(s) == {
        "n-0": ("rated", "", 1),
        "n-1": ("rated", "", 1),
        "n-2": ("rated", "", 1),
        "n-stranger": ("unrated", "UNKNOWN_ACCOUNT", 0),
        "n-suspended": ("rejected", "ACCOUNT_SUSPENDED", 0),
    }
    # One ChargesCreated for the batch, each charge with the event it rated.
    (message,) = await s.published()
    assert [ch.event_id for ch in message.charges] == ["n-0", "n-1", "n-2"]
    assert [from_money(ch.amount) for ch in message.charges] == [Decimal("0.20"), Decimal("0.50"), Decimal("0.00")]
    assert sum((from_money(ch.amount) for ch in message.charges), Decimal(0)) == Decimal("0.70")  # 350.5 x 0.002
    assert await s.letters() == []

    # Published again (a platform retrying after the duplicate window, or a redelivery): the
    # stored results stand, nothing is charged twice.
    for event in [*rated, stranger]:
        await s.publish(event, msg_id=f"{event.event_id}-retry")
    # Inside the window, the same Nats-Msg-Id is dropped by JetStream itself.
    await s.publish(rated[0])
    assert await s.subscriber.poll() == 4
    assert await s.count(charges) == 3
    assert len(await s.published()) == 1
    assert (await stored(s))["n-stranger"] == ("unrated", "UNKNOWN_ACCOUNT", 0)
    assert await s.subscriber.poll(timeout=0.2) == 0


async def test_what_a_call_would_refuse_is_dead_lettered_naming_the_field(setup: Setup) -> None:
    s = setup
    await new_offer(s)
    account_id = await customer(s)
    good = usage(account_id, "10", "d-good")
    await s.publish(good)
    await s.publish(usage(account_id, "NaN", "d-nan"))
    await s.publish(b"\xff\xfenot a protobuf")
    unknown_type = usage(account_id, "1", "d-type")
    unknown_type.event_type = "never.rated"
    await s.publish(unknown_type)
    reused = usage(account_id, "11", "d-good")  # the id of another payload
    await s.publish(reused, msg_id="d-good-other")

    assert await s.subscriber.poll() == 5
    assert await stored(s) == {"d-good": ("rated", "", 1)}
    letters = await s.letters()
    assert [d.error for d in letters] == [
        "InvalidArgument: event.quantity: must be a finite decimal number",
        "InvalidArgument: event: the payload is not an evolutivo.charging.v1.UsageEvent",
        "InvalidArgument: event.event_type: no charge offer rates 'never.rated' events",
        "AlreadyExists: event 'd-good' was received before with another payload; give a new event a new event_id",
    ]
    assert all(d.original_subject == s.subscriber.subject for d in letters)
    assert usage_pb2.UsageEvent.FromString(letters[0].payload).event_id == "d-nan"
    # Nothing waits to be redelivered.
    assert await s.subscriber.poll(timeout=0.2) == 0


async def test_the_loop_rates_what_is_published_until_stopped(setup: Setup) -> None:
    s = setup
    await new_offer(s)
    account_id = await customer(s)
    stop = asyncio.Event()
    task = asyncio.create_task(s.subscriber.run(stop))
    try:
        for i in range(30):
            await s.publish(usage(account_id, "1", f"loop-{i:02}"))
        for _ in range(200):
            if await s.count(usage_events) == 30:
                break
            await asyncio.sleep(0.05)
        assert await s.count(usage_events) == 30
        assert await s.count(charges) == 30
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
