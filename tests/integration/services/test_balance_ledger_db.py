"""The balance ledger against a real, migrated database: charges from ChargesCreated booked per
consumer batch (one balance move per group, replays change nothing, a charge naming an unknown
group lands in the default group), payments idempotent on their reference and refused with the
field named and nothing changed, reversals, adjustments, transfers, groups created and closed,
balances as of an instant, the ledger listed, and concurrent writers on separate connections
leaving the balance right to the cent. After every test the stored balances equal the sums of the
entries."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from alembic import command
from evolutivo.balance.v1 import balance_service_pb2 as pb
from evolutivo.balance.v1 import events_pb2, ledger_pb2, payment_pb2
from evolutivo.charging.v1 import events_pb2 as charging_events
from evolutivo.charging.v1 import usage_pb2
from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_balance.adapters import events
from evolutivo_balance.adapters.orm import inbox, ledger_entries, outbox, payments, request_log
from evolutivo_balance.entrypoints.app import MIGRATIONS
from evolutivo_balance.entrypoints.consumers import charge_from_pb, subscriptions
from evolutivo_balance.entrypoints.grpc_api import BalanceServicer
from evolutivo_balance.service_layer import handlers
from evolutivo_balance.service_layer.unit_of_work import BalanceUnitOfWork
from evolutivo_runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ServiceError
from evolutivo_runtime.messaging.consumer import EventConsumer
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.migrations import alembic_config, upgrade_to_head
from evolutivo_runtime.money import from_money, to_money
from evolutivo_runtime.testing import eventually
from evolutivo_runtime.timestamps import to_timestamp
from google.protobuf.message import Message
from google.type import money_pb2
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from support.customer_messages import created_message
from support.databases import MigratedDatabase, ServiceDb
from support.jetstream import FakeMsg, consumer_for, message, process

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
NO_CONTEXT: Any = None
CHARGES_CREATED = "evolutivo.charging.v1.charges.created"


def eur(amount: str, currency_code: str = "EUR") -> money_pb2.Money:
    return to_money(Decimal(amount), currency_code)


class BalanceDb(ServiceDb):
    def uow(self) -> BalanceUnitOfWork:
        return BalanceUnitOfWork(self.sessions, outbox, self.clock, events.encode, request_log)

    @property
    def api(self) -> BalanceServicer:
        return BalanceServicer(self.uow)

    async def counts(self) -> tuple[int, int, int, int]:
        """What a refused call must leave unchanged."""
        return (
            await self.count(ledger_entries),
            await self.count(payments),
            await self.count(outbox),
            await self.count(request_log),
        )

    async def published(self, subject: str) -> list[bytes]:
        rows = await self.rows(select(outbox.c.payload).where(outbox.c.subject == subject).order_by(outbox.c.seq))
        return [row.payload for row in rows]

    async def balance(self, account_id: uuid.UUID, as_of: datetime | None = None) -> pb.GetBalanceResponse:
        return await self.api.GetBalance(
            pb.GetBalanceRequest(account_id=str(account_id), as_of_time=to_timestamp(as_of)), NO_CONTEXT
        )

    async def total(self, account_id: uuid.UUID, as_of: datetime | None = None) -> Decimal:
        return from_money((await self.balance(account_id, as_of)).total)

    async def group_balances(self, account_id: uuid.UUID) -> dict[str, Decimal]:
        found = await self.balance(account_id)
        return {g.name: from_money(g.balance) for g in found.balance_groups}

    async def check_invariant(self) -> None:
        """Every group's stored balance is the sum of its entries."""
        rows = await self.rows(
            text(
                "SELECT g.balance_group_id, g.balance, COALESCE(SUM(e.amount), 0) AS entries "
                "FROM balance_groups g LEFT JOIN ledger_entries e USING (balance_group_id) "
                "GROUP BY g.balance_group_id, g.balance"
            )
        )
        wrong = [(r.balance_group_id, r.balance, r.entries) for r in rows if r.balance != r.entries]
        assert not wrong, f"balances that are not the sum of their entries: {wrong}"


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[BalanceDb]:
    async with BalanceDb.open(await migrated_database("balance", MIGRATIONS), NOW, pool_size=16) as database:
        yield database
        await database.check_invariant()


# Messages as the consumer receives them.


def consumer(db: BalanceDb, service: str) -> EventConsumer[BalanceUnitOfWork]:
    return consumer_for(subscriptions(), stream_name(service), db.uow, inbox)


async def deliver(db: BalanceDb, *msgs: FakeMsg) -> None:
    """One fetched batch of ChargesCreated, applied as the service's consumer applies it."""
    await process(consumer(db, "charging"), *msgs)


async def new_account(db: BalanceDb, currency_code: str = "EUR") -> uuid.UUID:
    account_id = uuid.uuid4()
    account = account_pb2.Account(account_id=str(account_id), currency_code=currency_code, time_zone="Europe/Madrid")
    msg = created_message(account, NOW)
    await process(consumer(db, "customer"), msg)
    assert msg.acked
    return account_id


def rated(
    account_id: uuid.UUID,
    amount: str,
    group: str = "",
    charge_id: uuid.UUID | None = None,
    currency_code: str = "EUR",
    rate_time: datetime = NOW,
) -> usage_pb2.RatedCharge:
    return usage_pb2.RatedCharge(
        charge_id=str(charge_id or uuid.uuid4()),
        account_id=str(account_id),
        kind=usage_pb2.CHARGE_KIND_USAGE,
        balance_group=group,
        amount=eur(amount, currency_code),
        rate_time=to_timestamp(rate_time),
    )


