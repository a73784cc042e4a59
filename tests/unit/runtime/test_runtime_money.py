"""evolutivo_runtime.money: exact Decimal <-> google.type.Money conversion."""

from __future__ import annotations

from decimal import Decimal

import pytest
from evolutivo_runtime.money import from_money, to_money
from google.type import money_pb2
from hypothesis import given
from hypothesis import strategies as st

INT64_MAX = 2**63 - 1
NANOS = 1_000_000_000

# Every amount Money can carry, as a whole number of nanos (units and nanos share the sign).
total_nanos = st.integers(min_value=-(INT64_MAX * NANOS + NANOS - 1), max_value=INT64_MAX * NANOS + NANOS - 1)


@st.composite
def amounts(draw: st.DrawFn) -> Decimal:
    """Decimals with 0..9 fractional digits, any sign, up to the int64 range of units; in
    several exponent forms (1.500000000, 1.5, 15E-1) since they are all the same amount."""
    total = draw(total_nanos)
    amount = Decimal(total).scaleb(-9)
    form = draw(st.sampled_from(["fixed", "normalized", "integral_exponent"]))
    if form == "normalized":
        amount = amount.normalize()
    elif form == "integral_exponent" and total % NANOS == 0:
        amount = Decimal(total // NANOS)
    return amount


def _as_nanos(money: money_pb2.Money) -> int:
    return int(money.units) * NANOS + int(money.nanos)


@given(amounts())
def test_round_trip_is_exact(amount: Decimal) -> None:
    money = to_money(amount, "EUR")
    assert money.currency_code == "EUR"
    assert from_money(money) == amount
    assert Decimal(_as_nanos(money)) == amount * NANOS


@given(amounts())
def test_units_and_nanos_share_the_sign_and_nanos_in_range(amount: Decimal) -> None:
    money = to_money(amount, "USD")
    assert -999_999_999 <= money.nanos <= 999_999_999
    assert not (money.units > 0 and money.nanos < 0)
    assert not (money.units < 0 and money.nanos > 0)
    if amount < 0:
        assert money.units <= 0 and money.nanos <= 0
    if amount > 0:
        assert money.units >= 0 and money.nanos >= 0


@given(
    units=st.integers(min_value=0, max_value=INT64_MAX),
    nanos=st.integers(min_value=0, max_value=999_999_999),
    negative=st.booleans(),
)
def test_money_round_trip(units: int, nanos: int, negative: bool) -> None:
    sign = -1 if negative else 1
    money = money_pb2.Money(currency_code="MXN", units=sign * units, nanos=sign * nanos)
    assert to_money(from_money(money), "MXN") == money


@pytest.mark.parametrize(
    ("amount", "units", "nanos"),
    [
        ("0", 0, 0),
        ("-0", 0, 0),
        ("0.000000001", 0, 1),
        ("-0.000000001", 0, -1),
        ("-0.5", 0, -500_000_000),
        ("1.5", 1, 500_000_000),
        ("-1.75", -1, -750_000_000),
        ("12.300000000", 12, 300_000_000),
        ("1E+3", 1000, 0),
        ("9223372036854775807.999999999", INT64_MAX, 999_999_999),
        ("-9223372036854775807.999999999", -INT64_MAX, -999_999_999),
    ],
)
def test_known_amounts(amount: str, units: int, nanos: int) -> None:
    money = to_money(Decimal(amount), "EUR")
    assert (money.units, money.nanos) == (units, nanos)
    assert from_money(money) == Decimal(amount)


@given(
    # 10 to 12 fractional digits, the last one non-zero: more than Money carries.
    st.integers(min_value=10, max_value=12).flatmap(
        lambda digits: st.tuples(
            st.just(digits),
            st.integers(min_value=-(10**15), max_value=10**15).filter(lambda n: n % 10 != 0),
        )
    )
)
def test_more_than_nine_fractional_digits_is_refused(case: tuple[int, int]) -> None:
    digits, scaled = case
    amount = Decimal(scaled).scaleb(-digits)
    with pytest.raises(ValueError, match="precision"):
        to_money(amount, "EUR")


def test_trailing_zeros_beyond_nine_digits_are_accepted() -> None:
    # 1.5000000000 has 10 fractional digits written, but its value fits exactly.
    money = to_money(Decimal("1.5000000000"), "EUR")
    assert (money.units, money.nanos) == (1, 500_000_000)


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_amounts_are_refused(amount: str) -> None:
    with pytest.raises((ValueError, OverflowError)):
        to_money(Decimal(amount), "EUR")


def test_units_beyond_int64_are_refused() -> None:
    with pytest.raises(ValueError):
        to_money(Decimal(INT64_MAX) + 1, "EUR")


@pytest.mark.parametrize(("units", "nanos"), [(1, -1), (-1, 1), (5, -999_999_999), (-5, 500_000_000)])
def test_mixed_signs_are_refused(units: int, nanos: int) -> None:
    with pytest.raises(ValueError, match="same sign"):
        from_money(money_pb2.Money(currency_code="EUR", units=units, nanos=nanos))


@pytest.mark.parametrize("nanos", [1_000_000_000, -1_000_000_000, 2_000_000_000])
def test_nanos_out_of_range_are_refused(nanos: int) -> None:
    units = 0
    with pytest.raises(ValueError, match="out of range"):
        from_money(money_pb2.Money(currency_code="EUR", units=units, nanos=nanos))
