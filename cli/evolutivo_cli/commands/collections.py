"""`evolutivo collections`: dunning cases, scenarios, tasks and the aging report (billing's
CollectionsService)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer
from evolutivo.billing.v1 import collections_pb2 as cpb
from evolutivo.billing.v1 import collections_service_pb2 as pb
from google.protobuf import json_format
from google.type import date_pb2

from evolutivo_cli.app import state
from evolutivo_cli.charts import bars
from evolutivo_cli.commands._common import Limit, RequestId, enum_option, more, paginate, request_id
from evolutivo_cli.commands.balances import actor_default
from evolutivo_cli.errors import CliError
from evolutivo_cli.parsing import calendar_date, decimal_amount
from evolutivo_cli.render import Output, day, decimal, details, enum, money, table, timestamp, to_money

app = typer.Typer(no_args_is_help=True)

_CASE_STATE = cpb.CollectionsCaseState.DESCRIPTOR
_ACTION = cpb.CollectionsActionType.DESCRIPTOR
_TASK_STATE = cpb.CollectionsTaskState.DESCRIPTOR

BUCKETS = (
    ("current", "current"),
    ("1-30", "days_1_to_30"),
    ("31-60", "days_31_to_60"),
    ("61-90", "days_61_to_90"),
    ("90+", "over_90_days"),
)


def aging_bars(out: Output, buckets: cpb.AgingBuckets, title: str) -> None:
    rows = [(label, decimal(getattr(buckets, field))) for label, field in BUCKETS]
    out.print(bars(rows, buckets.currency_code, title=title))


@app.command("aging")
def aging(
    ctx: typer.Context,
    as_of: Annotated[str | None, typer.Option(help="age as of this date (default: today)")] = None,
    currency: Annotated[str | None, typer.Option(help="only this currency")] = None,
    account: Annotated[str | None, typer.Option(help="only this account")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="accounts listed")] = 20,
) -> None:
    """Receivables by days past due: a bar per bucket, per currency, and the accounts behind them."""
    cli = state(ctx)
    request = pb.GetAgingRequest(currency_code=currency or "", account_id=account or "")
    if as_of:
        when = calendar_date(as_of, "--as-of")
        request.as_of_date.CopyFrom(date_pb2.Date(year=when.year, month=when.month, day=when.day))
    stub = cli.clients.collections
    first: pb.GetAgingResponse | None = None

    def fetch(token: str, size: int) -> pb.GetAgingResponse:
        nonlocal first
        request.page_token, request.page_size = token, size
        page = stub.GetAging(request)
        first = first or page
        return page

    accounts, token = paginate(fetch, "accounts", limit)
    assert first is not None
    result = pb.GetAgingResponse()
    result.CopyFrom(first)
    del result.accounts[:]
    result.accounts.extend(accounts)
    result.next_page_token = token

    def show() -> None:
        if not result.totals:
            cli.output.print(f"No receivables as of {day(result.as_of_date)}.")
        for totals in result.totals:
            dso = result.days_sales_outstanding.get(totals.currency_code, "")
            title = f"Aging as of {day(result.as_of_date)} — {totals.currency_code}, total {money(totals.total)}"
            aging_bars(cli.output, totals, title)
            if dso:
                cli.output.print(f"  [dim]days sales outstanding (90 days): {dso}[/]")
        if accounts:
            rows = [
                [
                    a.account_id,
                    a.buckets.currency_code,
                    *[money(getattr(a.buckets, f)) for _, f in BUCKETS],
                    money(a.buckets.total),
                ]
                for a in accounts
            ]
            cli.output.print(
                table(
                    "Accounts",
                    ["account", "currency", *[b for b, _ in BUCKETS], "total"],
                    rows,
                    more(token, len(accounts)),
                )
            )

    cli.output.emit(result, show)


def case_rows(cases: list[cpb.CollectionsCase]) -> list[list[object]]:
    return [
        [
            c.case_id,
            c.account_id,
            c.scenario_display_name,
            enum(c, "state").replace("_", " "),
            money(c.overdue_amount),
            c.days_past_due,
            day(c.past_due_since),
            c.collector_id,
            enum(c, "close_reason").replace("_", " "),
        ]
        for c in cases
    ]


CASE_COLUMNS = [
    "id",
    "account",
    "scenario",
    "state",
    "overdue",
    "days past due",
    "past due since",
    "collector",
    "closed",
]


def show_case(out: Output, case: cpb.CollectionsCase) -> None:
    out.print(details(f"Collections case {case.case_id}", zip(CASE_COLUMNS, case_rows([case])[0], strict=True)))
    if case.pause_reason:
        out.print(f"paused by {case.paused_by}: {case.pause_reason}")
    rows = [
        [
            a.sequence,
            enum(a, "type").replace("_", " "),
            timestamp(a.due_time),
            enum(a, "state"),
            money(a.amount),
            a.outcome,
        ]
        for a in case.actions
    ]
    out.print(table("Actions", ["#", "action", "due", "state", "amount", "outcome"], rows))
    if case.promises:
        rows = [
            [
                p.promise_id,
                enum(p, "state"),
                ", ".join(f"{money(i.amount)} by {day(i.due_date)}" for i in p.instalments),
                money(p.paid_amount),
            ]
            for p in case.promises
        ]
        out.print(table("Promises to pay", ["id", "state", "instalments", "paid"], rows))


@app.command("list")
def list_cases(
    ctx: typer.Context,
    account: Annotated[str | None, typer.Option(help="only this account's cases")] = None,
    state_: Annotated[str | None, typer.Option("--state", help="open, paused, promise_to_pay or closed")] = None,
    collector: Annotated[str | None, typer.Option(help="only this collector's (a work queue)")] = None,
    limit: Annotated[int, Limit] = 50,
) -> None:
    """List collections cases, newest first."""
    cli = state(ctx)
    stub = cli.clients.collections
    request = pb.ListCollectionsCasesRequest(
        account_id=account or "",
        state=enum_option(_CASE_STATE, state_, "--state"),
        collector_id=collector or "",
    )

    def fetch(token: str, size: int) -> pb.ListCollectionsCasesResponse:
        request.page_token, request.page_size = token, size
        return stub.ListCollectionsCases(request)

    found, token = paginate(fetch, "collections_cases", limit)
    cli.output.emit(
        pb.ListCollectionsCasesResponse(collections_cases=found, next_page_token=token),
        lambda: cli.output.print(table("Collections cases", CASE_COLUMNS, case_rows(found), more(token, len(found)))),
    )


@app.command("get")
def get_case(ctx: typer.Context, case_id: Annotated[str, typer.Argument(help="case id")]) -> None:
    """Show a case with its actions and promises."""
    cli = state(ctx)
    case = cli.clients.collections.GetCollectionsCase(pb.GetCollectionsCaseRequest(case_id=case_id)).collections_case
    cli.output.emit(case, lambda: show_case(cli.output, case))


def parse_step(text: str, late_fee: Decimal | None, currency: str) -> cpb.CollectionsStep:
    days, sep, action = text.partition("=")
    if not sep or not days.strip().isdigit():
        raise CliError(f"--step: {text!r} is not DAYS=ACTION, e.g. 3=reminder_email or 20=suspend")
    step = cpb.CollectionsStep(days_past_due=int(days), action=enum_option(_ACTION, action, "--step"))
    if step.action == cpb.COLLECTIONS_ACTION_TYPE_LATE_FEE:
        if late_fee is None:
            raise CliError("--step ...=late_fee needs --late-fee AMOUNT")
        step.late_fee.fixed_amounts.append(to_money(late_fee, currency))
    if step.action == cpb.COLLECTIONS_ACTION_TYPE_MANUAL_TASK:
        step.manual_task.CopyFrom(cpb.ManualTaskRule(title="Call the customer", due_in_days=3))
    return step


def scenario_rows(scenarios: list[cpb.CollectionsScenario]) -> list[list[object]]:
    return [
        [
            s.scenario_id,
            s.display_name,
            s.priority,
            ", ".join(f"+{st.days_past_due} {enum(st, 'action').replace('_', ' ')}" for st in s.steps),
        ]
        for s in scenarios
    ]


@app.command("create")
def create_scenario(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="scenario name (unique)")] = None,
    step: Annotated[
        list[str] | None, typer.Option(help="DAYS=ACTION, e.g. 3=reminder_email, 10=late_fee, 20=suspend (repeatable)")
    ] = None,
    late_fee: Annotated[str | None, typer.Option(help="the late fee of a late_fee step")] = None,
    currency: Annotated[str, typer.Option(help="currency of the late fee")] = "EUR",
    priority: Annotated[int, typer.Option(help="lower first among scenarios whose criteria match")] = 100,
    min_days: Annotated[int, typer.Option(help="least days past due to enter")] = 0,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="a CollectionsScenario as protobuf JSON")] = None,
    request: Annotated[str | None, RequestId] = None,
) -> None:
    """Create a collections (dunning) scenario, from flags or a JSON file."""
    cli = state(ctx)
    scenario = cpb.CollectionsScenario()
    if file is not None:
        try:
            json_format.ParseDict(json.loads(file.read_text()), scenario)
        except (OSError, ValueError, json_format.ParseError) as exc:
            raise CliError(f"--file {file}: {exc}") from None
    if name:
        scenario.display_name = name
    fee = decimal_amount(late_fee, "--late-fee") if late_fee else None
    for text in step or []:
        scenario.steps.append(parse_step(text, fee, currency))
    if not file:
        scenario.priority = priority
        scenario.entry_criteria.min_days_past_due = min_days
    if not scenario.display_name or not scenario.steps:
        raise CliError("a scenario needs --name and at least one --step (or --file)")
    created = cli.clients.collections.CreateCollectionsScenario(
        pb.CreateCollectionsScenarioRequest(scenario=scenario, request_id=request_id(request))
    ).scenario
    cli.output.emit(
        created,
        lambda: cli.output.print(
            table("Scenario created", ["id", "name", "priority", "steps"], scenario_rows([created]))
        ),
    )


@app.command("scenarios")
def scenarios(ctx: typer.Context, limit: Annotated[int, Limit] = 50) -> None:
    """List scenarios by priority."""
    cli = state(ctx)
    stub = cli.clients.collections

    def fetch(token: str, size: int) -> pb.ListCollectionsScenariosResponse:
        return stub.ListCollectionsScenarios(pb.ListCollectionsScenariosRequest(page_token=token, page_size=size))

    found, token = paginate(fetch, "scenarios", limit)
    cli.output.emit(
        pb.ListCollectionsScenariosResponse(scenarios=found, next_page_token=token),
        lambda: cli.output.print(
            table("Collections scenarios", ["id", "name", "priority", "steps"], scenario_rows(found))
        ),
    )


@app.command("pause")
def pause(
    ctx: typer.Context,
    case_id: str,
    reason: Annotated[str, typer.Option(help="why")],
) -> None:
    """Pause a case's dunning."""
    cli = state(ctx)
    case = cli.clients.collections.PauseCollectionsCase(
        pb.PauseCollectionsCaseRequest(case_id=case_id, reason=reason, actor=actor_default())
    ).collections_case
    cli.output.emit(case, lambda: show_case(cli.output, case))


