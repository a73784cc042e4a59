"""`evolutivo purchases`: the charge offers an account bought (customer service)."""

from __future__ import annotations

from typing import Annotated

import typer
from evolutivo.customer.v1 import customer_service_pb2 as pb
from evolutivo.customer.v1 import purchase_pb2

from evolutivo_cli.app import state
from evolutivo_cli.commands._common import Limit, RequestId, more, paginate, request_id
from evolutivo_cli.parsing import instant
from evolutivo_cli.render import details, enum, table, timestamp

app = typer.Typer(no_args_is_help=True)

COLUMNS = ["id", "offer", "version", "quantity", "state", "start", "end"]


def rows(purchases: list[purchase_pb2.Purchase]) -> list[list[object]]:
    return [
        [
            p.purchase_id,
            p.charge_offer_code,
            p.charge_offer_version or "",
            p.quantity or "1",
            enum(p, "state"),
            timestamp(p.start_time),
            timestamp(p.end_time),
        ]
        for p in purchases
    ]


@app.command("list")
def list_purchases(
    ctx: typer.Context,
    account_id: Annotated[str, typer.Argument(help="account id")],
    limit: Annotated[int, Limit] = 50,
) -> None:
    """List an account's purchases."""
    cli = state(ctx)
    stub = cli.clients.customer

    def fetch(token: str, size: int) -> pb.ListPurchasesResponse:
        return stub.ListPurchases(pb.ListPurchasesRequest(account_id=account_id, page_token=token, page_size=size))

    found, token = paginate(fetch, "purchases", limit)
    cli.output.emit(
        pb.ListPurchasesResponse(purchases=found, next_page_token=token),
        lambda: cli.output.print(table("Purchases", COLUMNS, rows(found), more(token, len(found)))),
    )


@app.command("get")
def get_purchase(ctx: typer.Context, account_id: str, purchase_id: str) -> None:
    """Show one purchase of an account."""
    cli = state(ctx)
    stub = cli.clients.customer

    def fetch(token: str, size: int) -> pb.ListPurchasesResponse:
        return stub.ListPurchases(pb.ListPurchasesRequest(account_id=account_id, page_token=token, page_size=size))

    found, _ = paginate(fetch, "purchases", 100_000)
    match = next((p for p in found if p.purchase_id == purchase_id), None)
    if match is None:
        from evolutivo_cli.errors import CliError, ExitCode

        raise CliError(f"purchase {purchase_id!r} not found on account {account_id}", ExitCode.NOT_FOUND)
    cli.output.emit(match, lambda: cli.output.print(details("Purchase", zip(COLUMNS, rows([match])[0], strict=True))))


@app.command("create")
def create_purchase(
    ctx: typer.Context,
    account_id: Annotated[str, typer.Argument(help="account id")],
    offer_code: Annotated[str, typer.Argument(help="charge offer code")],
    quantity: Annotated[str | None, typer.Option(help="decimal, default 1")] = None,
    start: Annotated[str | None, typer.Option(help="start time (ISO 8601); now by default")] = None,
    service_id: Annotated[str | None, typer.Option(help="for this provisioned service only")] = None,
    request: Annotated[str | None, RequestId] = None,
) -> None:
    """Buy a charge offer for an account."""
    cli = state(ctx)
    purchase = purchase_pb2.Purchase(charge_offer_code=offer_code, quantity=quantity or "", service_id=service_id or "")
    if start:
        purchase.start_time.FromDatetime(instant(start, "--start"))
    created = cli.clients.customer.CreatePurchase(
        pb.CreatePurchaseRequest(account_id=account_id, purchase=purchase, request_id=request_id(request))
    ).purchase
    cli.output.emit(
        created, lambda: cli.output.print(details("Purchase created", zip(COLUMNS, rows([created])[0], strict=True)))
    )


@app.command("end")
def end_purchase(
    ctx: typer.Context,
    account_id: str,
    purchase_id: str,
    at: Annotated[str | None, typer.Option(help="end time (ISO 8601); now by default")] = None,
) -> None:
    """End a purchase (it stops rating at its end)."""
    cli = state(ctx)
    request = pb.EndPurchaseRequest(account_id=account_id, purchase_id=purchase_id)
    if at:
        request.end_time.FromDatetime(instant(at, "--at"))
    ended = cli.clients.customer.EndPurchase(request).purchase
    cli.output.emit(ended, lambda: cli.output.print(f"purchase {ended.purchase_id}: {enum(ended, 'state')}"))


@app.command("cancel")
def cancel_purchase(ctx: typer.Context, account_id: str, purchase_id: str) -> None:
    """Cancel a purchase that has not started."""
    cli = state(ctx)
    done = cli.clients.customer.CancelPurchase(
        pb.CancelPurchaseRequest(account_id=account_id, purchase_id=purchase_id)
    ).purchase
    cli.output.emit(done, lambda: cli.output.print(f"purchase {done.purchase_id}: {enum(done, 'state')}"))
