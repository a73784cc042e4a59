"""`evolutivo balances`: balance groups, the ledger and its history (balance service)."""

from __future__ import annotations

import getpass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import typer
from evolutivo.balance.v1 import balance_pb2, ledger_pb2
from evolutivo.balance.v1 import balance_service_pb2 as pb
from google.protobuf import json_format
from google.protobuf.field_mask_pb2 import FieldMask

from evolutivo_cli.app import state
from evolutivo_cli.charts import sparkline
from evolutivo_cli.commands._common import RequestId, enum_option, paginate, request_id
from evolutivo_cli.parsing import decimal_amount, instant
from evolutivo_cli.render import amount, decimal, details, enum, money, table, timestamp, to_datetime, to_money

app = typer.Typer(no_args_is_help=True)

_TYPES = ledger_pb2.LedgerEntryType.DESCRIPTOR


def actor_default() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name (containers): still say it came from the CLI
        return "cli"


def group_rows(groups: list[balance_pb2.BalanceGroup]) -> list[list[object]]:
    return [
        [
            g.balance_group_id,
            g.name + (" (default)" if g.is_default else ""),
            money(g.balance),
            money(g.credit_limit),
            money(g.available_credit),
            "EXCEEDED" if g.credit_limit_exceeded else "",
            "closed" if g.HasField("close_time") else "",
        ]
        for g in groups
    ]


GROUP_COLUMNS = ["id", "group", "balance", "limit", "available", "", ""]


@app.command("get")
def get_balance(
    ctx: typer.Context,
    account_id: Annotated[str, typer.Argument(help="account id")],
    as_of: Annotated[str | None, typer.Option(help="the balance as of this instant (ISO 8601)")] = None,
    show_closed: Annotated[bool, typer.Option(help="also closed groups")] = False,
) -> None:
    """Show what an account owes, per balance group (positive is debt, negative is credit)."""
    cli = state(ctx)
    request = pb.GetBalanceRequest(account_id=account_id, show_closed=show_closed)
    if as_of:
        request.as_of_time.FromDatetime(instant(as_of, "--as-of"))
    found = cli.clients.balance.GetBalance(request)
    caption = f"total {money(found.total)} as of {timestamp(found.as_of_time)}"
    cli.output.emit(
        found,
        lambda: cli.output.print(
            table(f"Balance of {account_id}", GROUP_COLUMNS, group_rows(list(found.balance_groups)), caption)
        ),
    )


@app.command("list")
def list_groups(ctx: typer.Context, account_id: Annotated[str, typer.Argument(help="account id")]) -> None:
    """List an account's balance groups (open and closed)."""
    get_balance(ctx, account_id, None, True)


@app.command("create")
def create_group(
    ctx: typer.Context,
    account_id: Annotated[str, typer.Argument(help="account id")],
    name: Annotated[str, typer.Argument(help="group name, unique among the account's open groups")],
    request: Annotated[str | None, RequestId] = None,
) -> None:
    """Open another balance group on an account (per service, cost centre, project...)."""
    cli = state(ctx)
    group = cli.clients.balance.CreateBalanceGroup(
        pb.CreateBalanceGroupRequest(account_id=account_id, name=name, request_id=request_id(request))
    ).balance_group
    cli.output.emit(group, lambda: cli.output.print(table("Balance group created", GROUP_COLUMNS, group_rows([group]))))


def history_points(current: Decimal, entries: list[ledger_pb2.LedgerEntry]) -> list[tuple[datetime, Decimal]]:
    """The balance after each entry, oldest first, from the balance now and the entries newest
    first (as ListLedgerEntries returns them): walking back, each entry's amount is taken off."""
    points: list[tuple[datetime, Decimal]] = []
    level = current
    for entry in entries:
        points.append((to_datetime(entry.effective_time), level))
        level -= decimal(entry.amount)
    points.reverse()
    return points


