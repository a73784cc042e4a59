"""The catalog's protobuf translation: every price model round-trips exactly, decimals travel as
strings, and bad input is refused naming the field by its path in the request."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from evolutivo.charging.v1 import catalog_pb2 as c
from evolutivo.charging.v1 import events_pb2
from evolutivo_charging.adapters import catalog_proto, events
from evolutivo_charging.domain.catalog import (
    Charge,
    ChargeOffer,
    ChargeOfferActivated,
    ChargeOfferRetired,
    Flat,
    Graduated,
    OfferStatus,
    OneTime,
    Package,
    Percentage,
    PerUnit,
    PropertyFilter,
    Recurring,
    RecurringTiming,
    Tier,
    Volume,
)
from evolutivo_runtime.errors import InvalidArgument
from google.protobuf.timestamp_pb2 import Timestamp

NOW = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)

TIERS = (
    Tier(Decimal(1000), Decimal(0)),
    Tier(Decimal("10000.5"), Decimal("0.0004"), Decimal("2.50")),
    Tier(None, Decimal("0.000123456789")),
)
CHARGES = (
    Charge("sms", "SMS", Flat(Decimal("0.05")), event_type="sms.sent", tax_code="standard"),
    Charge(
        "api_calls",
        "API calls",
        PerUnit(Decimal("0.0004")),
        event_type="api.call",
        filters=(PropertyFilter("region", ("eu-west", "eu-south")), PropertyFilter("tier", ("gold",))),
        balance_group="usage",
    ),
    Charge("storage", "Storage", Graduated(TIERS), event_type="storage.gb_hour", quantity_property="gb_hours"),
    Charge("egress", "Egress", Volume(TIERS), event_type="network.egress"),
    Charge("seats", "Seats", Package(Decimal(10), Decimal("99.99"), Decimal(5)), event_type="seat.used"),
    Charge(
        "payments",
        "Payments",
        Percentage("amount", Decimal("0.029"), Decimal("0.10"), Decimal(25), Decimal("0.30")),
        event_type="payment.captured",
    ),
    Charge("uncapped", "Uncapped", Percentage("amount", Decimal("0.01")), event_type="payment.refunded"),
    Charge("monthly", "Monthly fee", Recurring(Decimal("49.00"), RecurringTiming.IN_ADVANCE, prorate=True)),
    Charge("support", "Support", Recurring(Decimal(10), RecurringTiming.IN_ARREARS, prorate=False)),
    Charge("setup", "Setup", OneTime(Decimal("150"))),
)


def offer(**changes: Any) -> ChargeOffer:
    draft = ChargeOffer.draft(
        "api_pro", 3, "API Pro", "For builders", "EUR", NOW, NOW + timedelta(days=365), CHARGES, NOW
    )
    for name, value in changes.items():
        setattr(draft, name, value)
    return draft


def test_every_price_model_round_trips_exactly() -> None:
    original = offer()
    message = catalog_proto.offer_to_pb(original)
    assert [ch.WhichOneof("price") for ch in message.charges] == [
        "flat",
        "per_unit",
        "graduated",
        "volume",
        "package",
        "percentage",
        "percentage",
        "recurring",
        "recurring",
        "one_time",
    ]
    given = catalog_proto.offer_input_from_pb(message)
    assert given.charges == CHARGES
    assert (given.code, given.name, given.description, given.currency_code) == (
        "api_pro",
        "API Pro",
        "For builders",
        "EUR",
    )
    assert (given.valid_from, given.valid_to) == (NOW, NOW + timedelta(days=365))
    # And protobuf -> domain -> protobuf gives the same message.
    assert [catalog_proto.charge_to_pb(ch) for ch in given.charges] == list(message.charges)


def test_the_offer_message_carries_identity_status_and_times() -> None:
    activated = offer(status=OfferStatus.ACTIVE, activate_time=NOW, valid_to=None)
    message = catalog_proto.offer_to_pb(activated)
    assert message.charge_offer_id == str(activated.charge_offer_id)
    assert (message.code, message.version) == ("api_pro", 3)
    assert message.status == c.CHARGE_OFFER_STATUS_ACTIVE
    assert message.activate_time.ToDatetime(tzinfo=UTC) == NOW
    assert message.HasField("valid_from") and not message.HasField("valid_to")
    assert not message.HasField("retire_time")


def test_decimals_travel_as_plain_exact_strings() -> None:
    message = catalog_proto.charge_to_pb(CHARGES[2])
    assert [(t.up_to, t.unit_price, t.flat_fee) for t in message.graduated.tiers] == [
        ("1000", "0", "0"),
        ("10000.5", "0.0004", "2.50"),
        ("", "0.000123456789", "0"),
    ]
    assert catalog_proto.decimal_to_str(Decimal("1E+3")) == "1000"
    assert catalog_proto.decimal_to_str(Decimal("0.50")) == "0.50"
    pct = catalog_proto.charge_to_pb(CHARGES[6]).percentage
    assert (pct.min_per_event, pct.max_per_event, pct.fixed_per_event) == ("", "", "0")


def test_empty_optional_decimals_are_none_or_the_domain_default() -> None:
    charges = catalog_proto.charges_from_pb(
        [
            c.Charge(
                code="pay",
                event_type="payment.captured",
                percentage=c.PercentagePrice(amount_property="amount", rate="0.02"),
            ),
            c.Charge(code="seats", event_type="seat.used", package=c.PackagePrice(package_size="5", package_price="1")),
            c.Charge(
                code="calls",
                event_type="api.call",
                volume=c.TieredPrice(tiers=[c.Tier(up_to="10", unit_price="0"), c.Tier(unit_price="1")]),
            ),
        ]
    )
    assert charges[0].price == Percentage("amount", Decimal("0.02"), None, None, Decimal(0))
    assert charges[1].price == Package(Decimal(5), Decimal(1), Decimal(0))
    assert charges[2].price == Volume((Tier(Decimal(10), Decimal(0)), Tier(None, Decimal(1))))


def test_stored_charges_round_trip_through_their_json_form() -> None:
    stored = catalog_proto.charges_to_json(CHARGES)
    assert stored[1] == {
        "code": "api_calls",
        "name": "API calls",
        "event_type": "api.call",
        "filters": [
            {"property": "region", "values": ["eu-west", "eu-south"]},
            {"property": "tier", "values": ["gold"]},
        ],
        "per_unit": {"unit_price": "0.0004"},
        "balance_group": "usage",
    }
    assert catalog_proto.charges_from_json(stored) == CHARGES
    # Fields a later contract adds are ignored by this reader.
    assert catalog_proto.charges_from_json([{**stored[0], "added_later": 1}]) == CHARGES[:1]


def charge_at_2(charge: c.Charge) -> c.ChargeOffer:
    """An offer whose third charge is `charge` (the first two are fine)."""
    fine = [catalog_proto.charge_to_pb(ch) for ch in CHARGES[:2]]
    return c.ChargeOffer(code="api_pro", name="API Pro", currency_code="EUR", charges=[*fine, charge])


def tiers(*pairs: tuple[str, str]) -> c.TieredPrice:
    return c.TieredPrice(tiers=[c.Tier(up_to=u, unit_price=p) for u, p in pairs])


@pytest.mark.parametrize(
    ("charge", "field"),
    [
        (
            c.Charge(code="x", event_type="e", graduated=tiers(("10", "0"), ("", "abc"))),
            "charge_offer.charges[2].graduated.tiers[1].unit_price",
        ),
        (
            c.Charge(code="x", event_type="e", volume=tiers(("NaN", "0"), ("", "1"))),
            "charge_offer.charges[2].volume.tiers[0].up_to",
        ),
        (
            c.Charge(code="x", event_type="e", graduated=c.TieredPrice(tiers=[c.Tier(unit_price="1", flat_fee="-1")])),
            "charge_offer.charges[2].graduated.tiers[0].flat_fee",
        ),
        (
            c.Charge(code="x", event_type="e", package=c.PackagePrice(package_size="0", package_price="1")),
            "charge_offer.charges[2].package.package_size",
        ),
        (
            c.Charge(code="x", event_type="e", package=c.PackagePrice(package_size="10", package_price="")),
            "charge_offer.charges[2].package.package_price",
        ),
        (
            c.Charge(
                code="x",
                event_type="e",
                package=c.PackagePrice(package_size="10", package_price="1", free_units="Infinity"),
            ),
            "charge_offer.charges[2].package.free_units",
        ),
        (
            c.Charge(code="x", event_type="e", percentage=c.PercentagePrice(amount_property="amount", rate="")),
            "charge_offer.charges[2].percentage.rate",
        ),
        (
            c.Charge(
                code="x",
                event_type="e",
                percentage=c.PercentagePrice(amount_property="amount", rate="0.1", min_per_event="-0.01"),
            ),
            "charge_offer.charges[2].percentage.min_per_event",
        ),
        (
            c.Charge(
                code="x",
                event_type="e",
                percentage=c.PercentagePrice(amount_property="amount", rate="0.1", max_per_event="1e18"),
            ),
            "charge_offer.charges[2].percentage.max_per_event",
        ),
        (
            c.Charge(
                code="x",
                event_type="e",
                percentage=c.PercentagePrice(amount_property="amount", rate="0.1", fixed_per_event="x"),
            ),
            "charge_offer.charges[2].percentage.fixed_per_event",
        ),
        (c.Charge(code="x", event_type="e", flat=c.FlatPrice(amount="sNaN")), "charge_offer.charges[2].flat.amount"),
        (
            c.Charge(code="x", event_type="e", per_unit=c.PerUnitPrice(unit_price="0.0000000000001")),
            "charge_offer.charges[2].per_unit.unit_price",
        ),
        (
            c.Charge(code="x", recurring=c.RecurringFee(amount="10")),
            "charge_offer.charges[2].recurring.timing",
        ),
        (
            c.Charge(code="x", recurring=c.RecurringFee(amount="", timing=c.RECURRING_TIMING_IN_ADVANCE)),
            "charge_offer.charges[2].recurring.amount",
        ),
        (c.Charge(code="x", one_time=c.OneTimeFee(amount="-5")), "charge_offer.charges[2].one_time.amount"),
        (c.Charge(code="x", event_type="e"), "charge_offer.charges[2].price"),
    ],
)
def test_bad_prices_are_refused_naming_the_field(charge: c.Charge, field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        catalog_proto.offer_input_from_pb(charge_at_2(charge))
    assert refused.value.field == field


def test_timestamps_out_of_range_name_the_field() -> None:
    message = c.ChargeOffer(code="api_pro", valid_from=Timestamp(seconds=10**12))
    with pytest.raises(InvalidArgument) as refused:
        catalog_proto.offer_input_from_pb(message)
    assert refused.value.field == "charge_offer.valid_from"


def test_update_masks_read_only_the_named_fields() -> None:
    message = c.ChargeOffer(name="  New name ", currency_code="USD", charges=[catalog_proto.charge_to_pb(CHARGES[0])])
    changes = catalog_proto.offer_changes_from_pb(message, ["name", "valid_to", "charges"])
    # valid_to is unset in the request and named by the mask: cleared.
    assert changes == {"name": "New name", "valid_to": None, "charges": CHARGES[:1]}
    with pytest.raises(InvalidArgument) as refused:
        catalog_proto.offer_changes_from_pb(message, ["code"])
    assert refused.value.field == "update_mask"
    bad = c.ChargeOffer(charges=[c.Charge(code="x", flat=c.FlatPrice(amount="no"))])
    with pytest.raises(InvalidArgument) as named:
        catalog_proto.offer_changes_from_pb(bad, ["charges"])
    assert named.value.field == "charge_offer.charges[0].flat.amount"


def test_status_filters() -> None:
    assert catalog_proto.status_from_pb(c.CHARGE_OFFER_STATUS_UNSPECIFIED) is None
    assert catalog_proto.status_from_pb(c.CHARGE_OFFER_STATUS_RETIRED) is OfferStatus.RETIRED
    with pytest.raises(InvalidArgument) as refused:
        catalog_proto.status_from_pb(42)  # type: ignore[arg-type]
    assert refused.value.field == "status"


def test_catalog_events_are_encoded_on_their_subjects() -> None:
    new, old = offer(status=OfferStatus.ACTIVE), offer(version=2, status=OfferStatus.ACTIVE, valid_to=NOW)
    subject, message = events.encode(ChargeOfferActivated(new, old))
    assert subject == "evolutivo.charging.v1.charge_offer.activated"
    assert isinstance(message, events_pb2.ChargeOfferActivated)
    assert message.charge_offer.charge_offer_id == str(new.charge_offer_id)
    assert message.replaced.version == 2
    _, alone = events.encode(ChargeOfferActivated(new))
    assert isinstance(alone, events_pb2.ChargeOfferActivated) and not alone.HasField("replaced")
    subject, message = events.encode(ChargeOfferRetired(new))
    assert subject == "evolutivo.charging.v1.charge_offer.retired"
    assert isinstance(message, events_pb2.ChargeOfferRetired)
    with pytest.raises(TypeError):
        events.encode(uuid.uuid4())
