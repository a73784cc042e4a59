"""`evolutivo accounts`: customer accounts (customer service)."""

from __future__ import annotations

from typing import Annotated

import typer
from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import customer_service_pb2 as pb
from google.protobuf.field_mask_pb2 import FieldMask

from evolutivo_cli.app import state
from evolutivo_cli.commands._common import Limit, RequestId, enum_option, more, paginate, request_id
from evolutivo_cli.errors import CliError
from evolutivo_cli.parsing import decimal_amount, labels
from evolutivo_cli.render import day, details, enum, money, render_labels, table, timestamp, to_money

app = typer.Typer(no_args_is_help=True)

_STATUS = account_pb2.AccountStatus.DESCRIPTOR
_TYPE = account_pb2.AccountType.DESCRIPTOR
_FREQUENCY = account_pb2.BillingFrequency.DESCRIPTOR


def account_rows(accounts: list[account_pb2.Account]) -> list[list[str]]:
    return [
        [
            a.account_id,
            a.account_number,
            a.display_name,
            enum(a, "type"),
            enum(a, "status"),
            a.currency_code,
            a.time_zone,
            str(a.billing_profile.bill_cycle_day or ""),
        ]
        for a in accounts
    ]


ACCOUNT_COLUMNS = ["id", "number", "name", "type", "status", "currency", "time zone", "bill day"]


def account_details(a: account_pb2.Account) -> list[tuple[str, object]]:
    profile = a.billing_profile
    return [
        ("id", a.account_id),
        ("number", a.account_number),
        ("name", a.display_name),
        ("type", enum(a, "type")),
        ("status", enum(a, "status")),
        ("currency", a.currency_code),
        ("time zone", a.time_zone),
        ("locale", a.locale),
        ("country", a.country_code),
        ("tax id", a.tax_id),
        ("bill cycle day", profile.bill_cycle_day or ""),
        ("frequency", enum(profile, "frequency")),
        ("payment terms", f"{profile.payment_terms_days} days"),
        ("threshold", money(profile.threshold_amount)),
        ("collections scenario", profile.collections_scenario_id),
        ("collections exempt", "yes" if profile.collections_exempt else ""),
        ("labels", render_labels(a.labels)),
        ("created", timestamp(a.create_time)),
    ]


@app.command("list")
def list_accounts(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="active, suspended or closed")] = None,
    type_: Annotated[str | None, typer.Option("--type", help="individual or business")] = None,
    query: Annotated[str | None, typer.Option("--query", "-q", help="text in the name or number")] = None,
    limit: Annotated[int, Limit] = 50,
) -> None:
    """List accounts."""
    cli = state(ctx)
    stub = cli.clients.customer
    request = pb.ListAccountsRequest(
        status=enum_option(_STATUS, status, "--status"),
        type=enum_option(_TYPE, type_, "--type"),
        query=query or "",
    )

    def fetch(token: str, size: int) -> pb.ListAccountsResponse:
        request.page_token, request.page_size = token, size
        return stub.ListAccounts(request)

    accounts, token = paginate(fetch, "accounts", limit)
    cli.output.emit(
        pb.ListAccountsResponse(accounts=accounts, next_page_token=token),
        lambda: cli.output.print(
            table("Accounts", ACCOUNT_COLUMNS, account_rows(accounts), more(token, len(accounts)))
        ),
    )


@app.command("get")
def get_account(ctx: typer.Context, account_id: Annotated[str, typer.Argument(help="account id")]) -> None:
    """Show an account with its overview: balance, open bills, collections, purchases."""
    cli = state(ctx)
    overview = cli.clients.customer.GetAccountOverview(pb.GetAccountOverviewRequest(account_id=account_id)).overview

    def show() -> None:
        cli.output.print(details(f"Account {overview.account.display_name}", account_details(overview.account)))
        if overview.balance_groups:
            rows = [
                [g.name + (" (default)" if g.is_default else ""), money(g.balance)] for g in overview.balance_groups
            ]
            cli.output.print(table("Balance", ["group", "balance"], rows, f"total {money(overview.balance_total)}"))
        if overview.open_bills:
            rows = [
                [
                    b.bill_id,
                    b.bill_number,
                    money(b.total),
                    money(b.open_amount),
                    day(b.due_date),
                    "yes" if b.overdue else "",
                ]
                for b in overview.open_bills
            ]
            cli.output.print(table("Open bills", ["id", "number", "total", "open", "due", "overdue"], rows))
        if overview.collections.in_collections:
            c = overview.collections
            cli.output.print(
                f"[bold red]In collections[/]: case {c.case_id}, stage {c.stage or '-'}, "
                f"{money(c.overdue_amount)} overdue, {c.days_past_due} days past due"
            )
        if overview.purchases:
            rows = [
                [p.purchase_id, p.charge_offer_code, enum(p, "state"), timestamp(p.start_time)]
                for p in overview.purchases
            ]
            cli.output.print(table("Purchases", ["id", "offer", "state", "start"], rows))
        for missing in overview.unavailable:
            cli.output.print(f"[yellow]{missing.section} unavailable:[/] {missing.reason}")

    cli.output.emit(overview, show)


