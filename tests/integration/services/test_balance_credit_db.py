"""Balance's credit limits, write-offs, refunds, tax and credit notes against a real, migrated
database: thresholds and limits publish once per crossing whatever moves the balance (charge
batches through the consumer, payments, reversals, adjustments, transfers, write-offs, tax, credit
notes) or the policy; temporary limits expire through the claimed loop (SKIP LOCKED) or lazily;
write-offs and refunds are idempotent on their source and refunds never exceed the credit; billing's
BillIssued and CreditNoteIssued book tax and credit notes once, so a bill paid with its tax leaves
the balance at zero; every refused call names its field and changes nothing. After every test the
stored balances equal the sums of the entries."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from evolutivo.balance.v1 import balance_pb2, events_pb2, ledger_pb2, payment_pb2
from evolutivo.balance.v1 import balance_service_pb2 as pb
from evolutivo.billing.v1 import bill_pb2, credit_note_pb2
from evolutivo.billing.v1 import events_pb2 as billing_events
from evolutivo.charging.v1 import events_pb2 as charging_events
from evolutivo.charging.v1 import usage_pb2
from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_balance.adapters import events
from evolutivo_balance.adapters.orm import balance_groups, inbox, ledger_entries, outbox, request_log
from evolutivo_balance.entrypoints.app import MIGRATIONS
from evolutivo_balance.entrypoints.consumers import subscriptions
from evolutivo_balance.entrypoints.credit_expiry import TemporaryLimitExpiry
from evolutivo_balance.entrypoints.grpc_api import BalanceServicer
from evolutivo_balance.service_layer.unit_of_work import BalanceUnitOfWork
from evolutivo_runtime.clock import FixedClock
from evolutivo_runtime.db import create_engine, session_factory
from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument, NotFound, ServiceError
from evolutivo_runtime.money import from_money, to_money
from evolutivo_runtime.timestamps import to_timestamp
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message
from google.type import money_pb2
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from support.jetstream import FakeMsg, consumer_for, message, process

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
NO_CONTEXT: Any = None
D = Decimal
EVENT_TYPES: dict[str, type[Message]] = {
    events.CREDIT_LIMIT_EXCEEDED: events_pb2.CreditLimitExceeded,
    events.CREDIT_LIMIT_RESTORED: events_pb2.CreditLimitRestored,
    events.CREDIT_THRESHOLD_CROSSED: events_pb2.CreditThresholdCrossed,
    events.WRITE_OFF_MADE: events_pb2.WriteOffMade,
    events.REFUND_MADE: events_pb2.RefundMade,
}
CREDIT_SUBJECTS = (events.CREDIT_LIMIT_EXCEEDED, events.CREDIT_LIMIT_RESTORED, events.CREDIT_THRESHOLD_CROSSED)


def eur(amount: str, currency_code: str = "EUR") -> money_pb2.Money:
    return to_money(D(amount), currency_code)


@dataclass
class BalanceDb:
    url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    clock: FixedClock

    def uow(self) -> BalanceUnitOfWork:
        return BalanceUnitOfWork(self.sessions, outbox, self.clock, events.encode, request_log)

    @property
    def api(self) -> BalanceServicer:
        return BalanceServicer(self.uow)

    async def deliver(self, stream: str, *msgs: FakeMsg) -> None:
        """One fetched batch of the stream, applied as the service's consumer applies it."""
        await process(consumer_for(subscriptions(), stream, self.uow, inbox), *msgs)

    async def snapshot(self) -> tuple[Any, ...]:
        """What a refused call must leave unchanged: the entries, the events, the request log and
        every group's balance, policy and credit state."""
        async with self.engine.connect() as conn:
            counts = [
                await conn.scalar(select(func.count()).select_from(t)) for t in (ledger_entries, outbox, request_log)
            ]
            groups = (await conn.execute(select(balance_groups).order_by(balance_groups.c.balance_group_id))).all()
        return (*counts, [tuple(g) for g in groups])

    async def published(self, *subjects: str) -> list[tuple[str, Any]]:
        """The events of these subjects in the outbox, in publication order, decoded."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(outbox.c.subject, outbox.c.payload).where(outbox.c.subject.in_(subjects)).order_by(outbox.c.seq)
            )
            return [(row.subject, EVENT_TYPES[row.subject].FromString(row.payload)) for row in rows]

    async def check_invariant(self) -> None:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT g.balance_group_id, g.balance, COALESCE(SUM(e.amount), 0) AS entries "
                        "FROM balance_groups g LEFT JOIN ledger_entries e USING (balance_group_id) "
                        "GROUP BY g.balance_group_id, g.balance"
                    )
                )
            ).all()
        wrong = [(r.balance_group_id, r.balance, r.entries) for r in rows if r.balance != r.entries]
        assert not wrong, f"balances that are not the sum of their entries: {wrong}"

    # Calls.

    async def new_account(self, currency_code: str = "EUR") -> tuple[uuid.UUID, str]:
        """An account balance learnt from AccountCreated, and its default group's id."""
        account_id = uuid.uuid4()
        account = account_pb2.Account(
            account_id=str(account_id), currency_code=currency_code, time_zone="Europe/Madrid"
        )
        msg = message("evolutivo.customer.v1.account.created", customer_events.AccountCreated(account=account), NOW)
        await self.deliver("EVOLUTIVO_CUSTOMER", msg)
        assert msg.acked
        return account_id, (await self.group_of(account_id)).balance_group_id

    async def group_of(self, account_id: uuid.UUID, name: str = "default") -> balance_pb2.BalanceGroup:
        found = await self.api.GetBalance(pb.GetBalanceRequest(account_id=str(account_id)), NO_CONTEXT)
        (group,) = [g for g in found.balance_groups if g.name == name]
        return group

    async def group(self, group_id: str) -> balance_pb2.BalanceGroup:
        found = await self.api.GetBalanceGroup(pb.GetBalanceGroupRequest(balance_group_id=group_id), NO_CONTEXT)
        return found.balance_group

    async def charge(self, account_id: uuid.UUID, *amounts: str, group: str = "") -> None:
        """One consumer batch: a ChargesCreated message per amount."""
        msgs = [
            message(
                "evolutivo.charging.v1.charges.created",
                charging_events.ChargesCreated(
                    currency_code="EUR",
                    charges=[
                        usage_pb2.RatedCharge(
                            charge_id=str(uuid.uuid4()),
                            account_id=str(account_id),
                            kind=usage_pb2.CHARGE_KIND_USAGE,
                            balance_group=group,
                            amount=eur(amount),
                            rate_time=to_timestamp(self.clock.now()),
                        )
                    ],
                ),
                self.clock.now(),
            )
            for amount in amounts
        ]
        await self.deliver("EVOLUTIVO_CHARGING", *msgs)
        assert all(m.acked for m in msgs)

    async def set_limit(
        self,
        group_id: str,
        limit: str | None = None,
        *thresholds: balance_pb2.CreditThreshold,
        paths: list[str] | None = None,
        request_id: str = "",
        **policy: Any,
    ) -> balance_pb2.BalanceGroup:
        credit_policy = balance_pb2.CreditPolicy(
            credit_limit=eur(limit) if limit is not None else None, thresholds=thresholds, **policy
        )
        response = await self.api.SetCreditLimit(
            pb.SetCreditLimitRequest(
                balance_group_id=group_id,
                credit_policy=credit_policy,
                update_mask=field_mask_pb2.FieldMask(paths=paths or []),
                request_id=request_id,
            ),
            NO_CONTEXT,
        )
        return response.balance_group

    async def pay(self, account_id: uuid.UUID, amount: str, reference: str | None = None) -> pb.RecordPaymentResponse:
        return await self.api.RecordPayment(
            pb.RecordPaymentRequest(
                account_id=str(account_id),
                amount=eur(amount),
                method=payment_pb2.PAYMENT_METHOD_TYPE_BANK_TRANSFER,
                reference=reference or f"pay-{uuid.uuid4().hex}",
            ),
            NO_CONTEXT,
        )

    async def adjust(self, account_id: uuid.UUID, amount: str, **kw: Any) -> pb.CreateAdjustmentResponse:
        return await self.api.CreateAdjustment(
            pb.CreateAdjustmentRequest(
                account_id=str(account_id), amount=eur(amount), reason_code="GOODWILL", actor="agent-7", **kw
            ),
            NO_CONTEXT,
        )

    async def write_off(self, account_id: uuid.UUID, amount: str, source_id: str, **kw: Any) -> pb.WriteOffResponse:
        fields: dict[str, Any] = {
            "account_id": str(account_id),
            "amount": eur(amount),
            "source_type": "bill",
            "source_id": source_id,
            "reason_code": "UNCOLLECTIBLE",
            "actor": "collections",
        }
        fields.update(kw)
        return await self.api.WriteOff(pb.WriteOffRequest(**fields), NO_CONTEXT)

    async def refund(self, account_id: uuid.UUID, amount: str, reference: str, **kw: Any) -> pb.RecordRefundResponse:
        fields: dict[str, Any] = {
            "account_id": str(account_id),
            "amount": eur(amount),
            "reference": reference,
            "actor": "treasury",
        }
        fields.update(kw)
        return await self.api.RecordRefund(pb.RecordRefundRequest(**fields), NO_CONTEXT)

    async def entries(self, account_id: uuid.UUID, **filters: Any) -> list[ledger_pb2.LedgerEntry]:
        found: list[ledger_pb2.LedgerEntry] = []
        token = ""
        while True:
            page = await self.api.ListLedgerEntries(
                pb.ListLedgerEntriesRequest(account_id=str(account_id), page_token=token, **filters), NO_CONTEXT
            )
            found += page.entries
            token = page.next_page_token
            if not token:
                return found


