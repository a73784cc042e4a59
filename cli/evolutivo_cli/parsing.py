"""Values typed on the command line: durations, instants, amounts, key=value labels."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation

from evolutivo_cli.errors import CliError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)", re.IGNORECASE)
_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}


def duration(text: str, what: str = "duration") -> timedelta:
    """`7d`, `1w2d`, `36h`, `90m`, `30s` (combinable, e.g. `1d12h`)."""
    compact = text.replace(" ", "")
    matches = list(_DURATION.finditer(compact))
    if not matches or "".join(m.group(0) for m in matches) != compact:
        raise CliError(f"{what}: {text!r} is not a duration like 7d, 1w2d, 36h, 90m or 30s")
    seconds = sum(float(m.group(1)) * _UNITS[m.group(2).lower()] for m in matches)
    if seconds <= 0:
        raise CliError(f"{what}: must be longer than zero")
    return timedelta(seconds=seconds)


def instant(text: str, what: str = "time") -> datetime:
    """An ISO 8601 instant (`2031-03-01T09:00:00Z`, `2031-03-01T09:00+01:00`) or a date (midnight
    UTC). A time without an offset is UTC."""
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise CliError(f"{what}: {text!r} is not an ISO 8601 time like 2031-03-01T09:00:00Z or a date") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def calendar_date(text: str, what: str = "date") -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise CliError(f"{what}: {text!r} is not a date like 2031-03-01") from None


def decimal_amount(text: str, what: str = "amount", positive: bool = True) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise CliError(f"{what}: {text!r} is not a decimal number like 12.50") from None
    if not value.is_finite():
        raise CliError(f"{what}: {text!r} is not a finite number")
    if positive and value <= 0:
        raise CliError(f"{what}: must be greater than zero")
    return value


def labels(pairs: list[str] | None, what: str = "--label") -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"{what}: {pair!r} is not KEY=VALUE")
        out[key] = value
    return out
