"""Credit collection: dunning scenarios, collections cases, their actions and promises to pay.
Plain Python: no protobuf, no SQL. Rules in docs/collections.md.

- A scenario has entry criteria and ordered steps, each due at the start of the local day
  `past_due_since + days_past_due` in the account's time zone (`past_due_since`: the due date of
  the oldest overdue bill when the case opened).
- A case runs its actions in sequence, one at a time: an action is not started before the ones
  before it finished. Actions that call another service (late fee, suspend, write-off, reinstate)
  are started (EXECUTING, with a claim token and a lease) in one transaction, called outside it with
  a request id derived from the case and the action, and finished in another transaction that
  presents the same token; a lease that runs out (a crash) lets the next pass call again with the
  same request id, so the callee applies it once. The others finish in the transaction that starts them.
- Dunning waits while the case is paused or a promise to pay is active; it resumes at the action it
  was on, which keeps its own day (an action whose day passed meanwhile runs at once).
- The case closes when the overdue debt is zero: scheduled actions are cancelled, and an account the
  case suspended is reinstated (a REINSTATE action, after any action still executing).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from zoneinfo import ZoneInfo

from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument

from evolutivo_billing.domain.bills import currency_exponent, is_rounded, round_money
from evolutivo_billing.domain.calendar import start_of_day

# Request ids of the calls a case makes: uuid5(NAMESPACE, "<case_id>:<sequence>:<action>").
NAMESPACE = uuid.UUID("6f1d9a52-6a0b-4f55-9f43-0c1f5d1e7c01")
MAX_STEPS = 50
MAX_DAYS = 3650
MAX_INSTALMENTS = 24
MAX_TEXT = 200
ACCOUNT_TYPES = frozenset({"individual", "business"})
PRECISION = 80


class ActionType(enum.Enum):
    REMINDER_EMAIL = "reminder_email"
    DUNNING_LETTER = "dunning_letter"
    LATE_FEE = "late_fee"
    SUSPEND = "suspend"
    REFER_TO_AGENCY = "refer_to_agency"
    WRITE_OFF = "write_off"
    MANUAL_TASK = "manual_task"
    # Never a step: what a case that suspended the account does when it closes.
    REINSTATE = "reinstate"

    @property
    def calls_out(self) -> bool:
        """Whether it calls another service (outside the transaction that starts it)."""
        return self in _CALLS_OUT


_CALLS_OUT = frozenset({ActionType.LATE_FEE, ActionType.SUSPEND, ActionType.WRITE_OFF, ActionType.REINSTATE})


class ActionState(enum.Enum):
    SCHEDULED = "scheduled"
    EXECUTING = "executing"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (ActionState.SCHEDULED, ActionState.EXECUTING)


class CaseStatus(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


class CloseReason(enum.Enum):
    PAID = "paid"
    WRITTEN_OFF = "written_off"
    EXEMPTED = "exempted"


class PromiseState(enum.Enum):
    ACTIVE = "active"
    KEPT = "kept"
    BROKEN = "broken"
    CANCELLED = "cancelled"


def _text(value: str, field_name: str, required: bool, limit: int = MAX_TEXT) -> str:
    if required and not value.strip():
        raise InvalidArgument(field_name, "is required")
    if len(value) > limit:
        raise InvalidArgument(field_name, f"must be at most {limit} characters")
    return value


# The fields of an operator's or collector's request, checked before the case or task is looked up
# (a bad field on an unknown id is INVALID_ARGUMENT naming the field, not NOT_FOUND).


def check_status_change(reason: str, actor: str) -> None:
    """PauseCollectionsCase / ResumeCollectionsCase: a reason and an actor."""
    _text(reason, "reason", True, 500)
    _text(actor, "actor", True)


def check_promise(instalments: Sequence[Instalment], note: str, actor: str) -> None:
    """CreatePromiseToPay, as far as it does not depend on the case: the note, the actor, 1 to
    MAX_INSTALMENTS instalments of positive amounts in increasing date order. The currency, the
    rounding to its minor unit and the dates against the account's today are checked on the case."""
    _text(note, "promise.note", False, 2000)
    _text(actor, "promise.actor", True)
    if not 1 <= len(instalments) <= MAX_INSTALMENTS:
        raise InvalidArgument("promise.instalments", f"must have 1 to {MAX_INSTALMENTS} instalments")
    for i, inst in enumerate(instalments):
        prefix = f"promise.instalments[{i}]"
        if inst.amount <= 0:
            raise InvalidArgument(f"{prefix}.amount", "must be greater than 0, rounded to the minor unit")
        if i and inst.due_date <= instalments[i - 1].due_date:
            raise InvalidArgument(f"{prefix}.due_date", "must be after the previous instalment's")


