"""Collections against a real, migrated billing database: bills made by the real consumer and bill
run go overdue; the processor opens a case, runs reminder, late fee (on the next bill), promise
made and broken, suspension, closes the case on payment and reinstates; two processors racing
over many cases run each action once; a crash after a call is redone with the same request id
once its lease runs out; exempt accounts never enter; scenarios over the RPCs; aging.

Balance and customer are stood in for by a gateway that keeps the callees' contract (one effect
per request id); the calls themselves are exercised over real gRPC in tests/e2e/test_collections.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from alembic import command
from evolutivo.balance.v1 import events_pb2 as balance_events
from evolutivo.balance.v1 import payment_pb2
from evolutivo.billing.v1 import collections_events_pb2 as cev
from evolutivo.billing.v1 import collections_pb2 as cpb
from evolutivo.billing.v1 import collections_service_pb2 as pb
from evolutivo.charging.v1 import events_pb2 as charging_events
from evolutivo.charging.v1 import usage_pb2
from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_billing.adapters import events
from evolutivo_billing.adapters.collections_tables import (
    collections_actions,
    collections_cases,
    collections_request_log,
)
from evolutivo_billing.adapters.orm import bill_items, bills, inbox, metadata, outbox
from evolutivo_billing.domain.bills import TaxRates
from evolutivo_billing.entrypoints.app import MIGRATIONS
from evolutivo_billing.entrypoints.collections_processor import CollectionsProcessor
from evolutivo_billing.entrypoints.consumers import subscriptions
from evolutivo_billing.entrypoints.cycle_closer import CycleCloser
from evolutivo_billing.entrypoints.grpc_collections import CollectionsServicer
from evolutivo_billing.service_layer import handlers
from evolutivo_billing.service_layer.bills import BillPolicy
from evolutivo_billing.service_layer.collections import CallRefused, CollectionsUnitOfWork, ProcessorPolicy
from evolutivo_runtime.db import plain_url
from evolutivo_runtime.errors import Aborted, AlreadyExists, InvalidArgument
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.migrations import alembic_config
from evolutivo_runtime.money import from_money, to_money
from evolutivo_runtime.timestamps import to_date, to_timestamp
from google.protobuf.message import Message
from sqlalchemy import select
from support.databases import EmptyDatabase, MigratedDatabase, ServiceDb
from support.jetstream import consumer_for, message, process

MADRID = ZoneInfo("Europe/Madrid")
NO_CONTEXT: Any = None
LEASE = timedelta(minutes=2)
POLICY = ProcessorPolicy(batch_size=3, lease=LEASE, retry_delay=timedelta(minutes=1), max_attempts=5)
BILLS = BillPolicy(TaxRates({"standard": Decimal("0.21"), "exempt": Decimal("0")}))


def madrid(day: date, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=MADRID).astimezone(UTC)


NOW = madrid(date(2031, 5, 10), 12)
# Billing day 15, due 5 days after issue: the first bill (10-15 May) is issued 15 May, due 20 May,
# so day N past due is 20 May + N (day 1 = 21 May, the bill's first day overdue).
DUE = date(2031, 5, 20)


def day(n: int, hour: int = 9) -> datetime:
    return madrid(DUE + timedelta(days=n), hour)


class CrashAfterCall(Exception):
    """The process dies right after the callee applied the call, before the outcome is recorded."""


@dataclass
class Callees:
    """Balance's and customer's side of the calls: one effect per request id, a retry gets the first
    result back (their contract); `crash_on` makes the caller die after the effect of that call."""

    calls: list[tuple[str, uuid.UUID]] = field(default_factory=list)
    effects: dict[uuid.UUID, tuple[str, uuid.UUID, Decimal | None]] = field(default_factory=dict)
    suspended: set[uuid.UUID] = field(default_factory=set)
    crash_on: str = ""

    def _apply(self, kind: str, account_id: uuid.UUID, amount: Decimal | None, request_id: uuid.UUID) -> str:
        self.calls.append((kind, request_id))
        first = request_id not in self.effects
        if first:
            if kind == "suspend" and account_id in self.suspended:
                raise CallRefused("customer: FAILED_PRECONDITION: only an active account can be suspended")
            self.effects[request_id] = (kind, account_id, amount)
            if kind == "suspend":
                self.suspended.add(account_id)
            if kind == "reinstate":
                self.suspended.discard(account_id)
        if self.crash_on == kind:
            self.crash_on = ""
            raise CrashAfterCall(kind)
        return f"entry-{request_id}"

    def of(self, kind: str) -> list[tuple[str, uuid.UUID, Decimal | None]]:
        return [e for e in self.effects.values() if e[0] == kind]

    async def post_late_fee(
        self, account_id: uuid.UUID, amount: Decimal, currency_code: str, reason: str, request_id: uuid.UUID
    ) -> str:
        return self._apply("late_fee", account_id, amount, request_id)

    async def write_off(
        self,
        account_id: uuid.UUID,
        amount: Decimal,
        currency_code: str,
        case_id: uuid.UUID,
        reason: str,
        request_id: uuid.UUID,
    ) -> str:
        return self._apply("write_off", account_id, amount, request_id)

    async def suspend(self, account_id: uuid.UUID, case_id: uuid.UUID, reason: str, request_id: uuid.UUID) -> str:
        return self._apply("suspend", account_id, None, request_id)

    async def reinstate(self, account_id: uuid.UUID, case_id: uuid.UUID, reason: str, request_id: uuid.UUID) -> str:
        return self._apply("reinstate", account_id, None, request_id)


class CollectionsDb(ServiceDb):
    def uow(self) -> CollectionsUnitOfWork:
        return CollectionsUnitOfWork(self.sessions, outbox, self.clock, events.encode, collections_request_log)

    def processor(self, callees: Callees) -> CollectionsProcessor:
        return CollectionsProcessor(self.uow, callees, check_seconds=0.05, policy=POLICY)

    async def at(self, instant: datetime) -> None:
        """Moves the clock and lets the bill run and the overdue marker catch up."""
        self.clock.instant = instant
        closer = CycleCloser(self.uow, timedelta(0), check_seconds=0.05, batch_size=10, policy=BILLS)
        await closer.catch_up()
        await closer.mark_overdue()

    async def deliver(self, stream: str, subject: str, event: Message) -> None:
        consumer = consumer_for(subscriptions(), stream_name(stream), self.uow, inbox)
        msg = message(subject, event, self.clock.now())
        await process(consumer, msg)
        assert msg.acked, f"{subject} applies"

    async def published(self, subject: str, kind: type[Message]) -> list[Any]:
        rows = await self.rows(select(outbox.c.payload).where(outbox.c.subject == subject).order_by(outbox.c.seq))
        return [kind.FromString(r.payload) for r in rows]

    async def actions(self, account_id: uuid.UUID) -> list[tuple[str, str, int, str]]:
        a, c = collections_actions, collections_cases
        query = (
            select(a.c.action_type, a.c.state, a.c.attempts, a.c.outcome)
            .join(c, c.c.case_id == a.c.case_id)
            .where(c.c.account_id == account_id)
            .order_by(c.c.open_time, a.c.sequence)
        )
        return [(r.action_type, r.state, r.attempts, r.outcome) for r in await self.rows(query)]

    async def cases(self, account_id: uuid.UUID) -> list[cpb.CollectionsCase]:
        found = await CollectionsServicer(self.uow).ListCollectionsCases(
            pb.ListCollectionsCasesRequest(account_id=str(account_id)), NO_CONTEXT
        )
        full = []
        for case in found.collections_cases:
            got = await CollectionsServicer(self.uow).GetCollectionsCase(
                pb.GetCollectionsCaseRequest(case_id=case.case_id), NO_CONTEXT
            )
            full.append(got.collections_case)
        return full


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[CollectionsDb]:
    url = await migrated_database("billing", MIGRATIONS)
    async with CollectionsDb.open(url, NOW, pool_size=10) as opened:
        yield opened


def money(amount: str) -> Any:
    return to_money(Decimal(amount), "EUR")


STEPS = [
    cpb.CollectionsStep(days_past_due=3, action=cpb.COLLECTIONS_ACTION_TYPE_REMINDER_EMAIL, template="gentle"),
    cpb.CollectionsStep(
        days_past_due=10,
        action=cpb.COLLECTIONS_ACTION_TYPE_LATE_FEE,
        late_fee=cpb.LateFeeRule(fixed_amounts=[money("5.00")]),
    ),
    cpb.CollectionsStep(days_past_due=20, action=cpb.COLLECTIONS_ACTION_TYPE_SUSPEND),
    cpb.CollectionsStep(days_past_due=90, action=cpb.COLLECTIONS_ACTION_TYPE_WRITE_OFF),
]


async def create_scenario(db: CollectionsDb, name: str = "Standard", **criteria: Any) -> cpb.CollectionsScenario:
    created = await CollectionsServicer(db.uow).CreateCollectionsScenario(
        pb.CreateCollectionsScenarioRequest(
            scenario=cpb.CollectionsScenario(
                display_name=name, entry_criteria=cpb.EntryCriteria(**criteria), steps=STEPS
            ),
            request_id=str(uuid.uuid4()),
        ),
        NO_CONTEXT,
    )
    return created.scenario


async def account_with_overdue_bill(db: CollectionsDb, amount: str = "10.00", exempt: bool = False) -> uuid.UUID:
    """An account created at NOW (Madrid, billing day 15, 5 days to pay) with one charge of
    `amount` + 21% tax, its bill issued 15 May and due 20 May. The clock is left at NOW."""
    account_id = uuid.uuid4()
    account = account_pb2.Account(
        account_id=str(account_id),
        type=account_pb2.ACCOUNT_TYPE_BUSINESS,
        display_name="Cobros SL",
        currency_code="EUR",
        time_zone="Europe/Madrid",
        status=account_pb2.ACCOUNT_STATUS_ACTIVE,
        billing_profile=account_pb2.BillingProfile(
            bill_cycle_day=15,
            frequency=account_pb2.BILLING_FREQUENCY_MONTHLY,
            payment_terms_days=5,
            collections_exempt=exempt,
        ),
        create_time=to_timestamp(NOW),
    )
    db.clock.instant = NOW
    await db.deliver(
        "customer", "evolutivo.customer.v1.account.created", customer_events.AccountCreated(account=account)
    )
    async with db.uow() as uow:
        unit = await uow.bill_units.for_account(account_id)
        assert unit is not None
        cycle = await uow.bill_cycles.open_for_unit(unit.bill_unit_id)
        assert cycle is not None
    rated = usage_pb2.RatedCharge(
        charge_id=str(uuid.uuid4()),
        account_id=str(account_id),
        kind=usage_pb2.CHARGE_KIND_USAGE,
        event_id=f"evt-{uuid.uuid4().hex[:10]}",
        purchase_id=str(uuid.uuid4()),
        charge_offer_code="api_pro",
        charge_offer_version=1,
        charge_code="api_calls",
        tax_code="standard",
        quantity="1",
        amount=money(amount),
        unrounded_amount=amount,
        event_time=to_timestamp(NOW),
        rate_time=to_timestamp(NOW),
        bill_cycle_id=str(cycle.bill_cycle_id),
    )
    await db.deliver(
        "charging",
        "evolutivo.charging.v1.charges.created",
        charging_events.ChargesCreated(charges=[rated], currency_code="EUR"),
    )
    return account_id


async def pay(db: CollectionsDb, account_id: uuid.UUID, amount: str) -> None:
    payment = payment_pb2.Payment(
        payment_id=str(uuid.uuid4()),
        account_id=str(account_id),
        balance_group_id=str(uuid.uuid4()),
        amount=money(amount),
        method=payment_pb2.PAYMENT_METHOD_TYPE_BANK_TRANSFER,
        reference=f"ref-{uuid.uuid4().hex[:8]}",
        received_time=to_timestamp(db.clock.now()),
        state=payment_pb2.PAYMENT_STATE_RECORDED,
    )
    await db.deliver(
        "balance", "evolutivo.balance.v1.payment.recorded", balance_events.PaymentRecorded(payment=payment)
    )


async def test_a_case_runs_its_steps_and_closes_when_paid(db: CollectionsDb) -> None:
    await create_scenario(db)
    account_id = await account_with_overdue_bill(db)
    callees = Callees()
    processor = db.processor(callees)

    await db.at(day(0, 23))  # due today: not overdue yet
    await processor.check()
    assert await db.cases(account_id) == []

    await db.at(day(1))
    await processor.check()
    (case,) = await db.cases(account_id)
    assert case.state == cpb.COLLECTIONS_CASE_STATE_OPEN
    assert (case.past_due_since, from_money(case.overdue_amount)) == (to_date(DUE), Decimal("12.10"))
    assert [a.state for a in case.actions] == [cpb.COLLECTIONS_ACTION_STATE_SCHEDULED] * 4
    assert len(await db.published("evolutivo.billing.v1.collections_case.opened", cev.CollectionsCaseOpened)) == 1

    # Day 3: the reminder, once however often the processor looks.
    await db.at(day(3))
    await processor.check()
    await processor.check()
    (notice,) = await db.published("evolutivo.billing.v1.collections_notice.requested", cev.CollectionsNoticeRequested)
    assert (notice.channel, notice.template, notice.days_past_due) == (
        cev.COLLECTIONS_NOTICE_CHANNEL_EMAIL,
        "gentle",
        3,
    )
    assert from_money(notice.overdue_amount) == Decimal("12.10")
    state = (await handlers.get_billing_summary(db.uow(), account_id)).collections
    assert (state.in_collections, state.stage, state.days_past_due, state.overdue_amount) == (
        True,
        "reminder_email",
        3,
        Decimal("12.10"),
    )

    # Day 10: the late fee, posted in balance and billed as an item of the open cycle.
    await db.at(day(10))
    await processor.check()
    ((_, fee_account, fee),) = callees.of("late_fee")
    assert (fee_account, fee) == (account_id, Decimal("5.00"))
    (item,) = await db.rows(select(bill_items).where(bill_items.c.kind == "late_fee"))
    assert (item.account_id, item.amount, item.charge_code, item.tax_code) == (
        account_id,
        Decimal("5"),
        "late_fee",
        "exempt",
    )

    # Day 12: a promise to pay by day 18 holds dunning; missed, it breaks and day 20 suspends.
    await db.at(day(12))
    (case,) = await db.cases(account_id)
    promised = await CollectionsServicer(db.uow).CreatePromiseToPay(
        pb.CreatePromiseToPayRequest(
            case_id=case.case_id,
            promise=cpb.PromiseToPay(
                instalments=[cpb.PromiseInstalment(amount=money("12.10"), due_date=to_date(DUE + timedelta(days=18)))],
                actor="agent-7",
            ),
            request_id=str(uuid.uuid4()),
        ),
        NO_CONTEXT,
    )
    assert promised.collections_case.state == cpb.COLLECTIONS_CASE_STATE_PROMISE_TO_PAY
    await db.at(day(18, 23))
    await processor.check()
    assert callees.of("suspend") == []
    await db.at(day(19, 0) + timedelta(minutes=5))
    await processor.check()
    (broken,) = await db.published("evolutivo.billing.v1.promise_to_pay.broken", cev.PromiseToPayBroken)
    assert broken.promise.state == cpb.PROMISE_TO_PAY_STATE_BROKEN
    assert callees.of("suspend") == []
    await db.at(day(20))
    await processor.check()
    assert callees.suspended == {account_id}
    assert (
        len(await db.published("evolutivo.billing.v1.account_suspension.requested", cev.AccountSuspensionRequested))
        == 1
    )

    # The next bill (issued 15 June, day 26) carries the late fee.
    await db.at(madrid(date(2031, 6, 15), 0, 1))
    newest = (await db.rows(select(bills).where(bills.c.account_id == account_id).order_by(bills.c.issue_date.desc())))[
        0
    ]
    assert (newest.issue_date, newest.total) == (date(2031, 6, 15), Decimal("5"))

    # Paid: the case closes in the payment's transaction; the suspension is undone by the next check.
    await pay(db, account_id, "12.10")
    (case,) = await db.cases(account_id)
    assert (case.state, case.close_reason) == (cpb.COLLECTIONS_CASE_STATE_CLOSED, cpb.CASE_CLOSE_REASON_PAID)
    await processor.check()
    assert callees.suspended == set()
    assert [(t, s) for t, s, _, _ in await db.actions(account_id)] == [
        ("reminder_email", "done"),
        ("late_fee", "done"),
        ("suspend", "done"),
        ("write_off", "cancelled"),
        ("reinstate", "done"),
    ]
    assert len(await db.published("evolutivo.billing.v1.collections_case.closed", cev.CollectionsCaseClosed)) == 1
    assert not (await handlers.get_billing_summary(db.uow(), account_id)).collections.in_collections
    # Every call once.
    assert sorted(k for k, _ in callees.calls) == ["late_fee", "reinstate", "suspend"]


async def test_two_processors_racing_run_each_action_once(db: CollectionsDb) -> None:
    await create_scenario(db)
    accounts = [await account_with_overdue_bill(db) for _ in range(5)]
    callees = Callees()
    # Day 21: the reminder, the late fee and the suspension are all due for every account.
    await db.at(day(21))
    await asyncio.gather(db.processor(callees).check(), db.processor(callees).check())
    await asyncio.gather(db.processor(callees).check(), db.processor(callees).check())
    for account_id in accounts:
        assert [(t, s) for t, s, _, _ in await db.actions(account_id)] == [
            ("reminder_email", "done"),
            ("late_fee", "done"),
            ("suspend", "done"),
            ("write_off", "scheduled"),
        ]
    assert len(callees.calls) == 10, "one call per late fee and per suspension"
    assert len({r for _, r in callees.calls}) == 10
    assert await db.count(collections_cases) == 5
    executed = await db.published("evolutivo.billing.v1.collections_action.executed", cev.CollectionsActionExecuted)
    assert len(executed) == 15
    assert len(await db.rows(select(bill_items).where(bill_items.c.kind == "late_fee"))) == 5


async def test_a_crash_after_the_call_is_redone_with_the_same_request_id(db: CollectionsDb) -> None:
    await create_scenario(db)
    account_id = await account_with_overdue_bill(db)
    callees = Callees(crash_on="late_fee")
    await db.at(day(10))
    with pytest.raises(CrashAfterCall):
        await db.processor(callees).check()
    assert [(t, s, n) for t, s, n, _ in await db.actions(account_id)][:2] == [
        ("reminder_email", "done", 0),
        ("late_fee", "executing", 1),
    ]
    # Rerun at once: the call is still someone's (its lease runs), nothing is called again.
    await db.processor(callees).check()
    assert len(callees.calls) == 1
    # Past the lease: called again with the same request id, applied once, recorded once.
    db.clock.instant += LEASE
    await db.processor(callees).check()
    assert [k for k, _ in callees.calls] == ["late_fee", "late_fee"]
    assert callees.calls[0][1] == callees.calls[1][1]
    assert len(callees.of("late_fee")) == 1
    assert (await db.actions(account_id))[1][:3] == ("late_fee", "done", 2)
    assert len(await db.rows(select(bill_items).where(bill_items.c.kind == "late_fee"))) == 1


async def test_write_off_closes_the_case_and_the_bills_are_written_off(db: CollectionsDb) -> None:
    await create_scenario(db)
    account_id = await account_with_overdue_bill(db)
    callees = Callees(suspended=set())
    await db.at(day(95))
    processor = db.processor(callees)
    await processor.check()
    await processor.check()
    ((_, _, amount),) = callees.of("write_off")
    # The clock jumped: every step ran on day 95, in order; the late fee of that day waits for the
    # next bill, only the overdue bill (12.10) is written off.
    assert amount == Decimal("12.10")
    assert [(t, s) for t, s, _, _ in await db.actions(account_id)][:4] == [
        ("reminder_email", "done"),
        ("late_fee", "done"),
        ("suspend", "done"),
        ("write_off", "done"),
    ]
    statuses = {r.status for r in await db.rows(select(bills.c.status).where(bills.c.account_id == account_id))}
    assert "written_off" in statuses and "overdue" not in statuses
    (case,) = await db.cases(account_id)
    assert (case.state, case.close_reason) == (cpb.COLLECTIONS_CASE_STATE_CLOSED, cpb.CASE_CLOSE_REASON_WRITTEN_OFF)
    assert [t for t, s, _, _ in await db.actions(account_id)][-1] == "reinstate"
    assert callees.suspended == set()


async def test_exempt_accounts_never_enter(db: CollectionsDb) -> None:
    await create_scenario(db)
    exempt = await account_with_overdue_bill(db, exempt=True)
    await db.at(day(30))
    await db.processor(Callees()).check()
    assert await db.cases(exempt) == []


async def test_entry_criteria_and_a_scenario_created_later(db: CollectionsDb) -> None:
    await create_scenario(db, "Big debts", min_overdue_amounts=[money("100.00")])
    account_id = await account_with_overdue_bill(db)
    processor = db.processor(Callees())
    await db.at(day(2))
    await processor.check()
    assert await db.cases(account_id) == []
    # A new scenario makes the unit be looked at again at once.
    await create_scenario(db, "Any debt", min_days_past_due=2)
    await processor.check()
    (case,) = await db.cases(account_id)
    assert case.scenario_display_name == "Any debt"


async def test_scenarios_over_the_rpcs(db: CollectionsDb) -> None:
    api = CollectionsServicer(db.uow)
    request = pb.CreateCollectionsScenarioRequest(
        scenario=cpb.CollectionsScenario(display_name="Default", steps=STEPS[:1]), request_id=str(uuid.uuid4())
    )
    first = await api.CreateCollectionsScenario(request, NO_CONTEXT)
    assert (await api.CreateCollectionsScenario(request, NO_CONTEXT)).scenario.scenario_id == first.scenario.scenario_id
    with pytest.raises(AlreadyExists):
        await api.CreateCollectionsScenario(
            pb.CreateCollectionsScenarioRequest(scenario=cpb.CollectionsScenario(display_name="Default", steps=STEPS)),
            NO_CONTEXT,
        )
    bad = cpb.CollectionsScenario(
        display_name="Bad",
        steps=[cpb.CollectionsStep(days_past_due=3, action=cpb.COLLECTIONS_ACTION_TYPE_LATE_FEE)],
    )
    with pytest.raises(InvalidArgument) as caught:
        await api.CreateCollectionsScenario(pb.CreateCollectionsScenarioRequest(scenario=bad), NO_CONTEXT)
    assert caught.value.field == "scenario.steps[0].late_fee"
    listed = await api.ListCollectionsScenarios(pb.ListCollectionsScenariosRequest(), NO_CONTEXT)
    assert [s.display_name for s in listed.scenarios] == ["Default"]

    changed = cpb.CollectionsScenario()
    changed.CopyFrom(first.scenario)
    changed.steps.extend(STEPS[1:])
    updated = await api.UpdateCollectionsScenario(pb.UpdateCollectionsScenarioRequest(scenario=changed), NO_CONTEXT)
    assert len(updated.scenario.steps) == 4 and updated.scenario.etag != first.scenario.etag
    # A stale etag is ABORTED (AIP-154), as in every service: read again and retry.
    with pytest.raises(Aborted) as stale:
        await api.UpdateCollectionsScenario(pb.UpdateCollectionsScenarioRequest(scenario=changed), NO_CONTEXT)
    assert stale.value.reason == "ETAG_MISMATCH"
    await api.DeleteCollectionsScenario(
        pb.DeleteCollectionsScenarioRequest(scenario_id=first.scenario.scenario_id), NO_CONTEXT
    )
    assert list((await api.ListCollectionsScenarios(pb.ListCollectionsScenariosRequest(), NO_CONTEXT)).scenarios) == []


async def test_pause_resume_and_a_collectors_tasks(db: CollectionsDb) -> None:
    api = CollectionsServicer(db.uow)
    await api.CreateCollectionsScenario(
        pb.CreateCollectionsScenarioRequest(
            scenario=cpb.CollectionsScenario(
                display_name="Calls",
                steps=[
                    cpb.CollectionsStep(
                        days_past_due=5,
                        action=cpb.COLLECTIONS_ACTION_TYPE_MANUAL_TASK,
                        manual_task=cpb.ManualTaskRule(title="Call the customer", due_in_days=2),
                    ),
                    cpb.CollectionsStep(
                        days_past_due=6, action=cpb.COLLECTIONS_ACTION_TYPE_REFER_TO_AGENCY, agency="acme"
                    ),
                ],
            )
        ),
        NO_CONTEXT,
    )
    account_id = await account_with_overdue_bill(db)
    processor = db.processor(Callees())
    await db.at(day(1))
    await processor.check()
    (case,) = await db.cases(account_id)
    await api.AssignCollectionsCase(
        pb.AssignCollectionsCaseRequest(case_id=case.case_id, collector_id="agent-7"), NO_CONTEXT
    )
    paused = await api.PauseCollectionsCase(
        pb.PauseCollectionsCaseRequest(case_id=case.case_id, reason="disputed", actor="ops"), NO_CONTEXT
    )
    assert (paused.collections_case.state, paused.collections_case.pause_reason) == (
        cpb.COLLECTIONS_CASE_STATE_PAUSED,
        "disputed",
    )
    await db.at(day(6))
    await processor.check()
    assert [s for _, s, _, _ in await db.actions(account_id)] == ["scheduled", "scheduled"]
    await api.ResumeCollectionsCase(
        pb.ResumeCollectionsCaseRequest(case_id=case.case_id, reason="dispute lost", actor="ops"), NO_CONTEXT
    )
    await processor.check()
    assert [s for _, s, _, _ in await db.actions(account_id)] == ["done", "done"]
    (referred,) = await db.published("evolutivo.billing.v1.collections_case.referred", cev.CollectionsCaseReferred)
    assert (referred.agency, from_money(referred.overdue_amount)) == ("acme", Decimal("12.10"))
    queue = await api.ListCollectionsTasks(
        pb.ListCollectionsTasksRequest(collector_id="agent-7", state=cpb.COLLECTIONS_TASK_STATE_OPEN), NO_CONTEXT
    )
    (task,) = queue.tasks
    assert (task.title, task.due_date) == ("Call the customer", to_date(DUE + timedelta(days=8)))
    done = await api.CompleteCollectionsTask(
        pb.CompleteCollectionsTaskRequest(task_id=task.task_id, outcome="will pay friday", actor="agent-7"), NO_CONTEXT
    )
    assert done.task.state == cpb.COLLECTIONS_TASK_STATE_DONE
    with pytest.raises(InvalidArgument) as caught:
        await api.PauseCollectionsCase(pb.PauseCollectionsCaseRequest(case_id=case.case_id, actor="ops"), NO_CONTEXT)
    assert caught.value.field == "reason"


UNKNOWN = str(uuid.uuid4())
TOMORROW = to_date(NOW.date() + timedelta(days=1))


def _promise(*instalments: cpb.PromiseInstalment, actor: str = "collector:1", note: str = "") -> Any:
    return pb.CreatePromiseToPayRequest(
        case_id=UNKNOWN, promise=cpb.PromiseToPay(instalments=instalments, actor=actor, note=note)
    )


def _instalment(amount: str, due: Any = TOMORROW, currency_code: str = "EUR") -> cpb.PromiseInstalment:
    return cpb.PromiseInstalment(amount=to_money(Decimal(amount), currency_code), due_date=due)


# An id nobody has, with one field wrong: the field is named (INVALID_ARGUMENT), not NOT_FOUND.
FIELDS_BEFORE_LOOKUP = [
    ("PauseCollectionsCase", pb.PauseCollectionsCaseRequest(case_id=UNKNOWN, actor="ops"), "reason"),
    ("PauseCollectionsCase", pb.PauseCollectionsCaseRequest(case_id=UNKNOWN, reason="disputed"), "actor"),
    ("ResumeCollectionsCase", pb.ResumeCollectionsCaseRequest(case_id=UNKNOWN, reason="x" * 501, actor="a"), "reason"),
    ("ResumeCollectionsCase", pb.ResumeCollectionsCaseRequest(case_id=UNKNOWN, reason="settled"), "actor"),
    ("CreatePromiseToPay", _promise(), "promise.instalments"),
    ("CreatePromiseToPay", _promise(_instalment("5.00"), actor=""), "promise.actor"),
    ("CreatePromiseToPay", _promise(_instalment("5.00"), note="n" * 2001), "promise.note"),
    ("CreatePromiseToPay", _promise(_instalment("0.00")), "promise.instalments[0].amount"),
    ("CreatePromiseToPay", _promise(_instalment("-3.00")), "promise.instalments[0].amount"),
    (
        "CreatePromiseToPay",
        _promise(_instalment("5.00"), _instalment("5.00")),
        "promise.instalments[1].due_date",
    ),
    (
        "CreatePromiseToPay",
        _promise(_instalment("5.00", currency_code="ZZZ")),
        "promise.instalments[0].amount.currency_code",
    ),
    ("CompleteCollectionsTask", pb.CompleteCollectionsTaskRequest(task_id=UNKNOWN, actor="a"), "outcome"),
    ("CompleteCollectionsTask", pb.CompleteCollectionsTaskRequest(task_id=UNKNOWN, outcome="paid"), "actor"),
    (
        "RecordCollectionsContactAttempt",
        pb.RecordCollectionsContactAttemptRequest(
            case_id=UNKNOWN,
            attempt=cpb.CollectionsContactAttempt(
                channel=cpb.COLLECTIONS_CONTACT_CHANNEL_PHONE,
                outcome=cpb.COLLECTIONS_CONTACT_OUTCOME_NO_ANSWER,
            ),
        ),
        "attempt.actor",
    ),
]


@pytest.mark.parametrize(
    ("method", "request_", "field_name"), FIELDS_BEFORE_LOOKUP, ids=[f"{m}:{f}" for m, _, f in FIELDS_BEFORE_LOOKUP]
)
async def test_a_bad_field_is_named_before_the_case_or_task_is_looked_up(
    db: CollectionsDb, method: str, request_: Message, field_name: str
) -> None:
    api = CollectionsServicer(db.uow)
    tables = (collections_cases, collections_actions, collections_request_log, outbox)
    before = [await db.count(t) for t in tables]
    with pytest.raises(InvalidArgument) as caught:
        await getattr(api, method)(request_, NO_CONTEXT)
    assert caught.value.field == field_name
    assert [await db.count(t) for t in tables] == before


async def test_aging_buckets_match_the_bills(db: CollectionsDb) -> None:
    first = await account_with_overdue_bill(db, "10.00")
    second = await account_with_overdue_bill(db, "20.00")
    # Bills are issued when their cycles close (15 May, 15 June), the clock passing each.
    await db.at(madrid(date(2031, 5, 15), 0, 5))
    await db.at(madrid(date(2031, 6, 15), 0, 5))
    await db.at(day(40))
    # Part of the first account's bill paid on day 40.
    await pay(db, first, "2.10")
    api = CollectionsServicer(db.uow)

    report = await api.GetAging(pb.GetAgingRequest(as_of_date=to_date(DUE + timedelta(days=35))), NO_CONTEXT)
    (total,) = report.totals
    # As of day 35 nothing was paid: 12.10 + 24.20 in 31-60; the June bills (0) owe nothing.
    assert (from_money(total.days_31_to_60), from_money(total.total)) == (Decimal("36.30"), Decimal("36.30"))
    assert report.days_sales_outstanding["EUR"] == "90.0"

    report = await api.GetAging(
        pb.GetAgingRequest(as_of_date=to_date(DUE + timedelta(days=40)), page_size=1), NO_CONTEXT
    )
    (total,) = report.totals
    assert from_money(total.days_31_to_60) == Decimal("34.20")
    (page,) = report.accounts
    rest = await api.GetAging(
        pb.GetAgingRequest(
            as_of_date=to_date(DUE + timedelta(days=40)), page_size=1, page_token=report.next_page_token
        ),
        NO_CONTEXT,
    )
    (other,) = rest.accounts
    assert rest.next_page_token == ""
    by_account = {page.account_id: page.buckets, other.account_id: other.buckets}
    assert from_money(by_account[str(first)].days_31_to_60) == Decimal("10.00")
    assert from_money(by_account[str(second)].days_31_to_60) == Decimal("24.20")
    # As of the issue day the bills were current.
    early = await api.GetAging(pb.GetAgingRequest(as_of_date=to_date(date(2031, 5, 15))), NO_CONTEXT)
    assert from_money(early.totals[0].current) == Decimal("36.30")
    with pytest.raises(InvalidArgument):
        await api.GetAging(pb.GetAgingRequest(currency_code="EURO"), NO_CONTEXT)


async def test_the_collections_tables_match_the_migration(db: CollectionsDb) -> None:
    diff = [d for d in await db.schema_diff(metadata) if "collections_" in repr(d)]
    assert diff == []


async def test_migration_0008_goes_back_and_forth(empty_database: EmptyDatabase) -> None:
    url = await empty_database("billing")
    config = alembic_config(MIGRATIONS, url)
    await asyncio.to_thread(command.upgrade, config, "head")
    await asyncio.to_thread(command.downgrade, config, "0007")
    conn = await asyncpg.connect(plain_url(url))
    try:
        for table in ("collections_cases", "collections_actions", "collections_scenarios", "collections_request_log"):
            assert await conn.fetchval(f"select to_regclass('{table}')") is None
        await asyncio.to_thread(command.upgrade, config, "head")
        assert await conn.fetchval("select count(*) from collections_cases") == 0
    finally:
        await conn.close()