def charges_created(*charges: usage_pb2.RatedCharge, currency_code: str = "EUR") -> FakeMsg:
    return message(CHARGES_CREATED, charging_events.ChargesCreated(charges=charges, currency_code=currency_code), NOW)


async def create_group(db: BalanceDb, account_id: uuid.UUID, name: str) -> str:
    response = await db.api.CreateBalanceGroup(
        pb.CreateBalanceGroupRequest(account_id=str(account_id), name=name), NO_CONTEXT
    )
    return response.balance_group.balance_group_id


def payment_request(
    account_id: uuid.UUID,
    amount: str = "40.00",
    reference: str | None = None,
    currency_code: str = "EUR",
    request_id: str = "",
    **fields: Any,
) -> pb.RecordPaymentRequest:
    return pb.RecordPaymentRequest(
        account_id=str(account_id),
        amount=eur(amount, currency_code),
        method=payment_pb2.PAYMENT_METHOD_TYPE_BANK_TRANSFER,
        reference=reference if reference is not None else f"ref-{uuid.uuid4().hex}",
        request_id=request_id,
        **fields,
    )


async def pay(db: BalanceDb, request: pb.RecordPaymentRequest) -> pb.RecordPaymentResponse:
    return await db.api.RecordPayment(request, NO_CONTEXT)


async def adjust(
    db: BalanceDb, account_id: uuid.UUID, amount: str, reason_code: str = "GOODWILL", actor: str = "agent-7", **kw: Any
) -> pb.CreateAdjustmentResponse:
    return await db.api.CreateAdjustment(
        pb.CreateAdjustmentRequest(
            account_id=str(account_id), amount=eur(amount), reason_code=reason_code, actor=actor, **kw
        ),
        NO_CONTEXT,
    )


async def entries(db: BalanceDb, account_id: uuid.UUID, **filters: Any) -> list[ledger_pb2.LedgerEntry]:
    found: list[ledger_pb2.LedgerEntry] = []
    token = ""
    while True:
        page = await db.api.ListLedgerEntries(
            pb.ListLedgerEntriesRequest(account_id=str(account_id), page_token=token, **filters), NO_CONTEXT
        )
        found += page.entries
        token = page.next_page_token
        if not token:
            return found


# Migrations.


async def test_the_ledger_migration_goes_down_and_up_again(db: BalanceDb) -> None:
    account_id = await new_account(db)
    await db.engine.dispose()
    await asyncio.to_thread(command.downgrade, alembic_config(MIGRATIONS, db.url), "0001")
    async with db.engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: sync.dialect.get_table_names(sync))
    assert not {"ledger_entries", "payments", "request_log"} & set(tables)
    await asyncio.to_thread(upgrade_to_head, MIGRATIONS, db.url)
    assert await db.total(account_id) == 0


async def test_the_ledger_is_append_only(db: BalanceDb) -> None:
    account_id = await new_account(db)
    await deliver(db, charges_created(rated(account_id, "5.00")))
    for statement in ("UPDATE ledger_entries SET amount = 0", "DELETE FROM ledger_entries"):
        async with db.engine.begin() as conn:
            with pytest.raises(DBAPIError, match="append-only"):
                await conn.execute(text(statement))
    assert await db.total(account_id) == Decimal("5.00")


# Charges.


async def test_a_batch_of_charges_moves_each_group_once_by_the_sum_of_its_charges(db: BalanceDb) -> None:
    first, second = await new_account(db), await new_account(db)
    roaming = await create_group(db, first, "roaming")
    charges = [
        rated(first, "1.10"),
        rated(first, "2.25", "roaming"),
        rated(second, "0.05"),
        rated(first, "3.00"),
        rated(first, "-0.50", "roaming"),  # a reversing charge is a credit
    ]
    async with db.uow() as uow:
        booked = await handlers.book_charges(uow, [charge_from_pb(c, "EUR") for c in charges], NOW)
        assert len(booked) == 5
        groups = uow.pending_deltas
        await uow.commit()
    default_first = (await db.balance(first)).balance_groups[0].balance_group_id
    assert groups[uuid.UUID(roaming)] == Decimal("1.75")
    assert groups[uuid.UUID(default_first)] == Decimal("4.10")
    assert len(groups) == 3, "one balance move per group, whatever the number of charges"
    assert await db.group_balances(first) == {"default": Decimal("4.10"), "roaming": Decimal("1.75")}
    assert await db.total(second) == Decimal("0.05")


async def test_charges_arrive_through_the_consumer_in_one_transaction_per_batch(db: BalanceDb) -> None:
    account_id = await new_account(db)
    await create_group(db, account_id, "roaming")
    msgs = [
        charges_created(rated(account_id, "0.10"), rated(account_id, "0.20", "roaming")),
        charges_created(rated(account_id, "0.30")),
        charges_created(*(rated(account_id, "0.01", "roaming") for _ in range(50))),
    ]
    await deliver(db, *msgs)
    assert all(m.acked for m in msgs)
    assert await db.group_balances(account_id) == {"default": Decimal("0.40"), "roaming": Decimal("0.70")}
    listed = await entries(db, account_id)
    assert len(listed) == 53
    assert {e.type for e in listed} == {ledger_pb2.LEDGER_ENTRY_TYPE_CHARGE}
    assert all(e.source_type == "charge" and e.actor == "charging" for e in listed)
    assert await db.published("evolutivo.balance.v1.payment.recorded") == []
    assert await db.count(outbox) == 2, "BalanceGroupCreated twice (default and roaming): no event per charge"