def check_task_completion(outcome: str, actor: str) -> None:
    """CompleteCollectionsTask: an outcome and an actor."""
    _text(outcome, "outcome", True, 2000)
    _text(actor, "actor", True)


def check_contact(note: str, actor: str) -> None:
    """RecordCollectionsContactAttempt's note and actor (its time is checked on the case)."""
    _text(note, "attempt.note", False, 2000)
    _text(actor, "attempt.actor", True)


def _money_map(amounts: Mapping[str, Decimal], field_name: str, positive: bool = True) -> dict[str, Decimal]:
    for currency, amount in amounts.items():
        try:
            exponent = currency_exponent(currency)
        except ValueError:
            raise InvalidArgument(field_name, f"{currency!r} is not an ISO 4217 currency") from None
        if amount < 0 or (positive and amount == 0):
            raise InvalidArgument(
                field_name, f"{currency} amount must be {'greater than' if positive else 'at least'} 0"
            )
        if not is_rounded(amount, exponent):
            raise InvalidArgument(field_name, f"{currency} amount must be rounded to the currency's minor unit")
    return dict(amounts)


@dataclass(frozen=True)
class LateFeeRule:
    """A fixed fee per currency, or a percentage of the overdue amount capped per currency."""

    fixed_amounts: Mapping[str, Decimal] = field(default_factory=dict)
    percent: Decimal | None = None
    caps: Mapping[str, Decimal] = field(default_factory=dict)

    def validate(self, prefix: str) -> None:
        _money_map(self.fixed_amounts, f"{prefix}.fixed_amounts")
        _money_map(self.caps, f"{prefix}.caps")
        if self.percent is not None and not (self.percent.is_finite() and 0 < self.percent <= 100):
            raise InvalidArgument(f"{prefix}.percent", "must be a decimal greater than 0 and at most 100")
        if self.percent is None and not self.fixed_amounts:
            raise InvalidArgument(prefix, "needs fixed_amounts or a percent")
        if self.percent is not None and self.fixed_amounts:
            raise InvalidArgument(prefix, "is either fixed_amounts or a percent, not both")
        if self.caps and self.percent is None:
            raise InvalidArgument(f"{prefix}.caps", "only apply to a percent")

    def amount(self, currency_code: str, overdue: Decimal) -> Decimal:
        """The fee on `overdue`, rounded ROUND_HALF_UP to the minor unit; 0 when the rule has no
        amount for the currency."""
        exponent = currency_exponent(currency_code)
        if self.percent is None:
            return self.fixed_amounts.get(currency_code, Decimal(0))
        with localcontext() as ctx:
            ctx.prec = PRECISION
            fee = round_money(overdue * self.percent / 100, exponent)
        cap = self.caps.get(currency_code)
        return min(fee, cap) if cap is not None else fee


@dataclass(frozen=True)
class Step:
    days_past_due: int
    action: ActionType
    description: str = ""
    late_fee: LateFeeRule | None = None
    task_title: str = ""
    task_description: str = ""
    task_due_in_days: int = 0
    agency: str = ""
    template: str = ""

    def validate(self, prefix: str) -> None:
        if not 0 <= self.days_past_due <= MAX_DAYS:
            raise InvalidArgument(f"{prefix}.days_past_due", f"must be between 0 and {MAX_DAYS}")
        if self.action is ActionType.REINSTATE:
            raise InvalidArgument(f"{prefix}.action", "REINSTATE is not a step: a closing case reinstates on its own")
        _text(self.description, f"{prefix}.description", False, 2000)
        _text(self.agency, f"{prefix}.agency", self.action is ActionType.REFER_TO_AGENCY)
        _text(self.template, f"{prefix}.template", False)
        if self.action is ActionType.LATE_FEE:
            if self.late_fee is None:
                raise InvalidArgument(f"{prefix}.late_fee", "is required with LATE_FEE")
            self.late_fee.validate(f"{prefix}.late_fee")
        if self.action is ActionType.MANUAL_TASK:
            _text(self.task_title, f"{prefix}.manual_task.title", True)
            _text(self.task_description, f"{prefix}.manual_task.description", False, 2000)
            if not 0 <= self.task_due_in_days <= 365:
                raise InvalidArgument(f"{prefix}.manual_task.due_in_days", "must be between 0 and 365")


