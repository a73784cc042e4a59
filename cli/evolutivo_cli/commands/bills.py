"""`evolutivo bills`: bills, their PDFs, bill now, bill runs and cycles (billing service)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from evolutivo.admin.v1 import clock_admin_service_pb2 as clock_pb
from evolutivo.billing.v1 import bill_cycle_pb2, bill_pb2, credit_note_pb2, document_pb2
from evolutivo.billing.v1 import billing_service_pb2 as pb
from google.protobuf.duration_pb2 import Duration

from evolutivo_cli.app import State, state
from evolutivo_cli.commands._common import Limit, RequestId, more, paginate, request_id
from evolutivo_cli.commands.balances import actor_default
from evolutivo_cli.errors import CliError, ExitCode
from evolutivo_cli.parsing import decimal_amount, duration, instant
from evolutivo_cli.progress import progress_bar
from evolutivo_cli.render import Output, day, details, enum, money, table, timestamp, to_datetime, to_money

app = typer.Typer(no_args_is_help=True)

BILL_COLUMNS = ["id", "number", "status", "period", "issued", "due", "total", "open"]


def period(start: Any, end: Any) -> str:
    return f"{day(start)} → {day(end)}"


def bill_rows(bills: Iterable[bill_pb2.Bill]) -> list[list[object]]:
    return [
        [
            b.bill_id,
            b.bill_number or "(draft)",
            enum(b, "status"),
            period(b.period_start_date, b.period_end_date),
            day(b.issue_date),
            day(b.due_date),
            money(b.total),
            money(b.open_amount),
        ]
        for b in bills
    ]


def show_bill(out: Output, bill: bill_pb2.Bill, title: str | None = None) -> None:
    """A bill as a reader expects it: header, lines, taxes, totals and the statement."""
    header = [
        ("number", bill.bill_number or "(draft: no number yet)"),
        ("status", enum(bill, "status") + (" (suppressed zero bill)" if bill.suppressed else "")),
        ("account", bill.account_id),
        ("period", period(bill.period_start_date, bill.period_end_date)),
        ("issued", day(bill.issue_date)),
        ("due", day(bill.due_date)),
        ("made by", enum(bill, "trigger").replace("_", " ")),
        ("overdue since", timestamp(bill.overdue_time)),
        ("id", bill.bill_id),
    ]
    out.print(details(title or f"Bill {bill.bill_number or bill.bill_id}", header))
    rows = []
    for line in bill.lines:
        unit = line.unit_price or (f"{len(line.tiers)} tiers" if line.tiers else "")
        rows.append(
            [
                line.line_number,
                period(line.period_start_date, line.period_end_date),
                line.charge_offer_code,
                line.charge_code,
                line.tax_code,
                line.quantity,
                unit,
                money(line.amount),
            ]
        )
    out.print(table(None, ["#", "period", "offer", "charge", "tax", "quantity", "unit price", "amount"], rows))
    if bill.taxes:
        taxes = [[t.tax_code, t.rate, money(t.taxable_amount), money(t.tax_amount)] for t in bill.taxes]
        out.print(table(None, ["tax code", "rate", "taxable", "tax"], taxes))
    totals = [
        ("subtotal", money(bill.subtotal)),
        ("tax", money(bill.tax_total)),
        ("total", money(bill.total)),
        ("paid", money(bill.paid_amount)),
        ("credited", money(bill.credited_amount)),
        ("open", money(bill.open_amount)),
    ]
    out.print(details("Totals", totals))
    statement = [
        ("previous balance", money(bill.previous_balance)),
        ("payments received", money(bill.payments_received)),
        ("credits", money(bill.credits)),
        ("credit applied", money(bill.credit_applied)),
        ("amount due", money(bill.amount_due)),
    ]
    if any(value for _, value in statement):
        out.print(details("Statement", statement))


@app.command("list")
def list_bills(
    ctx: typer.Context,
    account_id: Annotated[str, typer.Argument(help="account id")],
    limit: Annotated[int, Limit] = 50,
) -> None:
    """List an account's bills, newest first."""
    cli = state(ctx)
    stub = cli.clients.billing

    def fetch(token: str, size: int) -> pb.ListBillsResponse:
        return stub.ListBills(pb.ListBillsRequest(account_id=account_id, page_token=token, page_size=size))

    found, token = paginate(fetch, "bills", limit)
    cli.output.emit(
        pb.ListBillsResponse(bills=found, next_page_token=token),
        lambda: cli.output.print(table("Bills", BILL_COLUMNS, bill_rows(found), more(token, len(found)))),
    )


