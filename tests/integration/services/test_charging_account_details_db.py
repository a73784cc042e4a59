"""Charging against a real, migrated database: customer's AccountUpdated moves the account's
currency and time zone, in any order and exactly once, through the runtime's consumer and through
the handler in a unit of work; rating then prices new usage in the new currency."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from alembic import command
from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_charging.adapters import events
from evolutivo_charging.adapters.orm import charging_accounts, inbox, outbox
from evolutivo_charging.domain.catalog import Charge, ChargeOffer, OfferStatus, PerUnit
from evolutivo_charging.domain.model import ChargingAccount, ChargingAccountStatus
from evolutivo_charging.domain.rating import NotRated, Plan, plan
from evolutivo_charging.domain.usage import BillCycle, BillCycleStatus, Purchase, Reason, UsageEvent
from evolutivo_charging.entrypoints.app import MIGRATIONS
from evolutivo_charging.entrypoints.consumers import subscriptions
from evolutivo_charging.service_layer import handlers
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork
from evolutivo_runtime.messaging.consumer import EventConsumer
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.migrations import alembic_config, upgrade_to_head
from evolutivo_runtime.timestamps import to_timestamp
from support.customer_messages import created_message, status_changed_message
from support.databases import MigratedDatabase, ServiceDb
from support.jetstream import FakeMsg, consumer_for, message, process

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
CREATED_AT = NOW - timedelta(days=1)


class ChargingDb(ServiceDb):
    def uow(self) -> ChargingUnitOfWork:
        return ChargingUnitOfWork(self.sessions, outbox, self.clock, events.encode)

    async def account(self, account_id: uuid.UUID) -> ChargingAccount:
        async with self.uow() as uow:
            found = await uow.charging_accounts.get(account_id)
        assert found is not None
        return found


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[ChargingDb]:
    async with ChargingDb.open(await migrated_database("charging", MIGRATIONS), NOW, pool_size=10) as database:
        yield database


def customer_account(
    account_id: uuid.UUID,
    update_time: datetime | None,
    currency: str = "EUR",
    zone: str = "Europe/Madrid",
    status: int = account_pb2.ACCOUNT_STATUS_ACTIVE,
) -> account_pb2.Account:
    return account_pb2.Account(
        account_id=str(account_id),
        account_number="A-00000042",
        type=account_pb2.ACCOUNT_TYPE_INDIVIDUAL,
        display_name="Ana García",
        currency_code=currency,
        time_zone=zone,
        status=status,  # type: ignore[arg-type]
        billing_profile=account_pb2.BillingProfile(bill_cycle_day=1, payment_terms_days=30),
        update_time=to_timestamp(update_time),
    )


def created(account_id: uuid.UUID) -> FakeMsg:
    return created_message(customer_account(account_id, CREATED_AT), CREATED_AT)


def updated(
    account_id: uuid.UUID,
    at: datetime | None,
    currency: str,
    zone: str,
    changed: tuple[str, ...] = ("currency_code", "time_zone"),
) -> FakeMsg:
    return message(
        "evolutivo.customer.v1.account.updated",
        customer_events.AccountUpdated(
            account=customer_account(account_id, at, currency, zone), changed_fields=list(changed)
        ),
        (at or NOW) + timedelta(milliseconds=5),
    )


def status_changed(account_id: uuid.UUID, at: datetime, currency: str, zone: str) -> FakeMsg:
    account = customer_account(account_id, at, currency, zone, account_pb2.ACCOUNT_STATUS_SUSPENDED)
    change = account_pb2.StatusChange(
        status=account_pb2.ACCOUNT_STATUS_SUSPENDED,
        reason="fraud check",
        actor=account_pb2.STATUS_ACTOR_FRAUD,
        change_time=to_timestamp(at),
    )
    account.last_status_change.CopyFrom(change)
    return status_changed_message(account, change, at)


def consumer(db: ChargingDb) -> EventConsumer[ChargingUnitOfWork]:
    return consumer_for(subscriptions(), stream_name("customer"), db.uow, inbox)


async def deliver(db: ChargingDb, *msgs: FakeMsg) -> None:
    """One fetched batch, applied as the service's consumer applies it."""
    await process(consumer(db), *msgs)
    assert all(m.acked for m in msgs), "every event applies"


