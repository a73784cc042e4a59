"""CollectionsService (served by billing): scenarios, cases, promises to pay, tasks, aging."""

from __future__ import annotations

from evolutivo.billing.v1 import collections_pb2 as c
from evolutivo.billing.v1 import collections_service_pb2 as pb

from bad_input import ABORTED, EXISTS, INVALID, NOT_FOUND, Case, case
from bad_input.values import NOT_A_TOKEN, NOT_UUID, NUL, SQL, UNKNOWN, date, eur, long, money
from bad_input.world import World

S = "/evolutivo.billing.v1.CollectionsService/"
REMIND = c.COLLECTIONS_ACTION_TYPE_REMINDER_EMAIL


def scenario(**fields: object) -> c.CollectionsScenario:
    values: dict[str, object] = {
        "display_name": "Bad input new scenario",
        "priority": 950,
        "steps": [c.CollectionsStep(days_past_due=3, action=REMIND)],
    }
    values.update(fields)
    return c.CollectionsScenario(**values)  # type: ignore[arg-type]


def create(s: c.CollectionsScenario) -> pb.CreateCollectionsScenarioRequest:
    return pb.CreateCollectionsScenarioRequest(scenario=s)


def fee(**rule: object) -> c.CollectionsScenario:
    return scenario(
        steps=[
            c.CollectionsStep(
                days_past_due=3, action=c.COLLECTIONS_ACTION_TYPE_LATE_FEE, late_fee=c.LateFeeRule(**rule)
            )
        ]  # type: ignore[arg-type]
    )


def update(w: World, **fields: object) -> pb.UpdateCollectionsScenarioRequest:
    return pb.UpdateCollectionsScenarioRequest(scenario=scenario(scenario_id=w.scenario_id, **fields))


def promise(*instalments: c.PromiseInstalment) -> pb.CreatePromiseToPayRequest:
    # Validation comes before the case is looked up: an unknown case shows which field is wrong.
    return pb.CreatePromiseToPayRequest(
        case_id=UNKNOWN, promise=c.PromiseToPay(instalments=instalments, actor="collector:1")
    )


def instalment(amount: object, due: object) -> c.PromiseInstalment:
    return c.PromiseInstalment(amount=amount, due_date=due)  # type: ignore[arg-type]