@app.command("create")
def create_account(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="display name")],
    currency: Annotated[str, typer.Option(help="ISO 4217, e.g. EUR")] = "EUR",
    time_zone: Annotated[str, typer.Option("--time-zone", "--tz", help="IANA time zone, e.g. Europe/Rome")] = "UTC",
    type_: Annotated[str, typer.Option("--type", help="individual or business")] = "business",
    locale: Annotated[str, typer.Option(help="BCP 47, e.g. it-IT")] = "",
    country: Annotated[str, typer.Option(help="ISO 3166 country code")] = "",
    tax_id: Annotated[str, typer.Option(help="VAT or tax number")] = "",
    bill_day: Annotated[int | None, typer.Option(help="billing day of month 1-31 (default: today's)")] = None,
    frequency: Annotated[str | None, typer.Option(help="monthly, quarterly, semi_annual or annual")] = None,
    payment_terms: Annotated[int | None, typer.Option(help="days to pay a bill")] = None,
    threshold: Annotated[str | None, typer.Option(help="bill as soon as the unbilled amount reaches this")] = None,
    scenario: Annotated[str | None, typer.Option(help="collections scenario id")] = None,
    label: Annotated[list[str] | None, typer.Option(help="KEY=VALUE (repeatable)")] = None,
    request: Annotated[str | None, RequestId] = None,
) -> None:
    """Create an account."""
    cli = state(ctx)
    profile = account_pb2.BillingProfile(
        bill_cycle_day=bill_day or 0,
        frequency=enum_option(_FREQUENCY, frequency, "--frequency"),
        collections_scenario_id=scenario or "",
    )
    if payment_terms is not None:
        profile.payment_terms_days = payment_terms
    if threshold:
        profile.threshold_amount.CopyFrom(to_money(decimal_amount(threshold, "--threshold"), currency))
    account = account_pb2.Account(
        type=enum_option(_TYPE, type_, "--type"),
        display_name=name,
        currency_code=currency,
        time_zone=time_zone,
        locale=locale,
        country_code=country,
        tax_id=tax_id,
        labels=labels(label),
    )
    if bill_day or frequency or payment_terms is not None or threshold or scenario:
        account.billing_profile.CopyFrom(profile)
    created = cli.clients.customer.CreateAccount(
        pb.CreateAccountRequest(request_id=request_id(request), account=account)
    ).account
    cli.output.emit(created, lambda: cli.output.print(details("Account created", account_details(created))))


def _status_change(ctx: typer.Context, verb: str, account_id: str, reason: str, request: str | None) -> None:
    cli = state(ctx)
    stub = cli.clients.customer
    manual = account_pb2.STATUS_ACTOR_MANUAL
    rid = request_id(request)
    account: account_pb2.Account
    if verb == "suspend":
        account = stub.SuspendAccount(
            pb.SuspendAccountRequest(account_id=account_id, reason=reason, actor=manual, request_id=rid)
        ).account
    elif verb == "reinstate":
        account = stub.ReinstateAccount(
            pb.ReinstateAccountRequest(account_id=account_id, reason=reason, actor=manual, request_id=rid)
        ).account
    else:
        account = stub.CloseAccount(
            pb.CloseAccountRequest(account_id=account_id, reason=reason, actor=manual, request_id=rid)
        ).account
    cli.output.emit(account, lambda: cli.output.print(f"{account.display_name}: {enum(account, 'status')}"))


@app.command("suspend")
def suspend(
    ctx: typer.Context,
    account_id: str,
    reason: Annotated[str, typer.Option(help="why")] = "suspended by an operator",
    request: Annotated[str | None, RequestId] = None,
) -> None:
    """Suspend an account and its services."""
    _status_change(ctx, "suspend", account_id, reason, request)


@app.command("reinstate")
def reinstate(
    ctx: typer.Context,
    account_id: str,
    reason: Annotated[str, typer.Option(help="why")] = "reinstated by an operator",
    request: Annotated[str | None, RequestId] = None,
) -> None:
    """Reinstate a suspended account."""
    _status_change(ctx, "reinstate", account_id, reason, request)


@app.command("close")
def close(
    ctx: typer.Context,
    account_id: str,
    reason: Annotated[str, typer.Option(help="why")] = "closed by an operator",
    request: Annotated[str | None, RequestId] = None,
) -> None:
    """Close an account (refused while it owes something)."""
    _status_change(ctx, "close", account_id, reason, request)


@app.command("update")
def update(
    ctx: typer.Context,
    account_id: str,
    name: Annotated[str | None, typer.Option("--name")] = None,
    time_zone: Annotated[str | None, typer.Option("--time-zone", "--tz")] = None,
    scenario: Annotated[str | None, typer.Option(help="collections scenario id")] = None,
) -> None:
    """Change an account's name, time zone or collections scenario."""
    cli = state(ctx)
    account = account_pb2.Account(account_id=account_id)
    paths: list[str] = []
    if name is not None:
        account.display_name = name
        paths.append("display_name")
    if time_zone is not None:
        account.time_zone = time_zone
        paths.append("time_zone")
    if scenario is not None:
        account.billing_profile.collections_scenario_id = scenario
        paths.append("billing_profile.collections_scenario_id")
    if not paths:
        raise CliError("nothing to change: give --name, --time-zone or --scenario")
    updated = cli.clients.customer.UpdateAccount(
        pb.UpdateAccountRequest(account=account, update_mask=FieldMask(paths=paths))
    ).account
    cli.output.emit(updated, lambda: cli.output.print(details("Account updated", account_details(updated))))