@dataclass(frozen=True)
class AccountFacts:
    """What collections knows of an account (from customer's account events)."""

    account_id: uuid.UUID
    exempt: bool = False
    # The scenario the account's billing profile names ("" for the default choice).
    scenario_id: str = ""
    account_type: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    facts_time: datetime | None = None


@dataclass(frozen=True)
class OverdueDebt:
    """A bill unit's OVERDUE bills with something still to pay."""

    bill_unit_id: uuid.UUID
    account_id: uuid.UUID
    currency_code: str
    time_zone: str
    amount: Decimal
    # The oldest due date among them (None when there is no overdue debt).
    oldest_due_date: date | None
    bill_ids: tuple[uuid.UUID, ...] = ()

    def days_past_due(self, today: date) -> int:
        return (today - self.oldest_due_date).days if self.oldest_due_date is not None else 0


@dataclass(frozen=True)
class EntryCriteria:
    min_overdue_amounts: Mapping[str, Decimal] = field(default_factory=dict)
    min_days_past_due: int = 0
    account_types: frozenset[str] = frozenset()
    labels: Mapping[str, str] = field(default_factory=dict)

    def validate(self, prefix: str) -> None:
        _money_map(self.min_overdue_amounts, f"{prefix}.min_overdue_amounts", positive=False)
        if not 0 <= self.min_days_past_due <= MAX_DAYS:
            raise InvalidArgument(f"{prefix}.min_days_past_due", f"must be between 0 and {MAX_DAYS}")
        unknown = sorted(self.account_types - ACCOUNT_TYPES)
        if unknown:
            raise InvalidArgument(f"{prefix}.account_types", f"must be among {sorted(ACCOUNT_TYPES)}, not {unknown}")

    def admits(self, debt: OverdueDebt, account: AccountFacts, today: date) -> bool:
        """Whether the debt enters: something overdue, at least the currency's minimum (none: any
        amount), at least the days past due, the account's type and labels."""
        if debt.amount <= 0 or debt.oldest_due_date is None:
            return False
        if debt.amount < self.min_overdue_amounts.get(debt.currency_code, Decimal(0)):
            return False
        if debt.days_past_due(today) < self.min_days_past_due:
            return False
        if self.account_types and account.account_type not in self.account_types:
            return False
        return all(account.labels.get(k) == v for k, v in self.labels.items())


@dataclass
class Scenario:
    scenario_id: uuid.UUID
    display_name: str
    description: str
    priority: int
    criteria: EntryCriteria
    steps: tuple[Step, ...]
    create_time: datetime
    update_time: datetime
    version: int = 1

    def validate(self) -> None:
        _text(self.display_name, "scenario.display_name", True)
        _text(self.description, "scenario.description", False, 2000)
        self.criteria.validate("scenario.entry_criteria")
        if not 1 <= len(self.steps) <= MAX_STEPS:
            raise InvalidArgument("scenario.steps", f"must have 1 to {MAX_STEPS} steps")
        for i, step in enumerate(self.steps):
            step.validate(f"scenario.steps[{i}]")
            if i and step.days_past_due < self.steps[i - 1].days_past_due:
                raise InvalidArgument(f"scenario.steps[{i}].days_past_due", "steps must be in order of days_past_due")
        write_offs = [i for i, step in enumerate(self.steps) if step.action is ActionType.WRITE_OFF]
        if len(write_offs) > 1:
            # Balance writes off once per case (its key is the case), so a second would do nothing.
            raise InvalidArgument(f"scenario.steps[{write_offs[1]}].action", "a scenario writes off at most once")

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'


def select_scenario(
    scenarios: Sequence[Scenario], account: AccountFacts, debt: OverdueDebt, today: date
) -> Scenario | None:
    """The scenario the debt enters, or None. Exempt accounts never enter. An account that names a
    scenario enters only that one (when its criteria admit the debt); the others, and those naming
    a scenario that does not exist (deleted), enter the first by priority, then creation, whose
    criteria admit it."""
    if account.exempt:
        return None
    ordered = sorted(scenarios, key=lambda s: (s.priority, s.create_time, s.scenario_id))
    named = [s for s in ordered if str(s.scenario_id) == account.scenario_id]
    if named:
        ordered = named
    return next((s for s in ordered if s.criteria.admits(debt, account, today)), None)


