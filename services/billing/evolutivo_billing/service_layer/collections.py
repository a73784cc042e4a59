"""Use cases of credit collection (docs/collections.md): scenarios, the collections processor's
passes (open cases, close settled ones, run due actions), operators' pauses, promises to pay,
collectors' tasks, what billing learns from customer and payments, and the aging of receivables."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Protocol, Self
from zoneinfo import ZoneInfo

from evolutivo_runtime.errors import Aborted, AlreadyExists, NotFound, Unavailable

from evolutivo_billing.adapters.collections_repository import CollectionsRepository, next_local_midnight
from evolutivo_billing.adapters.notices_repository import NoticeRepository
from evolutivo_billing.domain.bills import Charge
from evolutivo_billing.domain.collections import (
    AccountFacts,
    Action,
    ActionState,
    ActionType,
    Aging,
    Case,
    CaseReferred,
    CaseWrittenOff,
    CloseReason,
    ContactAttempt,
    ContactChannel,
    ContactOutcome,
    Instalment,
    NoticeRequested,
    OverdueDebt,
    Promise,
    Scenario,
    Task,
    check_contact,
    check_status_change,
    check_task_completion,
    days_sales_outstanding,
    late_fee_charge_id,
    select_scenario,
    task_for,
)
from evolutivo_billing.domain.model import CollectionsState
from evolutivo_billing.domain.notices import notice_for
from evolutivo_billing.service_layer import bills
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork

log = logging.getLogger(__name__)

# Internal actions one case runs in one pass before it lets others have a turn.
INTERNAL_ACTIONS_PER_PASS = 10
DSO_DAYS = 90
# Calls to balance and customer one pass makes at once.
CONCURRENT_CALLS = 8


class CollectionsUnitOfWork(BillingUnitOfWork):
    """Billing's unit of work with the collections repository (and the collections request log)."""

    collections: CollectionsRepository

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.collections = CollectionsRepository(self.session)
        return self


def _repo(uow: BillingUnitOfWork) -> CollectionsRepository:
    return CollectionsRepository(uow.session)


# -- calls to other services -------------------------------------------------------------------------


class CallRefused(Exception):
    """The callee refused for a reason that will not change (e.g. the account is not active): the
    action is SKIPPED with this message."""


class CallFailed(Exception):
    """The callee refused the request itself (invalid): the action FAILED with this message."""


class CollectionsGateway(Protocol):
    """The calls collections makes to balance and customer; each idempotent on its request id.
    Raise CallRefused, CallFailed, or evolutivo_runtime.errors.Unavailable (retried later)."""

    async def post_late_fee(
        self, account_id: uuid.UUID, amount: Decimal, currency_code: str, reason: str, request_id: uuid.UUID
    ) -> str: ...

    async def write_off(
        self,
        account_id: uuid.UUID,
        amount: Decimal,
        currency_code: str,
        case_id: uuid.UUID,
        reason: str,
        request_id: uuid.UUID,
    ) -> str: ...

    async def suspend(self, account_id: uuid.UUID, case_id: uuid.UUID, reason: str, request_id: uuid.UUID) -> str: ...

    async def reinstate(self, account_id: uuid.UUID, case_id: uuid.UUID, reason: str, request_id: uuid.UUID) -> str: ...


@dataclass(frozen=True)
class ProcessorPolicy:
    """BILLING_COLLECTIONS_* settings the processor runs by."""

    batch_size: int = 100
    # How long a call may take before another pass calls again (same request id).
    lease: timedelta = timedelta(seconds=120)
    # After a call that got no answer.
    retry_delay: timedelta = timedelta(seconds=60)
    max_attempts: int = 10
    late_fee_tax_code: str = "exempt"


@dataclass(frozen=True)
class Call:
    """An action started in one transaction, to call out after its commit."""

    case_id: uuid.UUID
    sequence: int
    action_type: ActionType
    token: uuid.UUID
    account_id: uuid.UUID
    bill_unit_id: uuid.UUID
    currency_code: str
    amount: Decimal | None
    request_id: uuid.UUID
    attempts: int


# -- scenarios -------------------------------------------------------------------------------------------


