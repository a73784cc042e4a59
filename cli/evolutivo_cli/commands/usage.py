"""`evolutivo usage`: usage events and their charges (charging service)."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from evolutivo.charging.v1 import charging_service_pb2 as pb
from evolutivo.charging.v1 import charging_service_pb2_grpc as charging_grpc
from evolutivo.charging.v1 import usage_pb2
from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import customer_service_pb2 as customer_pb

from evolutivo_cli.app import State, state
from evolutivo_cli.commands._common import Limit, more, paginate
from evolutivo_cli.errors import CliError, ExitCode, exit_code_for, status_code
from evolutivo_cli.parsing import instant, labels
from evolutivo_cli.progress import progress_bar
from evolutivo_cli.render import details, enum, money, table, timestamp
from evolutivo_cli.usage_file import Checkpoint, Line, Tally, count_events, detect_format, read_events

app = typer.Typer(no_args_is_help=True)

MAX_BATCH = 1000
# A batch the service did not answer is sent again (same event ids: nothing is charged twice).
RETRIES = 5
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)


def result_rows(results: list[usage_pb2.UsageResult]) -> list[list[object]]:
    rows: list[list[object]] = []
    for r in results:
        amounts = ", ".join(money(c.amount) for c in r.charges)
        reason = r.error.message if r.HasField("error") and r.error.code else r.reason
        rows.append([r.event_id, enum(r, "status"), amounts, reason])
    return rows


@app.command("record")
def record(
    ctx: typer.Context,
    account_id: Annotated[str, typer.Argument(help="account id")],
    event_type: Annotated[str, typer.Argument(help="e.g. api.call")],
    quantity: Annotated[str, typer.Option(help="decimal")] = "1",
    at: Annotated[str | None, typer.Option(help="event time (ISO 8601); now by default")] = None,
    event_id: Annotated[str | None, typer.Option(help="idempotency key; a new UUID by default")] = None,
    prop: Annotated[list[str] | None, typer.Option("--property", "-p", help="KEY=VALUE (repeatable)")] = None,
) -> None:
    """Rate one usage event now and show its charges."""
    cli = state(ctx)
    event = usage_pb2.UsageEvent(
        event_id=event_id or str(uuid.uuid4()),
        account_id=account_id,
        event_type=event_type,
        quantity=quantity,
        properties=labels(prop, "--property"),
    )
    event.event_time.FromDatetime(instant(at, "--at") if at else datetime.now(UTC))
    result = cli.clients.charging.RecordUsage(pb.RecordUsageRequest(event=event)).result
    cli.output.emit(
        result,
        lambda: cli.output.print(table("Usage", ["event", "status", "charges", "reason"], result_rows([result]))),
    )


def _batches(lines: Iterator[Line], size: int) -> Iterator[list[Line]]:
    batch: list[Line] = []
    for line in lines:
        batch.append(line)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _send(
    stub: charging_grpc.ChargingServiceStub, events: list[list[usage_pb2.UsageEvent]], stream: bool
) -> list[usage_pb2.UsageResult]:
    """One RecordUsageBatch call, or one StreamUsage call carrying every batch."""
    if stream:
        return list(stub.StreamUsage(pb.StreamUsageRequest(events=chunk) for chunk in events).results)
    (batch,) = events
    return list(stub.RecordUsageBatch(pb.RecordUsageBatchRequest(events=batch)).results)


def _with_retries(
    send: Callable[[], list[usage_pb2.UsageResult]], note: Callable[[str], None]
) -> list[usage_pb2.UsageResult]:
    for attempt in range(RETRIES):
        try:
            return send()
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            if code not in RETRYABLE or attempt == RETRIES - 1:
                raise
            wait = min(2**attempt, 10)
            note(f"charging did not answer ({code.name}); sending the batch again in {wait}s")
            time.sleep(wait)
    raise AssertionError("unreachable")


@app.command("import")
def import_usage(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV (header row) or JSON lines", exists=True, dir_okay=False)],
    format_: Annotated[str | None, typer.Option("--format", help="csv or jsonl (default: by extension)")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=MAX_BATCH, help="events per call")] = 500,
    stream: Annotated[
        bool, typer.Option("--stream", help="send over StreamUsage (one stream per --stream-batches batches)")
    ] = False,
    stream_batches: Annotated[int, typer.Option(min=1, help="batches per stream with --stream")] = 10,
    checkpoint: Annotated[Path | None, typer.Option(help="checkpoint file (default FILE.checkpoint)")] = None,
    restart: Annotated[bool, typer.Option("--restart", help="ignore the checkpoint and send from the start")] = False,
    max_events: Annotated[
        int | None, typer.Option(min=1, help="stop after this many events (the next run goes on from there)")
    ] = None,
    errors_file: Annotated[
        Path | None, typer.Option("--errors", help="write the refused events' results here (JSON lines)")
    ] = None,
) -> None:
    """Import usage from a CSV or JSON-lines file in batches, with progress; resumable.

    The checkpoint records the last line charging confirmed: run the same command again after an
    interruption and it goes on from there. Events are idempotent on event_id, so the batch that
    was in flight is simply sent again.
    """
    cli = state(ctx)
    fmt = detect_format(file, format_)
    point_path = checkpoint or Checkpoint.default_path(file)
    point = Checkpoint(point_path, str(file.resolve())) if restart else Checkpoint.load(point_path, file)
    if point.complete:
        cli.output.note(f"{file} was imported already ({point.tally.sent} events; checkpoint {point_path}).")
        cli.output.note("Pass --restart to send it again (events are idempotent on event_id).")
        _summary(cli, file, point, resumed_from=point.line, refused=[])
        return
    total = count_events(file, fmt)
    done_before = point.tally.sent
    stub = cli.clients.charging
    refused: list[usage_pb2.UsageResult] = []
    errors_out = open(errors_file, "a", encoding="utf-8") if errors_file else None
    resumed_from = point.line
    if resumed_from:
        cli.output.note(f"resuming {file} after line {resumed_from} ({done_before} events sent before)")
    sent_now = 0
    progress = progress_bar("events")

    def say(text: str) -> None:
        progress.console.print(f"[yellow]{text}")

    try:
        with progress:
            task = progress.add_task(
                f"import {file.name}", total=total, completed=done_before, status=point.tally.line()
            )
            lines: Iterator[Line] = read_events(file, fmt, point.line)
            if max_events is not None:
                lines = islice(lines, max_events)
            batches = _batches(lines, batch_size)
            while group := list(islice(batches, stream_batches if stream else 1)):
                events = [[line.event for line in batch] for batch in group]
                results = _with_retries(partial(_send, stub, events, stream), say)
                for result in results:
                    point.tally.add(result)
                    if result.HasField("error") and result.error.code:
                        refused.append(result)
                        if errors_out is not None:
                            errors_out.write(json.dumps(_result_json(result)) + "\n")
                point.line = group[-1][-1].number
                point.save()
                count = sum(map(len, group))
                sent_now += count
                progress.update(task, advance=count, status=point.tally.line())
        if next(read_events(file, fmt, point.line), None) is None:
            point.complete = True
            point.save()
    except KeyboardInterrupt:
        point.save()
        cli.output.note(
            f"[yellow]interrupted[/]: {point.tally.sent} events confirmed up to line {point.line}; "
            "run the same command to go on from there."
        )
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    finally:
        if errors_out is not None:
            errors_out.close()
    _summary(cli, file, point, resumed_from, refused)
    if not point.complete:
        cli.output.note(
            f"stopped after {sent_now} events (--max-events); run the same command to go on from line {point.line + 1}."
        )
    if refused:
        raise typer.Exit(exit_code_for(status_code(refused[0].error.code)))


def _result_json(result: usage_pb2.UsageResult) -> dict[str, object]:
    from google.protobuf import json_format

    return json_format.MessageToDict(result, preserving_proto_field_name=True)


def _summary(
    cli: State, file: Path, point: Checkpoint, resumed_from: int, refused: list[usage_pb2.UsageResult]
) -> None:
    out = cli.output
    tally: Tally = point.tally
    data = {
        "file": str(file),
        "checkpoint": str(point.path),
        "complete": point.complete,
        "last_line": point.line,
        "resumed_after_line": resumed_from,
        "sent": tally.sent,
        "rated": tally.rated,
        "unrated": tally.unrated,
        "rejected": tally.rejected,
        "refused": tally.refused,
        "charges": tally.charges,
        "refused_events": [_result_json(r) for r in refused[:100]],
    }

    def show() -> None:
        rows = [
            ("events sent", tally.sent),
            ("rated", tally.rated),
            ("unrated (kept; `evolutivo usage unrated`)", tally.unrated),
            ("rejected (suspended or closed accounts)", tally.rejected),
            ("refused (errors)", tally.refused),
            ("charges made", tally.charges),
            ("last line", point.line),
            ("checkpoint", f"{point.path} ({'complete' if point.complete else 'to resume'})"),
        ]
        out.print(details(f"Imported {file.name}", rows))
        if refused:
            out.print(
                table("Refused events (first 20)", ["event", "status", "charges", "error"], result_rows(refused[:20]))
            )

    out.emit_data(data, show)


@app.command("charges")
def charges(
    ctx: typer.Context,
    account_id: Annotated[str, typer.Argument(help="account id")],
    cycle: Annotated[str | None, typer.Option(help="only this bill cycle's charges")] = None,
    limit: Annotated[int, Limit] = 50,
) -> None:
    """List an account's charges, oldest first."""
    cli = state(ctx)
    stub = cli.clients.charging

    def fetch(token: str, size: int) -> pb.ListChargesResponse:
        return stub.ListCharges(
            pb.ListChargesRequest(account_id=account_id, bill_cycle_id=cycle or "", page_token=token, page_size=size)
        )

    found, token = paginate(fetch, "charges", limit)
    rows = [
        [
            timestamp(c.event_time),
            enum(c, "kind"),
            c.charge_offer_code,
            c.charge_code,
            c.quantity,
            money(c.amount),
            "late" if c.late else "",
        ]
        for c in found
    ]
    cli.output.emit(
        pb.ListChargesResponse(charges=found, next_page_token=token),
        lambda: cli.output.print(
            table(
                "Charges",
                ["event time", "kind", "offer", "charge", "quantity", "amount", ""],
                rows,
                more(token, len(found)),
            )
        ),
    )


