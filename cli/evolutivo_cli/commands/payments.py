"""`evolutivo payments`: payments received (balance service); billing allocates them to bills."""

from __future__ import annotations

from typing import Annotated

import typer
from evolutivo.balance.v1 import balance_service_pb2 as pb
from evolutivo.balance.v1 import ledger_pb2, payment_pb2

from evolutivo_cli.app import state
from evolutivo_cli.commands._common import Limit, RequestId, enum_option, paginate, request_id
from evolutivo_cli.commands.balances import actor_default
from evolutivo_cli.parsing import decimal_amount, instant
from evolutivo_cli.render import details, enum, money, table, timestamp, to_money

app = typer.Typer(no_args_is_help=True)

_METHOD = payment_pb2.PaymentMethodType.DESCRIPTOR


def payment_details(p: payment_pb2.Payment) -> list[tuple[str, object]]:
    return [
        ("id", p.payment_id),
        ("account", p.account_id),
        ("amount", money(p.amount)),
        ("method", enum(p, "method").replace("_", " ")),
        ("reference", p.reference),
        ("received", timestamp(p.received_time)),
        ("state", enum(p, "state")),
        ("reversed", timestamp(p.reverse_time)),
        ("reversal reason", p.reversal_reason),
        ("balance group", p.balance_group_id),
    ]


@app.command("record")
def record(
    ctx: typer.Context,
    account_id: Annotated[str, typer.Argument(help="account id")],
    amount: Annotated[str, typer.Argument(help="e.g. 120.50")],
    reference: Annotated[str, typer.Option(help="the bank's or provider's reference: the payment's idempotency key")],
    currency: Annotated[str, typer.Option(help="the account's currency")] = "EUR",
    method: Annotated[
        str, typer.Option(help="card, sepa_direct_debit, bank_transfer, cash, check or other")
    ] = "bank_transfer",
    received: Annotated[str | None, typer.Option(help="when it was received (ISO 8601); now by default")] = None,
    group: Annotated[str | None, typer.Option(help="balance group id (default group when unset)")] = None,
    request: Annotated[str | None, RequestId] = None,
) -> None:
    """Record a payment: credited in balance, allocated by billing to the oldest open bills."""
    cli = state(ctx)
    req = pb.RecordPaymentRequest(
        account_id=account_id,
        balance_group_id=group or "",
        amount=to_money(decimal_amount(amount, "AMOUNT"), currency),
        method=enum_option(_METHOD, method, "--method"),
        reference=reference,
        request_id=request_id(request),
    )
    if received:
        req.received_time.FromDatetime(instant(received, "--received"))
    payment = cli.clients.balance.RecordPayment(req).payment
    cli.output.emit(payment, lambda: cli.output.print(details("Payment recorded", payment_details(payment))))


@app.command("create")
def create(
    ctx: typer.Context,
    account_id: Annotated[str, typer.Argument(help="account id")],
    amount: Annotated[str, typer.Argument(help="e.g. 120.50")],
    reference: Annotated[str, typer.Option(help="the payment's idempotency key")],
    currency: Annotated[str, typer.Option(help="the account's currency")] = "EUR",
    method: Annotated[
        str, typer.Option(help="card, sepa_direct_debit, bank_transfer, cash, check or other")
    ] = "bank_transfer",
) -> None:
    """Same as `payments record`."""
    record(ctx, account_id, amount, reference, currency, method, None, None, None)


@app.command("get")
def get(ctx: typer.Context, payment: Annotated[str, typer.Argument(help="payment id or reference")]) -> None:
    """Show one payment, by id or by reference."""
    cli = state(ctx)
    by_id = len(payment) == 36 and payment.count("-") == 4
    req = pb.GetPaymentRequest(payment_id=payment) if by_id else pb.GetPaymentRequest(reference=payment)
    found = cli.clients.balance.GetPayment(req).payment
    cli.output.emit(found, lambda: cli.output.print(details("Payment", payment_details(found))))


@app.command("list")
def list_payments(
    ctx: typer.Context,
    account_id: Annotated[str, typer.Argument(help="account id")],
    limit: Annotated[int, Limit] = 50,
) -> None:
    """List an account's payments and reversals (its ledger's payment entries), newest first."""
    cli = state(ctx)
    stub = cli.clients.balance
    types = [ledger_pb2.LEDGER_ENTRY_TYPE_PAYMENT, ledger_pb2.LEDGER_ENTRY_TYPE_PAYMENT_REVERSAL]

    def fetch(token: str, size: int) -> pb.ListLedgerEntriesResponse:
        return stub.ListLedgerEntries(
            pb.ListLedgerEntriesRequest(account_id=account_id, types=types, page_token=token, page_size=size)
        )

    entries, token = paginate(fetch, "entries", limit)
    rows = [
        [timestamp(e.effective_time), enum(e, "type").replace("_", " "), money(e.amount), e.source_id, e.actor]
        for e in entries
    ]
    cli.output.emit(
        pb.ListLedgerEntriesResponse(entries=entries, next_page_token=token),
        lambda: cli.output.print(table("Payments", ["received", "type", "amount", "reference", "by"], rows)),
    )


@app.command("reverse")
def reverse(
    ctx: typer.Context,
    payment: Annotated[str, typer.Argument(help="payment id or reference")],
    reason: Annotated[str, typer.Option(help="why, e.g. 'direct debit returned'")],
    request: Annotated[str | None, RequestId] = None,
) -> None:
    """Reverse a payment (e.g. a bounced direct debit): what it paid is owed again."""
    cli = state(ctx)
    by_id = len(payment) == 36 and payment.count("-") == 4
    req = pb.ReversePaymentRequest(reason=reason, actor=actor_default(), request_id=request_id(request))
    if by_id:
        req.payment_id = payment
    else:
        req.reference = payment
    found = cli.clients.balance.ReversePayment(req).payment
    cli.output.emit(found, lambda: cli.output.print(details("Payment reversed", payment_details(found))))