@app.command("resume")
def resume(
    ctx: typer.Context,
    case_id: str,
    reason: Annotated[str, typer.Option(help="why")],
) -> None:
    """Resume a paused case at the step it was on."""
    cli = state(ctx)
    case = cli.clients.collections.ResumeCollectionsCase(
        pb.ResumeCollectionsCaseRequest(case_id=case_id, reason=reason, actor=actor_default())
    ).collections_case
    cli.output.emit(case, lambda: show_case(cli.output, case))


@app.command("assign")
def assign(
    ctx: typer.Context, case_id: str, collector: Annotated[str, typer.Argument(help="collector id; '' unassigns")]
) -> None:
    """Assign a case (and its open tasks) to a collector."""
    cli = state(ctx)
    case = cli.clients.collections.AssignCollectionsCase(
        pb.AssignCollectionsCaseRequest(case_id=case_id, collector_id=collector)
    ).collections_case
    cli.output.emit(case, lambda: show_case(cli.output, case))


@app.command("promise")
def promise(
    ctx: typer.Context,
    case_id: str,
    amount: Annotated[str, typer.Argument(help="amount promised")],
    by: Annotated[str, typer.Option(help="the date it is promised by (account's local date)")],
    currency: Annotated[str, typer.Option(help="the account's currency")] = "EUR",
    note: Annotated[str, typer.Option(help="free text")] = "",
    request: Annotated[str | None, RequestId] = None,
) -> None:
    """Record a promise to pay on a case: dunning waits while it is kept."""
    cli = state(ctx)
    when = calendar_date(by, "--by")
    instalment = cpb.PromiseInstalment(
        amount=to_money(decimal_amount(amount, "AMOUNT"), currency),
        due_date=date_pb2.Date(year=when.year, month=when.month, day=when.day),
    )
    done = cli.clients.collections.CreatePromiseToPay(
        pb.CreatePromiseToPayRequest(
            case_id=case_id,
            promise=cpb.PromiseToPay(instalments=[instalment], note=note, actor=actor_default()),
            request_id=request_id(request),
        )
    )
    cli.output.emit(done, lambda: show_case(cli.output, done.collections_case))


