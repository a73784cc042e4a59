"""Charge-offer catalog rules on the pure domain model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from evolutivo_charging.domain.catalog import (
    Charge,
    ChargeOffer,
    Flat,
    Graduated,
    OfferStatus,
    Percentage,
    PerUnit,
    PropertyFilter,
    Recurring,
    RecurringTiming,
    Tier,
    decimal_field,
)
from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument

NOW = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
API = Charge("api_calls", "API calls", PerUnit(Decimal("0.0004")), event_type="api.call")


def offer(*charges: Charge, version: int = 1, valid_from: datetime | None = None) -> ChargeOffer:
    return ChargeOffer.draft("api_pro", version, "API Pro", "", "EUR", valid_from, None, charges or (API,), NOW)


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-1", "abc", "1e5000000000"])
def test_decimal_fields_refuse_what_is_not_a_finite_non_negative_number(text: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        decimal_field(text, "charge.per_unit.unit_price")
    assert refused.value.field == "charge.per_unit.unit_price"


def test_decimal_fields_keep_exact_values() -> None:
    assert decimal_field("0.0004", "x") == Decimal("0.0004")
    assert decimal_field("", "x", allow_empty=True) is None
    with pytest.raises(InvalidArgument):
        decimal_field("0", "x", positive=True)


def test_tiers_must_increase_and_end_unbounded() -> None:
    good = Graduated((Tier(Decimal(1000), Decimal(0)), Tier(None, Decimal("0.001"))))
    offer(Charge("calls", "Calls", good, event_type="api.call"))
    for tiers, index in [
        ((Tier(Decimal(1000), Decimal(0)), Tier(Decimal(500), Decimal(1)), Tier(None, Decimal(1))), 1),
        ((Tier(None, Decimal(0)), Tier(None, Decimal(1))), 0),
        ((Tier(Decimal(10), Decimal(0)),), 0),
    ]:
        with pytest.raises(InvalidArgument) as refused:
            offer(Charge("calls", "Calls", Graduated(tiers), event_type="api.call"))
        assert refused.value.field == f"charge_offer.charges[0].graduated.tiers[{index}].up_to"


def test_usage_prices_need_an_event_type_and_fees_match_no_events() -> None:
    with pytest.raises(InvalidArgument) as no_type:
        offer(Charge("calls", "Calls", Flat(Decimal(1))))
    assert no_type.value.field == "charge_offer.charges[0].event_type"
    with pytest.raises(InvalidArgument):
        offer(Charge("fee", "Fee", Recurring(Decimal(10), RecurringTiming.IN_ADVANCE), event_type="api.call"))


def test_percentage_rate_and_bounds() -> None:
    with pytest.raises(InvalidArgument) as rate:
        offer(Charge("fee", "Fee", Percentage("amount", Decimal("1.5")), event_type="payment.captured"))
    assert rate.value.field == "charge_offer.charges[0].percentage.rate"
    with pytest.raises(InvalidArgument):
        offer(
            Charge(
                "fee",
                "Fee",
                Percentage("amount", Decimal("0.02"), Decimal(5), Decimal(1)),
                event_type="payment.captured",
            )
        )


def test_charge_codes_are_unique_within_an_offer() -> None:
    with pytest.raises(InvalidArgument) as twice:
        offer(API, API)
    assert twice.value.field == "charge_offer.charges[1].code"


def test_filters_match_event_properties() -> None:
    eu = Charge(
        "eu_calls", "EU calls", PerUnit(Decimal(1)), event_type="api.call", filters=(PropertyFilter("region", ("eu",)),)
    )
    assert eu.matches("api.call", {"region": "eu"})
    assert not eu.matches("api.call", {"region": "us"})
    assert not eu.matches("api.call", {})
    assert not eu.matches("sms.sent", {"region": "eu"})


def test_an_active_version_is_immutable_and_a_new_version_takes_over_where_it_starts() -> None:
    v1 = offer()
    v1.revise({"name": "API Pro (2026)"})
    v1.activate(None, NOW)
    assert v1.status is OfferStatus.ACTIVE and v1.valid_from == NOW
    with pytest.raises(FailedPrecondition) as immutable:
        v1.revise({"name": "changed"})
    assert immutable.value.reason == "CHARGE_OFFER_IMMUTABLE"

    switch = NOW + timedelta(days=30)
    v2 = offer(
        Charge("api_calls", "API calls", PerUnit(Decimal("0.0003")), event_type="api.call"),
        version=2,
        valid_from=switch,
    )
    v2.activate(v1, NOW)
    assert v1.valid_to == switch
    assert v1.in_force(switch - timedelta(microseconds=1)) and not v1.in_force(switch)
    assert v2.in_force(switch)


def test_a_new_version_cannot_start_before_the_one_it_replaces() -> None:
    v1 = offer(valid_from=NOW)
    v1.activate(None, NOW)
    v2 = offer(version=2, valid_from=NOW - timedelta(days=1))
    with pytest.raises(FailedPrecondition):
        v2.activate(v1, NOW)
    assert v1.valid_to is None and v2.status is OfferStatus.DRAFT


def test_retired_offers_keep_rating_but_cannot_be_bought() -> None:
    v1 = offer()
    with pytest.raises(FailedPrecondition):
        v1.retire(NOW)
    v1.activate(None, NOW)
    v1.retire(NOW + timedelta(days=1))
    later = NOW + timedelta(days=2)
    assert v1.in_force(later) and not v1.purchasable(later)


def test_an_empty_offer_cannot_be_activated() -> None:
    empty = ChargeOffer.draft("empty", 1, "Empty", "", "EUR", None, None, (), NOW)
    with pytest.raises(FailedPrecondition):
        empty.activate(None, NOW)
