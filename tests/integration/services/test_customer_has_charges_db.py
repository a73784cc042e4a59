"""Customer learns from charging's ChargesCreated which accounts have charges, against a real,
migrated database and through the runtime's consumer: an account's currency can change until its
first charge and never after; replays and accounts customer does not know change nothing; a
currency change racing the first charge either finishes first or is refused; a fetched batch of
ChargesCreated is marked by its batch handler in one call (no fallback to the per-message handler),
and a poison message in a batch is retried alone while the others apply."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import evolutivo_customer
import pytest
from evolutivo.charging.v1 import events_pb2 as charging_events
from evolutivo.charging.v1 import usage_pb2
from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import customer_service_pb2 as pb
from evolutivo_customer.adapters.orm import accounts, inbox, outbox
from evolutivo_customer.entrypoints import consumers
from evolutivo_customer.entrypoints.consumers import subscriptions
from evolutivo_customer.entrypoints.grpc_accounts import AccountsApi
from evolutivo_customer.service_layer import accounts as accounts_service
from evolutivo_runtime.errors import FailedPrecondition
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.money import to_money
from google.protobuf import field_mask_pb2
from sqlalchemy import select
from support.batches import acked, batch_fallbacks, no_per_message_handler
from support.customer import CustomerServiceDb, MixinState
from support.databases import MigratedDatabase
from support.jetstream import FakeMsg, consumer_for, message, process

MIGRATIONS = Path(evolutivo_customer.__file__).resolve().parent / "migrations"
NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
NO_CONTEXT: Any = None


class Servicer(AccountsApi, MixinState):
    """The mixins under test."""


class CustomerDb(CustomerServiceDb):
    @property
    def api(self) -> Servicer:
        return Servicer(self.uow)

    async def has_charges(self, account_id: str) -> bool:
        found = await self.scalar(select(accounts.c.has_charges).where(accounts.c.account_id == uuid.UUID(account_id)))
        return bool(found)

    async def version(self, account_id: str) -> int:
        found = await self.scalar(select(accounts.c.version).where(accounts.c.account_id == uuid.UUID(account_id)))
        return int(found or 0)


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[CustomerDb]:
    async with CustomerDb.open(await migrated_database("customer", MIGRATIONS), NOW) as database:
        yield database


def charges_created(*account_ids: str) -> FakeMsg:
    event = charging_events.ChargesCreated(
        charges=[
            usage_pb2.RatedCharge(charge_id=str(uuid.uuid4()), account_id=a, amount=to_money(Decimal("0.10"), "EUR"))
            for a in account_ids
        ],
        currency_code="EUR",
    )
    return message("evolutivo.charging.v1.charges.created", event, NOW)


async def deliver(db: CustomerDb, *msgs: FakeMsg) -> None:
    (subscription,) = subscriptions()
    assert (subscription.durable, subscription.stream) == ("customer", "EVOLUTIVO_CHARGING")
    await process(consumer_for([subscription], stream_name("charging"), db.uow, inbox), *msgs)
    assert all(m.acked for m in msgs), "every event applies"


async def new_account(db: CustomerDb) -> str:
    created = await db.api.CreateAccount(
        pb.CreateAccountRequest(
            account=account_pb2.Account(
                type=account_pb2.ACCOUNT_TYPE_BUSINESS,
                display_name="Acme Distribuciones SL",
                currency_code="EUR",
                time_zone="Europe/Madrid",
            )
        ),
        NO_CONTEXT,
    )
    return created.account.account_id


async def change_currency(db: CustomerDb, account_id: str, currency_code: str) -> pb.UpdateAccountResponse:
    return await db.api.UpdateAccount(
        pb.UpdateAccountRequest(
            account=account_pb2.Account(account_id=account_id, currency_code=currency_code),
            update_mask=field_mask_pb2.FieldMask(paths=["currency_code"]),
        ),
        NO_CONTEXT,
    )


async def test_the_currency_is_fixed_once_the_account_has_charges(db: CustomerDb) -> None:
    account_id = await new_account(db)
    assert (await change_currency(db, account_id, "USD")).account.currency_code == "USD", "no charges yet"
    assert not await db.has_charges(account_id)
    await deliver(db, charges_created(account_id))
    assert await db.has_charges(account_id)
    with pytest.raises(FailedPrecondition) as refused:
        await change_currency(db, account_id, "EUR")
    assert refused.value.reason == "CURRENCY_FIXED"
    # Other fields still change.
    renamed = await db.api.UpdateAccount(
        pb.UpdateAccountRequest(
            account=account_pb2.Account(account_id=account_id, display_name="Acme SL"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        NO_CONTEXT,
    )
    assert renamed.account.display_name == "Acme SL"
    assert await db.has_charges(account_id), "a later save keeps has_charges"


async def test_replays_and_unknown_accounts_change_nothing(db: CustomerDb) -> None:
    first, second = await new_account(db), await new_account(db)
    outbox_before = await db.count(outbox)
    version = await db.version(first)
    # One batch: both accounts twice, and an account customer never opened.
    await deliver(db, charges_created(first, first, str(uuid.uuid4())), charges_created(first, second))
    await deliver(db, charges_created(first))
    assert await db.has_charges(first) and await db.has_charges(second)
    assert await db.version(first) == version, "has_charges is no change of the account's public data"
    assert await db.count(outbox) == outbox_before, "customer publishes nothing for it"


async def test_a_currency_change_racing_the_first_charge_finishes_first_or_is_refused(db: CustomerDb) -> None:
    account_id = await new_account(db)
    async with db.uow() as uow:
        assert await accounts_service.note_charges(uow, [uuid.UUID(account_id)]) == [uuid.UUID(account_id)]
        racing = asyncio.create_task(change_currency(db, account_id, "USD"))
        await asyncio.sleep(0.3)
        assert not racing.done(), "the update waits for the row the consumer locked"
        await uow.commit()
    with pytest.raises(FailedPrecondition) as refused:
        await racing
    assert refused.value.reason == "CURRENCY_FIXED"
    async with db.uow() as uow:
        assert await accounts_service.note_charges(uow, [uuid.UUID(account_id)]) == [], "marked once"


async def test_a_fetched_batch_is_marked_by_its_batch_handler_in_one_call(
    db: CustomerDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = [await new_account(db) for _ in range(4)]
    msgs = [
        charges_created(known[0], known[1]),
        charges_created(known[1], str(uuid.uuid4())),  # an account customer never opened
        charges_created(known[2], known[0]),
    ]
    # The per-message handler fails if called: the batch must not fall back to it.
    monkeypatch.setattr(consumers, "on_charges_created", no_per_message_handler)
    consumer = consumer_for(consumers.subscriptions(), stream_name("charging"), db.uow, inbox)
    fallbacks = batch_fallbacks("customer")
    await process(consumer, *msgs)
    assert acked(msgs)
    assert batch_fallbacks("customer") == fallbacks, "the batch handler applied the batch"
    assert [await db.has_charges(a) for a in known] == [True, True, True, False]
    # The same messages again (redelivered: the inbox skips them) in a batch with two new ones, one
    # naming marked accounts, one the last account: the new two go through the batch handler too.
    again = [m.again() for m in msgs]
    later = [charges_created(known[0], known[2]), charges_created(known[3])]
    await process(consumer, *again, *later)
    assert acked([*again, *later])
    assert batch_fallbacks("customer") == fallbacks
    assert [await db.has_charges(a) for a in known] == [True, True, True, True]


async def test_a_poison_message_in_a_batch_is_retried_alone(db: CustomerDb) -> None:
    first, second = await new_account(db), await new_account(db)
    poisoned = charges_created("not-a-uuid")
    msgs = [charges_created(first), poisoned, charges_created(second)]
    consumer = consumer_for(consumers.subscriptions(), stream_name("charging"), db.uow, inbox)
    fallbacks = batch_fallbacks("customer")
    await process(consumer, *msgs)
    assert batch_fallbacks("customer") == fallbacks + 1, "the batch handler raised: one by one"
    assert poisoned.naked and not poisoned.acked, "the poison message is retried, alone"
    assert acked(msgs, but=[poisoned])
    assert await db.has_charges(first) and await db.has_charges(second)


async def test_charges_of_accounts_known_charged_are_acked_without_a_transaction(db: CustomerDb) -> None:
    """A replica that found an account charged already (committed: has_charges is never unset)
    acknowledges the messages naming only such accounts without a transaction: no inbox row."""
    account_id = await new_account(db)
    consumer = consumer_for(subscriptions(), stream_name("charging"), db.uow, inbox)
    first, second, third = (charges_created(account_id) for _ in range(3))
    await process(consumer, first)  # marks it
    await process(consumer, second)  # finds it marked: known from now on
    rows = await db.count(inbox)
    await process(consumer, third)
    assert acked([first, second, third])
    assert await db.count(inbox) == rows, "no transaction for the third"
    # A message naming another account too: a transaction, which marks that one.
    other = await new_account(db)
    mixed = charges_created(account_id, other)
    await process(consumer, mixed)
    assert acked([mixed]) and await db.has_charges(other)
    assert await db.count(inbox) == rows + 1
    # Another replica knows nothing yet: its first message for the account takes a transaction.
    fresh = consumer_for(subscriptions(), stream_name("charging"), db.uow, inbox)
    fourth = charges_created(account_id)
    await process(fresh, fourth)
    assert acked([fourth]) and await db.count(inbox) == rows + 2


def test_the_replicas_set_of_charged_accounts_is_bounded() -> None:
    charged = accounts_service.ChargedAccounts(limit=3)
    ids = [uuid.uuid4() for _ in range(4)]
    charged.add(ids[:3])
    assert charged.all_of(str(a) for a in ids[:3]) and not charged.knows(ids[3])
    charged.add(ids[3:])  # past the limit: it starts over
    assert charged.knows(ids[3]) and not charged.knows(ids[0])
    assert charged.all_of([]) and not charged.all_of([str(ids[0]), str(ids[3])])


async def test_accounts_found_charged_are_known_only_once_the_transaction_commits(db: CustomerDb) -> None:
    """The mark found may be the transaction's own (an earlier message of its batch): the replica
    learns it only when that transaction commits, never when it rolls back."""
    account_id = uuid.UUID(await new_account(db))
    charged = accounts_service.ChargedAccounts()
    async with db.uow() as uow:
        assert await accounts_service.note_charges(uow, [account_id], charged) == [account_id]
        assert await accounts_service.note_charges(uow, [account_id], charged) == [], "found marked"
        assert not charged.knows(account_id), "not before the commit"
    assert not charged.knows(account_id) and not await db.has_charges(str(account_id)), "rolled back"
    async with db.uow() as uow:
        await accounts_service.note_charges(uow, [account_id], charged)
        await accounts_service.note_charges(uow, [account_id], charged)
        assert not charged.knows(account_id)
        await uow.commit()
    assert charged.knows(account_id)