async def create_scenario(uow: CollectionsUnitOfWork, draft: Scenario) -> Scenario:
    """Inside the caller's unit of work (run_idempotent commits it)."""
    now = uow.clock.now()
    scenario = replace(draft, scenario_id=uuid.uuid4(), create_time=now, update_time=now, version=1)
    scenario.validate()
    if await uow.collections.scenario_named(scenario.display_name) is not None:
        raise AlreadyExists("SCENARIO_NAME_TAKEN", f"a scenario is named {scenario.display_name!r}")
    await uow.collections.add_scenario(scenario)
    # Units left out of collections may enter it now.
    await uow.collections.forget_entry_checks()
    return scenario


async def get_scenario(uow: CollectionsUnitOfWork, scenario_id: uuid.UUID) -> Scenario:
    async with uow:
        found = await uow.collections.get_scenario(scenario_id)
    if found is None:
        raise NotFound("collections_scenario", str(scenario_id))
    return found


async def list_scenarios(
    uow: CollectionsUnitOfWork, after: tuple[int, datetime, uuid.UUID] | None, page_size: int
) -> tuple[list[Scenario], tuple[int, datetime, uuid.UUID] | None]:
    async with uow:
        found = await uow.collections.list_scenarios(after, page_size + 1)
    if len(found) > page_size:
        last = found[page_size - 1]
        return found[:page_size], (last.priority, last.create_time, last.scenario_id)
    return found, None


async def update_scenario(uow: CollectionsUnitOfWork, draft: Scenario, etag: str) -> Scenario:
    async with uow:
        current = await uow.collections.get_scenario(draft.scenario_id, for_update=True)
        if current is None:
            raise NotFound("collections_scenario", str(draft.scenario_id))
        if etag and etag != current.etag:
            # AIP-154, as everywhere in the suite: a stale etag is ABORTED (read again and retry).
            raise Aborted("ETAG_MISMATCH", "scenario.etag: the scenario changed since it was read; read it again")
        scenario = replace(
            draft, create_time=current.create_time, update_time=uow.clock.now(), version=current.version + 1
        )
        scenario.validate()
        other = await uow.collections.scenario_named(scenario.display_name)
        if other is not None and other.scenario_id != scenario.scenario_id:
            raise AlreadyExists("SCENARIO_NAME_TAKEN", f"a scenario is named {scenario.display_name!r}")
        await uow.collections.save_scenario(scenario)
        await uow.collections.forget_entry_checks()
        await uow.commit()
        return scenario


async def delete_scenario(uow: CollectionsUnitOfWork, scenario_id: uuid.UUID) -> None:
    """Open cases keep the steps they opened with."""
    async with uow:
        if not await uow.collections.delete_scenario(scenario_id):
            raise NotFound("collections_scenario", str(scenario_id))
        await uow.commit()


# -- what billing learns ---------------------------------------------------------------------------------


async def record_account_facts(uow: BillingUnitOfWork, facts: AccountFacts) -> bool:
    """On customer's account events: the account's collections facts (exemption, named scenario,
    type, labels), unless newer ones are stored. Its unit is looked at again at the next pass; an
    account that became exempt has its open case closed. Runs in the consumer's transaction."""
    repo = _repo(uow)
    if not await repo.record_facts(facts):
        return False
    unit = await uow.bill_units.for_account(facts.account_id)
    if unit is not None:
        await repo.forget_entry_checks(unit.bill_unit_id)
    if facts.exempt:
        case = await repo.open_case_of_account(facts.account_id, for_update=True)
        if case is not None:
            case.close(CloseReason.EXEMPTED, uow.clock.now())
            await repo.save_case(case)
            uow.track(case)
    return True


async def review_account(uow: BillingUnitOfWork, account_id: uuid.UUID) -> None:
    """After a payment (or its reversal) was applied: the account's open case closes when its
    overdue debt is now zero, and its active promise is checked. Runs in the consumer's
    transaction, which holds the bill unit (payments lock it first, then the case)."""
    repo = _repo(uow)
    case = await repo.open_case_of_account(account_id, for_update=True)
    if case is None:
        return
    unit = await uow.bill_units.get(case.bill_unit_id)
    if unit is None:
        return
    now = uow.clock.now()
    if not case.review(await repo.overdue_debt(unit, now), now):
        promise = case.active_promise
        if promise is not None:
            case.check_promise(await repo.paid_since(account_id, promise.create_time), now)
    await repo.save_case(case)
    uow.track(case)