@app.command("tasks")
def tasks(
    ctx: typer.Context,
    collector: Annotated[str | None, typer.Option(help="only this collector's")] = None,
    case: Annotated[str | None, typer.Option(help="only this case's")] = None,
    state_: Annotated[str | None, typer.Option("--state", help="open or done")] = "open",
    limit: Annotated[int, Limit] = 50,
) -> None:
    """List collectors' tasks, earliest due first."""
    cli = state(ctx)
    stub = cli.clients.collections
    request = pb.ListCollectionsTasksRequest(
        collector_id=collector or "",
        case_id=case or "",
        state=enum_option(_TASK_STATE, state_, "--state"),
    )

    def fetch(token: str, size: int) -> pb.ListCollectionsTasksResponse:
        request.page_token, request.page_size = token, size
        return stub.ListCollectionsTasks(request)

    found, token = paginate(fetch, "tasks", limit)
    rows = [[t.task_id, t.account_id, t.title, day(t.due_date), enum(t, "state"), t.collector_id] for t in found]
    cli.output.emit(
        pb.ListCollectionsTasksResponse(tasks=found, next_page_token=token),
        lambda: cli.output.print(table("Tasks", ["id", "account", "title", "due", "state", "collector"], rows)),
    )


@app.command("complete")
def complete(
    ctx: typer.Context,
    task_id: str,
    outcome: Annotated[str, typer.Option(help="what was done and learnt")],
) -> None:
    """Complete a collector's task."""
    cli = state(ctx)
    task = cli.clients.collections.CompleteCollectionsTask(
        pb.CompleteCollectionsTaskRequest(task_id=task_id, outcome=outcome, actor=actor_default())
    ).task
    cli.output.emit(task, lambda: cli.output.print(f"task {task.task_id}: {enum(task, 'state')}"))