def step_due_time(past_due_since: date, days_past_due: int, time_zone: str) -> datetime:
    """The start of the local day `past_due_since + days_past_due`, in UTC."""
    return start_of_day(past_due_since + timedelta(days=days_past_due), time_zone)


@dataclass
class Action:
    case_id: uuid.UUID
    sequence: int
    action_type: ActionType
    # The step's index in the scenario (-1 for a reinstatement) and the step itself.
    step_index: int
    step: Step | None
    due_time: datetime
    state: ActionState = ActionState.SCHEDULED
    attempts: int = 0
    claim_token: uuid.UUID | None = None
    lease_until: datetime | None = None
    finish_time: datetime | None = None
    outcome: str = ""
    amount: Decimal | None = None
    details: dict[str, object] = field(default_factory=dict)

    @property
    def request_id(self) -> uuid.UUID:
        """The id of its call: the same for every attempt, so the callee applies it once."""
        return uuid.uuid5(NAMESPACE, f"{self.case_id}:{self.sequence}:{self.action_type.value}")


@dataclass
class Instalment:
    amount: Decimal
    due_date: date


@dataclass
class Promise:
    promise_id: uuid.UUID
    case_id: uuid.UUID
    instalments: list[Instalment]
    create_time: datetime
    state: PromiseState = PromiseState.ACTIVE
    paid_amount: Decimal = Decimal(0)
    note: str = ""
    actor: str = ""
    resolve_time: datetime | None = None

    @property
    def total(self) -> Decimal:
        return sum((i.amount for i in self.instalments), Decimal(0))

    def deadlines(self, time_zone: str) -> list[tuple[datetime, Decimal]]:
        """Each instalment's deadline (the end of its local day) and what must be paid by then."""
        owed = Decimal(0)
        out = []
        for i in self.instalments:
            owed += i.amount
            out.append((start_of_day(i.due_date + timedelta(days=1), time_zone), owed))
        return out

    def next_deadline(self, time_zone: str, now: datetime) -> datetime | None:
        return next((d for d, _ in self.deadlines(time_zone) if d > now), None)


class ContactChannel(enum.Enum):
    PHONE = "phone"
    EMAIL = "email"
    SMS = "sms"
    LETTER = "letter"
    VISIT = "visit"
    OTHER = "other"


class ContactOutcome(enum.Enum):
    PROMISED = "promised"
    NO_ANSWER = "no_answer"
    LEFT_MESSAGE = "left_message"
    DISPUTED = "disputed"
    REFUSED = "refused"
    WRONG_CONTACT = "wrong_contact"
    CLAIMS_PAID = "claims_paid"
    OTHER = "other"


@dataclass(frozen=True)
class ContactAttempt:
    """A collector's call (or other contact) with the case's customer and what came of it. A
    record only: what follows from it (a promise, a pause) is the collector's next call."""

    attempt_id: uuid.UUID
    case_id: uuid.UUID
    account_id: uuid.UUID
    channel: ContactChannel
    outcome: ContactOutcome
    note: str
    actor: str
    contact_time: datetime
    record_time: datetime


@dataclass(frozen=True)
class CaseOpened:
    case: Case


@dataclass(frozen=True)
class ActionExecuted:
    case: Case
    action: Action


@dataclass(frozen=True)
class NoticeRequested:
    case: Case
    action: Action
    debt: OverdueDebt
    days_past_due: int


@dataclass(frozen=True)
class CaseReferred:
    case: Case
    action: Action
    debt: OverdueDebt


@dataclass(frozen=True)
class SuspensionRequested:
    case: Case
    action: Action


@dataclass(frozen=True)
class ReinstatementRequested:
    case: Case
    action: Action


@dataclass(frozen=True)
class CaseWrittenOff:
    case: Case
    amount: Decimal
    bill_ids: tuple[uuid.UUID, ...]


@dataclass(frozen=True)
class CasePaused:
    case: Case


@dataclass(frozen=True)
class CaseResumed:
    case: Case
    reason: str
    actor: str


@dataclass(frozen=True)
class CaseClosed:
    case: Case


@dataclass(frozen=True)
class PromiseMade:
    case: Case
    promise: Promise


@dataclass(frozen=True)
class PromiseKept:
    case: Case
    promise: Promise


@dataclass(frozen=True)
class PromiseBroken:
    case: Case
    promise: Promise


@dataclass(frozen=True)
class ContactAttemptRecorded:
    case: Case
    attempt: ContactAttempt