@app.command("unrated")
def unrated(
    ctx: typer.Context,
    account_id: Annotated[str | None, typer.Option("--account", help="only this account's")] = None,
    limit: Annotated[int, Limit] = 50,
) -> None:
    """List usage kept unrated or rejected, with the reason."""
    cli = state(ctx)
    stub = cli.clients.charging

    def fetch(token: str, size: int) -> pb.ListUnratedUsageResponse:
        return stub.ListUnratedUsage(
            pb.ListUnratedUsageRequest(account_id=account_id or "", page_token=token, page_size=size)
        )

    found, token = paginate(fetch, "usage", limit)
    rows = [
        [
            u.event.event_id,
            u.event.account_id,
            u.event.event_type,
            timestamp(u.event.event_time),
            enum(u, "status"),
            u.reason,
        ]
        for u in found
    ]
    cli.output.emit(
        pb.ListUnratedUsageResponse(usage=found, next_page_token=token),
        lambda: cli.output.print(
            table(
                "Unrated usage",
                ["event", "account", "type", "event time", "status", "reason"],
                rows,
                more(token, len(found)),
            )
        ),
    )


@app.command("resubmit")
def resubmit(
    ctx: typer.Context, event_ids: Annotated[list[str], typer.Argument(help="event ids (at most 1000)")]
) -> None:
    """Rate kept unrated or rejected events again (after the cause was fixed)."""
    cli = state(ctx)
    response = cli.clients.charging.ResubmitUsage(pb.ResubmitUsageRequest(event_ids=event_ids))
    cli.output.emit(
        response,
        lambda: cli.output.print(
            table("Resubmitted", ["event", "status", "charges", "reason"], result_rows(list(response.results)))
        ),
    )


