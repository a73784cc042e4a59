"""`evolutivo erp`: ERP connections, sync jobs and the journal export (erp_gateway service)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from evolutivo.erp_gateway.v1 import connection_pb2, sync_job_pb2, sync_state_pb2
from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2 as pb
from google.protobuf import json_format

from evolutivo_cli.app import state
from evolutivo_cli.commands._common import Limit, RequestId, enum_option, more, paginate, request_id
from evolutivo_cli.errors import CliError, ExitCode
from evolutivo_cli.parsing import instant
from evolutivo_cli.progress import progress_bar
from evolutivo_cli.render import Output, details, enum, money, table, timestamp

app = typer.Typer(no_args_is_help=True)
jobs_app = typer.Typer(no_args_is_help=True)
journal_app = typer.Typer(no_args_is_help=True)
app.add_typer(jobs_app, name="jobs", help="Sync jobs: list, retry (one, or every dead job).")
app.add_typer(journal_app, name="journal", help="The general-ledger journal of a period.")

_TYPE = connection_pb2.ConnectionType.DESCRIPTOR
_JOB_STATE = sync_job_pb2.SyncJobState.DESCRIPTOR
_ENTITY = sync_state_pb2.EntityType.DESCRIPTOR


def show_connection(out: Output, c: connection_pb2.Connection, title: str) -> None:
    mapping = json_format.MessageToDict(c.mapping, preserving_proto_field_name=True)
    out.print(
        details(
            title,
            [
                ("id", c.connection_id),
                ("name", c.display_name),
                ("type", enum(c, "type").replace("_", " ")),
                ("endpoint", c.endpoint_url),
                ("database", c.database),
                ("username", c.username),
                ("credentials", "stored" if c.has_credentials else "none"),
                ("enabled", "yes" if c.enabled else "no"),
                ("imports payments", "yes" if c.import_payments else ""),
                ("mapping", json.dumps(mapping) if mapping else ""),
                ("updated", timestamp(c.update_time)),
            ],
        )
    )


@app.command("list")
def list_connections(ctx: typer.Context, limit: Annotated[int, Limit] = 50) -> None:
    """List ERP connections."""
    cli = state(ctx)
    stub = cli.clients.erp

    def fetch(token: str, size: int) -> pb.ListConnectionsResponse:
        return stub.ListConnections(pb.ListConnectionsRequest(page_token=token, page_size=size))

    found, token = paginate(fetch, "connections", limit)
    rows = [
        [
            c.connection_id,
            c.display_name,
            enum(c, "type").replace("_", " "),
            c.endpoint_url,
            "yes" if c.enabled else "no",
        ]
        for c in found
    ]
    cli.output.emit(
        pb.ListConnectionsResponse(connections=found, next_page_token=token),
        lambda: cli.output.print(
            table("ERP connections", ["id", "name", "type", "endpoint", "enabled"], rows, more(token, len(found)))
        ),
    )


@app.command("get")
def get_connection(ctx: typer.Context, connection_id: str) -> None:
    """Show a connection (never its secret)."""
    cli = state(ctx)
    found = cli.clients.erp.GetConnection(pb.GetConnectionRequest(connection_id=connection_id)).connection
    cli.output.emit(found, lambda: show_connection(cli.output, found, f"Connection {found.display_name}"))


@app.command("create")
def create_connection(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option(help="display name")] = None,
    type_: Annotated[str | None, typer.Option("--type", help="tryton, odoo, webhook or gl_file_export")] = None,
    url: Annotated[str | None, typer.Option(help="endpoint URL")] = None,
    username: Annotated[str | None, typer.Option(help="ERP user")] = None,
    database: Annotated[str | None, typer.Option(help="Odoo database")] = None,
    secret_env: Annotated[
        str | None,
        typer.Option(
            help="name of the environment variable holding the password or secret (kept off the command line)"
        ),
    ] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="create it disabled")] = False,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="a Connection as protobuf JSON (mapping included)")
    ] = None,
    request: Annotated[str | None, RequestId] = None,
) -> None:
    """Configure an ERP connection; the records the gateway knows are queued for it."""
    cli = state(ctx)
    connection = connection_pb2.Connection(enabled=not disabled)
    if file is not None:
        try:
            json_format.ParseDict(json.loads(file.read_text()), connection)
        except (OSError, ValueError, json_format.ParseError) as exc:
            raise CliError(f"--file {file}: {exc}") from None
    if name:
        connection.display_name = name
    if type_:
        connection.type = enum_option(_TYPE, type_, "--type")
    if url:
        connection.endpoint_url = url
    if username:
        connection.username = username
    if database:
        connection.database = database
    secret = ""
    if secret_env:
        if secret_env not in os.environ:
            raise CliError(f"--secret-env: ${secret_env} is not set")
        secret = os.environ[secret_env]
    created = cli.clients.erp.CreateConnection(
        pb.CreateConnectionRequest(connection=connection, secret=secret, request_id=request_id(request))
    ).connection
    cli.output.emit(created, lambda: show_connection(cli.output, created, "Connection created"))


@app.command("test")
def test_connection(ctx: typer.Context, connection_id: str) -> None:
    """Check that the ERP answers, accepts the credentials and knows the mapping."""
    cli = state(ctx)
    result = cli.clients.erp.TestConnection(pb.TestConnectionRequest(connection_id=connection_id))

    def show() -> None:
        if result.ok:
            cli.output.print("[green]ok[/]: the ERP answers, accepts the credentials and knows the mapping")
        rows = [[enum(p, "kind").replace("_", " "), p.message] for p in result.problems]
        if rows:
            cli.output.print(table("Problems", ["kind", "message"], rows))

    cli.output.emit(result, show)
    if not result.ok:
        raise typer.Exit(ExitCode.FAILED_PRECONDITION)


@app.command("sync-state")
def sync_state(
    ctx: typer.Context,
    entity_type: Annotated[str, typer.Argument(help="customer, invoice, credit_note or payment")],
    entity_id: str,
) -> None:
    """Where one suite record stands on every connection."""
    cli = state(ctx)
    found = cli.clients.erp.GetSyncState(
        pb.GetSyncStateRequest(entity_type=enum_option(_ENTITY, entity_type, "ENTITY_TYPE"), entity_id=entity_id)
    )
    cli.output.emit(found, lambda: cli.output.print(table("Sync jobs", JOB_COLUMNS, job_rows(list(found.jobs)))))


JOB_COLUMNS = ["id", "connection", "entity", "state", "attempts", "erp id", "next attempt", "last error"]


def job_rows(jobs: list[sync_job_pb2.SyncJob]) -> list[list[object]]:
    return [
        [
            j.job_id,
            j.connection_id,
            f"{enum(j, 'entity_type')}:{j.entity_id}",
            enum(j, "state"),
            j.attempts,
            j.erp_id,
            timestamp(j.next_attempt_time),
            j.last_error,
        ]
        for j in jobs
    ]


@jobs_app.command("list")
def list_jobs(
    ctx: typer.Context,
    connection: Annotated[str | None, typer.Option(help="only this connection's")] = None,
    state_: Annotated[str | None, typer.Option("--state", help="pending, retrying, succeeded or dead")] = None,
    entity_type: Annotated[str | None, typer.Option(help="customer, invoice, credit_note or payment")] = None,
    entity: Annotated[str | None, typer.Option(help="only this record's")] = None,
    limit: Annotated[int, Limit] = 50,
) -> None:
    """List sync jobs, oldest first."""
    cli = state(ctx)
    stub = cli.clients.erp
    request = pb.ListSyncJobsRequest(
        connection_id=connection or "",
        state=enum_option(_JOB_STATE, state_, "--state"),
        entity_type=enum_option(_ENTITY, entity_type, "--entity-type"),
        entity_id=entity or "",
    )

    def fetch(token: str, size: int) -> pb.ListSyncJobsResponse:
        request.page_token, request.page_size = token, size
        return stub.ListSyncJobs(request)

    found, token = paginate(fetch, "jobs", limit)
    cli.output.emit(
        pb.ListSyncJobsResponse(jobs=found, next_page_token=token),
        lambda: cli.output.print(table("Sync jobs", JOB_COLUMNS, job_rows(found), more(token, len(found)))),
    )


@jobs_app.command("retry")
def retry_jobs(
    ctx: typer.Context,
    job_ids: Annotated[list[str] | None, typer.Argument(help="job ids")] = None,
    all_dead: Annotated[bool, typer.Option("--all-dead", help="every DEAD job (of --connection, if given)")] = False,
    connection: Annotated[str | None, typer.Option(help="with --all-dead: only this connection's")] = None,
) -> None:
    """Run jobs again now: a dead job gets a fresh set of attempts."""
    cli = state(ctx)
    stub = cli.clients.erp
    ids = list(job_ids or [])
    if all_dead:
        request = pb.ListSyncJobsRequest(connection_id=connection or "", state=sync_job_pb2.SYNC_JOB_STATE_DEAD)

        def fetch(token: str, size: int) -> pb.ListSyncJobsResponse:
            request.page_token, request.page_size = token, size
            return stub.ListSyncJobs(request)

        ids += [j.job_id for j in paginate(fetch, "jobs", 10_000_000)[0]]
    if not ids and not all_dead:
        raise CliError("give job ids, or --all-dead")
    retried: list[sync_job_pb2.SyncJob] = []
    progress = progress_bar("jobs", cli.output.err)
    with progress:
        task = progress.add_task("retry", total=len(ids), status="")
        for job_id in ids:
            retried.append(stub.RetrySyncJob(pb.RetrySyncJobRequest(job_id=job_id)).job)
            progress.advance(task)
    cli.output.emit(
        pb.ListSyncJobsResponse(jobs=retried),
        lambda: cli.output.print(table(f"Retried {len(retried)} job(s)", JOB_COLUMNS, job_rows(retried))),
    )


@journal_app.command("export")
def export_journal(
    ctx: typer.Context,
    connection: Annotated[str, typer.Option(help="connection whose mapping names the accounts")],
    start: Annotated[str, typer.Option(help="period start (ISO 8601), inclusive")],
    end: Annotated[str, typer.Option(help="period end (ISO 8601), exclusive")],
    currency: Annotated[str, typer.Option(help="ISO 4217: one journal per currency")] = "EUR",
    post: Annotated[bool, typer.Option("--post", help="also post it to the ERP as one journal entry (Tryton)")] = False,
    csv_file: Annotated[Path | None, typer.Option("--csv", help="save the lines as CSV here")] = None,
    request: Annotated[str | None, RequestId] = None,
) -> None:
    """Export (and optionally post) the balanced journal of a period."""
    cli = state(ctx)
    req = pb.ExportJournalRequest(
        connection_id=connection, currency_code=currency, post=post, request_id=request_id(request)
    )
    req.start_time.FromDatetime(instant(start, "--start"))
    req.end_time.FromDatetime(instant(end, "--end"))
    with cli.output.err.status("exporting the journal..."):
        result = cli.clients.erp.ExportJournal(req)
    if csv_file is not None:
        csv_file.write_text(result.csv, encoding="utf-8")
        cli.output.note(f"CSV saved to {csv_file}")

    def show() -> None:
        rows = [
            [line.role, line.charge_offer_code, line.account, money(line.debit), money(line.credit)]
            for line in result.lines
        ]
        caption = f"debit {money(result.debit_total)} · credit {money(result.credit_total)}"
        if result.erp_move_id:
            caption += f" · posted as ERP move {result.erp_move_id}"
        cli.output.print(table("Journal", ["role", "offer", "account", "debit", "credit"], rows, caption))

    cli.output.emit(result, show)
