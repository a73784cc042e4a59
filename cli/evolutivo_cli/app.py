"""The `evolutivo` command: global options, the resource sub-commands, errors and exit codes."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from rich.console import Console
from typer._click import exceptions as click_exceptions
from typer.core import TyperGroup

from evolutivo_cli import errors
from evolutivo_cli.client import Clients
from evolutivo_cli.errors import CliError, ExitCode
from evolutivo_cli.render import FORMATS, Format, Output, details
from evolutivo_cli.settings import SERVICES, Settings, SettingsError, config_path, resolve

OUTPUT_FLAGS = ("-o", "--output")


@dataclass
class State:
    """What every command gets through ``ctx.obj``."""

    flags: dict[str, Any]
    config: Path | None
    output: Output
    _settings: Settings | None = None
    _clients: Clients | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = resolve(flags=self.flags, config=self.config)
            except SettingsError as exc:
                raise CliError(str(exc), ExitCode.USAGE) from None
        return self._settings

    @property
    def clients(self) -> Clients:
        if self._clients is None:
            self._clients = Clients(self.settings)
        return self._clients

    def close(self) -> None:
        if self._clients is not None:
            self._clients.close()


def state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):  # pragma: no cover - the callback always sets it
        raise CliError("internal: no CLI state")
    return root.obj


def lift_output_flags(args: Sequence[str]) -> list[str]:
    """`-o json` may come anywhere (`evolutivo accounts list -o json`, like kubectl): it is moved in
    front of the sub-command, where the root option reads it. Arguments after `--` are left alone."""
    head: list[str] = []
    rest: list[str] = []
    items = list(args)
    i = 0
    while i < len(items):
        arg = items[i]
        if arg == "--":
            rest.extend(items[i:])
            break
        if arg in OUTPUT_FLAGS and i + 1 < len(items):
            head += [arg, items[i + 1]]
            i += 2
            continue
        if arg.startswith("--output=") or (arg.startswith("-o") and len(arg) > 2 and not arg.startswith("--")):
            head.append(arg)
            i += 1
            continue
        rest.append(arg)
        i += 1
    return head + rest


def _wants_json(args: Sequence[str]) -> bool:
    lifted = lift_output_flags(args)
    for i, arg in enumerate(lifted):
        if arg in OUTPUT_FLAGS and i + 1 < len(lifted):
            return lifted[i + 1] == "json"
        if arg in ("--output=json", "-ojson"):
            return True
    return False


def report(error: BaseException, as_json: bool) -> ExitCode:
    """Prints an error for people (or as JSON on stderr) and returns the exit code it means."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if isinstance(error, grpc.RpcError):
        decoded = errors.decode(error)
        if as_json:
            import json

            sys.stderr.write(json.dumps({"error": decoded.as_dict()}, indent=2) + "\n")
            return decoded.exit_code
        err.print(f"[bold red]error:[/] {decoded.code.name}: {escape(decoded.message)}")
        for violation in decoded.violations:
            err.print(f"  [bold]{escape(violation.field)}[/]: {escape(violation.description)}")
        if decoded.reason:
            extra = ", ".join(f"{k}={v}" for k, v in sorted(decoded.metadata.items()) if k != "field")
            err.print(f"  reason: {decoded.reason} ({decoded.domain})" + (f" {escape(extra)}" if extra else ""))
        if decoded.service:
            err.print(f"  call: {decoded.service} {decoded.method} at {decoded.address}")
        hint = decoded.hint()
        if hint:
            err.print(f"[dim]hint: {escape(hint)}[/]")
        return decoded.exit_code
    if isinstance(error, CliError):
        if as_json:
            import json

            body = {"error": {"code": error.code.name, "message": error.message, "exit_code": int(error.code)}}
            sys.stderr.write(json.dumps(body, indent=2) + "\n")
        else:
            err.print(f"[bold red]error:[/] {escape(error.message)}")
            if error.hint:
                err.print(f"[dim]hint: {escape(error.hint)}[/]")
        return error.code
    raise error


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


