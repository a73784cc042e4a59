"""Translation between collections' domain and the evolutivo.billing.v1 collections messages, and
collections' domain events -> the protobuf events and subjects billing publishes."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal

from evolutivo.billing.v1 import collections_events_pb2 as ev
from evolutivo.billing.v1 import collections_pb2 as pb
from evolutivo.customer.v1 import account_pb2
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.money import from_money, to_money
from evolutivo_runtime.pagination import decode_keyset, encode_keyset
from evolutivo_runtime.timestamps import from_date, from_timestamp, to_date, to_timestamp
from google.protobuf.message import Message
from google.type import money_pb2

from evolutivo_billing.domain.bills import currency_exponent
from evolutivo_billing.domain.collections import (
    BUCKETS,
    AccountFacts,
    Action,
    ActionExecuted,
    ActionState,
    ActionType,
    Aging,
    Case,
    CaseClosed,
    CaseOpened,
    CasePaused,
    CaseReferred,
    CaseResumed,
    CaseWrittenOff,
    CloseReason,
    ContactAttempt,
    ContactAttemptRecorded,
    ContactChannel,
    ContactOutcome,
    EntryCriteria,
    Instalment,
    LateFeeRule,
    NoticeRequested,
    Promise,
    PromiseBroken,
    PromiseKept,
    PromiseMade,
    PromiseState,
    ReinstatementRequested,
    Scenario,
    Step,
    SuspensionRequested,
    Task,
    parse_decimal,
)
from evolutivo_billing.domain.delivery import DeliveryState, NoticeOnlyState
from evolutivo_billing.domain.notices import Notice, NoticeDocument

_ACTIONS = {
    ActionType.REMINDER_EMAIL: pb.COLLECTIONS_ACTION_TYPE_REMINDER_EMAIL,
    ActionType.DUNNING_LETTER: pb.COLLECTIONS_ACTION_TYPE_DUNNING_LETTER,
    ActionType.LATE_FEE: pb.COLLECTIONS_ACTION_TYPE_LATE_FEE,
    ActionType.SUSPEND: pb.COLLECTIONS_ACTION_TYPE_SUSPEND,
    ActionType.REFER_TO_AGENCY: pb.COLLECTIONS_ACTION_TYPE_REFER_TO_AGENCY,
    ActionType.WRITE_OFF: pb.COLLECTIONS_ACTION_TYPE_WRITE_OFF,
    ActionType.MANUAL_TASK: pb.COLLECTIONS_ACTION_TYPE_MANUAL_TASK,
    ActionType.REINSTATE: pb.COLLECTIONS_ACTION_TYPE_REINSTATE,
}
_ACTIONS_BACK = {v: k for k, v in _ACTIONS.items()}
_ACTION_STATES = {
    ActionState.SCHEDULED: pb.COLLECTIONS_ACTION_STATE_SCHEDULED,
    ActionState.EXECUTING: pb.COLLECTIONS_ACTION_STATE_EXECUTING,
    ActionState.DONE: pb.COLLECTIONS_ACTION_STATE_DONE,
    ActionState.SKIPPED: pb.COLLECTIONS_ACTION_STATE_SKIPPED,
    ActionState.FAILED: pb.COLLECTIONS_ACTION_STATE_FAILED,
    ActionState.CANCELLED: pb.COLLECTIONS_ACTION_STATE_CANCELLED,
}
_CLOSE_REASONS = {
    CloseReason.PAID: pb.CASE_CLOSE_REASON_PAID,
    CloseReason.WRITTEN_OFF: pb.CASE_CLOSE_REASON_WRITTEN_OFF,
    CloseReason.EXEMPTED: pb.CASE_CLOSE_REASON_EXEMPTED,
}
_PROMISE_STATES = {
    PromiseState.ACTIVE: pb.PROMISE_TO_PAY_STATE_ACTIVE,
    PromiseState.KEPT: pb.PROMISE_TO_PAY_STATE_KEPT,
    PromiseState.BROKEN: pb.PROMISE_TO_PAY_STATE_BROKEN,
    PromiseState.CANCELLED: pb.PROMISE_TO_PAY_STATE_CANCELLED,
}


def money(amount: Decimal, currency_code: str) -> money_pb2.Money:
    return to_money(amount, currency_code)


def _money_list(values: Iterable[money_pb2.Money], field_name: str) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for i, m in enumerate(values):
        if not m.currency_code:
            raise InvalidArgument(f"{field_name}[{i}].currency_code", "is required")
        if m.currency_code in out:
            raise InvalidArgument(f"{field_name}[{i}].currency_code", "appears twice")
        try:
            out[m.currency_code] = from_money(m)
        except ValueError as exc:
            raise InvalidArgument(f"{field_name}[{i}]", str(exc)) from None
    return out


# -- scenarios -------------------------------------------------------------------------------------------


def step_from_pb(step: pb.CollectionsStep, prefix: str) -> Step:
    if step.action not in _ACTIONS_BACK:
        raise InvalidArgument(f"{prefix}.action", "is required")
    action = _ACTIONS_BACK[step.action]
    fee = None
    if step.HasField("late_fee"):
        fee = LateFeeRule(
            _money_list(step.late_fee.fixed_amounts, f"{prefix}.late_fee.fixed_amounts"),
            parse_decimal(step.late_fee.percent, f"{prefix}.late_fee.percent") if step.late_fee.percent else None,
            _money_list(step.late_fee.caps, f"{prefix}.late_fee.caps"),
        )
    return Step(
        days_past_due=step.days_past_due,
        action=action,
        description=step.description,
        late_fee=fee if action is ActionType.LATE_FEE else None,
        task_title=step.manual_task.title,
        task_description=step.manual_task.description,
        task_due_in_days=step.manual_task.due_in_days,
        agency=step.agency,
        template=step.template,
    )


def step_to_pb(step: Step) -> pb.CollectionsStep:
    out = pb.CollectionsStep(
        days_past_due=step.days_past_due,
        action=_ACTIONS[step.action],
        description=step.description,
        agency=step.agency,
        template=step.template,
    )
    if step.late_fee is not None:
        fee = step.late_fee
        out.late_fee.CopyFrom(
            pb.LateFeeRule(
                fixed_amounts=[money(v, k) for k, v in sorted(fee.fixed_amounts.items())],
                percent=format(fee.percent, "f") if fee.percent is not None else "",
                caps=[money(v, k) for k, v in sorted(fee.caps.items())],
            )
        )
    if step.action is ActionType.MANUAL_TASK:
        out.manual_task.CopyFrom(
            pb.ManualTaskRule(
                title=step.task_title, description=step.task_description, due_in_days=step.task_due_in_days
            )
        )
    return out


def scenario_from_pb(scenario: pb.CollectionsScenario, scenario_id: uuid.UUID | None = None) -> Scenario:
    """A draft (ids and times are the service's to set); validated by Scenario.validate."""
    c = scenario.entry_criteria
    criteria = EntryCriteria(
        _money_list(c.min_overdue_amounts, "scenario.entry_criteria.min_overdue_amounts"),
        c.min_days_past_due,
        frozenset(c.account_types),
        dict(c.labels),
    )
    epoch = datetime.fromtimestamp(0).astimezone()
    return Scenario(
        scenario_id=scenario_id or uuid.UUID(int=0),
        display_name=scenario.display_name,
        description=scenario.description,
        priority=scenario.priority,
        criteria=criteria,
        steps=tuple(step_from_pb(s, f"scenario.steps[{i}]") for i, s in enumerate(scenario.steps)),
        create_time=epoch,
        update_time=epoch,
    )


def scenario_to_pb(s: Scenario) -> pb.CollectionsScenario:
    c = s.criteria
    return pb.CollectionsScenario(
        scenario_id=str(s.scenario_id),
        display_name=s.display_name,
        description=s.description,
        priority=s.priority,
        entry_criteria=pb.EntryCriteria(
            min_overdue_amounts=[money(v, k) for k, v in sorted(c.min_overdue_amounts.items())],
            min_days_past_due=c.min_days_past_due,
            account_types=sorted(c.account_types),
            labels=dict(c.labels),
        ),
        steps=[step_to_pb(step) for step in s.steps],
        create_time=to_timestamp(s.create_time),
        update_time=to_timestamp(s.update_time),
        etag=s.etag,
    )


def scenarios_after_from_token(token: str) -> tuple[int, datetime, uuid.UUID] | None:
    values = decode_keyset(token, 3)
    if values is None:
        return None
    try:
        return int(values[0]), datetime.fromisoformat(values[1]), uuid.UUID(values[2])
    except ValueError:
        raise InvalidArgument("page_token", "is not a token this service issued") from None


def scenarios_page_token(after: tuple[int, datetime, uuid.UUID]) -> str:
    return encode_keyset(str(after[0]), after[1].isoformat(), str(after[2]))


# -- cases ------------------------------------------------------------------------------------------------


def action_to_pb(a: Action, currency_code: str) -> pb.CollectionsAction:
    return pb.CollectionsAction(
        sequence=a.sequence,
        type=_ACTIONS[a.action_type],
        step_index=a.step_index,
        due_time=to_timestamp(a.due_time),
        state=_ACTION_STATES[a.state],
        attempts=a.attempts,
        finish_time=to_timestamp(a.finish_time),
        outcome=a.outcome,
        amount=money(a.amount, currency_code) if a.amount is not None else None,
        request_id=str(a.request_id),
        notice_id=str(a.details.get("notice_id", "")),
    )


def promise_to_pb(p: Promise, currency_code: str) -> pb.PromiseToPay:
    return pb.PromiseToPay(
        promise_id=str(p.promise_id),
        case_id=str(p.case_id),
        instalments=[
            pb.PromiseInstalment(amount=money(i.amount, currency_code), due_date=to_date(i.due_date))
            for i in p.instalments
        ],
        state=_PROMISE_STATES[p.state],
        paid_amount=money(p.paid_amount, currency_code),
        note=p.note,
        actor=p.actor,
        create_time=to_timestamp(p.create_time),
        resolve_time=to_timestamp(p.resolve_time),
    )


def case_state(case: Case) -> pb.CollectionsCaseState.ValueType:
    if not case.is_open:
        return pb.COLLECTIONS_CASE_STATE_CLOSED
    if case.paused:
        return pb.COLLECTIONS_CASE_STATE_PAUSED
    if case.active_promise is not None:
        return pb.COLLECTIONS_CASE_STATE_PROMISE_TO_PAY
    return pb.COLLECTIONS_CASE_STATE_OPEN


def case_to_pb(case: Case, now: datetime | None = None) -> pb.CollectionsCase:
    out = pb.CollectionsCase(
        case_id=str(case.case_id),
        account_id=str(case.account_id),
        bill_unit_id=str(case.bill_unit_id),
        scenario_id=str(case.scenario_id),
        scenario_display_name=case.scenario_name,
        state=case_state(case),
        past_due_since=to_date(case.past_due_since),
        overdue_amount=money(case.overdue_amount, case.currency_code),
        open_time=to_timestamp(case.open_time),
        close_time=to_timestamp(case.close_time),
        close_reason=_CLOSE_REASONS[case.close_reason] if case.close_reason else pb.CASE_CLOSE_REASON_UNSPECIFIED,
        pause_reason=case.pause_reason,
        paused_by=case.paused_by,
        collector_id=case.collector_id,
        actions=[action_to_pb(a, case.currency_code) for a in case.actions],
        promises=[promise_to_pb(p, case.currency_code) for p in case.promises],
    )
    if now is not None:
        out.days_past_due = case.days_past_due(now if case.close_time is None else min(now, case.close_time))
    return out


_CASE_STATES = {
    pb.COLLECTIONS_CASE_STATE_OPEN: ("open", False, False),
    pb.COLLECTIONS_CASE_STATE_PAUSED: ("open", True, None),
    pb.COLLECTIONS_CASE_STATE_PROMISE_TO_PAY: ("open", False, True),
    pb.COLLECTIONS_CASE_STATE_CLOSED: ("closed", None, None),
}


def case_filter(state: int) -> tuple[str | None, bool | None, bool | None]:
    """(status, paused, promised) of a ListCollectionsCases state filter."""
    if state == pb.COLLECTIONS_CASE_STATE_UNSPECIFIED:
        return None, None, None
    if state not in _CASE_STATES:
        raise InvalidArgument("state", "is not a case state")
    return _CASE_STATES[state]  # type: ignore[index]


def cases_before_from_token(token: str) -> tuple[datetime, uuid.UUID] | None:
    values = decode_keyset(token, 2)
    if values is None:
        return None
    try:
        return datetime.fromisoformat(values[0]), uuid.UUID(values[1])
    except ValueError:
        raise InvalidArgument("page_token", "is not a token this service issued") from None


def cases_page_token(before: tuple[datetime, uuid.UUID]) -> str:
    return encode_keyset(before[0].isoformat(), str(before[1]))


def instalments_from_pb(promise: pb.PromiseToPay) -> list[Instalment]:
    out = []
    for i, inst in enumerate(promise.instalments):
        prefix = f"promise.instalments[{i}]"
        if not inst.HasField("amount"):
            raise InvalidArgument(f"{prefix}.amount", "is required")
        if not inst.HasField("due_date"):
            raise InvalidArgument(f"{prefix}.due_date", "is required")
        try:
            amount = from_money(inst.amount)
        except ValueError as exc:
            raise InvalidArgument(f"{prefix}.amount", str(exc)) from None
        try:
            # A known currency before the case is looked up; the case's own after (check_instalment_currency).
            currency_exponent(inst.amount.currency_code)
        except ValueError:
            raise InvalidArgument(
                f"{prefix}.amount.currency_code", "must be an ISO 4217 currency code such as EUR"
            ) from None
        out.append(Instalment(amount, from_date(inst.due_date, f"{prefix}.due_date")))
    return out


def check_instalment_currency(promise: pb.PromiseToPay, currency_code: str) -> None:
    for i, inst in enumerate(promise.instalments):
        if inst.amount.currency_code != currency_code:
            raise InvalidArgument(
                f"promise.instalments[{i}].amount.currency_code", f"must be the account's currency {currency_code}"
            )


# -- tasks --------------------------------------------------------------------------------------------------


def task_to_pb(t: Task) -> pb.CollectionsTask:
    return pb.CollectionsTask(
        task_id=str(t.task_id),
        case_id=str(t.case_id),
        account_id=str(t.account_id),
        title=t.title,
        description=t.description,
        due_date=to_date(t.due_date),
        state=pb.COLLECTIONS_TASK_STATE_DONE if t.done else pb.COLLECTIONS_TASK_STATE_OPEN,
        collector_id=t.collector_id,
        outcome=t.outcome,
        completed_by=t.completed_by,
        create_time=to_timestamp(t.create_time),
        complete_time=to_timestamp(t.complete_time),
    )


def task_state_filter(state: int) -> str | None:
    """The stored state a ListCollectionsTasks filter asks for (None: any)."""
    if state == pb.COLLECTIONS_TASK_STATE_UNSPECIFIED:
        return None
    if state == pb.COLLECTIONS_TASK_STATE_OPEN:
        return "open"
    if state == pb.COLLECTIONS_TASK_STATE_DONE:
        return "done"
    raise InvalidArgument("state", "is not a task state")


def tasks_after_from_token(token: str) -> tuple[date, uuid.UUID] | None:
    values = decode_keyset(token, 2)
    if values is None:
        return None
    try:
        return date.fromisoformat(values[0]), uuid.UUID(values[1])
    except ValueError:
        raise InvalidArgument("page_token", "is not a token this service issued") from None


def tasks_page_token(after: tuple[date, uuid.UUID]) -> str:
    return encode_keyset(after[0].isoformat(), str(after[1]))


# -- aging ----------------------------------------------------------------------------------------------------


def aging_to_pb(a: Aging) -> pb.AgingBuckets:
    c = a.currency_code
    values = {name: money(a.buckets[name], c) for name in BUCKETS}
    return pb.AgingBuckets(currency_code=c, total=money(a.total, c), **values)


def aging_after_from_token(token: str) -> tuple[uuid.UUID, str] | None:
    values = decode_keyset(token, 2)
    if values is None:
        return None
    try:
        return uuid.UUID(values[0]), values[1]
    except ValueError:
        raise InvalidArgument("page_token", "is not a token this service issued") from None


def aging_page_token(after: tuple[uuid.UUID, str]) -> str:
    return encode_keyset(str(after[0]), after[1])


# -- notices ----------------------------------------------------------------------------------------------------

_NOTICE_STATES = {
    DeliveryState.PENDING: pb.COLLECTIONS_NOTICE_DELIVERY_STATE_PENDING,
    DeliveryState.SENT: pb.COLLECTIONS_NOTICE_DELIVERY_STATE_SENT,
    DeliveryState.FAILED: pb.COLLECTIONS_NOTICE_DELIVERY_STATE_FAILED,
    DeliveryState.NO_RECIPIENT: pb.COLLECTIONS_NOTICE_DELIVERY_STATE_NO_RECIPIENT,
    NoticeOnlyState.CANCELLED: pb.COLLECTIONS_NOTICE_DELIVERY_STATE_CANCELLED,
}


def notice_to_pb(n: Notice) -> pb.CollectionsNotice:
    c = n.currency_code
    d = n.delivery
    return pb.CollectionsNotice(
        notice_id=str(n.notice_id),
        case_id=str(n.case_id),
        action_sequence=n.action_sequence,
        account_id=str(n.account_id),
        type=_ACTIONS[n.kind],
        template=n.template,
        overdue_amount=money(n.overdue_amount, c),
        days_past_due=n.days_past_due,
        bills=[
            pb.CollectionsNoticeBill(
                bill_id=str(b.bill_id),
                bill_number=b.bill_number,
                issue_date=to_date(b.issue_date),
                due_date=to_date(b.due_date),
                total=money(b.total, c),
                open_amount=money(b.open_amount, c),
            )
            for b in n.bills
        ],
        late_fees=money(n.late_fees, c) if n.late_fees > 0 else None,
        create_time=to_timestamp(n.create_time),
        delivery_state=_NOTICE_STATES.get(d.state, pb.COLLECTIONS_NOTICE_DELIVERY_STATE_UNSPECIFIED),
        attempts=d.attempts,
        last_error=d.last_error,
        last_attempt_time=to_timestamp(d.last_attempt_time),
        next_attempt_time=to_timestamp(d.next_attempt_time),
        sent_time=to_timestamp(d.sent_time),
        recipients=list(d.recipients),
        message_id=d.message_id,
    )


def notice_document_to_pb(d: NoticeDocument) -> pb.CollectionsNoticeDocument:
    return pb.CollectionsNoticeDocument(
        notice_id=str(d.notice_id),
        content_type=d.content_type,
        file_name=d.file_name,
        content=d.content,
        sha256=d.sha256,
        render_time=to_timestamp(d.render_time),
    )


# -- contact attempts -------------------------------------------------------------------------------------------

_CHANNELS = {
    ContactChannel.PHONE: pb.COLLECTIONS_CONTACT_CHANNEL_PHONE,
    ContactChannel.EMAIL: pb.COLLECTIONS_CONTACT_CHANNEL_EMAIL,
    ContactChannel.SMS: pb.COLLECTIONS_CONTACT_CHANNEL_SMS,
    ContactChannel.LETTER: pb.COLLECTIONS_CONTACT_CHANNEL_LETTER,
    ContactChannel.VISIT: pb.COLLECTIONS_CONTACT_CHANNEL_VISIT,
    ContactChannel.OTHER: pb.COLLECTIONS_CONTACT_CHANNEL_OTHER,
}
_CHANNELS_BACK = {v: k for k, v in _CHANNELS.items()}
_OUTCOMES = {
    ContactOutcome.PROMISED: pb.COLLECTIONS_CONTACT_OUTCOME_PROMISED,
    ContactOutcome.NO_ANSWER: pb.COLLECTIONS_CONTACT_OUTCOME_NO_ANSWER,
    ContactOutcome.LEFT_MESSAGE: pb.COLLECTIONS_CONTACT_OUTCOME_LEFT_MESSAGE,
    ContactOutcome.DISPUTED: pb.COLLECTIONS_CONTACT_OUTCOME_DISPUTED,
    ContactOutcome.REFUSED: pb.COLLECTIONS_CONTACT_OUTCOME_REFUSED,
    ContactOutcome.WRONG_CONTACT: pb.COLLECTIONS_CONTACT_OUTCOME_WRONG_CONTACT,
    ContactOutcome.CLAIMS_PAID: pb.COLLECTIONS_CONTACT_OUTCOME_CLAIMS_PAID,
    ContactOutcome.OTHER: pb.COLLECTIONS_CONTACT_OUTCOME_OTHER,
}
_OUTCOMES_BACK = {v: k for k, v in _OUTCOMES.items()}


def contact_from_pb(attempt: pb.CollectionsContactAttempt) -> tuple[ContactChannel, ContactOutcome, datetime | None]:
    """The channel, outcome and contact time of a RecordCollectionsContactAttempt request."""
    if attempt.channel not in _CHANNELS_BACK:
        raise InvalidArgument("attempt.channel", "is required: one of the CollectionsContactChannel values")
    if attempt.outcome not in _OUTCOMES_BACK:
        raise InvalidArgument("attempt.outcome", "is required: one of the CollectionsContactOutcome values")
    when = from_timestamp(attempt.contact_time) if attempt.HasField("contact_time") else None
    return _CHANNELS_BACK[attempt.channel], _OUTCOMES_BACK[attempt.outcome], when


def contact_to_pb(a: ContactAttempt) -> pb.CollectionsContactAttempt:
    return pb.CollectionsContactAttempt(
        attempt_id=str(a.attempt_id),
        case_id=str(a.case_id),
        account_id=str(a.account_id),
        channel=_CHANNELS[a.channel],
        outcome=_OUTCOMES[a.outcome],
        note=a.note,
        actor=a.actor,
        contact_time=to_timestamp(a.contact_time),
        record_time=to_timestamp(a.record_time),
    )


# -- events -----------------------------------------------------------------------------------------------------

CASE_OPENED = "evolutivo.billing.v1.collections_case.opened"
ACTION_EXECUTED = "evolutivo.billing.v1.collections_action.executed"
NOTICE_REQUESTED = "evolutivo.billing.v1.collections_notice.requested"
CASE_REFERRED = "evolutivo.billing.v1.collections_case.referred"
SUSPENSION_REQUESTED = "evolutivo.billing.v1.account_suspension.requested"
REINSTATEMENT_REQUESTED = "evolutivo.billing.v1.account_reinstatement.requested"
CASE_WRITTEN_OFF = "evolutivo.billing.v1.collections_case.written_off"
CASE_PAUSED = "evolutivo.billing.v1.collections_case.paused"
CASE_RESUMED = "evolutivo.billing.v1.collections_case.resumed"
CASE_CLOSED = "evolutivo.billing.v1.collections_case.closed"
PROMISE_MADE = "evolutivo.billing.v1.promise_to_pay.made"
PROMISE_KEPT = "evolutivo.billing.v1.promise_to_pay.kept"
PROMISE_BROKEN = "evolutivo.billing.v1.promise_to_pay.broken"
CONTACT_ATTEMPT_RECORDED = "evolutivo.billing.v1.collections_contact_attempt.recorded"


def encode(event: object) -> tuple[str, Message] | None:
    """The subject and message of a collections domain event; None for any other event."""
    match event:
        case CaseOpened(case=case):
            return CASE_OPENED, ev.CollectionsCaseOpened(collections_case=case_to_pb(case))
        case ActionExecuted(case=case, action=action):
            return ACTION_EXECUTED, ev.CollectionsActionExecuted(
                collections_case=case_to_pb(case), action=action_to_pb(action, case.currency_code)
            )
        case NoticeRequested(case=case, action=action, debt=debt, days_past_due=days):
            assert action.step is not None
            channel = (
                ev.COLLECTIONS_NOTICE_CHANNEL_EMAIL
                if action.action_type is ActionType.REMINDER_EMAIL
                else ev.COLLECTIONS_NOTICE_CHANNEL_LETTER
            )
            return NOTICE_REQUESTED, ev.CollectionsNoticeRequested(
                notice_id=str(action.request_id),
                case_id=str(case.case_id),
                account_id=str(case.account_id),
                channel=channel,
                template=action.step.template,
                overdue_amount=money(debt.amount, case.currency_code),
                days_past_due=days,
                bill_ids=[str(b) for b in debt.bill_ids],
            )
        case CaseReferred(case=case, action=action, debt=debt):
            return CASE_REFERRED, ev.CollectionsCaseReferred(
                collections_case=case_to_pb(case),
                agency=action.step.agency if action.step else "",
                overdue_amount=money(debt.amount, case.currency_code),
                bill_ids=[str(b) for b in debt.bill_ids],
            )
        case SuspensionRequested(case=case, action=action):
            return SUSPENSION_REQUESTED, ev.AccountSuspensionRequested(
                case_id=str(case.case_id), account_id=str(case.account_id), request_id=str(action.request_id)
            )
        case ReinstatementRequested(case=case, action=action):
            return REINSTATEMENT_REQUESTED, ev.AccountReinstatementRequested(
                case_id=str(case.case_id), account_id=str(case.account_id), request_id=str(action.request_id)
            )
        case CaseWrittenOff(case=case, amount=amount, bill_ids=bill_ids):
            return CASE_WRITTEN_OFF, ev.CollectionsCaseWrittenOff(
                collections_case=case_to_pb(case),
                amount=money(amount, case.currency_code),
                bill_ids=[str(b) for b in bill_ids],
            )
        case CasePaused(case=case):
            return CASE_PAUSED, ev.CollectionsCasePaused(collections_case=case_to_pb(case))
        case CaseResumed(case=case, reason=reason, actor=actor):
            return CASE_RESUMED, ev.CollectionsCaseResumed(
                collections_case=case_to_pb(case), reason=reason, actor=actor
            )
        case CaseClosed(case=case):
            return CASE_CLOSED, ev.CollectionsCaseClosed(collections_case=case_to_pb(case))
        case PromiseMade(case=case, promise=promise):
            return PROMISE_MADE, ev.PromiseToPayMade(
                promise=promise_to_pb(promise, case.currency_code), account_id=str(case.account_id)
            )
        case PromiseKept(case=case, promise=promise):
            return PROMISE_KEPT, ev.PromiseToPayKept(
                promise=promise_to_pb(promise, case.currency_code), account_id=str(case.account_id)
            )
        case PromiseBroken(case=case, promise=promise):
            return PROMISE_BROKEN, ev.PromiseToPayBroken(
                promise=promise_to_pb(promise, case.currency_code), account_id=str(case.account_id)
            )
        case ContactAttemptRecorded(attempt=attempt):
            return CONTACT_ATTEMPT_RECORDED, ev.CollectionsContactAttemptRecorded(attempt=contact_to_pb(attempt))
    return None


# -- customer's accounts ----------------------------------------------------------------------------------------

_ACCOUNT_TYPES = {account_pb2.ACCOUNT_TYPE_INDIVIDUAL: "individual", account_pb2.ACCOUNT_TYPE_BUSINESS: "business"}


def account_facts_from_pb(account: account_pb2.Account, facts_time: datetime) -> AccountFacts:
    """What collections keeps of customer's Account: exemption and named scenario (billing profile),
    type and labels; ordered by the event's time."""
    profile = account.billing_profile
    return AccountFacts(
        account_id=uuid.UUID(account.account_id),
        exempt=profile.collections_exempt,
        scenario_id=profile.collections_scenario_id,
        account_type=_ACCOUNT_TYPES.get(account.type, ""),
        labels=dict(account.labels),
        facts_time=facts_time,
    )