@pytest.fixture
async def db(migrated_database: Any) -> AsyncIterator[BalanceDb]:
    url = await migrated_database("balance_credit", Path(MIGRATIONS))
    engine = create_engine(url, pool_size=8)
    database = BalanceDb(url, engine, session_factory(engine), FixedClock(NOW))
    try:
        yield database
        await database.check_invariant()
    finally:
        await engine.dispose()


def amount_threshold(amount: str) -> balance_pb2.CreditThreshold:
    return balance_pb2.CreditThreshold(amount=eur(amount))


def percent_threshold(percent: str) -> balance_pb2.CreditThreshold:
    return balance_pb2.CreditThreshold(percent=percent)


def summary(published: list[tuple[str, Any]]) -> list[str]:
    """Each credit event in a line: what crossed, which way, and its version."""
    out = []
    for subject, event in published:
        if subject == events.CREDIT_LIMIT_EXCEEDED:
            out.append(f"exceeded {from_money(event.credit_limit)} #{event.credit_state_version}")
        elif subject == events.CREDIT_LIMIT_RESTORED:
            limit = from_money(event.credit_limit) if event.HasField("credit_limit") else None
            out.append(f"restored {limit} #{event.credit_state_version}")
        else:
            way = "up" if event.direction == events_pb2.CREDIT_THRESHOLD_DIRECTION_UP else "down"
            level = from_money(event.threshold_amount) if event.HasField("threshold_amount") else None
            out.append(f"threshold {level} {way} #{event.threshold_state_version}")
    return out