@app.command("history")
def history(
    ctx: typer.Context,
    account_id: Annotated[str, typer.Argument(help="account id")],
    group: Annotated[str | None, typer.Option(help="only this balance group (id)")] = None,
    since: Annotated[str | None, typer.Option(help="entries effective from this instant (ISO 8601)")] = None,
    type_: Annotated[
        list[str] | None, typer.Option("--type", help="only these entry types, e.g. payment (repeatable)")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=100_000, help="newest entries to show")] = 200,
) -> None:
    """A balance's history: a sparkline of the balance over time and its ledger entries."""
    cli = state(ctx)
    stub = cli.clients.balance
    request = pb.ListLedgerEntriesRequest(account_id=account_id, balance_group_id=group or "")
    for choice in type_ or []:
        request.types.append(enum_option(_TYPES, choice, "--type"))
    if since:
        request.start_time.FromDatetime(instant(since, "--since"))

    def fetch(token: str, size: int) -> pb.ListLedgerEntriesResponse:
        request.page_token, request.page_size = token, size
        return stub.ListLedgerEntries(request)

    entries, token = paginate(fetch, "entries", limit)
    if group:
        current_group = stub.GetBalanceGroup(pb.GetBalanceGroupRequest(balance_group_id=group)).balance_group
        current, currency = decimal(current_group.balance), current_group.balance.currency_code
    else:
        total = stub.GetBalance(pb.GetBalanceRequest(account_id=account_id)).total
        current, currency = decimal(total), total.currency_code
    # A filtered list is not the whole ledger: its running level would be wrong, so only the
    # unfiltered history draws the line.
    points = history_points(current, entries) if not type_ else []
    line = sparkline([value for _, value in points])
    data: dict[str, Any] = {
        "account_id": account_id,
        "balance": str(current),
        "currency_code": currency,
        "points": [{"time": when.isoformat(), "balance": str(value)} for when, value in points],
        "entries": [json_format.MessageToDict(e, preserving_proto_field_name=True) for e in entries],
        "next_page_token": token,
    }

    def show() -> None:
        if points:
            low, high = min(v for _, v in points), max(v for _, v in points)
            first, last = points[0][0], points[-1][0]
            cli.output.print(
                f"[bold]Balance[/] {amount(current, currency)}  "
                f"({len(points)} entries, {first:%Y-%m-%d} → {last:%Y-%m-%d})"
            )
            cli.output.print(f"  [cyan]{line}[/]")
            cli.output.print(f"  [dim]low {amount(low, currency)} · high {amount(high, currency)}[/]")
        rows = [
            [
                timestamp(e.effective_time),
                enum(e, "type"),
                money(e.amount),
                f"{e.source_type}:{e.source_id}" if e.source_type else "",
                e.reason_code or e.reason,
            ]
            for e in entries[:50]
        ]
        caption = f"newest {len(rows)} of {len(entries)}" + (" (more exist: raise --limit)" if token else "")
        cli.output.print(table("Ledger", ["effective", "type", "amount", "source", "reason"], rows, caption))

    cli.output.emit_data(data, show)


@app.command("adjust")
def adjust(
    ctx: typer.Context,
    account_id: Annotated[str, typer.Argument(help="account id")],
    amount_: Annotated[str, typer.Argument(metavar="AMOUNT", help="signed: positive is a debit, negative a credit")],
    reason_code: Annotated[str, typer.Option(help="e.g. GOODWILL, BILLING_ERROR")],
    currency: Annotated[str, typer.Option(help="the account's currency")] = "EUR",
    reason: Annotated[str, typer.Option(help="free text")] = "",
    group: Annotated[str | None, typer.Option(help="balance group id (default group when unset)")] = None,
    actor: Annotated[str | None, typer.Option(help="who (default cli:<user>)")] = None,
    request: Annotated[str | None, RequestId] = None,
) -> None:
    """Book a manual debit or credit."""
    cli = state(ctx)
    value = decimal_amount(amount_, "AMOUNT", positive=False)
    entry = cli.clients.balance.CreateAdjustment(
        pb.CreateAdjustmentRequest(
            account_id=account_id,
            balance_group_id=group or "",
            amount=to_money(value, currency),
            reason_code=reason_code,
            reason=reason,
            actor=actor or actor_default(),
            request_id=request_id(request),
        )
    ).entry
    cli.output.emit(
        entry, lambda: cli.output.print(f"adjustment {money(entry.amount)} booked (entry {entry.entry_id})")
    )