def details(account: ChargingAccount) -> tuple[str, str, datetime | None]:
    return account.currency_code, account.time_zone, account.details_change_time


async def test_the_migrations_go_down_and_up_again(db: ChargingDb) -> None:
    await db.engine.dispose()
    await asyncio.to_thread(command.downgrade, alembic_config(MIGRATIONS, db.url), "0006")
    async with db.engine.connect() as conn:
        columns = await conn.run_sync(lambda sync: sync.dialect.get_columns(sync, "charging_accounts"))
    assert "details_change_time" not in {c["name"] for c in columns}
    await asyncio.to_thread(upgrade_to_head, MIGRATIONS, db.url)
    assert await db.count(charging_accounts) == 0


async def test_currency_and_time_zone_follow_an_update(db: ChargingDb) -> None:
    account_id = uuid.uuid4()
    await deliver(db, created(account_id))
    assert details(await db.account(account_id)) == ("EUR", "Europe/Madrid", CREATED_AT)
    db.clock.advance(timedelta(minutes=5))
    await deliver(db, updated(account_id, NOW + timedelta(minutes=1), "USD", "America/New_York"))
    account = await db.account(account_id)
    assert details(account) == ("USD", "America/New_York", NOW + timedelta(minutes=1))
    assert account.update_time == NOW + timedelta(minutes=5), "when charging learnt it"
    assert account.status is ChargingAccountStatus.ACTIVE
    assert await db.count(outbox) == 0


async def test_an_older_update_after_a_newer_one_changes_nothing(db: ChargingDb) -> None:
    account_id = uuid.uuid4()
    to_usd = updated(account_id, NOW + timedelta(minutes=1), "USD", "America/New_York")
    to_gbp = updated(account_id, NOW + timedelta(minutes=2), "GBP", "Europe/London")
    await deliver(db, created(account_id))
    await deliver(db, to_gbp)
    await deliver(db, to_usd)
    assert details(await db.account(account_id)) == ("GBP", "Europe/London", NOW + timedelta(minutes=2))
    # A newer one still applies.
    await deliver(db, updated(account_id, NOW + timedelta(minutes=3), "USD", "UTC"))
    assert details(await db.account(account_id)) == ("USD", "UTC", NOW + timedelta(minutes=3))


async def test_a_redelivered_update_is_a_no_op(db: ChargingDb) -> None:
    account_id = uuid.uuid4()
    to_usd = updated(account_id, NOW + timedelta(minutes=1), "USD", "America/New_York")
    to_gbp = updated(account_id, NOW + timedelta(minutes=2), "GBP", "Europe/London")
    await deliver(db, created(account_id), to_usd, to_gbp)
    db.clock.advance(timedelta(minutes=5))
    # The inbox skips a redelivery, even of the older update...
    await deliver(db, to_usd.again(), to_gbp.again())
    account = await db.account(account_id)
    assert details(account) == ("GBP", "Europe/London", NOW + timedelta(minutes=2))
    assert account.update_time == NOW, "untouched"
    assert await db.count(inbox) == 3
    # ...and the handler applying the same update again changes nothing.
    async with db.uow() as uow:
        applied = await handlers.update_details(
            uow,
            account_id,
            "GBP",
            "Europe/London",
            ChargingAccountStatus.ACTIVE,
            NOW + timedelta(minutes=2),
            uow.clock.now(),
        )
        await uow.commit()
    assert not applied
    assert (await db.account(account_id)).update_time == NOW


async def test_the_handler_in_a_unit_of_work_keeps_the_newest_of_concurrent_updates(db: ChargingDb) -> None:
    account_id = uuid.uuid4()
    await deliver(db, created(account_id))
    currencies = ["USD", "GBP", "JPY", "CHF", "SEK", "NOK", "DKK", "PLN"]

    async def apply(i: int, currency: str) -> bool:
        async with db.uow() as uow:
            done = await handlers.update_details(
                uow,
                account_id,
                currency,
                "UTC",
                ChargingAccountStatus.ACTIVE,
                NOW + timedelta(seconds=i + 1),
                uow.clock.now(),
            )
            await uow.commit()
            return done

    await asyncio.gather(*(apply(i, c) for i, c in reversed(list(enumerate(currencies)))))
    assert details(await db.account(account_id)) == ("PLN", "UTC", NOW + timedelta(seconds=len(currencies)))