COLLECTIONS_EVENTS = (
    CaseOpened,
    ActionExecuted,
    NoticeRequested,
    CaseReferred,
    SuspensionRequested,
    ReinstatementRequested,
    CaseWrittenOff,
    CasePaused,
    CaseResumed,
    CaseClosed,
    PromiseMade,
    PromiseKept,
    PromiseBroken,
    ContactAttemptRecorded,
)


@dataclass
class Case:
    case_id: uuid.UUID
    bill_unit_id: uuid.UUID
    account_id: uuid.UUID
    currency_code: str
    time_zone: str
    scenario_id: uuid.UUID
    scenario_name: str
    past_due_since: date
    open_time: datetime
    overdue_amount: Decimal
    status: CaseStatus = CaseStatus.OPEN
    paused: bool = False
    pause_reason: str = ""
    paused_by: str = ""
    pause_time: datetime | None = None
    close_time: datetime | None = None
    close_reason: CloseReason | None = None
    collector_id: str = ""
    actions: list[Action] = field(default_factory=list)
    promises: list[Promise] = field(default_factory=list)
    # When the processor must look at it next (None: nothing to do until something happens).
    wake_time: datetime | None = None
    events: list[object] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def open(cls, scenario: Scenario, debt: OverdueDebt, now: datetime) -> Case:
        """A case for the debt, with one scheduled action per step of the scenario."""
        if debt.oldest_due_date is None or debt.amount <= 0:
            raise ValueError("a case opens only for an overdue debt")
        case = cls(
            case_id=uuid.uuid4(),
            bill_unit_id=debt.bill_unit_id,
            account_id=debt.account_id,
            currency_code=debt.currency_code,
            time_zone=debt.time_zone,
            scenario_id=scenario.scenario_id,
            scenario_name=scenario.display_name,
            past_due_since=debt.oldest_due_date,
            open_time=now.astimezone(UTC),
            overdue_amount=debt.amount,
        )
        for index, step in enumerate(scenario.steps):
            case.actions.append(
                Action(
                    case.case_id,
                    index,
                    step.action,
                    index,
                    step,
                    step_due_time(debt.oldest_due_date, step.days_past_due, debt.time_zone),
                )
            )
        case._rewake(now)
        case.events.append(CaseOpened(case))
        return case

    # -- reading ---------------------------------------------------------------------------------

    def today(self, now: datetime) -> date:
        return now.astimezone(ZoneInfo(self.time_zone)).date()

    def days_past_due(self, now: datetime) -> int:
        return (self.today(now) - self.past_due_since).days

    @property
    def active_promise(self) -> Promise | None:
        return next((p for p in self.promises if p.state is PromiseState.ACTIVE), None)

    @property
    def is_open(self) -> bool:
        return self.status is CaseStatus.OPEN

    @property
    def dunning_waits(self) -> bool:
        """Paused by an operator, or a promise to pay is active."""
        return self.paused or self.active_promise is not None

    def current_action(self) -> Action | None:
        """The first action not finished: the one the case is on."""
        return next((a for a in self.actions if not a.state.finished), None)

    def action(self, sequence: int) -> Action:
        return self.actions[sequence]

    def next_action(self, now: datetime) -> Action | None:
        """The action to start now, if any: the current one when it is due (and dunning does not
        wait, or it is the reinstatement of a closed case), or when it is executing and its lease
        ran out (a crash: it is called again, with the same request id)."""
        action = self.current_action()
        if action is None:
            return None
        if action.state is ActionState.EXECUTING:
            assert action.lease_until is not None
            return action if action.lease_until <= now else None
        if action.due_time > now:
            return None
        if action.action_type is ActionType.REINSTATE:
            return action
        if not self.is_open or self.dunning_waits:
            return None
        return action

    # -- executing actions -----------------------------------------------------------------------

    def start(self, action: Action, now: datetime, lease: timedelta) -> uuid.UUID:
        """Claims an action that calls out: EXECUTING with a new claim token and a lease, one more
        attempt; returns the token its outcome must be recorded with. The first attempt records
        the suspension or reinstatement request."""
        if action is not self.next_action(now) or not action.action_type.calls_out:
            raise ValueError(f"action {action.sequence} of case {self.case_id} cannot start now")
        token = uuid.uuid4()
        action.state = ActionState.EXECUTING
        action.claim_token = token
        action.lease_until = now + lease
        action.attempts += 1
        if action.attempts == 1:
            if action.action_type is ActionType.SUSPEND:
                self.events.append(SuspensionRequested(self, action))
            elif action.action_type is ActionType.REINSTATE:
                self.events.append(ReinstatementRequested(self, action))
        self._rewake(now)
        return token

    def retry_later(self, action: Action, token: uuid.UUID, now: datetime, delay: timedelta, error: str) -> bool:
        """A call that failed for now (the callee did not answer): still EXECUTING, called again
        after `delay`. False when the token is no longer the action's (another attempt owns it)."""
        if action.state is not ActionState.EXECUTING or action.claim_token != token:
            return False
        action.lease_until = now + delay
        action.outcome = error
        self._rewake(now)
        return True

    def finish(
        self,
        action: Action,
        state: ActionState,
        outcome: str,
        now: datetime,
        token: uuid.UUID | None = None,
        amount: Decimal | None = None,
        details: Mapping[str, object] | None = None,
    ) -> bool:
        """Records an action's outcome (DONE, SKIPPED or FAILED), once: an action that calls out
        is finished only with its current claim token (a later attempt took over: False); one that
        does not is finished when started. Records ActionExecuted."""
        if not state.finished or state is ActionState.CANCELLED:
            raise ValueError(f"{state} is not an outcome")
        if action.state.finished:
            return False
        if action.action_type.calls_out and action.state is ActionState.EXECUTING:
            if token is None or action.claim_token != token:
                return False
        elif action.action_type.calls_out and state is ActionState.DONE:
            raise ValueError("an action that calls out is done only after its call")
        action.state = state
        action.outcome = outcome
        action.finish_time = now.astimezone(UTC)
        action.claim_token = None
        action.lease_until = None
        if amount is not None:
            action.amount = amount
        if details:
            action.details.update(details)
        self.events.append(ActionExecuted(self, action))
        self._rewake(now)
        return True

    @property
    def suspended_by_case(self) -> bool:
        """Whether a SUSPEND action suspended the account (or may have: it is still executing),
        and no reinstatement finished since."""
        suspended = False
        for a in self.actions:
            if a.action_type is ActionType.SUSPEND and (
                a.state is ActionState.EXECUTING or (a.state is ActionState.DONE and a.outcome == "suspended")
            ):
                suspended = True
            if a.action_type is ActionType.REINSTATE and a.state.finished:
                suspended = False
        return suspended

    # -- the debt ---------------------------------------------------------------------------------

    def review(self, debt: OverdueDebt, now: datetime) -> bool:
        """The unit's overdue debt as it is now: the case closes when it is zero. Returns whether
        the case closed."""
        if not self.is_open:
            return False
        self.overdue_amount = debt.amount
        if debt.amount <= 0:
            self.close(CloseReason.PAID, now)
            return True
        return False

    def close(self, reason: CloseReason, now: datetime) -> None:
        """Closes the case: scheduled actions are cancelled (one executing finishes, its outcome is
        recorded); an active promise is kept (paid) or cancelled; an account the case suspended is
        reinstated by a REINSTATE action, due now, after any executing one."""
        if not self.is_open:
            raise FailedPrecondition("CASE_CLOSED", f"case {self.case_id} is already closed")
        self.status = CaseStatus.CLOSED
        self.close_reason = reason
        self.close_time = now.astimezone(UTC)
        self.paused = False
        for a in self.actions:
            if a.state is ActionState.SCHEDULED:
                a.state = ActionState.CANCELLED
                a.finish_time = self.close_time
                a.outcome = f"case closed: {reason.value}"
        promise = self.active_promise
        if promise is not None:
            promise.state = PromiseState.KEPT if reason is CloseReason.PAID else PromiseState.CANCELLED
            promise.resolve_time = self.close_time
            if promise.state is PromiseState.KEPT:
                self.events.append(PromiseKept(self, promise))
        if self.suspended_by_case:
            self.actions.append(
                Action(self.case_id, len(self.actions), ActionType.REINSTATE, -1, None, self.close_time)
            )
        self.events.append(CaseClosed(self))
        self._rewake(now)

    # -- operators ---------------------------------------------------------------------------------

    def pause(self, reason: str, actor: str, now: datetime) -> None:
        check_status_change(reason, actor)
        if not self.is_open:
            raise FailedPrecondition("CASE_CLOSED", f"case {self.case_id} is closed")
        if self.paused:
            raise FailedPrecondition("CASE_PAUSED", f"case {self.case_id} is already paused")
        self.paused, self.pause_reason, self.paused_by, self.pause_time = True, reason, actor, now.astimezone(UTC)
        self.events.append(CasePaused(self))
        self._rewake(now)

    def resume(self, reason: str, actor: str, now: datetime) -> None:
        check_status_change(reason, actor)
        if not self.is_open:
            raise FailedPrecondition("CASE_CLOSED", f"case {self.case_id} is closed")
        if not self.paused:
            raise FailedPrecondition("CASE_NOT_PAUSED", f"case {self.case_id} is not paused")
        self.paused, self.pause_reason, self.paused_by, self.pause_time = False, "", "", None
        self.events.append(CaseResumed(self, reason, actor))
        self._rewake(now)

    def assign(self, collector_id: str) -> None:
        self.collector_id = _text(collector_id, "collector_id", False)

    def record_contact(
        self,
        channel: ContactChannel,
        outcome: ContactOutcome,
        note: str,
        actor: str,
        contact_time: datetime | None,
        now: datetime,
        attempt_id: uuid.UUID,
    ) -> ContactAttempt:
        """A contact attempt on the case, open or closed (calls go on about a referred or
        written-off debt too); it happened at `contact_time` (now when None), not in the future
        nor before the case opened. Records ContactAttemptRecorded."""
        check_contact(note, actor)
        when = (contact_time or now).astimezone(UTC)
        if when > now:
            raise InvalidArgument("attempt.contact_time", "must not be in the future")
        if when < self.open_time:
            raise InvalidArgument("attempt.contact_time", "must not be before the case opened")
        attempt = ContactAttempt(
            attempt_id, self.case_id, self.account_id, channel, outcome, note, actor, when, now.astimezone(UTC)
        )
        self.events.append(ContactAttemptRecorded(self, attempt))
        return attempt

    def record_notice_outcome(self, sequence: int, outcome: str, details: Mapping[str, object]) -> None:
        """The delivery of the notice a REMINDER_EMAIL / DUNNING_LETTER action made ended: its
        outcome on the action (still DONE: the action was to make the notice, and it did)."""
        action = self.actions[sequence]
        if action.action_type not in (ActionType.REMINDER_EMAIL, ActionType.DUNNING_LETTER):
            raise ValueError(f"action {sequence} of case {self.case_id} makes no notice")
        action.outcome = outcome
        action.details.update(details)

    # -- promises to pay ---------------------------------------------------------------------------

    def make_promise(
        self, instalments: Sequence[Instalment], note: str, actor: str, now: datetime, promise_id: uuid.UUID
    ) -> Promise:
        """Records a promise: dunning waits while it is kept. The case must be open, without an
        active promise; dates in increasing order, none before today (local); amounts rounded."""
        check_promise(instalments, note, actor)
        if not self.is_open:
            raise FailedPrecondition("CASE_CLOSED", f"case {self.case_id} is closed")
        if self.active_promise is not None:
            raise FailedPrecondition("PROMISE_ACTIVE", f"case {self.case_id} already has an active promise to pay")
        exponent = currency_exponent(self.currency_code)
        today = self.today(now)
        for i, inst in enumerate(instalments):
            prefix = f"promise.instalments[{i}]"
            if inst.amount <= 0 or not is_rounded(inst.amount, exponent):
                raise InvalidArgument(f"{prefix}.amount", "must be greater than 0, rounded to the minor unit")
            if inst.due_date < today:
                raise InvalidArgument(f"{prefix}.due_date", "must not be before today (account's time zone)")
            if inst.due_date > today + timedelta(days=MAX_DAYS):
                raise InvalidArgument(f"{prefix}.due_date", "must be within ten years")
            if i and inst.due_date <= instalments[i - 1].due_date:
                raise InvalidArgument(f"{prefix}.due_date", "must be after the previous instalment's")
        promise = Promise(promise_id, self.case_id, list(instalments), now.astimezone(UTC), note=note, actor=actor)
        self.promises.append(promise)
        self.events.append(PromiseMade(self, promise))
        self._rewake(now)
        return promise

    def check_promise(self, paid_since: Decimal, now: datetime) -> PromiseState | None:
        """The active promise against what was paid since it was made: KEPT once all is paid,
        BROKEN when a deadline passed with less paid than was due by it; dunning then resumes at
        the action the case was on. Returns the new state, None when it did not change."""
        promise = self.active_promise
        if promise is None:
            return None
        promise.paid_amount = paid_since
        if paid_since >= promise.total:
            promise.state = PromiseState.KEPT
            self.events.append(PromiseKept(self, promise))
        elif any(deadline <= now and paid_since < owed for deadline, owed in promise.deadlines(self.time_zone)):
            promise.state = PromiseState.BROKEN
            self.events.append(PromiseBroken(self, promise))
        else:
            self._rewake(now)
            return None
        promise.resolve_time = now.astimezone(UTC)
        self._rewake(now)
        return promise.state

    # -- when to look again -------------------------------------------------------------------------

    def _rewake(self, now: datetime) -> None:
        """The next instant the processor has something to do with the case."""
        times: list[datetime] = []
        action = self.current_action()
        if action is not None:
            if action.state is ActionState.EXECUTING:
                assert action.lease_until is not None
                times.append(action.lease_until)
            elif action.action_type is ActionType.REINSTATE or (self.is_open and not self.dunning_waits):
                times.append(action.due_time)
        promise = self.active_promise
        if promise is not None and self.is_open:
            deadline = promise.next_deadline(self.time_zone, now)
            # A deadline that passed unnoticed is checked at once.
            times.append(deadline if deadline is not None else now)
        self.wake_time = min(times) if times else None