@app.command("write-off")
def write_off(
    ctx: typer.Context,
    account_id: Annotated[str, typer.Argument(help="account id")],
    amount_: Annotated[str, typer.Argument(metavar="AMOUNT", help="positive amount given up")],
    source_id: Annotated[str, typer.Option(help="the bill's (or collections case's) id")],
    source_type: Annotated[str, typer.Option(help="bill or collections_case")] = "bill",
    currency: Annotated[str, typer.Option(help="the account's currency")] = "EUR",
    reason_code: Annotated[str, typer.Option(help="e.g. UNCOLLECTIBLE")] = "UNCOLLECTIBLE",
    reason: Annotated[str, typer.Option(help="free text")] = "",
    actor: Annotated[str | None, typer.Option(help="who (default cli:<user>)")] = None,
    request: Annotated[str | None, RequestId] = None,
) -> None:
    """Write off an amount of an account's debt (idempotent on the source)."""
    cli = state(ctx)
    entry = cli.clients.balance.WriteOff(
        pb.WriteOffRequest(
            account_id=account_id,
            amount=to_money(decimal_amount(amount_, "AMOUNT"), currency),
            source_type=source_type,
            source_id=source_id,
            reason_code=reason_code,
            reason=reason,
            actor=actor or actor_default(),
            request_id=request_id(request),
        )
    ).entry
    cli.output.emit(entry, lambda: cli.output.print(f"written off {money(entry.amount)} (entry {entry.entry_id})"))


@app.command("credit-limit")
def credit_limit(
    ctx: typer.Context,
    balance_group_id: Annotated[str, typer.Argument(help="balance group id (see `balances get`)")],
    limit: Annotated[str | None, typer.Option(help="the most the group may owe; omit to clear")] = None,
    threshold: Annotated[
        list[str] | None, typer.Option(help="warn at this percent of the limit, e.g. 80 (repeatable)")
    ] = None,
    request: Annotated[str | None, RequestId] = None,
) -> None:
    """Set (or clear) a group's credit limit and its warning thresholds."""
    cli = state(ctx)
    stub = cli.clients.balance
    current = stub.GetBalanceGroup(pb.GetBalanceGroupRequest(balance_group_id=balance_group_id)).balance_group
    policy = balance_pb2.CreditPolicy()
    if limit is not None:
        policy.credit_limit.CopyFrom(
            to_money(decimal_amount(limit, "--limit", positive=False), current.balance.currency_code)
        )
    for percent in threshold or []:
        policy.thresholds.append(balance_pb2.CreditThreshold(percent=percent))
    group = stub.SetCreditLimit(
        pb.SetCreditLimitRequest(
            balance_group_id=balance_group_id,
            credit_policy=policy,
            update_mask=FieldMask(paths=["credit_limit", "thresholds"]),
            request_id=request_id(request),
        )
    ).balance_group
    cli.output.emit(
        group,
        lambda: cli.output.print(
            details(
                f"Credit policy of {group.name}",
                [
                    ("balance", money(group.balance)),
                    ("limit", money(group.credit_limit) or "none"),
                    ("available", money(group.available_credit)),
                    (
                        "thresholds",
                        ", ".join(
                            t.percent + "%" if t.percent else money(t.amount) for t in group.credit_policy.thresholds
                        ),
                    ),
                    ("exceeded", "yes" if group.credit_limit_exceeded else "no"),
                ],
            )
        ),
    )
