"""`evolutivo clock`: the shared development clock (evolutivo.admin.v1.ClockAdminService).

Served only by services running with CLOCK_MODE=controllable (the local stack's default); every
service follows a change within moments, and `get` shows the revision each one has applied.
"""

from __future__ import annotations

from typing import Annotated

import grpc
import typer
from evolutivo.admin.v1 import clock_admin_service_pb2 as pb
from google.protobuf.duration_pb2 import Duration

from evolutivo_cli.app import State, state
from evolutivo_cli.errors import CliError, ExitCode
from evolutivo_cli.parsing import duration, instant
from evolutivo_cli.render import table, timestamp
from evolutivo_cli.settings import SERVICES

app = typer.Typer(no_args_is_help=True)


def wait_followed(cli: State, revision: int, timeout: float = 15.0) -> None:
    """Waits until every service has applied the clock revision (bounded)."""
    import time

    deadline = time.monotonic() + timeout
    for service in SERVICES:
        stub = cli.clients.clock(service)
        while stub.GetClock(pb.GetClockRequest()).revision < revision:
            if time.monotonic() > deadline:
                raise CliError(f"{service} did not follow the clock within {timeout:g}s", ExitCode.TIMEOUT)
            time.sleep(0.1)


@app.command("get")
def get(ctx: typer.Context) -> None:
    """Show the clock each service sees, with the revision it has applied."""
    cli = state(ctx)
    rows: list[tuple[str, str, object]] = []
    data: dict[str, dict[str, object]] = {}
    for service in SERVICES:
        try:
            seen = cli.clients.clock(service).GetClock(pb.GetClockRequest(), timeout=5)
            rows.append((service, timestamp(seen.now), seen.revision))
            data[service] = {"now": timestamp(seen.now), "revision": seen.revision}
        except grpc.RpcError as exc:
            code = exc.code()
            rows.append((service, f"[red]{code.name}[/]", ""))
            data[service] = {"error": code.name}
    cli.output.emit_data(data, lambda: cli.output.print(table("Clock", ["service", "now", "revision"], rows)))
    if all("error" in v for v in data.values()):
        raise CliError("no service answered the clock admin", ExitCode.UNAVAILABLE, "Is the stack running (`make up`)?")


@app.command("advance")
def advance(
    ctx: typer.Context,
    by: Annotated[str, typer.Argument(help="e.g. 7d, 1w2d, 36h, 90m")],
) -> None:
    """Move the shared clock forward, and wait until every service follows."""
    cli = state(ctx)
    step = duration(by, "BY")
    moved = cli.clients.clock().AdvanceClock(
        pb.AdvanceClockRequest(duration=Duration(seconds=int(step.total_seconds())))
    )
    wait_followed(cli, moved.revision)
    cli.output.emit(moved, lambda: cli.output.print(f"clock now {timestamp(moved.now)} (revision {moved.revision})"))


@app.command("set")
def set_clock(
    ctx: typer.Context, time: Annotated[str, typer.Argument(help="ISO 8601 instant (never backwards)")]
) -> None:
    """Jump the shared clock to an instant (forward only)."""
    cli = state(ctx)
    request = pb.SetClockRequest()
    request.time.FromDatetime(instant(time, "TIME"))
    moved = cli.clients.clock().SetClock(request)
    wait_followed(cli, moved.revision)
    cli.output.emit(moved, lambda: cli.output.print(f"clock now {timestamp(moved.now)} (revision {moved.revision})"))
