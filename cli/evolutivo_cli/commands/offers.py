"""`evolutivo offers`: the charge-offer catalog (charging service)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from evolutivo.charging.v1 import catalog_pb2
from evolutivo.charging.v1 import charging_service_pb2 as pb
from google.protobuf import json_format

from evolutivo_cli.app import state
from evolutivo_cli.commands._common import Limit, RequestId, enum_option, more, paginate, request_id
from evolutivo_cli.errors import CliError
from evolutivo_cli.render import Output, details, enum, table, timestamp

app = typer.Typer(no_args_is_help=True)

_STATUS = catalog_pb2.ChargeOfferStatus.DESCRIPTOR


def price(charge: catalog_pb2.Charge) -> str:
    kind = charge.WhichOneof("price")
    if kind == "flat":
        return f"flat {charge.flat.amount} per event"
    if kind == "per_unit":
        return f"{charge.per_unit.unit_price} per unit"
    if kind in ("graduated", "volume"):
        tiers = getattr(charge, kind).tiers
        bands = ", ".join(f"≤{t.up_to or '∞'} @ {t.unit_price}" for t in tiers)
        return f"{kind}: {bands}"
    if kind == "package":
        return f"{charge.package.package_price} per {charge.package.package_size} units"
    if kind == "percentage":
        return f"{charge.percentage.rate} of {charge.percentage.amount_property}"
    if kind == "recurring":
        return f"{charge.recurring.amount} per cycle ({enum(charge.recurring, 'timing').replace('_', ' ')})"
    if kind == "one_time":
        return f"{charge.one_time.amount} once"
    return ""


def show_offer(out: Output, o: catalog_pb2.ChargeOffer, title: str) -> None:
    out.print(
        details(
            title,
            [
                ("id", o.charge_offer_id),
                ("code", f"{o.code} v{o.version}"),
                ("name", o.name),
                ("status", enum(o, "status")),
                ("currency", o.currency_code),
                ("valid", f"{timestamp(o.valid_from) or '-'} → {timestamp(o.valid_to) or 'open-ended'}"),
                ("description", o.description),
            ],
        )
    )
    rows = [[c.code, c.name, c.event_type or "-", price(c), c.tax_code, c.balance_group] for c in o.charges]
    out.print(table("Charges", ["code", "name", "event type", "price", "tax", "balance group"], rows))


@app.command("list")
def list_offers(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="draft, active or retired")] = None,
    code: Annotated[str | None, typer.Option(help="only this offer's versions")] = None,
    limit: Annotated[int, Limit] = 50,
) -> None:
    """List offer versions (newest first within each code)."""
    cli = state(ctx)
    stub = cli.clients.charging
    request = pb.ListChargeOffersRequest(status=enum_option(_STATUS, status, "--status"), code=code or "")

    def fetch(token: str, size: int) -> pb.ListChargeOffersResponse:
        request.page_token, request.page_size = token, size
        return stub.ListChargeOffers(request)

    offers, token = paginate(fetch, "charge_offers", limit)
    rows = [
        [
            o.charge_offer_id,
            o.code,
            o.version,
            o.name,
            enum(o, "status"),
            o.currency_code,
            ", ".join(c.code for c in o.charges),
        ]
        for o in offers
    ]
    cli.output.emit(
        pb.ListChargeOffersResponse(charge_offers=offers, next_page_token=token),
        lambda: cli.output.print(
            table(
                "Charge offers",
                ["id", "code", "version", "name", "status", "currency", "charges"],
                rows,
                more(token, len(offers)),
            )
        ),
    )


@app.command("get")
def get_offer(
    ctx: typer.Context,
    offer: Annotated[str, typer.Argument(help="a version's id, or an offer code (the version in force now)")],
) -> None:
    """Show one offer version with its charges and prices."""
    cli = state(ctx)
    by_id = len(offer) == 36 and offer.count("-") == 4
    request = pb.GetChargeOfferRequest(charge_offer_id=offer) if by_id else pb.GetChargeOfferRequest(code=offer)
    found = cli.clients.charging.GetChargeOffer(request).charge_offer
    cli.output.emit(found, lambda: show_offer(cli.output, found, f"Charge offer {found.code}"))


def _charge_from_flag(text: str, kind: str) -> catalog_pb2.Charge:
    if kind == "usage":
        event_type, sep, unit_price = text.partition("=")
        if not sep:
            raise CliError(f"--usage: {text!r} is not EVENT_TYPE=UNIT_PRICE (e.g. api.call=0.002)")
        code = event_type.replace(".", "_")
        return catalog_pb2.Charge(
            code=code, name=event_type, event_type=event_type, per_unit=catalog_pb2.PerUnitPrice(unit_price=unit_price)
        )
    if kind == "recurring":
        return catalog_pb2.Charge(
            code="subscription",
            name="Subscription",
            recurring=catalog_pb2.RecurringFee(
                amount=text, timing=catalog_pb2.RECURRING_TIMING_IN_ADVANCE, prorate=True
            ),
        )
    return catalog_pb2.Charge(code="setup", name="Setup fee", one_time=catalog_pb2.OneTimeFee(amount=text))


@app.command("create")
def create_offer(
    ctx: typer.Context,
    code: Annotated[
        str | None, typer.Option(help="offer code, e.g. api_pro (an existing code gets its next version)")
    ] = None,
    name: Annotated[str | None, typer.Option(help="display name")] = None,
    currency: Annotated[str, typer.Option(help="ISO 4217")] = "EUR",
    usage: Annotated[
        list[str] | None,
        typer.Option(help="a per-unit usage charge EVENT_TYPE=UNIT_PRICE, e.g. api.call=0.002 (repeatable)"),
    ] = None,
    recurring: Annotated[
        str | None, typer.Option(help="a monthly fee charged in advance, prorated, e.g. 49.00")
    ] = None,
    one_time: Annotated[str | None, typer.Option(help="a one-time setup fee, e.g. 99.00")] = None,
    tax_code: Annotated[str, typer.Option(help="tax code of every charge")] = "standard",
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="a ChargeOffer as protobuf JSON (any price model); flags override"),
    ] = None,
    activate: Annotated[bool, typer.Option(help="activate it at once (from now)")] = False,
    request: Annotated[str | None, RequestId] = None,
) -> None:
    """Create an offer version (DRAFT unless --activate), from flags or a JSON file."""
    cli = state(ctx)
    offer = catalog_pb2.ChargeOffer()
    if file is not None:
        try:
            json_format.ParseDict(json.loads(file.read_text()), offer)
        except (OSError, ValueError, json_format.ParseError) as exc:
            raise CliError(f"--file {file}: {exc}") from None
    if code:
        offer.code = code
    if name:
        offer.name = name
    if currency and not offer.currency_code:
        offer.currency_code = currency
    for item in usage or []:
        offer.charges.append(_charge_from_flag(item, "usage"))
    if recurring:
        offer.charges.append(_charge_from_flag(recurring, "recurring"))
    if one_time:
        offer.charges.append(_charge_from_flag(one_time, "one_time"))
    for charge in offer.charges:
        if not charge.tax_code:
            charge.tax_code = tax_code
    if not offer.code or not offer.charges:
        raise CliError("an offer needs --code and at least one charge (--usage, --recurring, --one-time or --file)")
    if not offer.name:
        offer.name = offer.code
    created = cli.clients.charging.CreateChargeOffer(
        pb.CreateChargeOfferRequest(charge_offer=offer, request_id=request_id(request))
    ).charge_offer
    if activate:
        created = cli.clients.charging.ActivateChargeOffer(
            pb.ActivateChargeOfferRequest(charge_offer_id=created.charge_offer_id)
        ).charge_offer
    cli.output.emit(created, lambda: show_offer(cli.output, created, "Charge offer created"))


@app.command("activate")
def activate_offer(ctx: typer.Context, charge_offer_id: str) -> None:
    """Activate a DRAFT version (the previous active version ends where it starts)."""
    cli = state(ctx)
    done = cli.clients.charging.ActivateChargeOffer(
        pb.ActivateChargeOfferRequest(charge_offer_id=charge_offer_id)
    ).charge_offer
    cli.output.emit(done, lambda: cli.output.print(f"{done.code} v{done.version}: {enum(done, 'status')}"))


@app.command("retire")
def retire_offer(ctx: typer.Context, charge_offer_id: str) -> None:
    """Retire a version: no new purchases; existing ones keep rating."""
    cli = state(ctx)
    done = cli.clients.charging.RetireChargeOffer(
        pb.RetireChargeOfferRequest(charge_offer_id=charge_offer_id)
    ).charge_offer
    cli.output.emit(done, lambda: cli.output.print(f"{done.code} v{done.version}: {enum(done, 'status')}"))
