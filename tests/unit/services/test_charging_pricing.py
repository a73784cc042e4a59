"""Pricing and its one rounding rule, including the property that a cycle's charges add up to the
price of its total usage however the events are batched or ordered."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from evolutivo_charging.domain.catalog import Flat, Graduated, Package, Percentage, PerUnit, Tier, Volume
from evolutivo_charging.domain.pricing import (
    cumulative_cost,
    local_days,
    price_cumulative,
    price_event,
    prorated_fee,
    round_money,
)
from hypothesis import given
from hypothesis import strategies as st

GRADUATED = Graduated(
    (
        Tier(Decimal(1000), Decimal(0)),  # a free allowance is a zero-priced first tier
        Tier(Decimal(10000), Decimal("0.0015")),
        Tier(None, Decimal("0.001"), Decimal("2.50")),
    )
)
VOLUME = Volume(
    (Tier(Decimal(100), Decimal("0.10")), Tier(Decimal(1000), Decimal("0.08")), Tier(None, Decimal("0.05")))
)
PER_UNIT = PerUnit(Decimal("0.0004"))
PACKAGE = Package(size=Decimal(100), price=Decimal("1.99"), free_units=Decimal(50))

quantities = st.lists(
    st.decimals(min_value=Decimal("0.001"), max_value=Decimal(3000), places=3, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=40,
)


def rate_in_order(price: object, events: list[Decimal], exponent: int = 2) -> Decimal:
    used = Decimal(0)
    total = Decimal(0)
    for quantity in events:
        total += price_cumulative(price, used, quantity, exponent).amount  # type: ignore[arg-type]
        used += quantity
    return total


@pytest.mark.parametrize(
    "price", [GRADUATED, VOLUME, PER_UNIT, PACKAGE], ids=["graduated", "volume", "unit", "package"]
)
@given(events=quantities, data=st.data())
def test_cycle_total_is_independent_of_batching_and_order(
    price: object, events: list[Decimal], data: st.DataObject
) -> None:
    total_usage = sum(events, Decimal(0))
    expected = round_money(cumulative_cost(price, total_usage)[0], 2)  # type: ignore[arg-type]
    assert rate_in_order(price, events) == expected
    shuffled = data.draw(st.permutations(events))
    assert rate_in_order(price, list(shuffled)) == expected
    # The same usage sent as batches: each batch is one summed quantity.
    cut = data.draw(st.integers(min_value=1, max_value=len(events)))
    batches = [sum(events[:cut], Decimal(0)), sum(events[cut:], Decimal(0))]
    assert rate_in_order(price, [b for b in batches if b]) == expected


@given(events=quantities)
def test_per_event_rounding_never_drifts_from_the_exact_total_by_more_than_half_a_cent(events: list[Decimal]) -> None:
    exact = cumulative_cost(PER_UNIT, sum(events, Decimal(0)))[0]
    assert abs(rate_in_order(PER_UNIT, events) - exact) <= Decimal("0.005")


@pytest.mark.parametrize(
    ("units", "expected"),
    [
        (Decimal(1000), Decimal("0")),  # the whole allowance, free
        (Decimal(1001), Decimal("0.0015")),  # first unit of tier 2
        (Decimal(10000), Decimal("13.5")),  # 9000 x 0.0015
        (Decimal(10001), Decimal("13.5") + Decimal("0.001") + Decimal("2.50")),  # enters tier 3: its flat fee
    ],
)
def test_graduated_tiers_at_their_boundaries(units: Decimal, expected: Decimal) -> None:
    assert cumulative_cost(GRADUATED, units)[0] == expected


def test_graduated_breakdown_traces_an_event_across_bands() -> None:
    priced = price_cumulative(GRADUATED, Decimal(900), Decimal(9200), 2)
    assert [(line.tier, line.units) for line in priced.breakdown] == [
        (0, Decimal(100)),
        (1, Decimal(9000)),
        (2, Decimal(100)),
    ]
    assert sum(line.amount for line in priced.breakdown) == priced.unrounded
    assert priced.amount == round_money(priced.unrounded, 2)


@pytest.mark.parametrize(
    ("units", "expected"),
    [
        (Decimal(100), Decimal(10)),
        (Decimal(101), Decimal("8.08")),
        (Decimal(1000), Decimal(80)),
        (Decimal(1001), Decimal("50.05")),
    ],
)
def test_volume_tiers_price_every_unit_at_the_band_reached(units: Decimal, expected: Decimal) -> None:
    assert cumulative_cost(VOLUME, units)[0] == expected


def test_volume_crossing_into_a_cheaper_band_credits_the_difference() -> None:
    priced = price_cumulative(VOLUME, Decimal(100), Decimal(1), 2)
    assert priced.amount == Decimal("-1.92")  # 101 x 0.08 - 100 x 0.10


def test_package_counts_started_blocks_after_the_free_units() -> None:
    assert cumulative_cost(PACKAGE, Decimal(50))[0] == 0
    assert cumulative_cost(PACKAGE, Decimal(51))[0] == Decimal("1.99")
    assert cumulative_cost(PACKAGE, Decimal(150))[0] == Decimal("1.99")
    assert cumulative_cost(PACKAGE, Decimal("150.5"))[0] == Decimal("3.98")


@pytest.mark.parametrize(
    ("amount", "expected"),
    [(Decimal(1), Decimal("0.50")), (Decimal(100), Decimal("3.20")), (Decimal(10000), Decimal("25.00"))],
)
def test_percentage_with_minimum_and_maximum(amount: Decimal, expected: Decimal) -> None:
    fee = Percentage("amount", Decimal("0.029"), Decimal("0.50"), Decimal("25"), Decimal("0.30"))
    assert price_event(fee, Decimal(1), amount, 2).amount == expected


def test_minor_units_follow_the_currency_and_round_half_up() -> None:
    assert round_money(Decimal("0.125"), 2) == Decimal("0.13")
    assert round_money(Decimal("12.5"), 0) == Decimal(13)
    assert round_money(Decimal("0.0005"), 3) == Decimal("0.001")
    assert price_event(Flat(Decimal("0.045")), Decimal(7), None, 2).amount == Decimal("0.05")


def local_midnight(y: int, m: int, d: int, zone: str) -> datetime:
    return datetime(y, m, d, tzinfo=ZoneInfo(zone))


def test_proration_counts_local_days_across_a_dst_change() -> None:
    zone = "Europe/Madrid"  # 29 March 2026 has 23 hours there
    start, end = local_midnight(2026, 3, 15, zone), local_midnight(2026, 4, 15, zone)
    assert local_days(start, end, zone) == 31
    half = prorated_fee(Decimal(31), start, end, local_midnight(2026, 3, 28, zone), None, zone, 2)
    # 28 March .. 14 April: 18 local days, although 18 x 24 h minus the lost hour elapsed.
    assert half.amount == Decimal("18.00")


def test_proration_in_february_and_leap_years() -> None:
    zone = "America/New_York"
    feb = (local_midnight(2026, 2, 1, zone), local_midnight(2026, 3, 1, zone))
    leap = (local_midnight(2028, 2, 1, zone), local_midnight(2028, 3, 1, zone))
    mid_month = local_midnight(2026, 2, 15, zone)
    assert prorated_fee(Decimal(28), *feb, mid_month, None, zone, 2).amount == Decimal("14.00")
    assert prorated_fee(Decimal(29), *leap, local_midnight(2028, 2, 15, zone), None, zone, 2).amount == Decimal("15.00")


def test_proration_of_a_purchase_ending_mid_cycle_and_a_whole_cycle() -> None:
    zone = "Asia/Tokyo"
    start, end = local_midnight(2026, 4, 1, zone), local_midnight(2026, 5, 1, zone)
    ending = prorated_fee(Decimal(3000), start, end, None, local_midnight(2026, 4, 11, zone), zone, 0)
    assert ending.amount == Decimal(1000)
    assert prorated_fee(Decimal(3000), start, end, None, None, zone, 0).amount == Decimal(3000)
    # A purchase that starts mid-day counts that whole local day.
    noon = datetime(2026, 4, 21, 3, 0, tzinfo=ZoneInfo("UTC"))  # 12:00 in Tokyo
    assert prorated_fee(Decimal(3000), start, end, noon, None, zone, 0).amount == Decimal(1000)