def save_pdf(cli: State, bill_id: str, path: Path | None) -> Path:
    document = cli.clients.billing.GetBillDocument(document_pb2.GetBillDocumentRequest(bill_id=bill_id)).document
    if document.sha256 and hashlib.sha256(document.content).hexdigest() != document.sha256:
        raise CliError(f"the PDF of {bill_id} arrived damaged (SHA-256 mismatch); try again", ExitCode.SERVER_ERROR)
    target = path or Path(document.file_name or f"{bill_id}.pdf")
    if target.is_dir():
        target = target / (document.file_name or f"{bill_id}.pdf")
    target.write_bytes(document.content)
    return target


@app.command("get")
def get_bill(
    ctx: typer.Context,
    bill_id: Annotated[str, typer.Argument(help="bill id")],
    pdf: Annotated[Path | None, typer.Option(help="also save its PDF to this file or folder")] = None,
) -> None:
    """Show a bill: lines, taxes, totals and statement; --pdf saves its PDF too."""
    cli = state(ctx)
    bill = cli.clients.billing.GetBill(pb.GetBillRequest(bill_id=bill_id)).bill
    cli.output.emit(bill, lambda: show_bill(cli.output, bill))
    if pdf is not None:
        saved = save_pdf(cli, bill_id, pdf)
        cli.output.note(f"PDF saved to {saved}")


@app.command("pdf")
def bill_pdf(
    ctx: typer.Context,
    bill_id: Annotated[str, typer.Argument(help="bill id")],
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="where (default: the bill number .pdf here)")
    ] = None,
) -> None:
    """Save an issued bill's PDF."""
    cli = state(ctx)
    saved = save_pdf(cli, bill_id, file)
    cli.output.emit_data({"bill_id": bill_id, "file": str(saved)}, lambda: cli.output.print(f"PDF saved to {saved}"))


@app.command("now")
def bill_now(
    ctx: typer.Context,
    account_id: Annotated[str, typer.Argument(help="account id")],
    request: Annotated[str | None, RequestId] = None,
) -> None:
    """Issue a bill at once for the account's unbilled items (the cycle goes on)."""
    cli = state(ctx)
    bill = cli.clients.billing.BillNow(pb.BillNowRequest(account_id=account_id, request_id=request_id(request))).bill
    cli.output.emit(bill, lambda: show_bill(cli.output, bill, f"Bill {bill.bill_number} issued"))


@app.command("create")
def create_bill(
    ctx: typer.Context,
    account_id: Annotated[str, typer.Argument(help="account id")],
    request: Annotated[str | None, RequestId] = None,
) -> None:
    """Same as `bills now`: bills are made by cycles closing, or on demand."""
    bill_now(ctx, account_id, request)


@app.command("preview")
def preview(ctx: typer.Context, account_id: Annotated[str, typer.Argument(help="account id")]) -> None:
    """A trial bill: what `bills now` would issue, changing nothing."""
    cli = state(ctx)
    bill = cli.clients.billing.PreviewBill(pb.PreviewBillRequest(account_id=account_id)).bill
    cli.output.emit(bill, lambda: show_bill(cli.output, bill, "Trial bill (not issued)"))


@app.command("cycles")
def cycles(
    ctx: typer.Context,
    account_id: Annotated[str, typer.Argument(help="account id")],
    limit: Annotated[int, Limit] = 12,
) -> None:
    """List an account's bill cycles, newest first (times in the account's time zone's midnights)."""
    cli = state(ctx)
    stub = cli.clients.billing

    def fetch(token: str, size: int) -> pb.ListBillCyclesResponse:
        return stub.ListBillCycles(pb.ListBillCyclesRequest(account_id=account_id, page_token=token, page_size=size))

    found, token = paginate(fetch, "bill_cycles", limit)
    rows = [
        [
            c.bill_cycle_id,
            c.sequence,
            period(c.start_date, c.end_date),
            enum(c, "status"),
            timestamp(c.end_time),
            timestamp(c.close_time),
            c.time_zone,
        ]
        for c in found
    ]
    cli.output.emit(
        pb.ListBillCyclesResponse(bill_cycles=found, next_page_token=token),
        lambda: cli.output.print(
            table("Bill cycles", ["id", "#", "period", "status", "ends (UTC)", "closed", "time zone"], rows)
        ),
    )