# -- the processor's passes --------------------------------------------------------------------------------


async def open_cases(uow_factory: Callable[[], BillingUnitOfWork], batch_size: int) -> tuple[int, int]:
    """One pass of case opening: bill units with debt past due and no open case (not waiting
    for their next check) are looked at, each in its own transaction with its unit locked (SKIP
    LOCKED: another replica or a payment has it). The debt enters the scenario the account names,
    or the first by priority whose criteria admit it; exempt accounts never enter. A unit that
    enters none is looked at again at its next local midnight. Returns (looked at, opened)."""
    uow = uow_factory()
    async with uow:
        now = uow.clock.now()
        candidates = await _repo(uow).entry_candidates(now, batch_size)
    opened = 0
    for bill_unit_id in candidates:
        uow = uow_factory()
        async with uow:
            repo = _repo(uow)
            if not await repo.lock_unit(bill_unit_id) or await repo.open_case_of_unit(bill_unit_id):
                continue
            unit = await uow.bill_units.get(bill_unit_id)
            if unit is None:
                continue
            now = uow.clock.now()
            debt = await repo.overdue_debt(unit, now)
            facts = await repo.facts(unit.account_id)
            today = now.astimezone(ZoneInfo(unit.time_zone)).date()
            scenario = select_scenario(await repo.all_scenarios(), facts, debt, today)
            if scenario is None:
                await repo.check_entry_again_at(bill_unit_id, next_local_midnight(now, unit.time_zone))
            else:
                case = Case.open(scenario, debt, now)
                await repo.add_case(case)
                await repo.forget_entry_checks(bill_unit_id)
                uow.track(case)
                opened += 1
                log.info(
                    "collections case opened",
                    extra={"case_id": str(case.case_id), "account_id": str(case.account_id)},
                )
            await uow.commit()
    return len(candidates), opened


async def close_settled_cases(uow_factory: Callable[[], BillingUnitOfWork], batch_size: int) -> int:
    """Passes closing the open cases whose unit owes nothing past due any more (paid, or
    credited), whatever announced it; returns how many closed."""
    closed = 0
    after: uuid.UUID | None = None
    while True:
        uow = uow_factory()
        async with uow:
            repo = _repo(uow)
            now = uow.clock.now()
            cases = await repo.claim_settled(now, batch_size, after)
            for case in cases:
                unit = await uow.bill_units.get(case.bill_unit_id)
                if unit is not None and case.review(await repo.overdue_debt(unit, now), now):
                    closed += 1
                    await repo.save_case(case)
                    uow.track(case)
            await uow.commit()
        if len(cases) < batch_size:
            return closed
        after = cases[-1].case_id


async def run_due_cases(
    uow_factory: Callable[[], BillingUnitOfWork], gateway: CollectionsGateway, policy: ProcessorPolicy
) -> int:
    """One pass over the cases due a look (claimed FOR UPDATE SKIP LOCKED): each is reviewed
    against its debt (closed when paid) and its promise, runs the actions it is due that stay
    inside billing, and starts the next one that calls out; those calls are made after the pass
    commits, and their outcomes recorded each in its own transaction. Returns the cases handled."""
    calls: list[Call] = []
    uow = uow_factory()
    async with uow:
        repo = _repo(uow)
        now = uow.clock.now()
        cases = await repo.claim_due(now, policy.batch_size)
        for case in cases:
            recorded = len(case.events)
            call = await _advance(uow, repo, case, now, policy)
            if call is not None:
                calls.append(call)
            elif len(case.events) == recorded and case.wake_time is not None and case.wake_time <= now:
                # Nothing could be done (e.g. its bill unit did not load): not again at once.
                case.wake_time = now + policy.retry_delay
            await repo.save_case(case)
            uow.track(case)
        await uow.commit()
    # Concurrently (bounded), so the last calls of a large pass are made well within their lease.
    limit = asyncio.Semaphore(CONCURRENT_CALLS)

    async def bounded(call: Call) -> None:
        async with limit:
            await _call_out(uow_factory, gateway, call, policy)

    # One call failing unexpectedly does not abandon the others (its action is redone after its lease).
    failures = [r for r in await asyncio.gather(*(bounded(c) for c in calls), return_exceptions=True) if r is not None]
    if failures:
        raise failures[0]
    return len(cases)