async def test_an_update_that_overtook_account_created_teaches_charging_the_account(db: ChargingDb) -> None:
    account_id = uuid.uuid4()
    await deliver(db, updated(account_id, NOW, "USD", "America/New_York"))
    await deliver(db, created(account_id))
    assert await db.count(charging_accounts) == 1
    account = await db.account(account_id)
    assert details(account) == ("USD", "America/New_York", NOW), "the later AccountCreated does not undo it"
    assert account.status is ChargingAccountStatus.ACTIVE


async def test_an_account_learnt_from_a_status_change_refuses_older_updates(db: ChargingDb) -> None:
    account_id = uuid.uuid4()
    # Customer: USD at +1, GBP at +2, suspended at +3; charging gets the suspension first.
    await deliver(db, status_changed(account_id, NOW + timedelta(minutes=3), "GBP", "Europe/London"))
    await deliver(db, updated(account_id, NOW + timedelta(minutes=1), "USD", "America/New_York"))
    await deliver(db, updated(account_id, NOW + timedelta(minutes=2), "GBP", "Europe/London"))
    account = await db.account(account_id)
    assert details(account) == ("GBP", "Europe/London", NOW + timedelta(minutes=3))
    assert account.status is ChargingAccountStatus.SUSPENDED


async def test_an_update_of_other_fields_changes_nothing(db: ChargingDb) -> None:
    account_id = uuid.uuid4()
    await deliver(db, created(account_id))
    db.clock.advance(timedelta(minutes=5))
    await deliver(db, updated(account_id, NOW, "EUR", "Europe/Madrid", changed=("display_name",)))
    account = await db.account(account_id)
    assert details(account) == ("EUR", "Europe/Madrid", CREATED_AT)
    assert account.update_time == NOW


async def test_an_update_without_an_update_time_is_ordered_by_when_it_occurred(db: ChargingDb) -> None:
    account_id = uuid.uuid4()
    await deliver(db, created(account_id))
    await deliver(db, updated(account_id, None, "USD", "UTC", changed=("currency_code",)))
    assert details(await db.account(account_id)) == ("USD", "UTC", NOW + timedelta(milliseconds=5))


async def test_a_broken_update_is_retried(db: ChargingDb) -> None:
    account_id = uuid.uuid4()
    await deliver(db, created(account_id))
    broken = updated(account_id, NOW, "usd", "UTC")
    await process(consumer(db), broken)
    assert broken.naked and not broken.acked
    assert details(await db.account(account_id)) == ("EUR", "Europe/Madrid", CREATED_AT)
    assert await db.count(inbox) == 1


async def test_rating_prices_usage_in_the_account_currency_after_an_update(db: ChargingDb) -> None:
    account_id = uuid.uuid4()
    await deliver(db, created(account_id))
    await deliver(db, updated(account_id, NOW, "USD", "America/New_York", changed=("currency_code",)))
    account = await db.account(account_id)
    start = NOW - timedelta(days=1)

    def rate(offer_currency: str) -> Plan | NotRated:
        offer = ChargeOffer(
            charge_offer_id=uuid.uuid4(),
            code="pro",
            version=1,
            name="Pro",
            description="",
            currency_code=offer_currency,
            valid_from=start,
            valid_to=None,
            status=OfferStatus.ACTIVE,
            charges=(Charge("api_calls", "API calls", PerUnit(Decimal("0.01")), event_type="api.call"),),
            create_time=start,
            activate_time=start,
        )
        purchase = Purchase(uuid.uuid4(), account_id, None, "pro", 1, Decimal(1), start, None, None)
        cycle = BillCycle(uuid.uuid4(), account_id, start, start + timedelta(days=30), BillCycleStatus.OPEN)
        event = UsageEvent.validated("event", "e-1", str(account_id), "api.call", NOW, "3", {}, "")
        return plan(event, account, [purchase], {"pro": [offer]}, [cycle])

    rated = rate("USD")
    assert isinstance(rated, Plan) and rated.currency_code == "USD"
    refused = rate("EUR")
    assert isinstance(refused, NotRated) and refused.reason is Reason.CURRENCY_MISMATCH