async def test_a_replay_of_the_same_charges_changes_nothing(db: BalanceDb) -> None:
    account_id = await new_account(db)
    charges = [rated(account_id, "1.50"), rated(account_id, "2.50")]
    first = charges_created(*charges)
    await deliver(db, first)
    # Redelivered (the inbox skips it) and republished with another event id (the ledger skips it).
    again = charges_created(*charges)
    await deliver(db, first.again(), again, charges_created(charges[1]))
    assert again.acked
    assert await db.total(account_id) == Decimal("4.00")
    assert await db.count(ledger_entries) == 2


async def test_a_charge_naming_a_group_the_account_does_not_have_lands_in_the_default_group(db: BalanceDb) -> None:
    account_id = await new_account(db)
    old = await create_group(db, account_id, "old-project")
    await db.api.CloseBalanceGroup(pb.CloseBalanceGroupRequest(balance_group_id=old), NO_CONTEXT)
    await deliver(
        db, charges_created(rated(account_id, "7.00", "no-such-group"), rated(account_id, "1.00", "old-project"))
    )
    assert await db.group_balances(account_id) == {"default": Decimal("8.00")}
    reasons = sorted(e.reason for e in await entries(db, account_id))
    assert reasons == [
        "balance group 'no-such-group' is not an open group of the account: booked to the default group",
        "balance group 'old-project' is not an open group of the account: booked to the default group",
    ]


async def test_charges_for_an_account_balance_has_not_heard_of_open_its_default_group(db: BalanceDb) -> None:
    account_id = uuid.uuid4()
    await deliver(db, charges_created(rated(account_id, "3.00")))
    assert await db.total(account_id) == Decimal("3.00")
    account = account_pb2.Account(account_id=str(account_id), currency_code="EUR")
    late = created_message(account, NOW)
    await process(consumer(db, "customer"), late)
    assert len((await db.balance(account_id)).balance_groups) == 1
    assert len(await db.published("evolutivo.balance.v1.balance_group.created")) == 1


async def test_a_broken_charge_message_is_retried_and_the_rest_of_the_batch_is_booked(db: BalanceDb) -> None:
    account_id = await new_account(db)
    good = charges_created(rated(account_id, "2.00"))
    # In another currency than the account's: never booked, retried, then dead-lettered.
    wrong = charges_created(rated(account_id, "9.00"), rated(account_id, "5.00", currency_code="USD"))
    after = charges_created(rated(account_id, "0.25"))
    await deliver(db, good, wrong, after)
    assert good.acked and after.acked
    assert wrong.naked and not wrong.acked
    assert await db.total(account_id) == Decimal("2.25"), "the broken message's booked charge went with its savepoint"
    assert await db.count(ledger_entries) == 2


# The account's currency.


def account_updated(account_id: uuid.UUID, currency_code: str, *changed: str) -> FakeMsg:
    account = account_pb2.Account(account_id=str(account_id), currency_code=currency_code)
    return message(
        "evolutivo.customer.v1.account.updated",
        customer_events.AccountUpdated(account=account, changed_fields=changed or ["currency_code"]),
        NOW,
    )


async def test_groups_follow_a_currency_change_while_the_ledger_is_empty(db: BalanceDb) -> None:
    account_id = await new_account(db)
    await create_group(db, account_id, "project")
    customer = consumer(db, "customer")
    renamed = account_updated(account_id, "USD", "display_name")
    await process(customer, renamed)
    assert (await db.balance(account_id)).total.currency_code == "EUR", "only a currency change counts"
    changed = account_updated(account_id, "USD")
    await process(customer, changed)
    assert changed.acked
    answered = await db.balance(account_id)
    assert {g.balance.currency_code for g in answered.balance_groups} == {"USD"}
    await pay(db, payment_request(account_id, "5.00", currency_code="USD"))
    # With entries in the ledger, balance cannot follow: the event fails (and is dead-lettered).
    again = account_updated(account_id, "GBP")
    await process(customer, again)
    assert again.naked and not again.acked
    assert (await db.balance(account_id)).total.currency_code == "USD"


async def test_a_currency_change_before_account_created_opens_the_group_in_the_new_currency(db: BalanceDb) -> None:
    account_id = uuid.uuid4()
    customer = consumer(db, "customer")
    await process(customer, account_updated(account_id, "JPY"))
    account = account_pb2.Account(account_id=str(account_id), currency_code="EUR")
    created = created_message(account, NOW)
    await process(customer, created)
    assert created.acked
    assert (await db.balance(account_id)).total.currency_code == "JPY"


# Payments.


async def test_a_payment_is_a_credit_entry_and_an_event_for_billing(db: BalanceDb) -> None:
    account_id = await new_account(db)
    await deliver(db, charges_created(rated(account_id, "100.00")))
    received = NOW - timedelta(hours=2)
    response = await pay(
        db, payment_request(account_id, "40.00", "SEPA-2031-0001", received_time=to_timestamp(received))
    )
    payment, entry = response.payment, response.entry
    assert (payment.reference, payment.state, from_money(payment.amount)) == (
        "SEPA-2031-0001",
        payment_pb2.PAYMENT_STATE_RECORDED,
        Decimal("40.00"),
    )
    assert (entry.type, from_money(entry.amount), entry.source_type, entry.source_id) == (
        ledger_pb2.LEDGER_ENTRY_TYPE_PAYMENT,
        Decimal("-40.00"),
        "payment",
        "SEPA-2031-0001",
    )
    assert entry.effective_time.ToDatetime(tzinfo=UTC) == received
    assert payment.entry_id == entry.entry_id
    assert await db.total(account_id) == Decimal("60.00")
    (event,) = [
        events_pb2.PaymentRecorded.FromString(p) for p in await db.published("evolutivo.balance.v1.payment.recorded")
    ]
    assert (event.payment, event.entry) == (payment, entry)


