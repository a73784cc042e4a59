"""Output: Rich tables for people, protobuf JSON (json_format) for scripts, and the value formats."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.type import date_pb2, money_pb2
from rich.console import Console
from rich.table import Table

Format = Literal["table", "json"]
FORMATS: tuple[str, ...] = ("table", "json")

_NANOS = Decimal(1_000_000_000)
# ISO 4217 currencies without a minor unit, or with three decimals; the rest have two.
_EXPONENTS = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND", "VUV"), 0),
    **dict.fromkeys(("XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}


def decimal(money: money_pb2.Money) -> Decimal:
    return Decimal(money.units) + Decimal(money.nanos) / _NANOS


def to_money(amount: Decimal, currency_code: str) -> money_pb2.Money:
    """Exact: refuses more than 9 decimals (google.type.Money carries nanos)."""
    nanos = amount * _NANOS
    if nanos != nanos.to_integral_value():
        raise ValueError(f"{amount} has more than 9 decimals")
    total = int(nanos)
    sign = -1 if total < 0 else 1
    units, rest = divmod(abs(total), 1_000_000_000)
    return money_pb2.Money(currency_code=currency_code, units=sign * units, nanos=sign * rest)


def amount(value: Decimal, currency_code: str = "") -> str:
    """The amount with the currency's decimals (more if it has more, e.g. unit prices)."""
    places = _EXPONENTS.get(currency_code.upper(), 2)
    quantum = Decimal(1).scaleb(-places)
    shown = value.quantize(quantum) if value == value.quantize(quantum) else value.normalize()
    text = f"{shown:,f}"
    return f"{text} {currency_code}".strip()


def money(value: money_pb2.Money | None, empty: str = "") -> str:
    if value is None or (not value.currency_code and not value.units and not value.nanos):
        return empty
    return amount(decimal(value), value.currency_code)


def timestamp(value: Timestamp | None) -> str:
    if value is None or (not value.seconds and not value.nanos):
        return ""
    return value.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def to_datetime(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


def day(value: date_pb2.Date | None) -> str:
    if value is None or not value.year:
        return ""
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"


def to_date(value: date_pb2.Date) -> date:
    return date(value.year, value.month, value.day)


def enum(message: Message, field: str) -> str:
    """An enum field's value name without its type prefix, lower case: ACCOUNT_STATUS_ACTIVE -> active."""
    descriptor = message.DESCRIPTOR.fields_by_name[field].enum_type
    assert descriptor is not None, f"{field} is not an enum field"
    number = getattr(message, field)
    value = descriptor.values_by_number.get(number)
    if value is None:
        return str(number)
    prefix = "".join("_" + c if c.isupper() and i else c for i, c in enumerate(descriptor.name)).upper() + "_"
    name = value.name.removeprefix(prefix)
    return "" if name == "UNSPECIFIED" else name.lower()


def enum_value(enum_descriptor: Any, choice: str) -> int:
    """The number of an enum value given as its short name (`active`) or its full name."""
    prefix = "".join("_" + c if c.isupper() and i else c for i, c in enumerate(enum_descriptor.name)).upper() + "_"
    wanted = choice.strip().upper().replace("-", "_")
    for value in enum_descriptor.values:
        if value.name in (wanted, prefix + wanted) and not value.name.endswith("_UNSPECIFIED"):
            return int(value.number)
    names = [v.name.removeprefix(prefix).lower() for v in enum_descriptor.values if v.number]
    raise ValueError(f"{choice!r} is not one of {', '.join(names)}")


def enum_choices(enum_descriptor: Any) -> list[str]:
    prefix = "".join("_" + c if c.isupper() and i else c for i, c in enumerate(enum_descriptor.name)).upper() + "_"
    return [v.name.removeprefix(prefix).lower() for v in enum_descriptor.values if v.number]


def short(identifier: str, keep: int = 8) -> str:
    """Ids are UUIDs: tables show them whole (scripts and users copy them), this is for charts."""
    return identifier if len(identifier) <= keep else identifier[:keep] + "…"


def render_labels(values: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(dict(values).items()))


def message_json(message: Message) -> str:
    return json_format.MessageToJson(message, preserving_proto_field_name=True, indent=2, ensure_ascii=False)


class Output:
    """Where a command writes: tables and notes for people, or one JSON document for scripts.

    In JSON mode stdout holds only the JSON document; notes and progress go to stderr.
    """

    def __init__(self, format: Format = "table", console: Console | None = None, err: Console | None = None) -> None:
        self.format: Format = format
        self.console = console or Console(highlight=False, width=_pipe_width())
        self.err = err or Console(stderr=True, highlight=False, soft_wrap=True)

    @property
    def json(self) -> bool:
        return self.format == "json"

    def emit(self, message: Message, table: Callable[[], None]) -> None:
        """The message as JSON, or what ``table`` prints."""
        if self.json:
            sys.stdout.write(message_json(message) + "\n")
            sys.stdout.flush()
        else:
            table()

    def emit_data(self, data: Any, table: Callable[[], None]) -> None:
        """Plain data (dicts, lists) as JSON, or what ``table`` prints."""
        if self.json:
            sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
            sys.stdout.flush()
        else:
            table()

    def note(self, text: str) -> None:
        """A line for people: stdout with tables, stderr with JSON (so the JSON stays parseable)."""
        (self.err if self.json else self.console).print(text)

    def print(self, *renderables: Any) -> None:
        self.console.print(*renderables)


def _pipe_width() -> int | None:
    """Piped output is not cut to 80 columns (Rich's default without a terminal): ids stay whole."""
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return None
    return 240


_NO_WRAP = {"id", "account", "event", "number", "bill", "case", "connection"}


def table(
    title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], caption: str | None = None
) -> Table:
    out = Table(title=title, caption=caption, title_justify="left", header_style="bold", expand=False)
    for name in columns:
        justify: Literal["left", "right"] = "right" if name.lower() in _RIGHT else "left"
        out.add_column(name, justify=justify, overflow="fold", no_wrap=name.lower() in _NO_WRAP)
    for row in rows:
        out.add_row(*(str(cell) if cell is not None else "" for cell in row))
    return out


def details(title: str, pairs: Iterable[tuple[str, Any]]) -> Table:
    """A two-column table of a resource's fields (empty values left out)."""
    out = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 2, 0, 0))
    out.add_column(style="bold")
    out.add_column(overflow="fold")
    for key, value in pairs:
        if value not in (None, ""):
            out.add_row(key, str(value))
    return out


_RIGHT = {
    "amount",
    "balance",
    "total",
    "subtotal",
    "tax",
    "open",
    "paid",
    "quantity",
    "units",
    "rate",
    "debit",
    "credit",
    "current",
    "1-30",
    "31-60",
    "61-90",
    "90+",
    "attempts",
    "#",
    "line",
    "limit",
    "version",
    "days past due",
    "overdue",
    "unit price",
}