@app.command("unbilled")
def unbilled(
    ctx: typer.Context,
    account_id: Annotated[str, typer.Argument(help="account id")],
    limit: Annotated[int, Limit] = 50,
) -> None:
    """List an account's charges not billed yet."""
    cli = state(ctx)
    stub = cli.clients.billing

    def fetch(token: str, size: int) -> pb.ListUnbilledItemsResponse:
        return stub.ListUnbilledItems(
            pb.ListUnbilledItemsRequest(account_id=account_id, page_token=token, page_size=size)
        )

    found, token = paginate(fetch, "items", limit)
    rows = [
        [
            timestamp(i.event_time),
            i.kind,
            i.charge_offer_code,
            i.charge_code,
            i.quantity,
            money(i.amount),
            "late" if i.late else "",
        ]
        for i in found
    ]
    cli.output.emit(
        pb.ListUnbilledItemsResponse(items=found, next_page_token=token),
        lambda: cli.output.print(
            table(
                "Unbilled",
                ["event time", "kind", "offer", "charge", "quantity", "amount", ""],
                rows,
                more(token, len(found)),
            )
        ),
    )


@app.command("delivery")
def delivery(ctx: typer.Context, bill_id: Annotated[str, typer.Argument(help="bill id")]) -> None:
    """Where a bill's email delivery stands."""
    cli = state(ctx)
    found = cli.clients.billing.GetBillDelivery(document_pb2.GetBillDeliveryRequest(bill_id=bill_id)).delivery
    cli.output.emit(
        found,
        lambda: cli.output.print(
            details(
                "Delivery",
                [
                    ("state", enum(found, "state")),
                    ("recipients", ", ".join(found.recipients)),
                    ("attempts", found.attempts),
                    ("sent", timestamp(found.sent_time)),
                    ("next attempt", timestamp(found.next_attempt_time)),
                    ("last error", found.last_error),
                ],
            )
        ),
    )


# --------------------------------------------------------------------------------- bill runs


@dataclass(frozen=True)
class OpenCycle:
    account_id: str
    bill_cycle_id: str
    end: datetime


def due_cycles(cycles: Iterable[OpenCycle], target: datetime, delay: timedelta) -> list[OpenCycle]:
    """The cycles a closer running at ``target`` closes: ended at least ``delay`` before it."""
    return [c for c in cycles if c.end + delay <= target]


def next_billing_day(cycles: Iterable[OpenCycle], window: timedelta = timedelta(hours=30)) -> datetime | None:
    """The end of the last cycle of the next billing day: the open cycles ending within ``window``
    of the earliest end (one local day spans up to 26 hours of UTC across time zones)."""
    ends = sorted(c.end for c in cycles)
    if not ends:
        return None
    return max(e for e in ends if e <= ends[0] + window)


def _open_cycle(cli: State, account_id: str) -> OpenCycle | None:
    newest = cli.clients.billing.ListBillCycles(
        pb.ListBillCyclesRequest(account_id=account_id, page_size=1)
    ).bill_cycles
    if not newest or newest[0].status != bill_cycle_pb2.BILL_CYCLE_STATUS_OPEN:
        return None
    return OpenCycle(account_id, newest[0].bill_cycle_id, to_datetime(newest[0].end_time))


def _closed(cli: State, cycle: OpenCycle) -> bool:
    # The open cycle is the newest; once closed, its successor is newer: look at the two newest.
    found = cli.clients.billing.ListBillCycles(
        pb.ListBillCyclesRequest(account_id=cycle.account_id, page_size=2)
    ).bill_cycles
    return any(
        c.bill_cycle_id == cycle.bill_cycle_id and c.status == bill_cycle_pb2.BILL_CYCLE_STATUS_CLOSED for c in found
    )