# Credit limits and thresholds.


async def test_charge_batches_and_a_payment_cross_thresholds_and_the_limit_once_each(db: BalanceDb) -> None:
    account_id, group_id = await db.new_account()
    shown = await db.set_limit(group_id, "100.00", amount_threshold("50.00"), percent_threshold("80"))
    assert (from_money(shown.credit_limit), from_money(shown.available_credit)) == (D(100), D(100))
    assert [t.WhichOneof("level") for t in shown.credit_policy.thresholds] == ["amount", "percent"]
    assert not shown.credit_limit_exceeded and await db.published(*CREDIT_SUBJECTS) == []

    await db.charge(account_id, "30.00")
    await db.charge(account_id, "25.00")
    await db.charge(account_id, "10.00", "10.00", "10.00")  # one batch: 85.00, crossing 80 once
    assert summary(await db.published(*CREDIT_SUBJECTS)) == ["threshold 50 up #1", "threshold 80 up #2"]
    await db.charge(account_id, "20.00")
    await db.charge(account_id, "5.00")
    group = await db.group(group_id)
    assert group.credit_limit_exceeded and from_money(group.available_credit) == 0
    assert group.credit_state_version == 1

    paid = await db.pay(account_id, "40.00")
    published = await db.published(*CREDIT_SUBJECTS)
    assert summary(published) == [
        "threshold 50 up #1",
        "threshold 80 up #2",
        "exceeded 100 #1",
        "restored 100 #2",
        "threshold 80 down #3",
    ]
    _, exceeded = published[2]
    assert (exceeded.balance_group.balance_group_id, from_money(exceeded.balance_group.balance)) == (group_id, D(105))
    _, restored = published[3]
    assert from_money(restored.balance_group.balance) == D(70) and not restored.balance_group.credit_limit_exceeded
    async with db.engine.connect() as conn:
        subjects = [row.subject for row in await conn.execute(select(outbox.c.subject).order_by(outbox.c.seq))]
    assert subjects.index(events.PAYMENT_RECORDED) < subjects.index(events.CREDIT_LIMIT_RESTORED), (
        "the payment, then what it crossed"
    )
    assert paid.entry.entry_id
    (answer,) = (await db.api.GetBalance(pb.GetBalanceRequest(account_id=str(account_id)), NO_CONTEXT)).balance_groups
    assert (from_money(answer.credit_limit), from_money(answer.available_credit)) == (D(100), D(30))