async def _advance(
    uow: BillingUnitOfWork, repo: CollectionsRepository, case: Case, now: datetime, policy: ProcessorPolicy
) -> Call | None:
    debt: OverdueDebt | None = None
    if case.is_open:
        unit = await uow.bill_units.get(case.bill_unit_id)
        if unit is None:
            return None
        debt = await repo.overdue_debt(unit, now)
        if not case.review(debt, now):
            promise = case.active_promise
            if promise is not None:
                case.check_promise(await repo.paid_since(case.account_id, promise.create_time), now)
    for _ in range(INTERNAL_ACTIONS_PER_PASS):
        action = case.next_action(now)
        if action is None:
            return None
        if action.action_type.calls_out:
            if action.attempts == 0:
                # What the call carries is fixed at its first attempt: a retry sends the same.
                skip = _prepare_call(case, action, debt)
                if skip is not None:
                    case.finish(action, ActionState.SKIPPED, skip, now)
                    continue
            elif action.attempts >= policy.max_attempts:
                assert action.claim_token is not None
                case.finish(
                    action, ActionState.FAILED, f"no answer after {action.attempts} attempts", now, action.claim_token
                )
                continue
            token = case.start(action, now, policy.lease)
            return Call(
                case.case_id,
                action.sequence,
                action.action_type,
                token,
                case.account_id,
                case.bill_unit_id,
                case.currency_code,
                action.amount,
                action.request_id,
                action.attempts,
            )
        assert debt is not None, "internal actions run only in open cases"
        await _run_internal(uow, repo, case, action, debt, now)
    return None


def _prepare_call(case: Case, action: Action, debt: OverdueDebt | None) -> str | None:
    """Fixes a call's amount (late fee, write-off); returns why it is skipped instead, if it is."""
    if action.action_type is ActionType.LATE_FEE:
        assert action.step is not None and action.step.late_fee is not None and debt is not None
        fee = action.step.late_fee.amount(case.currency_code, debt.amount)
        if fee <= 0:
            return f"no late fee for {case.currency_code} on {debt.amount}"
        action.amount = fee
    elif action.action_type is ActionType.WRITE_OFF:
        assert debt is not None
        if debt.amount <= 0:
            return "nothing overdue to write off"
        action.amount = debt.amount
        action.details["bill_ids"] = [str(b) for b in debt.bill_ids]
    elif action.action_type is ActionType.REINSTATE:
        suspended = any(
            a.action_type is ActionType.SUSPEND and a.state is ActionState.DONE and a.outcome == "suspended"
            for a in case.actions
        )
        if not suspended:
            return "the case did not suspend the account"
    return None


async def _run_internal(
    uow: BillingUnitOfWork,
    repo: CollectionsRepository,
    case: Case,
    action: Action,
    debt: OverdueDebt,
    now: datetime,
) -> None:
    assert action.step is not None
    kind = action.action_type
    if kind in (ActionType.REMINDER_EMAIL, ActionType.DUNNING_LETTER):
        # The notice and its delivery, in this transaction: the delivery loop emails it (the
        # action's outcome then says how that went).
        notices = NoticeRepository(uow.session)
        notice = notice_for(case, action, debt, await notices.overdue_bills(debt.bill_ids), now)
        await notices.add(notice)
        case.events.append(NoticeRequested(case, action, debt, case.days_past_due(now)))
        outcome = "reminder email queued" if kind is ActionType.REMINDER_EMAIL else "dunning letter queued"
        details = {"notice_id": str(notice.notice_id)}
        case.finish(action, ActionState.DONE, outcome, now, amount=debt.amount, details=details)
    elif kind is ActionType.REFER_TO_AGENCY:
        case.events.append(CaseReferred(case, action, debt))
        case.finish(action, ActionState.DONE, f"referred to {action.step.agency}", now, amount=debt.amount)
    elif kind is ActionType.MANUAL_TASK:
        task = task_for(case, action, now)
        await repo.add_task(task)
        case.finish(action, ActionState.DONE, "task opened", now, details={"task_id": str(task.task_id)})
    else:
        raise ValueError(f"{kind} calls out")