CASES: list[Case] = [
    # --- Scenarios
    case(
        S + "CreateCollectionsScenario",
        "scenario missing",
        lambda w: pb.CreateCollectionsScenarioRequest(),
        INVALID,
        "scenario",
    ),
    case(
        S + "CreateCollectionsScenario",
        "name missing",
        lambda w: create(scenario(display_name="")),
        INVALID,
        "scenario.display_name",
    ),
    case(
        S + "CreateCollectionsScenario",
        "name over-long",
        lambda w: create(scenario(display_name=long(201))),
        INVALID,
        "scenario.display_name",
    ),
    case(
        S + "CreateCollectionsScenario",
        "name with NUL",
        lambda w: create(scenario(display_name=NUL)),
        INVALID,
        "scenario.display_name",
    ),
    case(S + "CreateCollectionsScenario", "no steps", lambda w: create(scenario(steps=[])), INVALID, "scenario.steps"),
    case(
        S + "CreateCollectionsScenario",
        "51 steps",
        lambda w: create(scenario(steps=[c.CollectionsStep(days_past_due=i, action=REMIND) for i in range(51)])),
        INVALID,
        "scenario.steps",
    ),
    case(
        S + "CreateCollectionsScenario",
        "step action unspecified",
        lambda w: create(scenario(steps=[c.CollectionsStep(days_past_due=3)])),
        INVALID,
        "scenario.steps[0].action",
    ),
    case(
        S + "CreateCollectionsScenario",
        "step days past due negative",
        lambda w: create(scenario(steps=[c.CollectionsStep(days_past_due=-1, action=REMIND)])),
        INVALID,
        "scenario.steps[0].days_past_due",
    ),
    case(
        S + "CreateCollectionsScenario",
        "step days past due huge",
        lambda w: create(scenario(steps=[c.CollectionsStep(days_past_due=2_000_000_000, action=REMIND)])),
        INVALID,
        "scenario.steps[0].days_past_due",
    ),
    case(
        S + "CreateCollectionsScenario",
        "steps out of day order",
        lambda w: create(
            scenario(
                steps=[
                    c.CollectionsStep(days_past_due=9, action=REMIND),
                    c.CollectionsStep(days_past_due=3, action=REMIND),
                ]
            )
        ),
        INVALID,
        "scenario.steps[1].days_past_due",
    ),
    case(
        S + "CreateCollectionsScenario",
        "late fee step without its rule",
        lambda w: create(
            scenario(steps=[c.CollectionsStep(days_past_due=3, action=c.COLLECTIONS_ACTION_TYPE_LATE_FEE)])
        ),
        INVALID,
        "scenario.steps[0].late_fee",
    ),
    case(
        S + "CreateCollectionsScenario",
        "late fee percent NaN",
        lambda w: create(fee(percent="NaN")),
        INVALID,
        "scenario.steps[0].late_fee",
    ),
    case(
        S + "CreateCollectionsScenario",
        "late fee percent over 100",
        lambda w: create(fee(percent="100.5")),
        INVALID,
        "scenario.steps[0].late_fee",
    ),
    case(
        S + "CreateCollectionsScenario",
        "late fee fixed amount negative",
        lambda w: create(fee(fixed_amounts=[eur("-5.00")])),
        INVALID,
        "scenario.steps[0].late_fee",
    ),
    case(
        S + "CreateCollectionsScenario",
        "late fee in an unknown currency",
        lambda w: create(fee(fixed_amounts=[money(5, currency="ZZZ")])),
        INVALID,
        "scenario.steps[0].late_fee",
    ),
    case(
        S + "CreateCollectionsScenario",
        "late fee twice in one currency",
        lambda w: create(fee(fixed_amounts=[eur("5.00"), eur("6.00")])),
        INVALID,
        "scenario.steps[0].late_fee",
    ),
    case(
        S + "CreateCollectionsScenario",
        "manual task without a title",
        lambda w: create(
            scenario(
                steps=[
                    c.CollectionsStep(
                        days_past_due=3,
                        action=c.COLLECTIONS_ACTION_TYPE_MANUAL_TASK,
                        manual_task=c.ManualTaskRule(due_in_days=2),
                    )
                ]
            )
        ),
        INVALID,
        "scenario.steps[0].manual_task",
    ),
    case(
        S + "CreateCollectionsScenario",
        "entry minimum in an unknown currency",
        lambda w: create(scenario(entry_criteria=c.EntryCriteria(min_overdue_amounts=[money(5, currency="ZZZ")]))),
        INVALID,
        "scenario.entry_criteria.min_overdue_amounts",
    ),
    case(
        S + "CreateCollectionsScenario",
        "entry account type unknown",
        lambda w: create(scenario(entry_criteria=c.EntryCriteria(account_types=["martian"]))),
        INVALID,
        "scenario.entry_criteria.account_types",
    ),
    case(
        S + "CreateCollectionsScenario",
        "name taken",
        lambda w: create(scenario(display_name=f"Bad input {w.offer_code}")),
        EXISTS,
    ),
    case(
        S + "CreateCollectionsScenario",
        "request id not a UUID",
        lambda w: pb.CreateCollectionsScenarioRequest(scenario=scenario(), request_id=NOT_UUID),
        INVALID,
        "request_id",
    ),
    case(
        S + "GetCollectionsScenario",
        "id not a UUID",
        lambda w: pb.GetCollectionsScenarioRequest(scenario_id=SQL),
        INVALID,
        "scenario_id",
    ),
    case(
        S + "GetCollectionsScenario",
        "unknown scenario",
        lambda w: pb.GetCollectionsScenarioRequest(scenario_id=UNKNOWN),
        NOT_FOUND,
    ),
    case(
        S + "ListCollectionsScenarios",
        "page size negative",
        lambda w: pb.ListCollectionsScenariosRequest(page_size=-1),
        INVALID,
        "page_size",
    ),
    case(
        S + "ListCollectionsScenarios",
        "page token forged",
        lambda w: pb.ListCollectionsScenariosRequest(page_token=NOT_A_TOKEN),
        INVALID,
        "page_token",
    ),
    case(S + "UpdateCollectionsScenario", "no steps", lambda w: update(w, steps=[]), INVALID, "scenario.steps"),
    case(
        S + "UpdateCollectionsScenario",
        "name missing",
        lambda w: update(w, display_name=""),
        INVALID,
        "scenario.display_name",
    ),
    # ABORTED, as a stale etag is in every service (AIP-154).
    case(
        S + "UpdateCollectionsScenario",
        "stale etag",
        lambda w: update(w, etag="stale"),
        ABORTED,
        reason="ETAG_MISMATCH",
    ),
    case(
        S + "UpdateCollectionsScenario",
        "id not a UUID",
        lambda w: pb.UpdateCollectionsScenarioRequest(scenario=scenario(scenario_id=NOT_UUID)),
        INVALID,
        "scenario.scenario_id",
    ),
    case(
        S + "UpdateCollectionsScenario",
        "unknown scenario",
        lambda w: pb.UpdateCollectionsScenarioRequest(scenario=scenario(scenario_id=UNKNOWN)),
        NOT_FOUND,
    ),
    case(
        S + "DeleteCollectionsScenario",
        "id not a UUID",
        lambda w: pb.DeleteCollectionsScenarioRequest(scenario_id=NOT_UUID),
        INVALID,
        "scenario_id",
    ),
    case(
        S + "DeleteCollectionsScenario",
        "unknown scenario",
        lambda w: pb.DeleteCollectionsScenarioRequest(scenario_id=UNKNOWN),
        NOT_FOUND,
    ),
    # --- Cases
    case(
        S + "GetCollectionsCase",
        "id not a UUID",
        lambda w: pb.GetCollectionsCaseRequest(case_id=NOT_UUID),
        INVALID,
        "case_id",
    ),
    case(S + "GetCollectionsCase", "unknown case", lambda w: pb.GetCollectionsCaseRequest(case_id=UNKNOWN), NOT_FOUND),
    case(
        S + "ListCollectionsCases",
        "account id not a UUID",
        lambda w: pb.ListCollectionsCasesRequest(account_id=SQL),
        INVALID,
        "account_id",
    ),
    case(
        S + "ListCollectionsCases",
        "state out of the enum",
        lambda w: pb.ListCollectionsCasesRequest(state=17),
        INVALID,
        "state",
    ),
    case(
        S + "ListCollectionsCases",
        "page token forged",
        lambda w: pb.ListCollectionsCasesRequest(page_token=NOT_A_TOKEN),
        INVALID,
        "page_token",
    ),
    case(
        S + "PauseCollectionsCase",
        "case id not a UUID",
        lambda w: pb.PauseCollectionsCaseRequest(case_id=NOT_UUID, reason="r", actor="a"),
        INVALID,
        "case_id",
    ),
    case(
        S + "PauseCollectionsCase",
        "unknown case",
        lambda w: pb.PauseCollectionsCaseRequest(case_id=UNKNOWN, reason="r", actor="a"),
        NOT_FOUND,
    ),
    # The request's fields are checked before the case or task is looked up: an unknown id shows
    # which field is wrong.
    case(
        S + "PauseCollectionsCase",
        "reason missing",
        lambda w: pb.PauseCollectionsCaseRequest(case_id=UNKNOWN, actor="a"),
        INVALID,
        "reason",
    ),
    case(
        S + "PauseCollectionsCase",
        "actor over-long",
        lambda w: pb.PauseCollectionsCaseRequest(case_id=UNKNOWN, reason="r", actor=long(201)),
        INVALID,
        "actor",
    ),
    case(
        S + "ResumeCollectionsCase",
        "case id SQL-looking",
        lambda w: pb.ResumeCollectionsCaseRequest(case_id=SQL, reason="r", actor="a"),
        INVALID,
        "case_id",
    ),
    case(
        S + "ResumeCollectionsCase",
        "unknown case",
        lambda w: pb.ResumeCollectionsCaseRequest(case_id=UNKNOWN, reason="r", actor="a"),
        NOT_FOUND,
    ),
    case(
        S + "ResumeCollectionsCase",
        "reason over-long",
        lambda w: pb.ResumeCollectionsCaseRequest(case_id=UNKNOWN, reason=long(501), actor="a"),
        INVALID,
        "reason",
    ),
    case(
        S + "ResumeCollectionsCase",
        "actor missing",
        lambda w: pb.ResumeCollectionsCaseRequest(case_id=UNKNOWN, reason="r"),
        INVALID,
        "actor",
    ),
    case(
        S + "AssignCollectionsCase",
        "collector id over-long",
        lambda w: pb.AssignCollectionsCaseRequest(case_id=UNKNOWN, collector_id=long(201)),
        INVALID,
        "collector_id",
    ),
    case(
        S + "AssignCollectionsCase",
        "case id SQL-looking",
        lambda w: pb.AssignCollectionsCaseRequest(case_id=SQL),
        INVALID,
        "case_id",
    ),
    case(
        S + "AssignCollectionsCase",
        "unknown case",
        lambda w: pb.AssignCollectionsCaseRequest(case_id=UNKNOWN, collector_id="c1"),
        NOT_FOUND,
    ),
    # --- Promises to pay
    # The fields come first (on an unknown case); what depends on the case (its currency, the
    # account's today) after it is found.
    case(S + "CreatePromiseToPay", "no instalments", lambda w: promise(), INVALID, "promise.instalments"),
    case(
        S + "CreatePromiseToPay",
        "25 instalments",
        lambda w: promise(*[instalment(eur("1.00"), date(w.now.year + 1, 1, d + 1)) for d in range(25)]),
        INVALID,
        "promise.instalments",
    ),
    case(
        S + "CreatePromiseToPay",
        "amount zero",
        lambda w: promise(instalment(eur("0.00"), date(w.now.year + 1, 1, 15))),
        INVALID,
        "promise.instalments[0].amount",
    ),
    case(
        S + "CreatePromiseToPay",
        "amount negative",
        lambda w: promise(instalment(eur("-3.00"), date(w.now.year + 1, 1, 15))),
        INVALID,
        "promise.instalments[0].amount",
    ),
    case(
        S + "CreatePromiseToPay",
        "amount without a currency",
        lambda w: promise(instalment(money(3, 0, ""), date(w.now.year + 1, 1, 15))),
        INVALID,
        "promise.instalments[0].amount.currency_code",
    ),
    case(
        S + "CreatePromiseToPay",
        "due date 30 February",
        lambda w: promise(instalment(eur("3.00"), date(w.now.year + 1, 2, 30))),
        INVALID,
        "promise.instalments[0].due_date",
    ),
    case(
        S + "CreatePromiseToPay",
        "due dates out of order",
        lambda w: promise(
            instalment(eur("3.00"), date(w.now.year + 1, 2, 15)), instalment(eur("3.00"), date(w.now.year + 1, 1, 15))
        ),
        INVALID,
        "promise.instalments[1].due_date",
    ),
    case(
        S + "CreatePromiseToPay",
        "actor missing",
        lambda w: pb.CreatePromiseToPayRequest(
            case_id=UNKNOWN, promise=c.PromiseToPay(instalments=[instalment(eur("3.00"), date(w.now.year + 1, 1, 15))])
        ),
        INVALID,
        "promise.actor",
    ),
    case(
        S + "CreatePromiseToPay",
        "case id not a UUID",
        lambda w: pb.CreatePromiseToPayRequest(
            case_id=NOT_UUID,
            promise=c.PromiseToPay(instalments=[instalment(eur("3.00"), date(w.now.year + 1, 1, 15))], actor="a"),
        ),
        INVALID,
        "case_id",
    ),
    case(
        S + "CreatePromiseToPay",
        "unknown case",
        lambda w: pb.CreatePromiseToPayRequest(
            case_id=UNKNOWN,
            promise=c.PromiseToPay(instalments=[instalment(eur("3.00"), date(w.now.year + 1, 1, 15))], actor="a"),
        ),
        NOT_FOUND,
    ),
    # --- Tasks and aging
    case(
        S + "ListCollectionsTasks",
        "case id not a UUID",
        lambda w: pb.ListCollectionsTasksRequest(case_id=NOT_UUID),
        INVALID,
        "case_id",
    ),
    case(
        S + "ListCollectionsTasks",
        "page size negative",
        lambda w: pb.ListCollectionsTasksRequest(page_size=-2),
        INVALID,
        "page_size",
    ),
    case(
        S + "CompleteCollectionsTask",
        "task id not a UUID",
        lambda w: pb.CompleteCollectionsTaskRequest(task_id=SQL, outcome="called", actor="a"),
        INVALID,
        "task_id",
    ),
    case(
        S + "CompleteCollectionsTask",
        "unknown task",
        lambda w: pb.CompleteCollectionsTaskRequest(task_id=UNKNOWN, outcome="called", actor="a"),
        NOT_FOUND,
    ),
    case(
        S + "CompleteCollectionsTask",
        "outcome missing",
        lambda w: pb.CompleteCollectionsTaskRequest(task_id=UNKNOWN, actor="a"),
        INVALID,
        "outcome",
    ),
    case(
        S + "CompleteCollectionsTask",
        "actor SQL-looking and over-long",
        lambda w: pb.CompleteCollectionsTaskRequest(task_id=UNKNOWN, outcome="called", actor=SQL + long(200)),
        INVALID,
        "actor",
    ),
    case(
        S + "GetAging",
        "date 30 February",
        lambda w: pb.GetAgingRequest(as_of_date=date(2026, 2, 30)),
        INVALID,
        "as_of_date",
    ),
    case(
        S + "GetAging",
        "date month 13",
        lambda w: pb.GetAgingRequest(as_of_date=date(2026, 13, 1)),
        INVALID,
        "as_of_date",
    ),
    case(
        S + "GetAging", "currency unknown", lambda w: pb.GetAgingRequest(currency_code="ZZZ"), INVALID, "currency_code"
    ),
    case(
        S + "GetAging",
        "account id not a UUID",
        lambda w: pb.GetAgingRequest(account_id=NOT_UUID),
        INVALID,
        "account_id",
    ),
    case(
        S + "GetAging", "page token forged", lambda w: pb.GetAgingRequest(page_token=NOT_A_TOKEN), INVALID, "page_token"
    ),
    # --- Notices and contact attempts
    case(
        S + "GetCollectionsNotice",
        "id not a UUID",
        lambda w: pb.GetCollectionsNoticeRequest(notice_id=SQL),
        INVALID,
        "notice_id",
    ),
    case(
        S + "GetCollectionsNotice",
        "unknown notice",
        lambda w: pb.GetCollectionsNoticeRequest(notice_id=UNKNOWN),
        NOT_FOUND,
    ),
    case(
        S + "GetCollectionsNoticeDocument",
        "id not a UUID",
        lambda w: pb.GetCollectionsNoticeDocumentRequest(notice_id=NOT_UUID),
        INVALID,
        "notice_id",
    ),
    case(
        S + "GetCollectionsNoticeDocument",
        "unknown notice",
        lambda w: pb.GetCollectionsNoticeDocumentRequest(notice_id=UNKNOWN),
        NOT_FOUND,
    ),
    case(
        S + "RecordCollectionsContactAttempt",
        "case id not a UUID",
        lambda w: pb.RecordCollectionsContactAttemptRequest(case_id=NOT_UUID),
        INVALID,
        "case_id",
    ),
    case(
        S + "ListCollectionsContactAttempts",
        "case id missing",
        lambda w: pb.ListCollectionsContactAttemptsRequest(),
        INVALID,
        "case_id",
    ),
    case(
        S + "ListCollectionsContactAttempts",
        "case id not a UUID",
        lambda w: pb.ListCollectionsContactAttemptsRequest(case_id=SQL),
        INVALID,
        "case_id",
    ),
]