@dataclass(frozen=True)
class Task:
    task_id: uuid.UUID
    case_id: uuid.UUID
    account_id: uuid.UUID
    title: str
    description: str
    due_date: date
    collector_id: str
    create_time: datetime
    done: bool = False
    outcome: str = ""
    completed_by: str = ""
    complete_time: datetime | None = None

    def complete(self, outcome: str, actor: str, now: datetime) -> Task:
        check_task_completion(outcome, actor)
        if self.done:
            raise FailedPrecondition("TASK_DONE", f"task {self.task_id} is already done")
        return replace(self, done=True, outcome=outcome, completed_by=actor, complete_time=now.astimezone(UTC))


def task_for(case: Case, action: Action, now: datetime) -> Task:
    """The task a MANUAL_TASK action opens (its id derived from the action: opened once)."""
    assert action.step is not None
    return Task(
        task_id=uuid.uuid5(NAMESPACE, f"{case.case_id}:{action.sequence}:task"),
        case_id=case.case_id,
        account_id=case.account_id,
        title=action.step.task_title,
        description=action.step.task_description,
        due_date=case.today(now) + timedelta(days=action.step.task_due_in_days),
        collector_id=case.collector_id,
        create_time=now.astimezone(UTC),
    )


def late_fee_charge_id(action: Action) -> uuid.UUID:
    """The charge id of a late fee's bill item (one per action)."""
    return uuid.uuid5(NAMESPACE, f"{action.case_id}:{action.sequence}:late_fee_item")