async def test_every_kind_of_balance_movement_is_assessed_in_its_transaction(db: BalanceDb) -> None:
    """Charges, payments, reversals, write-offs, tax, credit notes, transfers and adjustments take
    the group over its limit and back, one crossing each."""
    account_id, group_id = await db.new_account()
    project = await db.api.CreateBalanceGroup(
        pb.CreateBalanceGroupRequest(account_id=str(account_id), name="project"), NO_CONTEXT
    )
    project_id = project.balance_group.balance_group_id
    await db.set_limit(group_id, "10.00")
    bill_id, note_id = uuid.uuid4(), uuid.uuid4()

    await db.charge(account_id, "20.00")  # 20
    paid = await db.pay(account_id, "15.00")  # 5
    await db.api.ReversePayment(
        pb.ReversePaymentRequest(payment_id=paid.payment.payment_id, reason="returned"), NO_CONTEXT
    )  # 20
    await db.write_off(account_id, "15.00", str(bill_id))  # 5
    await db.deliver("EVOLUTIVO_BILLING", bill_issued(account_id, bill_id, tax="10.00"))  # 15
    await db.deliver("EVOLUTIVO_BILLING", credit_note_issued(account_id, note_id, bill_id, total="10.00"))  # 5
    await db.adjust(account_id, "10.00", balance_group_id=project_id)
    await db.api.TransferBalance(
        pb.TransferBalanceRequest(
            account_id=str(account_id),
            from_balance_group_id=project_id,
            to_balance_group_id=group_id,
            amount=eur("10.00"),
            actor="rebalancer",
        ),
        NO_CONTEXT,
    )  # 15
    await db.adjust(account_id, "-10.00")  # 5
    assert summary(await db.published(*CREDIT_SUBJECTS)) == [
        f"{'exceeded' if n % 2 else 'restored'} 10 #{n}" for n in range(1, 9)
    ]
    group = await db.group(group_id)
    assert (from_money(group.balance), group.credit_state_version) == (D(5), 8)
    assert (await db.group(project_id)).credit_state_version == 0, "no limit, nothing assessed to publish"


async def test_a_policy_change_crosses_at_once_and_its_retry_changes_nothing(db: BalanceDb) -> None:
    account_id, group_id = await db.new_account()
    await db.charge(account_id, "60.00")
    request_id = str(uuid.uuid4())
    first = await db.set_limit(group_id, "50.00", percent_threshold("100"), request_id=request_id)
    assert first.credit_limit_exceeded and first.credit_state_version == 1
    again = await db.set_limit(group_id, "50.00", percent_threshold("100"), request_id=request_id)
    assert again == first
    assert summary(await db.published(*CREDIT_SUBJECTS)) == ["threshold 50 up #1", "exceeded 50 #1"]

    # Only the limit, by update mask: the threshold stays (100% of no limit: no level, so down).
    cleared = await db.set_limit(group_id, None, paths=["credit_limit"])
    assert not cleared.HasField("credit_limit") and not cleared.HasField("available_credit")
    assert [t.percent for t in cleared.credit_policy.thresholds] == ["100"]
    assert summary(await db.published(*CREDIT_SUBJECTS))[2:] == ["restored None #2", "threshold None down #2"]
    raised = await db.set_limit(group_id, "80.00", paths=["credit_limit"])
    assert from_money(raised.available_credit) == D(20)
    assert len(await db.published(*CREDIT_SUBJECTS)) == 4, "60 of 80: under the limit and its 100%"