class EvolutivoGroup(TyperGroup):
    """The root group: lifts `-o` from anywhere, maps errors to the documented exit codes (a usage
    error is 1, not Click's 2, which means NOT_FOUND here)."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        lifted = lift_output_flags(argv)
        as_json = _wants_json(argv)
        code: int
        try:
            result = super().main(lifted, prog_name or "evolutivo", complete_var, standalone_mode=False, **extra)
            code = result if isinstance(result, int) else 0
        except click_exceptions.UsageError as exc:
            exc.show()
            code = ExitCode.USAGE
        except click_exceptions.ClickException as exc:
            exc.show()
            code = ExitCode.USAGE
        except typer.Abort:
            Console(stderr=True).print("aborted")
            code = ExitCode.INTERRUPTED
        except KeyboardInterrupt:
            Console(stderr=True).print("interrupted")
            code = ExitCode.INTERRUPTED
        except (grpc.RpcError, CliError) as exc:
            code = report(exc, as_json)
        if standalone_mode:
            sys.exit(int(code))
        return int(code)


app = typer.Typer(
    cls=EvolutivoGroup,
    help=(
        "Operate the Evolutivo credit collection suite: accounts, offers, usage, balances, bills, "
        "payments, collections and the ERP, over gRPC. Try `evolutivo demo` on the local stack (`make up`)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _address_option(service: str) -> Any:
    flag = f"--{service.replace('_', '-')}-address"
    return typer.Option(
        flag, help=f"host:port of {service} (env EVOLUTIVO_{service.upper()}_ADDRESS)", show_default=False
    )


@app.callback()
def _root(
    ctx: typer.Context,
    output: Annotated[
        str, typer.Option("--output", "-o", help="table (default) or json (protobuf JSON, for scripts)")
    ] = "table",
    customer_address: Annotated[str | None, _address_option("customer")] = None,
    charging_address: Annotated[str | None, _address_option("charging")] = None,
    balance_address: Annotated[str | None, _address_option("balance")] = None,
    billing_address: Annotated[str | None, _address_option("billing")] = None,
    erp_gateway_address: Annotated[str | None, _address_option("erp_gateway")] = None,
    token: Annotated[
        str | None, typer.Option(help="sent as `authorization: Bearer TOKEN` (env EVOLUTIVO_TOKEN)", show_default=False)
    ] = None,
    tls: Annotated[
        bool | None, typer.Option("--tls/--plaintext", help="TLS or not (env EVOLUTIVO_TLS)", show_default=False)
    ] = None,
    cert_file: Annotated[
        str | None, typer.Option(help="client certificate (PEM) for mutual TLS (env EVOLUTIVO_CERT_FILE)")
    ] = None,
    key_file: Annotated[str | None, typer.Option(help="its private key (PEM) (env EVOLUTIVO_KEY_FILE)")] = None,
    token_file: Annotated[
        str | None, typer.Option(help="read the token from this file (env EVOLUTIVO_TOKEN_FILE)")
    ] = None,
    ca_file: Annotated[
        str | None,
        typer.Option(help="CA certificate (PEM) to verify the services; implies --tls (env EVOLUTIVO_CA_FILE)"),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="deadline of each call in seconds (default 30) (env EVOLUTIVO_TIMEOUT)")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="config file (default ~/.config/evolutivo/config.toml) (env EVOLUTIVO_CONFIG)"),
    ] = None,
) -> None:
    if output not in FORMATS:
        raise typer.BadParameter(f"{output!r} is not one of {', '.join(FORMATS)}", param_hint="-o/--output")
    fmt: Format = "json" if output == "json" else "table"
    addresses = {
        "customer": customer_address,
        "charging": charging_address,
        "balance": balance_address,
        "billing": billing_address,
        "erp_gateway": erp_gateway_address,
    }
    flags: dict[str, Any] = {"addresses": {k: v for k, v in addresses.items() if v}}
    if token:
        flags["token"] = token
    if tls is not None:
        flags["tls"] = tls
    if ca_file:
        flags["ca_file"] = ca_file
    if cert_file:
        flags["cert_file"] = cert_file
    if key_file:
        flags["key_file"] = key_file
    if token_file:
        flags["token_file"] = token_file
    if timeout is not None:
        flags["timeout"] = timeout
    current = State(flags=flags, config=config, output=Output(fmt))
    ctx.obj = current
    ctx.call_on_close(current.close)


@app.command("config")
def show_config(ctx: typer.Context) -> None:
    """Show the connection settings in force and where each one comes from."""
    cli = state(ctx)
    settings = cli.settings
    data = {
        "config_file": str(cli.config or config_path(os.environ)),
        "addresses": settings.addresses,
        "tls": settings.secure,
        "ca_file": settings.ca_file,
        "cert_file": settings.cert_file,
        "key_file": settings.key_file,
        "token": "set" if settings.token else "",
        "timeout": settings.timeout,
        "sources": settings.sources,
    }

    def show() -> None:
        rows: list[tuple[str, str]] = [
            (f"{s} address", f"{settings.addresses[s]}  [dim]({settings.sources[s]})[/]") for s in SERVICES
        ]
        rows += [
            ("tls", f"{settings.secure}  [dim]({settings.sources['tls']})[/]"),
            ("ca file", f"{settings.ca_file or '-'}  [dim]({settings.sources['ca_file']})[/]"),
            ("client certificate", f"{settings.cert_file or '-'}  [dim]({settings.sources['cert_file']})[/]"),
            ("token", f"{'set' if settings.token else '-'}  [dim]({settings.sources['token']})[/]"),
            ("timeout", f"{settings.timeout:g}s  [dim]({settings.sources['timeout']})[/]"),
            ("config file", str(data["config_file"])),
        ]
        cli.output.print(details("Connection settings", rows))

    cli.output.emit_data(data, show)


def _register() -> None:
    from evolutivo_cli.commands import (
        accounts,
        balances,
        bills,
        clock,
        collections,
        demo,
        erp,
        offers,
        payments,
        purchases,
        usage,
    )

    app.add_typer(accounts.app, name="accounts", help="Customer accounts: list, get, create, suspend, close.")
    app.add_typer(offers.app, name="offers", help="The charge-offer catalog.")
    app.add_typer(purchases.app, name="purchases", help="What accounts bought (charge offers).")
    app.add_typer(usage.app, name="usage", help="Usage events: record, import files, charges, rerating.")
    app.add_typer(balances.app, name="balances", help="Balances, ledger history, adjustments, credit limits.")
    app.add_typer(bills.app, name="bills", help="Bills: list, get, PDF, bill now, bill runs, cycles.")
    app.add_typer(payments.app, name="payments", help="Payments: record, get, reverse.")
    app.add_typer(collections.app, name="collections", help="Dunning: aging, cases, scenarios, tasks.")
    app.add_typer(erp.app, name="erp", help="ERP gateway: connections, sync jobs, journal export.")
    app.add_typer(clock.app, name="clock", help="The shared development clock (controllable stacks only).")
    app.command("demo")(demo.demo)


_register()


def main() -> None:
    app()