def _parallel(
    pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: list[Any], tick: Callable[[], None]
) -> list[Any]:
    results = []
    for result in pool.map(fn, items):
        results.append(result)
        tick()
    return results


@app.command("run")
def bill_run(
    ctx: typer.Context,
    until: Annotated[
        str | None, typer.Option(help="move the clock to this instant (ISO 8601) and bill what is due")
    ] = None,
    advance: Annotated[str | None, typer.Option(help="move the clock forward by this much, e.g. 31d")] = None,
    account: Annotated[
        list[str] | None, typer.Option("--account", help="only these accounts (default: every bill unit)")
    ] = None,
    delay: Annotated[str, typer.Option(help="billing's late-usage delay (BILLING_LATE_USAGE_DELAY_SECONDS)")] = "1h",
    no_advance: Annotated[
        bool, typer.Option("--no-advance", help="do not move the clock: watch what is due now")
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1, max=128, help="calls in flight while scanning")] = 16,
    wait: Annotated[str, typer.Option(help="give up watching after this long")] = "10m",
) -> None:
    """Run billing: move the shared clock past the cycles' ends and watch them close and bill.

    Without --until or --advance the clock goes to the next billing day (the open cycles ending
    within 30 hours of the earliest one, in every time zone). Bills are made by billing's cycle
    closer; this command moves time and shows the progress, so it can be interrupted and run
    again: what closed stays closed, and the rerun watches what is still due.
    """
    cli = state(ctx)
    late_delay = duration(delay, "--delay") if delay not in ("0", "0s") else timedelta(0)
    give_up = duration(wait, "--wait")
    err = cli.output.err
    stub = cli.clients.billing
    if account:
        accounts = list(dict.fromkeys(account))
    else:

        def fetch(token: str, size: int) -> pb.ListBillUnitsResponse:
            return stub.ListBillUnits(pb.ListBillUnitsRequest(page_token=token, page_size=size))

        units, _ = paginate(fetch, "bill_units", 10_000_000)
        accounts = list(dict.fromkeys(u.account_id for u in units))
    scanning = progress_bar("accounts", err)
    progress = progress_bar("cycles", err)
    with ThreadPoolExecutor(concurrency) as pool:
        with scanning:
            scan = scanning.add_task("scan cycles", total=len(accounts), status="")
            found = _parallel(pool, lambda a: _open_cycle(cli, a), accounts, lambda: scanning.advance(scan))
        open_cycles = [c for c in found if c is not None]
        clock = cli.clients.clock("billing")
        try:
            now = to_datetime(clock.GetClock(clock_pb.GetClockRequest()).now)
        except grpc.RpcError as exc:
            if not no_advance or exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            now = datetime.now(UTC)  # a system clock: the wall clock is billing's clock
        if no_advance:
            target = now
        elif until:
            target = instant(until, "--until")
        elif advance:
            target = now + duration(advance, "--advance")
        else:
            last = next_billing_day(open_cycles)
            if last is None:
                raise CliError("no open bill cycles: nothing to bill", ExitCode.FAILED_PRECONDITION)
            target = last + late_delay + timedelta(minutes=1)
        due = due_cycles(open_cycles, target, late_delay)
        err.print(
            f"{len(accounts)} accounts, {len(open_cycles)} open cycles; {len(due)} due by {target:%Y-%m-%d %H:%M}Z "
            f"(clock now {now:%Y-%m-%d %H:%M}Z)"
        )
        if target > now and not no_advance:
            seconds = int((target - now).total_seconds()) + 1
            moved = clock.AdvanceClock(clock_pb.AdvanceClockRequest(duration=Duration(seconds=seconds)))
            err.print(f"clock moved to {timestamp(moved.now)} (revision {moved.revision})")
        remaining = list(due)
        closed = 0
        started = time.monotonic()
        try:
            with progress:
                task = progress.add_task("bill run", total=len(due), status="cycles closed and billed")
                while remaining:
                    states = _parallel(pool, lambda c: _closed(cli, c), remaining, lambda: None)
                    still = [c for c, done in zip(remaining, states, strict=True) if not done]
                    closed += len(remaining) - len(still)
                    progress.update(task, completed=closed)
                    remaining = still
                    if remaining:
                        if time.monotonic() - started > give_up.total_seconds():
                            break
                        time.sleep(1.0)
        except KeyboardInterrupt:
            err.print(
                f"[yellow]interrupted[/]: {closed} of {len(due)} closed; billing goes on. "
                "Run `evolutivo bills run --no-advance` to watch again."
            )
            raise typer.Exit(ExitCode.INTERRUPTED) from None
    elapsed = time.monotonic() - started
    data = {
        "accounts": len(accounts),
        "open_cycles": len(open_cycles),
        "due": len(due),
        "closed": closed,
        "remaining": [c.account_id for c in remaining],
        "target_time": target.isoformat(),
        "seconds": round(elapsed, 1),
    }
    cli.output.emit_data(
        data,
        lambda: cli.output.print(
            f"{closed} of {len(due)} cycles closed and billed in {elapsed:.1f}s"
            + (
                f"; {len(remaining)} still open (see billing's log; run again with --no-advance to keep watching)"
                if remaining
                else ""
            )
        ),
    )
    if remaining:
        raise typer.Exit(ExitCode.TIMEOUT)