@pytest.mark.parametrize(
    ("policy", "paths", "field_name"),
    [
        ({"credit_limit": eur("10.00", "USD")}, [], "credit_policy.credit_limit.currency_code"),
        ({"credit_limit": eur("-1.00")}, [], "credit_policy.credit_limit"),
        ({"temporary_credit_limit": eur("10.00")}, [], "credit_policy.temporary_limit_expire_time"),
        (
            {"temporary_credit_limit": eur("10.00"), "temporary_limit_expire_time": to_timestamp(NOW)},
            [],
            "credit_policy.temporary_limit_expire_time",
        ),
        ({"thresholds": [percent_threshold("120.5.1")]}, [], "credit_policy.thresholds[0].percent"),
        ({"thresholds": [amount_threshold("5.00"), amount_threshold("5")]}, [], "credit_policy.thresholds[1]"),
        ({"credit_limit": eur("10.00")}, ["balance"], "update_mask"),
    ],
)
async def test_a_bad_policy_is_refused_naming_the_field_and_changes_nothing(
    db: BalanceDb, policy: dict[str, Any], paths: list[str], field_name: str
) -> None:
    account_id, group_id = await db.new_account()
    await db.set_limit(group_id, "100.00", amount_threshold("50.00"))
    await db.charge(account_id, "70.00")
    before = await db.snapshot()
    with pytest.raises(InvalidArgument) as refused:
        await db.api.SetCreditLimit(
            pb.SetCreditLimitRequest(
                balance_group_id=group_id,
                credit_policy=balance_pb2.CreditPolicy(**policy),
                update_mask=field_mask_pb2.FieldMask(paths=paths),
                request_id=str(uuid.uuid4()),
            ),
            NO_CONTEXT,
        )
    assert refused.value.field == field_name
    assert await db.snapshot() == before
    with pytest.raises(NotFound):
        await db.set_limit(str(uuid.uuid4()), "1.00")


# Temporary limits.


async def test_an_expired_temporary_limit_is_claimed_once_and_skipped_while_locked(db: BalanceDb) -> None:
    expiry = TemporaryLimitExpiry(db.uow, check_seconds=1, batch_size=1)
    accounts = [await db.new_account() for _ in range(2)]
    expires = NOW + timedelta(days=1)
    for account_id, group_id in accounts:
        shown = await db.set_limit(
            group_id,
            "100.00",
            temporary_credit_limit=eur("300.00"),
            temporary_limit_expire_time=to_timestamp(expires),
        )
        assert from_money(shown.credit_limit) == D(300)
        await db.charge(account_id, "200.00")
    (_, held), (_, free) = accounts
    assert not (await db.group(held)).credit_limit_exceeded
    assert await expiry.catch_up() == 0, "not expired yet"

    db.clock.instant = expires
    lazily = await db.group(held)
    assert lazily.credit_limit_exceeded and from_money(lazily.credit_limit) == D(100), "reads apply it at once"
    assert await db.published(*CREDIT_SUBJECTS) == [], "its event comes with the loop"

    # A transaction holding one group (a booking's commit, a SetCreditLimit): the pass skips it.
    async with db.engine.connect() as conn, conn.begin():
        await conn.execute(
            select(balance_groups.c.balance_group_id)
            .where(balance_groups.c.balance_group_id == uuid.UUID(held))
            .with_for_update(key_share=True)
        )
        assert await expiry.catch_up() == 1
        published = await db.published(*CREDIT_SUBJECTS)
        assert [e.balance_group.balance_group_id for _, e in published] == [free]
    assert await expiry.catch_up() == 1
    assert await expiry.catch_up() == 0, "nothing left: no group is done twice"
    published = await db.published(*CREDIT_SUBJECTS)
    assert summary(published) == ["exceeded 100 #1", "exceeded 100 #1"]
    assert [e.balance_group.balance_group_id for _, e in published] == [free, held]
    after = await db.group(held)
    assert not after.credit_policy.HasField("temporary_credit_limit")
    assert not after.credit_policy.HasField("temporary_limit_expire_time")


async def test_concurrent_expiry_passes_publish_each_expiry_once(db: BalanceDb) -> None:
    expires = NOW + timedelta(hours=1)
    groups = []
    for _ in range(6):
        account_id, group_id = await db.new_account()
        await db.set_limit(
            group_id, "0", temporary_credit_limit=eur("50.00"), temporary_limit_expire_time=to_timestamp(expires)
        )
        await db.charge(account_id, "10.00")
        groups.append(group_id)
    db.clock.instant = expires + timedelta(seconds=1)
    replicas = [TemporaryLimitExpiry(db.uow, check_seconds=1, batch_size=2) for _ in range(3)]
    done = await asyncio.gather(*(r.catch_up() for r in replicas))
    assert sum(done) == 6
    published = await db.published(events.CREDIT_LIMIT_EXCEEDED)
    assert sorted(e.balance_group.balance_group_id for _, e in published) == sorted(groups)