async def test_a_payment_retry_never_credits_twice(db: BalanceDb) -> None:
    account_id = await new_account(db)
    request_id = str(uuid.uuid4())
    request = payment_request(account_id, "25.00", "CARD-77", request_id=request_id)
    first = await pay(db, request)
    assert await pay(db, request) == first, "the same request id: the first response"
    again = payment_request(account_id, "25.00", "CARD-77")
    assert await pay(db, again) == first, "the same reference without a request id: the first result"
    # Several retries at once, on separate connections.
    racing = await asyncio.gather(*(pay(db, payment_request(account_id, "25.00", "CARD-77")) for _ in range(8)))
    assert all(r == first for r in racing)
    assert await db.total(account_id) == Decimal("-25.00")
    assert (await db.count(ledger_entries), await db.count(payments)) == (1, 1)
    assert len(await db.published("evolutivo.balance.v1.payment.recorded")) == 1


async def test_a_retry_after_the_payments_group_closed_still_returns_the_payment(db: BalanceDb) -> None:
    account_id = await new_account(db)
    group_id = await create_group(db, account_id, "deposit")
    first = await pay(db, payment_request(account_id, "30.00", "DEP-1", balance_group_id=group_id))
    await adjust(db, account_id, "30.00", balance_group_id=group_id)
    await db.api.CloseBalanceGroup(pb.CloseBalanceGroupRequest(balance_group_id=group_id), NO_CONTEXT)
    assert (await pay(db, payment_request(account_id, "30.00", "DEP-1", balance_group_id=group_id))) == first
    with pytest.raises(FailedPrecondition) as refused:
        await pay(db, payment_request(account_id, "30.00", "DEP-2", balance_group_id=group_id))
    assert refused.value.reason == "BALANCE_GROUP_CLOSED"
    # Reversing it now books on the default group, and says why.
    reversed_ = await db.api.ReversePayment(
        pb.ReversePaymentRequest(reference="DEP-1", reason="chargeback"), NO_CONTEXT
    )
    default_id = (await db.balance(account_id)).balance_groups[0].balance_group_id
    assert reversed_.entry.balance_group_id == default_id
    assert reversed_.entry.reason == f"chargeback (balance group {group_id} is closed: booked to the default group)"
    assert await db.group_balances(account_id) == {"default": Decimal("30.00")}


async def test_concurrent_first_calls_with_one_reference_record_one_payment(db: BalanceDb) -> None:
    account_id = await new_account(db)
    racing = await asyncio.gather(*(pay(db, payment_request(account_id, "10.00", "RACE-1")) for _ in range(10)))
    assert len({r.payment.payment_id for r in racing}) == 1
    assert await db.total(account_id) == Decimal("-10.00")
    assert await db.count(ledger_entries) == 1


async def test_the_same_reference_with_another_amount_is_refused(db: BalanceDb) -> None:
    account_id = await new_account(db)
    await pay(db, payment_request(account_id, "25.00", "CARD-78"))
    before = await db.counts()
    with pytest.raises(InvalidArgument) as refused:
        await pay(db, payment_request(account_id, "26.00", "CARD-78"))
    assert (refused.value.field, refused.value.reason) == ("reference", "PAYMENT_REFERENCE_REUSED")
    other_account = await new_account(db)
    with pytest.raises(InvalidArgument, match="account_id"):
        await pay(db, payment_request(other_account, "25.00", "CARD-78"))
    assert await db.counts() == (before[0], before[1], before[2] + 1, before[3])  # + other_account's group event
    assert await db.total(account_id) == Decimal("-25.00")


@pytest.mark.parametrize(
    ("change", "field_name"),
    [
        ({"amount": eur("10.00", "USD")}, "amount.currency_code"),
        ({"amount": eur("0")}, "amount"),
        ({"amount": eur("-10.00")}, "amount"),
        ({"amount": eur("10.001")}, "amount"),
        ({"amount": money_pb2.Money(currency_code="EUR", units=1, nanos=-5)}, "amount"),
        ({"method": payment_pb2.PAYMENT_METHOD_TYPE_UNSPECIFIED}, "method"),
        ({"reference": ""}, "reference"),
        ({"reference": " padded "}, "reference"),
        ({"received_time": to_timestamp(NOW + timedelta(minutes=1))}, "received_time"),
        ({"account_id": "not-a-uuid"}, "account_id"),
        ({"balance_group_id": "nope"}, "balance_group_id"),
        ({"request_id": "not-a-uuid"}, "request_id"),
    ],
)
async def test_a_bad_payment_is_refused_naming_the_field_and_changes_nothing(
    db: BalanceDb, change: dict[str, Any], field_name: str
) -> None:
    account_id = await new_account(db)
    await deliver(db, charges_created(rated(account_id, "50.00")))
    before = await db.counts()
    request = payment_request(account_id, "10.00", request_id=str(uuid.uuid4()))
    for name, value in change.items():
        if isinstance(value, Message):
            getattr(request, name).CopyFrom(value)
        else:
            setattr(request, name, value)
    with pytest.raises(InvalidArgument) as refused:
        await pay(db, request)
    assert refused.value.field == field_name
    assert await db.counts() == before
    assert await db.total(account_id) == Decimal("50.00")


async def test_a_payment_without_an_amount_or_to_an_unknown_account_is_refused(db: BalanceDb) -> None:
    account_id = await new_account(db)
    request = payment_request(account_id)
    request.ClearField("amount")
    with pytest.raises(InvalidArgument, match="amount"):
        await pay(db, request)
    with pytest.raises(NotFound):
        await pay(db, payment_request(uuid.uuid4()))
    other_group = await create_group(db, await new_account(db), "other")
    with pytest.raises(InvalidArgument) as refused:
        await pay(db, payment_request(account_id, balance_group_id=other_group))
    assert refused.value.field == "balance_group_id"
    assert await db.count(ledger_entries) == 0