def parse_decimal(value: str, field_name: str) -> Decimal:
    try:
        parsed = Decimal(value)
    except InvalidOperation:
        raise InvalidArgument(field_name, "must be a decimal number such as 2.5") from None
    if not parsed.is_finite():
        raise InvalidArgument(field_name, "must be a finite decimal")
    return parsed


# -- aging -----------------------------------------------------------------------------------------

BUCKETS = ("current", "days_1_to_30", "days_31_to_60", "days_61_to_90", "over_90_days")


def bucket_of(days_past_due: int) -> str:
    """current (not past due), 1-30, 31-60, 61-90, over 90 days past due."""
    if days_past_due <= 0:
        return "current"
    if days_past_due <= 30:
        return "days_1_to_30"
    if days_past_due <= 60:
        return "days_31_to_60"
    if days_past_due <= 90:
        return "days_61_to_90"
    return "over_90_days"


@dataclass
class Aging:
    currency_code: str
    buckets: dict[str, Decimal] = field(default_factory=lambda: dict.fromkeys(BUCKETS, Decimal(0)))

    def add(self, days_past_due: int, amount: Decimal) -> None:
        self.buckets[bucket_of(days_past_due)] += amount

    @property
    def total(self) -> Decimal:
        return sum(self.buckets.values(), Decimal(0))


def days_sales_outstanding(receivables: Decimal, billed: Decimal, days: int) -> Decimal | None:
    """receivables / sales billed over `days` * days, rounded half up to one decimal; None
    without sales."""
    if billed <= 0:
        return None
    with localcontext() as ctx:
        ctx.prec = PRECISION
        return (receivables / billed * days).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