async def test_a_booking_after_the_expiry_publishes_first_and_the_loop_adds_nothing(db: BalanceDb) -> None:
    account_id, group_id = await db.new_account()
    expires = NOW + timedelta(hours=1)
    await db.set_limit(
        group_id, "100.00", temporary_credit_limit=eur("500.00"), temporary_limit_expire_time=to_timestamp(expires)
    )
    await db.charge(account_id, "90.00")
    db.clock.instant = expires
    await db.charge(account_id, "20.00")
    assert summary(await db.published(*CREDIT_SUBJECTS)) == ["exceeded 100 #1"]
    assert await TemporaryLimitExpiry(db.uow, 1, 10).catch_up() == 1
    assert len(await db.published(*CREDIT_SUBJECTS)) == 1


# Write-offs.


async def test_a_write_off_credits_once_per_source(db: BalanceDb) -> None:
    account_id, group_id = await db.new_account()
    await db.charge(account_id, "100.00")
    bill_id = str(uuid.uuid4())
    first = await db.write_off(account_id, "40.00", bill_id, reason="bankrupt", request_id=str(uuid.uuid4()))
    entry = first.entry
    assert (entry.type, from_money(entry.amount), entry.source_type, entry.source_id) == (
        ledger_pb2.LEDGER_ENTRY_TYPE_WRITE_OFF,
        D(-40),
        "bill",
        bill_id,
    )
    assert (entry.reason_code, entry.reason, entry.actor) == ("UNCOLLECTIBLE", "bankrupt", "collections")
    assert await db.write_off(account_id, "40.00", bill_id) == first, "the same source: the first entry"
    (made,) = await db.published(events.WRITE_OFF_MADE)
    assert made[1].entry == entry
    with pytest.raises(InvalidArgument) as refused:
        await db.write_off(account_id, "41.00", bill_id)
    assert (refused.value.field, refused.value.reason) == ("source_id", "WRITE_OFF_SOURCE_REUSED")
    case = await db.write_off(account_id, "10.00", bill_id, source_type="collections_case")
    assert case.entry.source_type == "collections_case", "another source type is another source"
    assert from_money((await db.group(group_id)).balance) == D(50)


async def test_concurrent_write_offs_of_one_source_book_once(db: BalanceDb) -> None:
    account_id, _ = await db.new_account()
    await db.charge(account_id, "100.00")
    source = str(uuid.uuid4())
    answers = await asyncio.gather(*(db.write_off(account_id, "30.00", source) for _ in range(4)))
    assert len({a.entry.entry_id for a in answers}) == 1
    assert len(await db.published(events.WRITE_OFF_MADE)) == 1


# Refunds.


async def test_a_refund_pays_back_credit_once_per_reference_and_never_more_than_the_credit(db: BalanceDb) -> None:
    account_id, group_id = await db.new_account()
    await db.pay(account_id, "50.00")
    first = await db.refund(account_id, "20.00", "PAYOUT-1", reason="overpaid")
    assert (first.entry.type, from_money(first.entry.amount), first.entry.source_type) == (
        ledger_pb2.LEDGER_ENTRY_TYPE_REFUND,
        D(20),
        "refund",
    )
    assert await db.refund(account_id, "20.00", "PAYOUT-1") == first
    with pytest.raises(InvalidArgument) as reused:
        await db.refund(account_id, "25.00", "PAYOUT-1")
    assert (reused.value.field, reused.value.reason) == ("reference", "REFUND_REFERENCE_REUSED")
    before = await db.snapshot()
    with pytest.raises(FailedPrecondition) as refused:
        await db.refund(account_id, "30.01", "PAYOUT-2", request_id=str(uuid.uuid4()))
    assert refused.value.reason == "REFUND_EXCEEDS_CREDIT" and refused.value.metadata["credit"] == "30.00"
    assert await db.snapshot() == before
    (made,) = await db.published(events.REFUND_MADE)
    assert made[1].entry == first.entry
    assert from_money((await db.group(group_id)).balance) == D(-30)


async def test_concurrent_refunds_of_one_credit_pay_it_back_once(db: BalanceDb) -> None:
    account_id, group_id = await db.new_account()
    await db.pay(account_id, "30.00")
    answers = await asyncio.gather(
        *(db.refund(account_id, "30.00", f"PAYOUT-{n}") for n in range(4)), return_exceptions=True
    )
    refunded = [a for a in answers if isinstance(a, pb.RecordRefundResponse)]
    refused = [a for a in answers if isinstance(a, ServiceError)]
    assert len(refunded) == 1 and len(refused) == 3
    assert all(e.reason == "REFUND_EXCEEDS_CREDIT" for e in refused)
    assert from_money((await db.group(group_id)).balance) == 0


# Tax and credit notes from billing.