async def test_an_overpayment_leaves_the_group_in_credit_that_later_charges_consume(db: BalanceDb) -> None:
    account_id = await new_account(db)
    await deliver(db, charges_created(rated(account_id, "30.00")))
    await pay(db, payment_request(account_id, "50.00"))
    assert await db.total(account_id) == Decimal("-20.00")
    await deliver(db, charges_created(rated(account_id, "12.50")))
    assert await db.total(account_id) == Decimal("-7.50")


async def test_a_reversal_restores_what_the_payment_paid_once(db: BalanceDb) -> None:
    account_id = await new_account(db)
    await deliver(db, charges_created(rated(account_id, "80.00")))
    paid = await pay(db, payment_request(account_id, "80.00", "DD-2031-05"))
    assert await db.total(account_id) == 0
    with pytest.raises(InvalidArgument) as refused:
        await db.api.ReversePayment(pb.ReversePaymentRequest(reference="DD-2031-05"), NO_CONTEXT)
    assert refused.value.field == "reason"
    reversed_ = await db.api.ReversePayment(
        pb.ReversePaymentRequest(reference="DD-2031-05", reason="direct debit returned: AM04", actor="bank-file"),
        NO_CONTEXT,
    )
    assert reversed_.payment.state == payment_pb2.PAYMENT_STATE_REVERSED
    assert reversed_.payment.reversal_reason == "direct debit returned: AM04"
    assert (reversed_.entry.type, from_money(reversed_.entry.amount), reversed_.entry.source_id) == (
        ledger_pb2.LEDGER_ENTRY_TYPE_PAYMENT_REVERSAL,
        Decimal("80.00"),
        "DD-2031-05",
    )
    assert await db.total(account_id) == Decimal("80.00")
    # Again, by id this time: the same reversal, nothing booked.
    again = await db.api.ReversePayment(
        pb.ReversePaymentRequest(payment_id=paid.payment.payment_id, reason="again"), NO_CONTEXT
    )
    assert again == reversed_
    assert await db.total(account_id) == Decimal("80.00")
    (event,) = [
        events_pb2.PaymentReversed.FromString(p) for p in await db.published("evolutivo.balance.v1.payment.reversed")
    ]
    assert event.payment == reversed_.payment
    # A retry of the reversed payment's recording returns it as it stands, books nothing.
    assert (await pay(db, payment_request(account_id, "80.00", "DD-2031-05"))).payment == reversed_.payment
    assert await db.count(ledger_entries) == 3
    with pytest.raises(NotFound):
        await db.api.ReversePayment(pb.ReversePaymentRequest(reference="never", reason="x"), NO_CONTEXT)
    got = await db.api.GetPayment(pb.GetPaymentRequest(reference="DD-2031-05"), NO_CONTEXT)
    assert got.payment == reversed_.payment


# Adjustments and transfers.


async def test_adjustments_debit_or_credit_with_a_reason_code_and_an_actor(db: BalanceDb) -> None:
    account_id = await new_account(db)
    debit = await adjust(db, account_id, "15.00", "LATE_FEE", "collections-bot")
    credit = await adjust(db, account_id, "-4.99", "GOODWILL", "agent-7", reason="outage on 12 May")
    assert await db.total(account_id) == Decimal("10.01")
    assert (credit.entry.type, credit.entry.reason_code, credit.entry.actor, credit.entry.reason) == (
        ledger_pb2.LEDGER_ENTRY_TYPE_ADJUSTMENT,
        "GOODWILL",
        "agent-7",
        "outage on 12 May",
    )
    assert credit.entry.source_type == "adjustment" and credit.entry.source_id == credit.entry.entry_id
    made = [events_pb2.AdjustmentMade.FromString(p) for p in await db.published("evolutivo.balance.v1.adjustment.made")]
    assert [m.entry for m in made] == [debit.entry, credit.entry]


@pytest.mark.parametrize(
    ("kw", "field_name"),
    [
        ({"reason_code": ""}, "reason_code"),
        ({"reason_code": "has spaces"}, "reason_code"),
        ({"actor": ""}, "actor"),
        ({"actor": "   "}, "actor"),
        ({"amount": "0"}, "amount"),
        ({"amount": "0.001"}, "amount"),
    ],
)
async def test_an_adjustment_without_a_reason_or_actor_is_refused_and_changes_nothing(
    db: BalanceDb, kw: dict[str, str], field_name: str
) -> None:
    account_id = await new_account(db)
    before = await db.counts()
    args = {"amount": "5.00", "reason_code": "GOODWILL", "actor": "agent-7"} | kw
    with pytest.raises(InvalidArgument) as refused:
        await adjust(db, account_id, args["amount"], args["reason_code"], args["actor"], request_id=str(uuid.uuid4()))
    assert refused.value.field == field_name
    assert await db.counts() == before


async def test_an_adjustment_retry_with_its_request_id_books_once(db: BalanceDb) -> None:
    account_id = await new_account(db)
    request_id = str(uuid.uuid4())
    first = await adjust(db, account_id, "3.00", request_id=request_id)
    assert await adjust(db, account_id, "3.00", request_id=request_id) == first
    assert await db.total(account_id) == Decimal("3.00")


