"""Collections' domain: entry criteria and scenario choice, step days in the account's time zone
(DST included), late fees, the exactly-once action state machine (claim tokens, leases, order),
pause and resume, promises kept and broken, closing and reinstating, aging buckets and DSO."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from evolutivo_billing.domain.collections import (
    AccountFacts,
    ActionExecuted,
    ActionState,
    ActionType,
    Aging,
    Case,
    CaseClosed,
    CaseOpened,
    CloseReason,
    EntryCriteria,
    Instalment,
    LateFeeRule,
    OverdueDebt,
    PromiseBroken,
    PromiseKept,
    PromiseState,
    Scenario,
    Step,
    SuspensionRequested,
    bucket_of,
    days_sales_outstanding,
    select_scenario,
    step_due_time,
    task_for,
)
from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument

MADRID = "Europe/Madrid"
LEASE = timedelta(minutes=2)
DUE = date(2031, 3, 10)


def local(day: date, hour: int = 0, zone: str = MADRID) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def scenario(*steps: Step, criteria: EntryCriteria | None = None, priority: int = 0, name: str = "s") -> Scenario:
    now = datetime(2031, 1, 1, tzinfo=UTC)
    return Scenario(uuid.uuid4(), name, "", priority, criteria or EntryCriteria(), tuple(steps), now, now)


def debt(amount: str = "100.00", currency: str = "EUR", oldest: date | None = DUE, zone: str = MADRID) -> OverdueDebt:
    return OverdueDebt(uuid.uuid4(), uuid.uuid4(), currency, zone, Decimal(amount), oldest, (uuid.uuid4(),))


STANDARD = (
    Step(3, ActionType.REMINDER_EMAIL),
    Step(10, ActionType.LATE_FEE, late_fee=LateFeeRule(fixed_amounts={"EUR": Decimal("5.00")})),
    Step(20, ActionType.SUSPEND),
    Step(90, ActionType.WRITE_OFF),
)


# -- entry ------------------------------------------------------------------------------------------------


def test_criteria_admit_by_amount_per_currency_days_type_and_labels() -> None:
    criteria = EntryCriteria(
        min_overdue_amounts={"EUR": Decimal("50")},
        min_days_past_due=5,
        account_types=frozenset({"business"}),
        labels={"segment": "smb"},
    )
    business = AccountFacts(uuid.uuid4(), account_type="business", labels={"segment": "smb", "x": "y"})
    today = DUE + timedelta(days=5)
    assert criteria.admits(debt("50.00"), business, today)
    assert not criteria.admits(debt("49.99"), business, today)
    assert not criteria.admits(debt("50.00"), business, today - timedelta(days=1))
    assert not criteria.admits(debt("50.00"), AccountFacts(uuid.uuid4(), account_type="individual"), today)
    assert not criteria.admits(debt("50.00"), AccountFacts(uuid.uuid4(), account_type="business"), today)
    # A currency without a minimum: any amount owed.
    assert criteria.admits(debt("0.01", currency="USD"), business, today)
    assert not criteria.admits(debt("0", currency="USD"), business, today)


def test_exempt_accounts_never_enter_and_a_named_scenario_is_the_only_one() -> None:
    low = scenario(*STANDARD, priority=1, name="low")
    high = scenario(*STANDARD, priority=0, name="high", criteria=EntryCriteria({"EUR": Decimal("1000")}))
    account = AccountFacts(uuid.uuid4())
    today = DUE + timedelta(days=1)
    # The first by priority whose criteria admit it.
    assert select_scenario([low, high], account, debt(), today) is low
    assert select_scenario([low, high], account, debt("1000"), today) is high
    assert select_scenario([low, high], AccountFacts(uuid.uuid4(), exempt=True), debt("1000"), today) is None
    named = AccountFacts(uuid.uuid4(), scenario_id=str(high.scenario_id))
    assert select_scenario([low, high], named, debt(), today) is None
    assert select_scenario([low, high], named, debt("1000"), today) is high
    # A scenario named but gone (deleted): the default choice.
    assert select_scenario([low, high], AccountFacts(uuid.uuid4(), scenario_id=str(uuid.uuid4())), debt(), today) is low


def test_invalid_scenarios_name_the_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        scenario(Step(10, ActionType.REMINDER_EMAIL), Step(3, ActionType.SUSPEND)).validate()
    assert caught.value.field == "scenario.steps[1].days_past_due"
    with pytest.raises(InvalidArgument) as caught:
        scenario(Step(10, ActionType.LATE_FEE)).validate()
    assert caught.value.field == "scenario.steps[0].late_fee"
    with pytest.raises(InvalidArgument) as caught:
        scenario(Step(1, ActionType.LATE_FEE, late_fee=LateFeeRule({"EUR": Decimal("0.001")}))).validate()
    assert caught.value.field == "scenario.steps[0].late_fee.fixed_amounts"
    with pytest.raises(InvalidArgument) as caught:
        scenario(Step(1, ActionType.MANUAL_TASK)).validate()
    assert caught.value.field == "scenario.steps[0].manual_task.title"
    with pytest.raises(InvalidArgument) as caught:
        scenario(Step(1, ActionType.WRITE_OFF), Step(2, ActionType.WRITE_OFF)).validate()
    assert caught.value.field == "scenario.steps[1].action"
    with pytest.raises(InvalidArgument) as caught:
        scenario().validate()
    assert caught.value.field == "scenario.steps"
    with pytest.raises(InvalidArgument) as caught:
        scenario(Step(1, ActionType.REMINDER_EMAIL), criteria=EntryCriteria(account_types=frozenset({"x"}))).validate()
    assert caught.value.field == "scenario.entry_criteria.account_types"


# -- days ------------------------------------------------------------------------------------------------------


def test_steps_fall_at_the_start_of_the_local_day_across_dst() -> None:
    # Madrid moves to summer time on 30 March 2031: 20 days after 10 March is 30 March, which
    # starts at 23:00 UTC on the 29th (still winter time), the next day at 22:00 UTC.
    assert step_due_time(DUE, 20, MADRID) == datetime(2031, 3, 29, 23, tzinfo=UTC)
    assert step_due_time(DUE, 21, MADRID) == datetime(2031, 3, 30, 22, tzinfo=UTC)
    # Santiago skips local midnight when summer time starts (7 Sept 2031): the day starts at 01:00.
    santiago = step_due_time(date(2031, 9, 1), 6, "America/Santiago")
    assert santiago.astimezone(ZoneInfo("America/Santiago")).date() == date(2031, 9, 7)
    assert santiago == datetime(2031, 9, 7, 4, tzinfo=UTC)


def test_a_case_schedules_one_action_per_step_in_the_accounts_time_zone() -> None:
    now = local(DUE + timedelta(days=1), 9)
    case = Case.open(scenario(*STANDARD), debt(), now)
    assert [(a.sequence, a.action_type, a.due_time) for a in case.actions] == [
        (0, ActionType.REMINDER_EMAIL, local(date(2031, 3, 13))),
        (1, ActionType.LATE_FEE, local(date(2031, 3, 20))),
        (2, ActionType.SUSPEND, local(date(2031, 3, 30))),
        (3, ActionType.WRITE_OFF, local(date(2031, 6, 8))),
    ]
    assert case.wake_time == local(date(2031, 3, 13))
    assert [type(e) for e in case.events] == [CaseOpened]
    assert case.days_past_due(local(date(2031, 3, 13), 8)) == 3


# -- late fees --------------------------------------------------------------------------------------------------


def test_late_fees_fixed_or_percent_rounded_half_up_and_capped() -> None:
    fixed = LateFeeRule(fixed_amounts={"EUR": Decimal("5.00")})
    assert fixed.amount("EUR", Decimal("1234.56")) == Decimal("5.00")
    assert fixed.amount("USD", Decimal("1234.56")) == 0
    percent = LateFeeRule(percent=Decimal("2.5"), caps={"EUR": Decimal("10.00")})
    # 2.5% of 100.10 = 2.5025 -> 2.50; of 100.30 = 2.5075 -> 2.51 (half up).
    assert percent.amount("EUR", Decimal("100.10")) == Decimal("2.50")
    assert percent.amount("EUR", Decimal("100.30")) == Decimal("2.51")
    assert percent.amount("EUR", Decimal("1000")) == Decimal("10.00")
    assert LateFeeRule(percent=Decimal("1.5")).amount("JPY", Decimal("1000")) == Decimal("15")


# -- executing actions exactly once -----------------------------------------------------------------------------


def test_internal_actions_finish_once_and_in_order() -> None:
    case = Case.open(scenario(*STANDARD), debt(), local(DUE + timedelta(days=1)))
    assert case.next_action(local(date(2031, 3, 12), 23)) is None
    day3 = local(date(2031, 3, 13))
    reminder = case.next_action(day3)
    assert reminder is not None and reminder.action_type is ActionType.REMINDER_EMAIL
    assert case.finish(reminder, ActionState.DONE, "reminder email requested", day3)
    assert not case.finish(reminder, ActionState.DONE, "again", day3)
    assert sum(isinstance(e, ActionExecuted) for e in case.events) == 1
    # The late fee is not due before day 10, whatever the time passes meanwhile.
    assert case.next_action(day3) is None
    assert case.wake_time == local(date(2031, 3, 20))


def test_an_action_that_calls_out_is_finished_only_by_its_claim() -> None:
    case = Case.open(scenario(*STANDARD), debt(), local(DUE + timedelta(days=1)))
    day20 = local(date(2031, 3, 30), 1)
    case.finish(case.actions[0], ActionState.DONE, "reminder email requested", day20)
    fee = case.next_action(day20)
    assert fee is not None and fee.action_type is ActionType.LATE_FEE
    with pytest.raises(ValueError):
        case.finish(fee, ActionState.DONE, "posted", day20)  # never done without its call
    first = case.start(fee, day20, LEASE)
    assert fee.state is ActionState.EXECUTING and fee.attempts == 1
    # Nothing else starts while it executes, not even the suspension already due.
    assert case.next_action(day20 + timedelta(minutes=1)) is None
    assert case.wake_time == day20 + LEASE
    # A crash: the lease runs out and another pass takes it over, with the same request id.
    request_id = fee.request_id
    assert case.next_action(day20 + LEASE) is fee
    second = case.start(fee, day20 + LEASE, LEASE)
    assert (fee.attempts, fee.request_id) == (2, request_id)
    # The first attempt's late answer is ignored; the second records the outcome, once.
    assert not case.finish(fee, ActionState.DONE, "posted", day20 + LEASE, first)
    assert case.finish(fee, ActionState.DONE, "late fee posted", day20 + LEASE, second)
    assert not case.finish(fee, ActionState.DONE, "late fee posted", day20 + LEASE, second)
    suspend = case.next_action(day20 + LEASE)
    assert suspend is not None and suspend.action_type is ActionType.SUSPEND
    case.start(suspend, day20 + LEASE, LEASE)
    assert sum(isinstance(e, SuspensionRequested) for e in case.events) == 1


def test_a_call_without_answer_is_retried_later_with_the_same_token() -> None:
    case = Case.open(scenario(Step(0, ActionType.SUSPEND)), debt(), local(DUE + timedelta(days=1)))
    now = local(DUE + timedelta(days=1), 1)
    action = case.next_action(now)
    assert action is not None
    token = case.start(action, now, LEASE)
    assert case.retry_later(action, token, now, timedelta(minutes=1), "customer: UNAVAILABLE")
    assert case.wake_time == now + timedelta(minutes=1)
    assert not case.retry_later(action, uuid.uuid4(), now, timedelta(minutes=1), "stale")


# -- pause, promises, close ------------------------------------------------------------------------------------


def test_pause_holds_dunning_and_resume_takes_it_up_at_the_same_action() -> None:
    case = Case.open(scenario(*STANDARD), debt(), local(DUE + timedelta(days=1)))
    now = local(date(2031, 3, 12))
    with pytest.raises(InvalidArgument) as caught:
        case.pause("", "ops", now)
    assert caught.value.field == "reason"
    case.pause("customer disputes the bill", "ops-1", now)
    with pytest.raises(FailedPrecondition):
        case.pause("again", "ops-1", now)
    assert case.next_action(local(date(2031, 3, 14))) is None
    assert case.wake_time is None
    case.resume("dispute settled", "ops-1", local(date(2031, 3, 14)))
    resumed = case.next_action(local(date(2031, 3, 14)))
    assert resumed is not None and resumed.sequence == 0


def test_a_broken_promise_resumes_dunning_at_the_step_it_was_on() -> None:
    case = Case.open(scenario(*STANDARD), debt(), local(DUE + timedelta(days=1)))
    day12 = local(date(2031, 3, 22), 10)
    for action in case.actions[:2]:
        action.state = ActionState.DONE
    promise = case.make_promise([Instalment(Decimal("100.00"), date(2031, 3, 28))], "", "agent-7", day12, uuid.uuid4())
    assert case.dunning_waits
    # Waits until the end of the promised day (local), the next action not even looked at.
    assert case.wake_time == local(date(2031, 3, 29))
    assert case.check_promise(Decimal("40.00"), local(date(2031, 3, 28), 23)) is None
    assert case.check_promise(Decimal("40.00"), local(date(2031, 3, 29))) is PromiseState.BROKEN
    assert promise.state is PromiseState.BROKEN and isinstance(case.events[-1], PromiseBroken)
    # Day 20 (the suspension) has not come: it is next, on its own day.
    assert case.next_action(local(date(2031, 3, 29))) is None
    suspend = case.next_action(local(date(2031, 3, 30)))
    assert suspend is not None and suspend.action_type is ActionType.SUSPEND


def test_a_promise_kept_by_instalments() -> None:
    case = Case.open(scenario(*STANDARD), debt(), local(DUE + timedelta(days=1)))
    now = local(date(2031, 3, 12))
    with pytest.raises(InvalidArgument) as caught:
        case.make_promise(
            [Instalment(Decimal("50"), date(2031, 3, 20)), Instalment(Decimal("50"), date(2031, 3, 20))],
            "",
            "a",
            now,
            uuid.uuid4(),
        )
    assert caught.value.field == "promise.instalments[1].due_date"
    with pytest.raises(InvalidArgument) as caught:
        case.make_promise([Instalment(Decimal("50"), date(2031, 3, 11))], "", "a", now, uuid.uuid4())
    assert caught.value.field == "promise.instalments[0].due_date"
    case.make_promise(
        [Instalment(Decimal("50.00"), date(2031, 3, 15)), Instalment(Decimal("50.00"), date(2031, 3, 25))],
        "",
        "a",
        now,
        uuid.uuid4(),
    )
    # The first instalment paid by its date: still active, waiting for the second.
    assert case.check_promise(Decimal("50.00"), local(date(2031, 3, 16))) is None
    assert case.wake_time == local(date(2031, 3, 26))
    assert case.check_promise(Decimal("100.00"), local(date(2031, 3, 20))) is PromiseState.KEPT
    assert isinstance(case.events[-1], PromiseKept) and not case.dunning_waits


def test_closing_cancels_what_is_scheduled_and_reinstates_what_the_case_suspended() -> None:
    case = Case.open(scenario(*STANDARD), debt(), local(DUE + timedelta(days=1)))
    now = local(date(2031, 3, 31))
    for action in case.actions[:2]:
        action.state = ActionState.DONE
    suspend = case.actions[2]
    token = case.start(suspend, now, LEASE)
    # Paid while the suspension is under way: it finishes, then the reinstatement follows.
    case.close(CloseReason.PAID, now)
    assert isinstance(case.events[-1], CaseClosed)
    assert case.actions[3].state is ActionState.CANCELLED
    reinstate = case.actions[4]
    assert (reinstate.action_type, reinstate.state) == (ActionType.REINSTATE, ActionState.SCHEDULED)
    assert case.next_action(now) is None
    assert case.finish(suspend, ActionState.DONE, "suspended", now, token)
    assert case.next_action(now) is reinstate
    with pytest.raises(FailedPrecondition):
        case.close(CloseReason.PAID, now)


def test_review_closes_when_nothing_is_overdue() -> None:
    case = Case.open(scenario(*STANDARD), debt(), local(DUE + timedelta(days=1)))
    now = local(date(2031, 3, 14))
    assert not case.review(debt("30.00"), now)
    assert case.overdue_amount == Decimal("30.00")
    assert case.review(debt("0", oldest=None), now)
    assert case.close_reason is CloseReason.PAID
    assert all(a.state is ActionState.CANCELLED for a in case.actions)
    assert case.wake_time is None


def test_manual_tasks_are_due_in_local_days() -> None:
    step = Step(5, ActionType.MANUAL_TASK, task_title="Call the customer", task_due_in_days=2)
    case = Case.open(scenario(step), debt(), local(DUE + timedelta(days=1)))
    task = task_for(case, case.actions[0], local(date(2031, 3, 15), 23))
    assert task.due_date == date(2031, 3, 17)
    assert task_for(case, case.actions[0], local(date(2031, 3, 15), 23)).task_id == task.task_id
    done = task.complete("promised to pay friday", "agent-7", local(date(2031, 3, 16)))
    with pytest.raises(FailedPrecondition):
        done.complete("again", "agent-7", local(date(2031, 3, 16)))


# -- aging ----------------------------------------------------------------------------------------------------


def test_aging_buckets_and_dso() -> None:
    assert [bucket_of(d) for d in (-3, 0, 1, 30, 31, 60, 61, 90, 91)] == [
        "current",
        "current",
        "days_1_to_30",
        "days_1_to_30",
        "days_31_to_60",
        "days_31_to_60",
        "days_61_to_90",
        "days_61_to_90",
        "over_90_days",
    ]
    aging = Aging("EUR")
    aging.add(0, Decimal("10"))
    aging.add(45, Decimal("5.50"))
    assert aging.total == Decimal("15.50")
    assert days_sales_outstanding(Decimal("15.50"), Decimal("300"), 90) == Decimal("4.7")
    assert days_sales_outstanding(Decimal("1"), Decimal("0"), 90) is None