def bill_issued(account_id: uuid.UUID, bill_id: uuid.UUID, tax: str, currency_code: str = "EUR") -> FakeMsg:
    bill = bill_pb2.Bill(
        bill_id=str(bill_id),
        account_id=str(account_id),
        bill_number="F-2031-000042",
        currency_code=currency_code,
        tax_total=eur(tax, currency_code),
        issue_time=to_timestamp(NOW - timedelta(hours=2)),
    )
    return message("evolutivo.billing.v1.bill.issued", billing_events.BillIssued(bill=bill), NOW)


def credit_note_issued(account_id: uuid.UUID, note_id: uuid.UUID, bill_id: uuid.UUID, total: str) -> FakeMsg:
    note = credit_note_pb2.CreditNote(
        credit_note_id=str(note_id),
        bill_id=str(bill_id),
        account_id=str(account_id),
        credit_note_number="CN-2031-000007",
        currency_code="EUR",
        total=eur(total),
        issue_time=to_timestamp(NOW - timedelta(hours=1)),
    )
    return message("evolutivo.billing.v1.credit_note.issued", billing_events.CreditNoteIssued(credit_note=note), NOW)


async def test_a_bill_paid_with_its_tax_leaves_the_balance_at_zero(db: BalanceDb) -> None:
    account_id, group_id = await db.new_account()
    await db.charge(account_id, "60.00", "40.00")  # booked net of tax
    bill_id = uuid.uuid4()
    issued = bill_issued(account_id, bill_id, tax="21.00")
    await db.deliver("EVOLUTIVO_BILLING", issued)
    await db.deliver("EVOLUTIVO_BILLING", issued.again(), bill_issued(account_id, bill_id, tax="21.00"))
    (tax,) = await db.entries(account_id, types=[ledger_pb2.LEDGER_ENTRY_TYPE_TAX])
    assert (from_money(tax.amount), tax.source_type, tax.source_id, tax.actor) == (
        D(21),
        "bill",
        str(bill_id),
        "billing",
    )
    assert tax.effective_time.ToDatetime(tzinfo=UTC) == NOW - timedelta(hours=2)
    assert tax.reason == "tax of bill F-2031-000042"
    await db.pay(account_id, "121.00")
    assert from_money((await db.group(group_id)).balance) == 0

    untaxed = bill_issued(account_id, uuid.uuid4(), tax="0")
    await db.deliver("EVOLUTIVO_BILLING", untaxed)
    assert untaxed.acked and len(await db.entries(account_id, types=[ledger_pb2.LEDGER_ENTRY_TYPE_TAX])) == 1


async def test_a_credit_note_credits_its_total_once(db: BalanceDb) -> None:
    account_id, group_id = await db.new_account()
    await db.charge(account_id, "100.00")
    note_id, bill_id = uuid.uuid4(), uuid.uuid4()
    issued = credit_note_issued(account_id, note_id, bill_id, total="12.10")
    await db.deliver("EVOLUTIVO_BILLING", issued, issued.again())
    await db.deliver("EVOLUTIVO_BILLING", credit_note_issued(account_id, note_id, bill_id, total="12.10"))
    (note,) = await db.entries(account_id, source_type="credit_note")
    assert (note.type, from_money(note.amount), note.source_id) == (
        ledger_pb2.LEDGER_ENTRY_TYPE_CREDIT_NOTE,
        D("-12.10"),
        str(note_id),
    )
    assert from_money((await db.group(group_id)).balance) == D("87.90")


async def test_a_bill_in_another_currency_is_retried_and_books_nothing(db: BalanceDb) -> None:
    account_id, _ = await db.new_account()
    before = await db.snapshot()
    wrong = bill_issued(account_id, uuid.uuid4(), tax="5.00", currency_code="USD")
    await db.deliver("EVOLUTIVO_BILLING", wrong)
    assert wrong.naked and not wrong.acked
    assert await db.snapshot() == before


async def test_tax_for_an_account_balance_has_not_heard_of_opens_its_default_group(db: BalanceDb) -> None:
    account_id = uuid.uuid4()
    await db.deliver("EVOLUTIVO_BILLING", bill_issued(account_id, uuid.uuid4(), tax="3.00"))
    assert from_money((await db.group_of(account_id)).balance) == D(3)


# The ledger read.