async def test_a_transfer_moves_balance_between_groups_of_one_account(db: BalanceDb) -> None:
    account_id = await new_account(db)
    project = await create_group(db, account_id, "project-x")
    await deliver(db, charges_created(rated(account_id, "100.00")))
    default_id = (await db.balance(account_id)).balance_groups[0].balance_group_id
    moved = await db.api.TransferBalance(
        pb.TransferBalanceRequest(
            account_id=str(account_id),
            from_balance_group_id=default_id,
            to_balance_group_id=project,
            amount=eur("60.00"),
            actor="agent-7",
            reason="charged to the project",
        ),
        NO_CONTEXT,
    )
    assert await db.group_balances(account_id) == {"default": Decimal("40.00"), "project-x": Decimal("60.00")}
    assert await db.total(account_id) == Decimal("100.00")
    assert (moved.from_entry.source_type, moved.to_entry.source_type) == ("transfer_out", "transfer_in")
    assert moved.from_entry.source_id == moved.to_entry.source_id == moved.transfer_id


async def test_a_transfer_across_accounts_is_refused_and_changes_nothing(db: BalanceDb) -> None:
    mine, theirs = await new_account(db), await new_account(db)
    await deliver(db, charges_created(rated(mine, "10.00")))
    my_default = (await db.balance(mine)).balance_groups[0].balance_group_id
    their_default = (await db.balance(theirs)).balance_groups[0].balance_group_id
    before = await db.counts()
    for from_id, to_id, field_name in (
        (my_default, their_default, "to_balance_group_id"),
        (their_default, my_default, "from_balance_group_id"),
    ):
        with pytest.raises(InvalidArgument) as refused:
            await db.api.TransferBalance(
                pb.TransferBalanceRequest(
                    account_id=str(mine),
                    from_balance_group_id=from_id,
                    to_balance_group_id=to_id,
                    amount=eur("5.00"),
                    actor="agent-7",
                    request_id=str(uuid.uuid4()),
                ),
                NO_CONTEXT,
            )
        assert (refused.value.field, refused.value.reason) == (field_name, "TRANSFER_ACROSS_ACCOUNTS")
    with pytest.raises(InvalidArgument, match="another group"):
        await db.api.TransferBalance(
            pb.TransferBalanceRequest(
                account_id=str(mine),
                from_balance_group_id=my_default,
                to_balance_group_id=my_default,
                amount=eur("5.00"),
                actor="agent-7",
            ),
            NO_CONTEXT,
        )
    assert await db.counts() == before
    assert (await db.total(mine), await db.total(theirs)) == (Decimal("10.00"), Decimal(0))


# Balance groups.


async def test_groups_open_with_unique_names_and_close_only_when_empty(db: BalanceDb) -> None:
    account_id = await new_account(db)
    group_id = await create_group(db, account_id, "cost-centre-7")
    with pytest.raises(AlreadyExists):
        await create_group(db, account_id, "cost-centre-7")
    with pytest.raises(AlreadyExists):
        await create_group(db, account_id, "default")
    with pytest.raises(InvalidArgument, match="name"):
        await create_group(db, account_id, "")
    with pytest.raises(NotFound):
        await create_group(db, uuid.uuid4(), "x")
    await deliver(db, charges_created(rated(account_id, "9.00", "cost-centre-7")))
    close = pb.CloseBalanceGroupRequest(balance_group_id=group_id)
    with pytest.raises(FailedPrecondition) as refused:
        await db.api.CloseBalanceGroup(close, NO_CONTEXT)
    assert refused.value.reason == "BALANCE_NOT_ZERO"
    await adjust(db, account_id, "-9.00", balance_group_id=group_id)
    closed = (await db.api.CloseBalanceGroup(close, NO_CONTEXT)).balance_group
    assert closed.HasField("close_time")
    assert (await db.api.CloseBalanceGroup(close, NO_CONTEXT)).balance_group == closed, "closing again: unchanged"
    assert len(await db.published("evolutivo.balance.v1.balance_group.closed")) == 1
    default_id = (await db.balance(account_id)).balance_groups[0].balance_group_id
    with pytest.raises(FailedPrecondition) as never:
        await db.api.CloseBalanceGroup(pb.CloseBalanceGroupRequest(balance_group_id=default_id), NO_CONTEXT)
    assert never.value.reason == "DEFAULT_BALANCE_GROUP"
    # Closed: no new entries; listed only when asked; its name free again.
    with pytest.raises(FailedPrecondition, match="closed"):
        await adjust(db, account_id, "1.00", balance_group_id=group_id)
    assert [g.name for g in (await db.balance(account_id)).balance_groups] == ["default"]
    shown = await db.api.GetBalance(pb.GetBalanceRequest(account_id=str(account_id), show_closed=True), NO_CONTEXT)
    assert [g.name for g in shown.balance_groups] == ["default", "cost-centre-7"]
    assert await create_group(db, account_id, "cost-centre-7") != group_id


# Balances as of an instant.


async def test_the_balance_as_of_yesterday_is_right_after_todays_entries(db: BalanceDb) -> None:
    yesterday = NOW - timedelta(days=1)
    db.clock.instant = yesterday
    account_id = await new_account(db)
    await deliver(db, charges_created(rated(account_id, "20.00", rate_time=yesterday)))
    await adjust(db, account_id, "5.00")
    db.clock.instant = NOW
    await deliver(db, charges_created(rated(account_id, "7.00")))
    await pay(db, payment_request(account_id, "10.00"))
    await adjust(db, account_id, "-1.00")
    # Received yesterday, recorded today: it counts from when the money came in.
    await pay(db, payment_request(account_id, "3.00", received_time=to_timestamp(yesterday + timedelta(hours=1))))
    end_of_yesterday = yesterday + timedelta(hours=12)
    assert await db.total(account_id, end_of_yesterday) == Decimal("22.00")
    assert await db.total(account_id, yesterday - timedelta(seconds=1)) == 0
    assert await db.total(account_id) == Decimal("18.00")
    answered = await db.balance(account_id, end_of_yesterday)
    assert answered.as_of_time.ToDatetime(tzinfo=UTC) == end_of_yesterday