# ------------------------------------------------------------------------------ credit notes


def credit_note_rows(notes: Iterable[credit_note_pb2.CreditNote]) -> list[list[object]]:
    return [
        [
            n.credit_note_id,
            n.credit_note_number,
            n.bill_id,
            day(n.issue_date),
            money(n.total),
            "voids bill" if n.voids_bill else "",
            n.reason,
        ]
        for n in notes
    ]


CREDIT_NOTE_COLUMNS = ["id", "number", "bill", "issued", "total", "", "reason"]


@app.command("credit-note")
def credit_note(
    ctx: typer.Context,
    bill_id: Annotated[str, typer.Argument(help="the issued bill credited")],
    reason: Annotated[str, typer.Option(help="why (printed on the credit note)")],
    line: Annotated[
        list[str] | None, typer.Option(help="LINE or LINE=AMOUNT: credit a bill line, whole or in part (repeatable)")
    ] = None,
    whole: Annotated[bool, typer.Option("--whole", help="credit all that is left of every line")] = False,
    request: Annotated[str | None, RequestId] = None,
) -> None:
    """Issue a credit note against an issued bill, whole or for chosen lines."""
    cli = state(ctx)
    if whole == bool(line):
        raise CliError("give --whole, or the lines to credit with --line (not both)")
    stub = cli.clients.billing
    req = pb.CreateCreditNoteRequest(
        bill_id=bill_id, whole_bill=whole, reason=reason, actor=actor_default(), request_id=request_id(request)
    )
    if line:
        currency = stub.GetBill(pb.GetBillRequest(bill_id=bill_id)).bill.currency_code
        for item in line:
            number, _, value = item.partition("=")
            if not number.strip().isdigit():
                raise CliError(f"--line: {item!r} is not LINE or LINE=AMOUNT")
            entry = req.lines.add(bill_line_number=int(number))
            if value:
                entry.amount.CopyFrom(to_money(decimal_amount(value, "--line"), currency))
    note = stub.CreateCreditNote(req).credit_note
    cli.output.emit(
        note, lambda: cli.output.print(table("Credit note issued", CREDIT_NOTE_COLUMNS, credit_note_rows([note])))
    )


@app.command("credit-notes")
def credit_notes(
    ctx: typer.Context,
    account_id: Annotated[str, typer.Argument(help="account id")],
    bill: Annotated[str | None, typer.Option(help="only this bill's")] = None,
    limit: Annotated[int, Limit] = 50,
) -> None:
    """List an account's credit notes, newest first."""
    cli = state(ctx)
    stub = cli.clients.billing

    def fetch(token: str, size: int) -> pb.ListCreditNotesResponse:
        return stub.ListCreditNotes(
            pb.ListCreditNotesRequest(account_id=account_id, bill_id=bill or "", page_token=token, page_size=size)
        )

    found, token = paginate(fetch, "credit_notes", limit)
    cli.output.emit(
        pb.ListCreditNotesResponse(credit_notes=found, next_page_token=token),
        lambda: cli.output.print(
            table("Credit notes", CREDIT_NOTE_COLUMNS, credit_note_rows(found), more(token, len(found)))
        ),
    )