async def _call_out(
    uow_factory: Callable[[], BillingUnitOfWork], gateway: CollectionsGateway, call: Call, policy: ProcessorPolicy
) -> None:
    """Makes an action's call (outside any transaction), then records its outcome."""
    reason = f"collections case {call.case_id}, action {call.sequence}"
    try:
        match call.action_type:
            case ActionType.LATE_FEE:
                assert call.amount is not None
                ref = await gateway.post_late_fee(
                    call.account_id, call.amount, call.currency_code, reason, call.request_id
                )
                outcome = "late fee posted"
            case ActionType.WRITE_OFF:
                assert call.amount is not None
                ref = await gateway.write_off(
                    call.account_id, call.amount, call.currency_code, call.case_id, reason, call.request_id
                )
                outcome = "written off"
            case ActionType.SUSPEND:
                ref = await gateway.suspend(call.account_id, call.case_id, reason, call.request_id)
                outcome = "suspended"
            case ActionType.REINSTATE:
                ref = await gateway.reinstate(call.account_id, call.case_id, reason, call.request_id)
                outcome = "reinstated"
            case _:
                raise ValueError(f"{call.action_type} does not call out")
    except Unavailable as exc:
        await _record(uow_factory, call, None, str(exc), policy)
        return
    except CallRefused as exc:
        await _record(uow_factory, call, ActionState.SKIPPED, str(exc), policy)
        return
    except CallFailed as exc:
        await _record(uow_factory, call, ActionState.FAILED, str(exc), policy)
        return
    await _record(uow_factory, call, ActionState.DONE, outcome, policy, ref)


async def _record(
    uow_factory: Callable[[], BillingUnitOfWork],
    call: Call,
    state: ActionState | None,
    outcome: str,
    policy: ProcessorPolicy,
    ref: str = "",
) -> None:
    """The outcome of a call, with its effects inside billing, in one transaction; ignored when
    another attempt took the action over (its token is no longer the action's)."""
    uow = uow_factory()
    async with uow:
        repo = _repo(uow)
        if call.action_type in (ActionType.WRITE_OFF, ActionType.LATE_FEE) and state is ActionState.DONE:
            if call.action_type is ActionType.LATE_FEE:
                # The fee becomes an item of the unit's open cycle: the cycle before the unit and
                # the case (bill now holds the cycle and waits for the unit, docs/billing.md).
                await bills.hold_open_cycle(uow, call.bill_unit_id)
            # Payments lock the unit, then bills, then the case: the same order here.
            await uow.bill_units.get(call.bill_unit_id, for_update=True)
        case = await repo.get_case(call.case_id, for_update=True)
        if case is None:
            return
        action = case.action(call.sequence)
        now = uow.clock.now()
        if state is None:
            if not case.retry_later(action, call.token, now, policy.retry_delay, outcome):
                return
            log.warning(
                "collections call to retry",
                extra={"case_id": str(case.case_id), "sequence": call.sequence, "error": outcome},
            )
        else:
            details = {"reference": ref} if ref else None
            if not case.finish(action, state, outcome, now, call.token, details=details):
                return
            if state is ActionState.DONE:
                await _apply(uow, repo, case, call, now, policy)
        await repo.save_case(case)
        uow.track(case)
        await uow.commit()


async def _apply(
    uow: BillingUnitOfWork,
    repo: CollectionsRepository,
    case: Case,
    call: Call,
    now: datetime,
    policy: ProcessorPolicy,
) -> None:
    """What a successful call changes inside billing."""
    action = case.action(call.sequence)
    if call.action_type is ActionType.LATE_FEE:
        assert action.amount is not None
        # An item like a charge, once (its id derived from the action): it goes on the next bill.
        await bills.record_charges(
            uow,
            [
                Charge(
                    charge_id=late_fee_charge_id(action),
                    account_id=case.account_id,
                    kind="late_fee",
                    event_id=f"collections:{case.case_id}:{action.sequence}",
                    charge_offer_code="collections",
                    charge_offer_version=0,
                    charge_code="late_fee",
                    tax_code=policy.late_fee_tax_code,
                    quantity=Decimal(1),
                    amount=action.amount,
                    currency_code=case.currency_code,
                    event_time=now,
                    bill_cycle_id=None,
                )
            ],
        )
    elif call.action_type is ActionType.WRITE_OFF:
        listed = action.details.get("bill_ids", [])
        ids = [uuid.UUID(str(b)) for b in listed] if isinstance(listed, list) else []
        written = await repo.write_off_bills(ids)
        action.details["written_off_bill_ids"] = [str(b) for b in written]
        assert action.amount is not None
        case.events.append(CaseWrittenOff(case, action.amount, tuple(written)))
        unit = await uow.bill_units.get(case.bill_unit_id)
        if case.is_open and unit is not None:
            debt = await repo.overdue_debt(unit, now)
            case.overdue_amount = debt.amount
            if debt.amount <= 0:
                case.close(CloseReason.WRITTEN_OFF, now)


