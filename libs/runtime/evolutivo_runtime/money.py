"""Exact conversion between decimal.Decimal and google.type.Money (units + nanos, never a float)."""

from __future__ import annotations

from decimal import Decimal

from google.type import money_pb2

_NANOS = Decimal(1_000_000_000)


def to_money(amount: Decimal, currency_code: str) -> money_pb2.Money:
    """Raises ValueError if the amount has more than 9 fractional digits (Money cannot carry them)."""
    nanos_total = amount * _NANOS
    if nanos_total != nanos_total.to_integral_value():
        raise ValueError(f"{amount} has more precision than google.type.Money carries")
    total = int(nanos_total)
    # Units and nanos share the sign (google/type/money.proto).
    sign = -1 if total < 0 else 1
    units, nanos = divmod(abs(total), 1_000_000_000)
    return money_pb2.Money(currency_code=currency_code, units=sign * units, nanos=sign * nanos)


def from_money(money: money_pb2.Money) -> Decimal:
    if (money.units > 0 and money.nanos < 0) or (money.units < 0 and money.nanos > 0):
        raise ValueError("units and nanos must have the same sign")
    if not -999_999_999 <= money.nanos <= 999_999_999:
        raise ValueError("nanos out of range")
    return Decimal(money.units) + Decimal(money.nanos) / _NANOS