async def test_the_as_of_balance_lists_the_groups_open_then(db: BalanceDb) -> None:
    account_id = await new_account(db)
    db.clock.instant = NOW + timedelta(hours=1)
    group_id = await create_group(db, account_id, "later")
    db.clock.instant = NOW + timedelta(hours=2)
    await db.api.CloseBalanceGroup(pb.CloseBalanceGroupRequest(balance_group_id=group_id), NO_CONTEXT)
    names = [
        [g.name for g in (await db.balance(account_id, at)).balance_groups]
        for at in (NOW, NOW + timedelta(minutes=90), NOW + timedelta(hours=3))
    ]
    assert names == [["default"], ["default", "later"], ["default"]]


# The ledger listed.


async def test_the_ledger_is_listed_newest_first_filtered_and_paged(db: BalanceDb) -> None:
    account_id = await new_account(db)
    for hour in range(5):
        db.clock.instant = NOW + timedelta(hours=hour)
        await deliver(db, charges_created(rated(account_id, f"{hour + 1}.00", rate_time=db.clock.instant)))
    paid = await pay(db, payment_request(account_id, "2.00", "LIST-1"))
    await adjust(db, account_id, "1.00")
    listed = await entries(db, account_id, page_size=2)
    assert len(listed) == 7
    times = [(e.effective_time.ToDatetime(), e.entry_id) for e in listed]
    assert [t for t, _ in times] == sorted((t for t, _ in times), reverse=True)
    assert listed[0].type == ledger_pb2.LEDGER_ENTRY_TYPE_ADJUSTMENT, "booked last at the same time: listed first"
    only_charges = await entries(db, account_id, types=[ledger_pb2.LEDGER_ENTRY_TYPE_CHARGE])
    assert [from_money(e.amount) for e in only_charges] == [Decimal(n) for n in (5, 4, 3, 2, 1)]
    by_source = await entries(db, account_id, source_type="payment", source_id="LIST-1")
    assert [e.entry_id for e in by_source] == [paid.entry.entry_id]
    window = await entries(
        db,
        account_id,
        types=[ledger_pb2.LEDGER_ENTRY_TYPE_CHARGE],
        start_time=to_timestamp(NOW + timedelta(hours=1)),
        end_time=to_timestamp(NOW + timedelta(hours=3)),
    )
    assert [from_money(e.amount) for e in window] == [Decimal(3), Decimal(2)]
    page = await db.api.ListLedgerEntries(
        pb.ListLedgerEntriesRequest(account_id=str(account_id), page_size=2), NO_CONTEXT
    )
    with pytest.raises(InvalidArgument, match="other filters"):
        await db.api.ListLedgerEntries(
            pb.ListLedgerEntriesRequest(
                account_id=str(account_id), page_token=page.next_page_token, types=[ledger_pb2.LEDGER_ENTRY_TYPE_CHARGE]
            ),
            NO_CONTEXT,
        )
    with pytest.raises(NotFound):
        await entries(db, uuid.uuid4())


# Concurrency.


async def test_concurrent_charges_payments_and_adjustments_leave_the_balance_right_to_the_cent(db: BalanceDb) -> None:
    """Writers on separate connections at once: consumer batches of charges (as replicas apply
    them), payments, adjustments and transfers, all on one account's two groups."""
    account_id = await new_account(db)
    project = await create_group(db, account_id, "project")
    default_id = (await db.balance(account_id)).balance_groups[0].balance_group_id
    expected = Decimal(0)
    charge_batches: list[list[FakeMsg]] = []
    for b in range(24):
        batch = []
        for m in range(5):
            charges = [
                rated(account_id, f"0.{(b * 7 + m * 3 + i) % 100:02d}", "project" if i % 3 == 0 else "")
                for i in range(20)
            ]
            expected += sum((from_money(c.amount) for c in charges), Decimal(0))
            batch.append(charges_created(*charges))
        charge_batches.append(batch)
    payments_ = [
        payment_request(account_id, f"{n + 1}.37", balance_group_id=project if n % 2 else "") for n in range(40)
    ]
    expected -= sum((from_money(p.amount) for p in payments_), Decimal(0))
    adjustments = [(f"{'-' if n % 2 else ''}{n}.05", project if n % 3 else "") for n in range(1, 41)]
    expected += sum((Decimal(a) for a, _ in adjustments), Decimal(0))

    async def charges_worker(batches: Sequence[list[FakeMsg]]) -> None:
        for batch in batches:
            await deliver(db, *batch)
            assert all(m.acked for m in batch), "no batch failed (no deadlock, no lost update)"

    async def payments_worker(requests: Sequence[pb.RecordPaymentRequest]) -> None:
        for request in requests:
            await pay(db, request)

    async def adjustments_worker(items: Sequence[tuple[str, str]]) -> None:
        for amount, group in items:
            await adjust(db, account_id, amount, balance_group_id=group)

    async def transfers_worker(count: int) -> None:
        for n in range(count):
            from_id, to_id = (default_id, project) if n % 2 else (project, default_id)
            await db.api.TransferBalance(
                pb.TransferBalanceRequest(
                    account_id=str(account_id),
                    from_balance_group_id=from_id,
                    to_balance_group_id=to_id,
                    amount=eur("1.11"),
                    actor="rebalancer",
                ),
                NO_CONTEXT,
            )

    await asyncio.gather(
        *(charges_worker(charge_batches[i::4]) for i in range(4)),
        *(payments_worker(payments_[i::3]) for i in range(3)),
        *(adjustments_worker(adjustments[i::2]) for i in range(2)),
        transfers_worker(20),
    )
    assert await db.count(ledger_entries) == 24 * 5 * 20 + 40 + 40 + 2 * 20
    assert await db.total(account_id) == expected
    await db.check_invariant()