# -- operators and collectors ---------------------------------------------------------------------------


async def _case_for_update(uow: CollectionsUnitOfWork, case_id: uuid.UUID) -> Case:
    case = await uow.collections.get_case(case_id, for_update=True)
    if case is None:
        raise NotFound("collections_case", str(case_id))
    return case


async def get_case(uow: CollectionsUnitOfWork, case_id: uuid.UUID) -> Case:
    async with uow:
        case = await uow.collections.get_case(case_id)
    if case is None:
        raise NotFound("collections_case", str(case_id))
    return case


async def list_cases(
    uow: CollectionsUnitOfWork,
    account_id: uuid.UUID | None,
    status: str | None,
    paused: bool | None,
    promised: bool | None,
    collector_id: str | None,
    before: tuple[datetime, uuid.UUID] | None,
    page_size: int,
) -> tuple[list[Case], tuple[datetime, uuid.UUID] | None]:
    async with uow:
        found = await uow.collections.list_cases(
            account_id, status, paused, promised, collector_id, before, page_size + 1
        )
    if len(found) > page_size:
        last = found[page_size - 1]
        return found[:page_size], (last.open_time, last.case_id)
    return found, None


async def pause_case(uow: CollectionsUnitOfWork, case_id: uuid.UUID, reason: str, actor: str) -> Case:
    check_status_change(reason, actor)  # the request's fields before the case is looked up
    async with uow:
        case = await _case_for_update(uow, case_id)
        case.pause(reason, actor, uow.clock.now())
        await uow.collections.save_case(case)
        uow.track(case)
        await uow.commit()
        return case


async def resume_case(uow: CollectionsUnitOfWork, case_id: uuid.UUID, reason: str, actor: str) -> Case:
    check_status_change(reason, actor)
    async with uow:
        case = await _case_for_update(uow, case_id)
        case.resume(reason, actor, uow.clock.now())
        await uow.collections.save_case(case)
        uow.track(case)
        await uow.commit()
        return case


async def assign_case(uow: CollectionsUnitOfWork, case_id: uuid.UUID, collector_id: str) -> Case:
    async with uow:
        case = await _case_for_update(uow, case_id)
        case.assign(collector_id)
        await uow.collections.save_case(case)
        await uow.collections.assign_open_tasks(case_id, collector_id)
        await uow.commit()
        return case


async def make_promise(
    uow: CollectionsUnitOfWork, case_id: uuid.UUID, instalments: Sequence[Instalment], note: str, actor: str
) -> tuple[Promise, Case]:
    """Inside the caller's unit of work (run_idempotent commits it)."""
    case = await _case_for_update(uow, case_id)
    promise = case.make_promise(instalments, note, actor, uow.clock.now(), uuid.uuid4())
    await uow.collections.save_case(case)
    uow.track(case)
    return promise, case


async def list_tasks(
    uow: CollectionsUnitOfWork,
    collector_id: str | None,
    case_id: uuid.UUID | None,
    state: str | None,
    after: tuple[date, uuid.UUID] | None,
    page_size: int,
) -> tuple[list[Task], tuple[date, uuid.UUID] | None]:
    async with uow:
        found = await uow.collections.list_tasks(collector_id, case_id, state, after, page_size + 1)
    if len(found) > page_size:
        last = found[page_size - 1]
        return found[:page_size], (last.due_date, last.task_id)
    return found, None


