"""Translation between the catalog's domain model and the evolutivo.charging.v1 catalog messages.

Decimals travel as strings: "0.0004", never floats. A required decimal that is empty, or any
decimal that is not a finite, non-negative number below 10^18 with at most 12 decimals, is refused
with InvalidArgument naming the field by its path in the request, e.g.
`charge_offer.charges[2].graduated.tiers[1].unit_price`. Optional decimals that are empty map to
None (a tier's `up_to`, a percentage's `min_per_event` / `max_per_event`) or to zero where the
domain has a zero default (`flat_fee`, `free_units`, `fixed_per_event`).

Charges are also stored in this form: `charges_to_json` / `charges_from_json` give the protobuf
JSON (proto field names) the charge_offers.charges column holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from evolutivo.charging.v1 import catalog_pb2
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.timestamps import from_timestamp, to_timestamp
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from evolutivo_charging.domain.catalog import (
    Charge,
    ChargeOffer,
    Flat,
    Graduated,
    OfferStatus,
    OneTime,
    Package,
    Percentage,
    PerUnit,
    PriceModel,
    PropertyFilter,
    Recurring,
    RecurringTiming,
    Tier,
    Volume,
    decimal_field,
)

OFFER = "charge_offer"

STATUSES: dict[OfferStatus, catalog_pb2.ChargeOfferStatus.ValueType] = {
    OfferStatus.DRAFT: catalog_pb2.CHARGE_OFFER_STATUS_DRAFT,
    OfferStatus.ACTIVE: catalog_pb2.CHARGE_OFFER_STATUS_ACTIVE,
    OfferStatus.RETIRED: catalog_pb2.CHARGE_OFFER_STATUS_RETIRED,
}
_STATUSES_FROM_PB = {v: k for k, v in STATUSES.items()}

_TIMINGS: dict[RecurringTiming, catalog_pb2.RecurringTiming.ValueType] = {
    RecurringTiming.IN_ADVANCE: catalog_pb2.RECURRING_TIMING_IN_ADVANCE,
    RecurringTiming.IN_ARREARS: catalog_pb2.RECURRING_TIMING_IN_ARREARS,
}
_TIMINGS_FROM_PB = {v: k for k, v in _TIMINGS.items()}

_PRICE_KINDS = "flat, per_unit, graduated, volume, package, percentage, recurring or one_time"

# The fields CreateChargeOffer and UpdateChargeOffer read; the others are output only.
EDITABLE = ("name", "description", "currency_code", "valid_from", "valid_to", "charges")


@dataclass(frozen=True)
class OfferInput:
    """What a client says about an offer version (CreateChargeOffer)."""

    code: str
    name: str
    description: str
    currency_code: str
    valid_from: datetime | None
    valid_to: datetime | None
    charges: tuple[Charge, ...]


# Domain -> protobuf.


def decimal_to_str(value: Decimal) -> str:
    """Plain notation, exactly the value (no exponent): Decimal("1E+3") -> "1000"."""
    return format(value, "f")


def _optional_to_str(value: Decimal | None) -> str:
    return "" if value is None else decimal_to_str(value)


def offer_to_pb(offer: ChargeOffer) -> catalog_pb2.ChargeOffer:
    return catalog_pb2.ChargeOffer(
        charge_offer_id=str(offer.charge_offer_id),
        code=offer.code,
        version=offer.version,
        name=offer.name,
        description=offer.description,
        currency_code=offer.currency_code,
        valid_from=to_timestamp(offer.valid_from),
        valid_to=to_timestamp(offer.valid_to),
        status=STATUSES[offer.status],
        charges=[charge_to_pb(c) for c in offer.charges],
        create_time=to_timestamp(offer.create_time),
        activate_time=to_timestamp(offer.activate_time),
        retire_time=to_timestamp(offer.retire_time),
    )


def _tiers_to_pb(tiers: Iterable[Tier]) -> catalog_pb2.TieredPrice:
    return catalog_pb2.TieredPrice(
        tiers=[
            catalog_pb2.Tier(
                up_to=_optional_to_str(t.up_to),
                unit_price=decimal_to_str(t.unit_price),
                flat_fee=decimal_to_str(t.flat_fee),
            )
            for t in tiers
        ]
    )


def _price_to_pb(price: PriceModel) -> dict[str, Any]:
    """The `price` oneof as the keyword argument that sets it."""
    if isinstance(price, Flat):
        return {"flat": catalog_pb2.FlatPrice(amount=decimal_to_str(price.amount))}
    if isinstance(price, PerUnit):
        return {"per_unit": catalog_pb2.PerUnitPrice(unit_price=decimal_to_str(price.unit_price))}
    if isinstance(price, Graduated):
        return {"graduated": _tiers_to_pb(price.tiers)}
    if isinstance(price, Volume):
        return {"volume": _tiers_to_pb(price.tiers)}
    if isinstance(price, Package):
        return {
            "package": catalog_pb2.PackagePrice(
                package_size=decimal_to_str(price.size),
                package_price=decimal_to_str(price.price),
                free_units=decimal_to_str(price.free_units),
            )
        }
    if isinstance(price, Percentage):
        return {
            "percentage": catalog_pb2.PercentagePrice(
                amount_property=price.amount_property,
                rate=decimal_to_str(price.rate),
                min_per_event=_optional_to_str(price.min_per_event),
                max_per_event=_optional_to_str(price.max_per_event),
                fixed_per_event=decimal_to_str(price.fixed_per_event),
            )
        }
    if isinstance(price, Recurring):
        return {
            "recurring": catalog_pb2.RecurringFee(
                amount=decimal_to_str(price.amount), timing=_TIMINGS[price.timing], prorate=price.prorate
            )
        }
    if isinstance(price, OneTime):
        return {"one_time": catalog_pb2.OneTimeFee(amount=decimal_to_str(price.amount))}
    raise TypeError(f"no protobuf price for {type(price).__name__}")


def charge_to_pb(charge: Charge) -> catalog_pb2.Charge:
    return catalog_pb2.Charge(
        code=charge.code,
        name=charge.name,
        event_type=charge.event_type,
        filters=[catalog_pb2.PropertyFilter(property=f.property, values=list(f.values)) for f in charge.filters],
        quantity_property=charge.quantity_property,
        balance_group=charge.balance_group,
        tax_code=charge.tax_code,
        allow_overage=charge.allow_overage,
        **_price_to_pb(charge.price),
    )


# Protobuf -> domain.


def _required(value: str, field: str, *, positive: bool = False) -> Decimal:
    number = decimal_field(value, field, positive=positive)
    assert number is not None  # decimal_field refuses an empty required value
    return number


def _optional(value: str, field: str) -> Decimal | None:
    return decimal_field(value, field, allow_empty=True)


def _zero_default(value: str, field: str) -> Decimal:
    number = decimal_field(value, field, allow_empty=True)
    return Decimal(0) if number is None else number


def _tiers_from_pb(tiered: catalog_pb2.TieredPrice, prefix: str) -> tuple[Tier, ...]:
    return tuple(
        Tier(
            up_to=_optional(t.up_to, f"{prefix}.tiers[{i}].up_to"),
            unit_price=_required(t.unit_price, f"{prefix}.tiers[{i}].unit_price"),
            flat_fee=_zero_default(t.flat_fee, f"{prefix}.tiers[{i}].flat_fee"),
        )
        for i, t in enumerate(tiered.tiers)
    )


def _price_from_pb(charge: catalog_pb2.Charge, prefix: str) -> PriceModel:
    kind = charge.WhichOneof("price")
    p = f"{prefix}.{kind}"
    if kind == "flat":
        return Flat(_required(charge.flat.amount, f"{p}.amount"))
    if kind == "per_unit":
        return PerUnit(_required(charge.per_unit.unit_price, f"{p}.unit_price"))
    if kind == "graduated":
        return Graduated(_tiers_from_pb(charge.graduated, p))
    if kind == "volume":
        return Volume(_tiers_from_pb(charge.volume, p))
    if kind == "package":
        package = charge.package
        return Package(
            size=_required(package.package_size, f"{p}.package_size", positive=True),
            price=_required(package.package_price, f"{p}.package_price"),
            free_units=_zero_default(package.free_units, f"{p}.free_units"),
        )
    if kind == "percentage":
        pct = charge.percentage
        return Percentage(
            amount_property=pct.amount_property,
            rate=_required(pct.rate, f"{p}.rate"),
            min_per_event=_optional(pct.min_per_event, f"{p}.min_per_event"),
            max_per_event=_optional(pct.max_per_event, f"{p}.max_per_event"),
            fixed_per_event=_zero_default(pct.fixed_per_event, f"{p}.fixed_per_event"),
        )
    if kind == "recurring":
        timing = _TIMINGS_FROM_PB.get(charge.recurring.timing)
        if timing is None:
            raise InvalidArgument(f"{p}.timing", "is required: RECURRING_TIMING_IN_ADVANCE or _IN_ARREARS")
        return Recurring(_required(charge.recurring.amount, f"{p}.amount"), timing, charge.recurring.prorate)
    if kind == "one_time":
        return OneTime(_required(charge.one_time.amount, f"{p}.amount"))
    raise InvalidArgument(f"{prefix}.price", f"is required: one of {_PRICE_KINDS}")


def charge_from_pb(charge: catalog_pb2.Charge, prefix: str) -> Charge:
    """One charge; `prefix` is its path in the request, e.g. charge_offer.charges[2]."""
    return Charge(
        code=charge.code,
        name=charge.name,
        price=_price_from_pb(charge, prefix),
        event_type=charge.event_type,
        filters=tuple(PropertyFilter(f.property, tuple(f.values)) for f in charge.filters),
        quantity_property=charge.quantity_property,
        balance_group=charge.balance_group,
        tax_code=charge.tax_code,
        allow_overage=charge.allow_overage,
    )


def charges_from_pb(charges: Sequence[catalog_pb2.Charge], prefix: str = f"{OFFER}.charges") -> tuple[Charge, ...]:
    return tuple(charge_from_pb(c, f"{prefix}[{i}]") for i, c in enumerate(charges))


def instant_from_pb(message: Any, name: str, field: str) -> datetime | None:
    """The timestamp field `name` of `message`, None when unset."""
    if not message.HasField(name):
        return None
    ts: Timestamp = getattr(message, name)
    try:
        return from_timestamp(ts)
    except (ValueError, OverflowError):
        raise InvalidArgument(field, "must be a valid timestamp between years 1 and 9999") from None


def offer_input_from_pb(offer: catalog_pb2.ChargeOffer, prefix: str = OFFER) -> OfferInput:
    """The client-set fields of an offer; output-only fields (id, version, status, times) are ignored."""
    return OfferInput(
        code=offer.code,
        name=offer.name,
        description=offer.description,
        currency_code=offer.currency_code,
        valid_from=instant_from_pb(offer, "valid_from", f"{prefix}.valid_from"),
        valid_to=instant_from_pb(offer, "valid_to", f"{prefix}.valid_to"),
        charges=charges_from_pb(offer.charges, f"{prefix}.charges"),
    )


def offer_changes_from_pb(offer: catalog_pb2.ChargeOffer, paths: Iterable[str], prefix: str = OFFER) -> dict[str, Any]:
    """The fields an update mask names, read from the request's offer, by domain field name.

    Every path is a top-level field, replaced whole (AIP-134): an unset valid_to in the request
    with "valid_to" in the mask clears it, "charges" replaces the whole list."""
    changes: dict[str, Any] = {}
    for path in paths:
        if path in ("name", "description"):
            changes[path] = getattr(offer, path).strip()
        elif path == "currency_code":
            changes[path] = offer.currency_code
        elif path in ("valid_from", "valid_to"):
            changes[path] = instant_from_pb(offer, path, f"{prefix}.{path}")
        elif path == "charges":
            changes[path] = charges_from_pb(offer.charges, f"{prefix}.charges")
        else:
            raise InvalidArgument("update_mask", f"{path!r} cannot be updated; paths: {', '.join(EDITABLE)}")
    return changes


def status_from_pb(status: catalog_pb2.ChargeOfferStatus.ValueType, field: str = "status") -> OfferStatus | None:
    """A status filter: None when unspecified."""
    if status == catalog_pb2.CHARGE_OFFER_STATUS_UNSPECIFIED:
        return None
    try:
        return _STATUSES_FROM_PB[status]
    except KeyError:
        raise InvalidArgument(field, "must be DRAFT, ACTIVE or RETIRED") from None


# Stored form of charges (the charge_offers.charges JSONB column).


def charges_to_json(charges: Iterable[Charge]) -> list[dict[str, Any]]:
    return [json_format.MessageToDict(charge_to_pb(c), preserving_proto_field_name=True) for c in charges]


def charges_from_json(data: Iterable[dict[str, Any]]) -> tuple[Charge, ...]:
    return tuple(
        charge_from_pb(json_format.ParseDict(d, catalog_pb2.Charge(), ignore_unknown_fields=True), f"charges[{i}]")
        for i, d in enumerate(data)
    )