async def test_a_group_cannot_close_while_a_batch_books_on_it(db: BalanceDb) -> None:
    """Closing waits for the transactions booking on the group, then sees their balance."""
    account_id = await new_account(db)
    group_id = await create_group(db, account_id, "busy")
    async with db.uow() as uow:
        await handlers.book_charges(uow, [charge_from_pb(rated(account_id, "4.00", "busy"), "EUR")], NOW)
        closing = asyncio.create_task(
            db.api.CloseBalanceGroup(pb.CloseBalanceGroupRequest(balance_group_id=group_id), NO_CONTEXT)
        )
        await asyncio.sleep(0.3)
        assert not closing.done(), "the close waits for the booking transaction"
        await uow.commit()
    with pytest.raises(ServiceError) as refused:
        await closing
    assert refused.value.reason == "BALANCE_NOT_ZERO"
    assert await db.group_balances(account_id) == {"default": Decimal(0), "busy": Decimal("4.00")}


# A load from several processes, killed mid-flight.

LOAD = """
import asyncio, random, sys, uuid
from decimal import Decimal
from types import SimpleNamespace

from evolutivo.balance.v1 import balance_service_pb2 as pb
from evolutivo.balance.v1 import payment_pb2
from evolutivo.charging.v1 import events_pb2, usage_pb2
from evolutivo_balance.adapters import events
from evolutivo_balance.adapters.orm import inbox, outbox, request_log
from evolutivo_balance.entrypoints.consumers import subscriptions
from evolutivo_balance.entrypoints.grpc_api import BalanceServicer
from evolutivo_balance.service_layer.unit_of_work import BalanceUnitOfWork
from evolutivo_runtime.clock import SystemClock
from evolutivo_runtime.db import create_engine, session_factory
from evolutivo_runtime.messaging import envelope
from evolutivo_runtime.messaging.consumer import EventConsumer
from evolutivo_runtime.money import to_money


class Msg:
    def __init__(self, event):
        event_id = str(uuid.uuid4())
        self.data = event.SerializeToString()
        self.subject = "evolutivo.charging.v1.charges.created"
        self.headers = {
            envelope.EVENT_ID: event_id,
            envelope.EVENT_TYPE: event.DESCRIPTOR.full_name,
            envelope.OCCURRED_AT: "2031-05-17T09:30:00+00:00",
        }
        self.metadata = SimpleNamespace(num_delivered=1, num_pending=0, sequence=SimpleNamespace(stream=1))

    async def ack(self):
        pass

    async def nak(self, delay=None):
        raise SystemExit("a batch failed")


async def main(url, account_id, seed):
    sessions = session_factory(create_engine(url, 2))
    uow = lambda: BalanceUnitOfWork(sessions, outbox, SystemClock(), events.encode, request_log)
    api = BalanceServicer(uow)
    (charging,) = [s for s in subscriptions() if s.stream == "EVOLUTIVO_CHARGING"]
    consumer = EventConsumer(None, charging, uow, inbox, None, 100, 5, 30)
    rnd = random.Random(int(seed))
    print("ready", flush=True)
    while True:
        roll = rnd.random()
        cents = lambda: Decimal(rnd.randint(1, 9999)) / 100
        if roll < 0.6:
            charges = [
                usage_pb2.RatedCharge(
                    charge_id=str(uuid.uuid4()),
                    account_id=account_id,
                    balance_group=rnd.choice(["", "project"]),
                    amount=to_money(cents(), "EUR"),
                )
                for _ in range(rnd.randint(1, 40))
            ]
            await consumer.process([Msg(events_pb2.ChargesCreated(charges=charges, currency_code="EUR"))])
        elif roll < 0.8:
            await api.RecordPayment(
                pb.RecordPaymentRequest(
                    account_id=account_id,
                    amount=to_money(cents(), "EUR"),
                    method=payment_pb2.PAYMENT_METHOD_TYPE_CARD,
                    reference=str(uuid.uuid4()),
                ),
                None,
            )
        else:
            await api.CreateAdjustment(
                pb.CreateAdjustmentRequest(
                    account_id=account_id,
                    amount=to_money(cents() * rnd.choice([1, -1]), "EUR"),
                    reason_code="LOAD",
                    actor="load",
                ),
                None,
            )


asyncio.run(main(*sys.argv[1:]))
"""


async def test_the_invariant_holds_after_a_load_from_several_processes_killed_mid_flight(db: BalanceDb) -> None:
    account_id = await new_account(db)
    await create_group(db, account_id, "project")
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            LOAD,
            db.url,
            str(account_id),
            str(seed),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for seed in range(4)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stderr is not None
            line = await asyncio.wait_for(worker.stdout.readline(), timeout=60)
            assert line == b"ready\n", (await worker.stderr.read()).decode()

        async def booked() -> int | None:
            count = await db.count(ledger_entries)
            return count if count >= 3000 else None

        await eventually(booked, timeout=60, what="thousands of entries")
        for worker in workers:
            assert worker.returncode is None, "a worker stopped: a batch or a call failed"
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()  # SIGKILL, in the middle of whatever transaction it had open
            await worker.wait()
    await db.check_invariant()
    async with db.engine.connect() as conn:
        in_ledger = await conn.scalar(
            select(func.sum(ledger_entries.c.amount)).where(ledger_entries.c.account_id == account_id)
        )
    assert await db.total(account_id) == in_ledger