async def complete_task(uow: CollectionsUnitOfWork, task_id: uuid.UUID, outcome: str, actor: str) -> Task:
    check_task_completion(outcome, actor)  # the request's fields before the task is looked up
    async with uow:
        task = await uow.collections.get_task(task_id, for_update=True)
        if task is None:
            raise NotFound("collections_task", str(task_id))
        done = task.complete(outcome, actor, uow.clock.now())
        await uow.collections.save_task(done)
        await uow.commit()
        return done


async def record_contact_attempt(
    uow: CollectionsUnitOfWork,
    case_id: uuid.UUID,
    channel: ContactChannel,
    outcome: ContactOutcome,
    note: str,
    actor: str,
    contact_time: datetime | None,
) -> ContactAttempt:
    """Inside the caller's unit of work (run_idempotent commits it). The case is locked so the
    attempt's event carries the case as it is."""
    check_contact(note, actor)  # the request's fields before the case is looked up
    case = await _case_for_update(uow, case_id)
    attempt = case.record_contact(channel, outcome, note, actor, contact_time, uow.clock.now(), uuid.uuid4())
    await uow.collections.add_contact_attempt(attempt)
    uow.track(case)
    return attempt


async def list_contact_attempts(
    uow: CollectionsUnitOfWork, case_id: uuid.UUID, before: tuple[datetime, uuid.UUID] | None, page_size: int
) -> tuple[list[ContactAttempt], tuple[datetime, uuid.UUID] | None]:
    async with uow:
        if await uow.collections.get_case(case_id) is None:
            raise NotFound("collections_case", str(case_id))
        found = await uow.collections.list_contact_attempts(case_id, before, page_size + 1)
    if len(found) > page_size:
        last = found[page_size - 1]
        return found[:page_size], (last.contact_time, last.attempt_id)
    return found, None


# -- aging --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgingReport:
    as_of: date
    totals: list[Aging]
    accounts: list[tuple[uuid.UUID, Aging]]
    billed_sales: dict[str, Decimal]
    dso: dict[str, Decimal | None]
    next_after: tuple[uuid.UUID, str] | None


async def aging(
    uow: CollectionsUnitOfWork,
    as_of: date | None,
    currency_code: str | None,
    account_id: uuid.UUID | None,
    after: tuple[uuid.UUID, str] | None,
    page_size: int,
) -> AgingReport:
    """Receivables by days past due as of a date: totals per currency over every account (DSO
    over the 90 days up to it), and one page of accounts."""
    async with uow:
        day = as_of or uow.clock.now().date()
        repo = uow.collections
        totals: dict[str, Aging] = {}
        for currency, days, amount in await repo.aging_totals(day, currency_code, account_id):
            totals.setdefault(currency, Aging(currency)).add(days, amount)
        rows = await repo.aging_accounts(day, currency_code, account_id, after, page_size + 1)
        sales = await repo.billed_sales(day, DSO_DAYS, currency_code, account_id)
    accounts = []
    for acc, currency, amounts in rows[:page_size]:
        per = Aging(currency)
        for days, amount in amounts:
            per.add(days, amount)
        accounts.append((acc, per))
    next_after = (rows[page_size - 1][0], rows[page_size - 1][1]) if len(rows) > page_size else None
    dso = {
        c: days_sales_outstanding(totals[c].total if c in totals else Decimal(0), sales.get(c, Decimal(0)), DSO_DAYS)
        for c in sorted(set(totals) | set(sales))
    }
    return AgingReport(day, [totals[c] for c in sorted(totals)], accounts, sales, dso, next_after)


async def collections_state(uow: BillingUnitOfWork, bill_unit_id: uuid.UUID) -> CollectionsState:
    """The unit's open case for the billing summary: the stage is the last action done (the
    scenario step reached, e.g. "reminder_email", "suspend"), "opened" before any."""
    repo = _repo(uow)
    case = await repo.open_case_of_unit_full(bill_unit_id)
    if case is None:
        return CollectionsState()
    done = [a for a in case.actions if a.state is ActionState.DONE]
    now = uow.clock.now()
    return CollectionsState(
        in_collections=True,
        case_id=str(case.case_id),
        stage=done[-1].action_type.value if done else "opened",
        overdue_amount=case.overdue_amount,
        days_past_due=case.days_past_due(now),
    )