async def test_the_ledger_filters_by_the_new_types_and_refuses_what_cannot_match(db: BalanceDb) -> None:
    account_id, group_id = await db.new_account()
    other_account, other_group = await db.new_account()
    bill_id = uuid.uuid4()
    await db.charge(account_id, "50.00")
    await db.deliver("EVOLUTIVO_BILLING", bill_issued(account_id, bill_id, tax="10.50"))
    await db.write_off(account_id, "60.50", str(bill_id))
    by_bill = await db.entries(account_id, source_type="bill", source_id=str(bill_id))
    assert [e.type for e in by_bill] == [ledger_pb2.LEDGER_ENTRY_TYPE_WRITE_OFF, ledger_pb2.LEDGER_ENTRY_TYPE_TAX], (
        "newest first: the write-off is effective now, the tax at the bill's issue"
    )
    only_tax = await db.entries(account_id, types=[ledger_pb2.LEDGER_ENTRY_TYPE_TAX], balance_group_id=group_id)
    assert [e.source_id for e in only_tax] == [str(bill_id)]
    with pytest.raises(InvalidArgument) as unknown:
        await db.entries(account_id, source_type="invoice")
    assert unknown.value.field == "source_type"
    with pytest.raises(InvalidArgument) as foreign:
        await db.entries(account_id, balance_group_id=other_group)
    assert foreign.value.field == "balance_group_id"
    assert other_account != account_id


# Refusals change nothing.


async def refusal_cases(db: BalanceDb) -> list[tuple[str, Any, str]]:
    account_id, group_id = await db.new_account()
    other_account, other_group = await db.new_account()
    await db.charge(account_id, "80.00")
    await db.pay(other_account, "30.00")
    await db.set_limit(group_id, "50.00", percent_threshold("50"))
    base = {"account_id": str(account_id), "request_id": str(uuid.uuid4())}
    pay: dict[str, Any] = {**base, "method": payment_pb2.PAYMENT_METHOD_TYPE_CARD, "reference": "R-1"}
    adjust = {**base, "amount": eur("5.00"), "reason_code": "GOODWILL", "actor": "agent"}
    write_off = {**base, "source_type": "bill", "source_id": "b-1", "reason_code": "BAD_DEBT", "actor": "agent"}
    refund = {**base, "account_id": str(other_account), "reference": "P-1", "actor": "agent"}
    transfer = {**base, "from_balance_group_id": group_id, "amount": eur("1.00"), "actor": "agent"}
    return [
        ("RecordPayment", pb.RecordPaymentRequest(**pay, amount=eur("10.00", "USD")), "amount.currency_code"),
        ("RecordPayment", pb.RecordPaymentRequest(**pay, amount=eur("0")), "amount"),
        ("RecordPayment", pb.RecordPaymentRequest(**pay, amount=eur("-10.00")), "amount"),
        ("CreateAdjustment", pb.CreateAdjustmentRequest(**{**adjust, "reason_code": ""}), "reason_code"),
        ("CreateAdjustment", pb.CreateAdjustmentRequest(**{**adjust, "amount": eur("0")}), "amount"),
        (
            "CreateAdjustment",
            pb.CreateAdjustmentRequest(**{**adjust, "amount": eur("5", "GBP")}),
            "amount.currency_code",
        ),
        (
            "TransferBalance",
            pb.TransferBalanceRequest(**transfer, to_balance_group_id=other_group),
            "to_balance_group_id",
        ),
        ("WriteOff", pb.WriteOffRequest(**{**write_off, "source_id": ""}, amount=eur("5.00")), "source_id"),
        ("WriteOff", pb.WriteOffRequest(**{**write_off, "source_type": ""}, amount=eur("5.00")), "source_type"),
        ("WriteOff", pb.WriteOffRequest(**write_off, amount=eur("-5.00")), "amount"),
        ("WriteOff", pb.WriteOffRequest(**write_off, amount=eur("5.00", "USD")), "amount.currency_code"),
        ("RecordRefund", pb.RecordRefundRequest(**refund, amount=eur("0")), "amount"),
        ("RecordRefund", pb.RecordRefundRequest(**refund, amount=eur("5.00", "USD")), "amount.currency_code"),
        ("RecordRefund", pb.RecordRefundRequest(**{**refund, "reference": ""}, amount=eur("5.00")), "reference"),
    ]


async def test_refused_calls_name_the_field_and_change_nothing(db: BalanceDb) -> None:
    cases = await refusal_cases(db)
    before = await db.snapshot()
    for method, request, field_name in cases:
        with pytest.raises(InvalidArgument) as refused:
            await getattr(db.api, method)(request, NO_CONTEXT)
        assert refused.value.field == field_name, (method, field_name, refused.value)
        assert await db.snapshot() == before, f"{method} refused on {field_name} changed something"