@app.command("rerate")
def rerate(
    ctx: typer.Context,
    start: Annotated[str, typer.Option(help="window start (ISO 8601), inclusive")],
    end: Annotated[str, typer.Option(help="window end (ISO 8601), exclusive")],
    account: Annotated[list[str] | None, typer.Option("--account", help="account id (repeatable)")] = None,
    all_accounts: Annotated[bool, typer.Option("--all-accounts", help="every active account")] = False,
    offer: Annotated[str | None, typer.Option(help="only charges of this offer code")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="progress file (default: in the current directory)")] = None,
) -> None:
    """Rerate accounts' usage in a window with the current catalog, with progress; resumable.

    Each account's run has a request id derived from the run: an interrupted rerating run again
    with the same arguments skips the accounts done and gets the same answer for the one in flight.
    """
    cli = state(ctx)
    window_start, window_end = instant(start, "--start"), instant(end, "--end")
    if not account and not all_accounts:
        raise CliError("give --account (repeatable) or --all-accounts")
    ids = list(account or [])
    if all_accounts:
        customer = cli.clients.customer

        def fetch(token: str, size: int) -> customer_pb.ListAccountsResponse:
            return customer.ListAccounts(
                customer_pb.ListAccountsRequest(
                    page_token=token, page_size=size, status=account_pb2.ACCOUNT_STATUS_ACTIVE
                )
            )

        ids += [a.account_id for a in paginate(fetch, "accounts", 10_000_000)[0]]
    key = hashlib.sha256(json.dumps([sorted(ids), start, end, offer or ""]).encode()).hexdigest()[:16]
    path = checkpoint or Path(f".evolutivo-rerate-{key}.json")
    saved: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"run": str(uuid.uuid4()), "done": {}}
    done: dict[str, dict[str, object]] = saved["done"]
    run = uuid.UUID(saved["run"])
    if done:
        cli.output.note(f"resuming rerating run {run} ({len(done)} of {len(ids)} accounts done; {path})")
    stub = cli.clients.charging
    progress = progress_bar("accounts")
    try:
        with progress:
            task = progress.add_task("rerate", total=len(ids), completed=len(done), status="")
            for account_id in ids:
                if account_id in done:
                    continue
                request = pb.RerateUsageRequest(
                    account_id=account_id,
                    charge_offer_code=offer or "",
                    request_id=str(uuid.uuid5(run, account_id)),
                )
                request.start_time.FromDatetime(window_start)
                request.end_time.FromDatetime(window_end)
                result = stub.RerateUsage(request).rerate_run
                done[account_id] = {
                    "rerate_run_id": result.rerate_run_id,
                    "events_rerated": result.events_rerated,
                    "events_changed": result.events_changed,
                    "net_amount": money(result.net_amount),
                }
                path.write_text(json.dumps(saved, indent=2))
                changed = sum(int(str(d["events_changed"])) for d in done.values())
                progress.update(task, advance=1, status=f"{changed} events changed")
    except KeyboardInterrupt:
        cli.output.note(f"[yellow]interrupted[/]: {len(done)} accounts done; run the same command to go on ({path}).")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    path.unlink(missing_ok=True)
    rows = [[a, d["events_rerated"], d["events_changed"], d["net_amount"]] for a, d in done.items()]
    cli.output.emit_data(
        {"run": str(run), "accounts": done},
        lambda: cli.output.print(table("Rerated", ["account", "events rerated", "events changed", "net amount"], rows)),
    )
