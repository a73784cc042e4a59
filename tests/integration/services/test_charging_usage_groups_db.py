"""Grouped single-event calls (service_layer/usage_groups.py) against a real, migrated database:
concurrent RecordUsage calls share one transaction and one ChargesCreated, yet each caller gets
its own result, its own error and its own audit record; a failing group is rated again event by
event; a caller cancelled before its group started leaves nothing behind."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from evolutivo.billing.v1 import bill_cycle_pb2
from evolutivo.billing.v1 import events_pb2 as billing_events
from evolutivo.charging.v1 import catalog_pb2 as c
from evolutivo.charging.v1 import charging_service_pb2 as pb
from evolutivo.charging.v1 import events_pb2, usage_pb2
from evolutivo.customer.v1 import account_pb2, purchase_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_charging.adapters import events
from evolutivo_charging.adapters.orm import outbox, request_log, usage_events
from evolutivo_charging.entrypoints import consumers
from evolutivo_charging.entrypoints.app import MIGRATIONS
from evolutivo_charging.entrypoints.grpc_api import ChargingServicer
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork
from evolutivo_runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from evolutivo_runtime.money import from_money
from evolutivo_runtime.security.audit import AuditContext, audit_log, current_audit
from evolutivo_runtime.timestamps import to_timestamp
from sqlalchemy import select
from support.databases import MigratedDatabase, ServiceDb
from support.jetstream import handle

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
MAY_START = datetime(2031, 5, 1, tzinfo=UTC)
JUNE_START = datetime(2031, 6, 1, tzinfo=UTC)
NO_CONTEXT: Any = None
SMS = c.Charge(code="sms", name="SMS", event_type="sms.sent", per_unit=c.PerUnitPrice(unit_price="0.07"))


class GroupsDb(ServiceDb):
    def uow(self) -> ChargingUnitOfWork:
        return ChargingUnitOfWork(self.sessions, outbox, self.clock, events.encode, request_log)

    def grouped(self, max_groups: int = 1, uow: Any = None) -> ChargingServicer:
        servicer = ChargingServicer(uow or self.uow)
        servicer.group_single_calls(500, max_groups)
        return servicer

    async def published(self) -> list[events_pb2.ChargesCreated]:
        rows = await self.rows(
            select(outbox.c.payload).where(outbox.c.subject == "evolutivo.charging.v1.charges.created")
        )
        return [events_pb2.ChargesCreated.FromString(row.payload) for row in rows]

    async def stored_ids(self) -> set[str]:
        return {row.event_id for row in await self.rows(select(usage_events.c.event_id))}


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[GroupsDb]:
    async with GroupsDb.open(await migrated_database("charging_groups", MIGRATIONS), NOW, pool_size=8) as database:
        yield database


async def new_customer(db: GroupsDb, status: int = account_pb2.ACCOUNT_STATUS_ACTIVE) -> uuid.UUID:
    account_id = uuid.uuid4()
    account = account_pb2.Account(
        account_id=str(account_id),
        currency_code="EUR",
        time_zone="Europe/Madrid",
        status=status,  # type: ignore[arg-type]
    )
    await handle(db.uow, consumers.on_account_created, customer_events.AccountCreated(account=account), NOW)
    bought = purchase_pb2.Purchase(
        purchase_id=str(uuid.uuid4()),
        account_id=str(account_id),
        charge_offer_code="sms_pack",
        charge_offer_version=1,
        quantity="1",
        start_time=to_timestamp(MAY_START - timedelta(days=10)),
    )
    created = customer_events.PurchaseCreated(purchase=bought, currency_code="EUR", time_zone="Europe/Madrid")
    await handle(db.uow, consumers.on_purchase_created, created, NOW)
    cycle = bill_cycle_pb2.BillCycle(
        bill_cycle_id=str(uuid.uuid4()),
        bill_unit_id=str(uuid.uuid4()),
        account_id=str(account_id),
        sequence=1,
        start_time=to_timestamp(MAY_START),
        end_time=to_timestamp(JUNE_START),
        status=bill_cycle_pb2.BILL_CYCLE_STATUS_OPEN,
        time_zone="Europe/Madrid",
    )
    await handle(db.uow, consumers.on_bill_cycle_opened, billing_events.BillCycleOpened(bill_cycle=cycle), NOW)
    return account_id


async def new_offer(db: GroupsDb) -> None:
    servicer = ChargingServicer(db.uow)
    created = await servicer.CreateChargeOffer(
        pb.CreateChargeOfferRequest(
            charge_offer=c.ChargeOffer(
                code="sms_pack",
                name="SMS pack",
                currency_code="EUR",
                valid_from=to_timestamp(MAY_START - timedelta(days=30)),
                charges=[SMS],
            )
        ),
        NO_CONTEXT,
    )
    await servicer.ActivateChargeOffer(
        pb.ActivateChargeOfferRequest(charge_offer_id=created.charge_offer.charge_offer_id), NO_CONTEXT
    )


def sms(account_id: uuid.UUID, event_id: str | None = None, quantity: str = "1", kind: str = "sms.sent") -> Any:
    return usage_pb2.UsageEvent(
        event_id=event_id or f"evt-{uuid.uuid4().hex}",
        account_id=str(account_id),
        event_type=kind,
        event_time=to_timestamp(NOW - timedelta(hours=1)),
        quantity=quantity,
    )


async def call(servicer: ChargingServicer, event: usage_pb2.UsageEvent) -> usage_pb2.UsageResult:
    return (await servicer.RecordUsage(pb.RecordUsageRequest(event=event), NO_CONTEXT)).result


@pytest.fixture
async def ready(db: GroupsDb) -> uuid.UUID:
    await new_offer(db)
    return await new_customer(db)


async def test_concurrent_calls_share_a_transaction_and_each_gets_its_own_result(
    db: GroupsDb, ready: uuid.UUID
) -> None:
    servicer = db.grouped(max_groups=1)
    suspended = await new_customer(db, account_pb2.ACCOUNT_STATUS_SUSPENDED)
    distinct = [sms(ready, quantity=str(i + 1)) for i in range(30)]
    calls: list[Any] = [call(servicer, e) for e in distinct]
    # The same event twice at once: rated once, both answered with its charge.
    calls += [call(servicer, sms(ready, "twice", "2")), call(servicer, sms(ready, "twice", "2"))]
    # The same id with another payload, an event type nothing rates, a suspended account: each
    # caller alone gets its error, the others are rated.
    calls += [
        call(servicer, sms(ready, "twice", "3")),
        call(servicer, sms(ready, kind="fax.sent")),
        call(servicer, sms(suspended)),
    ]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)

    for event, result in zip(distinct, outcomes[:30], strict=True):
        assert isinstance(result, usage_pb2.UsageResult)
        assert result.event_id == event.event_id and result.status == usage_pb2.USAGE_STATUS_RATED
        assert [from_money(ch.amount) for ch in result.charges] == [Decimal("0.07") * int(event.quantity)]
    first, second = outcomes[30:32]
    assert isinstance(first, usage_pb2.UsageResult) and first == second and len(first.charges) == 1
    assert isinstance(outcomes[32], AlreadyExists) and outcomes[32].reason == "USAGE_EVENT_ID_REUSED"
    assert isinstance(outcomes[33], InvalidArgument)
    assert outcomes[33].field == "event.event_type"
    assert isinstance(outcomes[34], FailedPrecondition)

    # The first call ran alone (nothing else was waiting); the 34 after it, in one group: two
    # transactions, two ChargesCreated, every charge once.
    published = await db.published()
    assert len(published) == 2
    charged = sorted(ch.event_id for m in published for ch in m.charges)
    assert charged == sorted([e.event_id for e in distinct] + ["twice"])

    # A retry after the group returns the stored result, as for an ungrouped call.
    assert await call(servicer, sms(ready, "twice", "2")) == first


async def test_each_grouped_call_gets_its_own_audit_record(db: GroupsDb, ready: uuid.UUID) -> None:
    servicer = db.grouped(max_groups=1)

    async def audited(n: int) -> usage_pb2.UsageResult:
        event = sms(ready, f"audited-{n}")
        # What the AuthGuard sets for a mutating call (the task's own context).
        current_audit.set(
            AuditContext(
                actor=f"platform-{n}",
                actor_issuer="test",
                rpc="/evolutivo.charging.v1.ChargingService/RecordUsage",
                request_id=f"req-{n}",
                request_ids={"event.event_id": event.event_id, "event.account_id": str(ready)},
                sessions=db.sessions,
                clock=db.clock,
            )
        )
        return await call(servicer, event)

    await asyncio.gather(*(audited(n) for n in range(6)))
    rows = await db.rows(select(audit_log).order_by(audit_log.c.request_id))
    assert [(r.actor, r.request_id) for r in rows] == [(f"platform-{n}", f"req-{n}") for n in range(6)]
    for n, row in enumerate(rows):
        assert row.account_id == str(ready) and row.source == "unit_of_work"
        assert row.event_types == ["evolutivo.charging.v1.ChargesCreated"]
        own = {"event.event_id": f"audited-{n}", "event.account_id": str(ready)}
        if n == 0:
            # Alone (nothing else was waiting): the record of an ungrouped call, with its event's ids.
            assert row.resource_ids.items() >= own.items()
            assert row.resource_ids["ChargesCreated.charges[0].event_id"] == "audited-0"
        else:
            # Its own identifiers only, not the other calls' charges of the shared ChargesCreated.
            assert row.resource_ids == own
    # Grouped: the first alone, the five after it in one transaction.
    assert len(await db.published()) == 2


class FailingUow(ChargingUnitOfWork):
    """Refuses to commit a transaction that rated the event named `poison` (a bug one event hits)."""

    async def commit(self) -> None:
        for event in self.events:
            if isinstance(event.message, events_pb2.ChargesCreated):
                if any(ch.event_id == "poison" for ch in event.message.charges):
                    raise RuntimeError("the poison event breaks its transaction")
        await super().commit()


async def test_a_failing_group_is_rated_again_event_by_event(db: GroupsDb, ready: uuid.UUID) -> None:
    def uow() -> ChargingUnitOfWork:
        return FailingUow(db.sessions, outbox, db.clock, events.encode, request_log)

    servicer = db.grouped(max_groups=1, uow=uow)
    good = [sms(ready) for _ in range(8)]
    outcomes = await asyncio.gather(
        *(call(servicer, e) for e in good[:4]),
        call(servicer, sms(ready, "poison")),
        *(call(servicer, e) for e in good[4:]),
        return_exceptions=True,
    )
    assert isinstance(outcomes[4], RuntimeError)
    assert all(isinstance(r, usage_pb2.UsageResult) for r in outcomes[:4] + outcomes[5:])
    assert await db.stored_ids() == {e.event_id for e in good}
    charged = sorted(ch.event_id for m in await db.published() for ch in m.charges)
    assert charged == sorted(e.event_id for e in good)


async def test_a_caller_cancelled_before_its_group_started_leaves_nothing(db: GroupsDb, ready: uuid.UUID) -> None:
    servicer = db.grouped(max_groups=1)
    running = asyncio.create_task(call(servicer, sms(ready, "first")))
    await asyncio.sleep(0)  # its group started and holds the only slot
    waiting = asyncio.create_task(call(servicer, sms(ready, "gone")))
    await asyncio.sleep(0)  # queued behind it
    waiting.cancel()
    assert (await running).status == usage_pb2.USAGE_STATUS_RATED
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # The next call finds the slot free and the cancelled one not in its group.
    assert (await call(servicer, sms(ready, "next"))).status == usage_pb2.USAGE_STATUS_RATED
    assert await db.stored_ids() == {"first", "next"}


async def test_without_grouping_every_call_has_its_own_transaction(db: GroupsDb, ready: uuid.UUID) -> None:
    servicer = ChargingServicer(db.uow)
    servicer.group_single_calls(0, 1)
    await asyncio.gather(*(call(servicer, sms(ready)) for _ in range(5)))
    assert len(await db.published()) == 5
