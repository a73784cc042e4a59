"""The bad values the case tables reuse."""

from __future__ import annotations

from google.type import date_pb2, money_pb2

from bad_input.world import UNKNOWN

__all__ = ["UNKNOWN"]

NOT_UUID = "not-a-uuid"
SQL = "1' OR '1'='1'; DROP TABLE accounts; --"
SCRIPT = "<script>alert('x')</script>"
NUL = "Acme\x00Ltd"  # PostgreSQL text cannot hold NUL: it must be refused, not crash the insert
CONTROL = "line\x1bbreak\x07"
BLANK = "\u200b\u00a0 "  # zero-width and no-break spaces only: looks empty
RTL = "\u202eLTS emcA"  # a right-to-left override hiding the real text
EMOJI = "\U0001f600" * 250  # 250 characters, 1000 UTF-8 bytes
HUGE_UNITS = 9_223_372_036_854_775_807  # int64 max
NOT_A_TOKEN = "!!not a token!!"


def long(length: int, char: str = "x") -> str:
    return char * length


def money(units: int, nanos: int = 0, currency: str = "EUR") -> money_pb2.Money:
    return money_pb2.Money(currency_code=currency, units=units, nanos=nanos)


def eur(amount: str) -> money_pb2.Money:
    units, _, frac = amount.lstrip("-").partition(".")
    sign = -1 if amount.startswith("-") else 1
    return money_pb2.Money(
        currency_code="EUR", units=sign * int(units), nanos=sign * int((frac + "000000000")[:9]) if frac else 0
    )


def date(year: int, month: int, day: int) -> date_pb2.Date:
    return date_pb2.Date(year=year, month=month, day=day)
