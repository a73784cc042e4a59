"""Billing cycles: computed in the account's time zone, at local midnights, on the billing day.

Rules (docs/billing.md):
- A cycle runs from the start of one local day to the start of another: [start, end).
- Boundaries fall on the billing day of month D (1-31). A month shorter than D clamps to its last
  day, month by month: with D = 31 the boundaries are 31 Jan, 28 Feb (29 in leap years), 31 Mar,
  30 Apr... so no cycle drifts after a short month.
- Monthly cycles are one month long; quarterly 3, semi-annual 6, annual 12, counted from the
  month of the first boundary.
- The first cycle starts on the local day the bill unit is created and ends at the first boundary
  after that day; it is short unless the account was created on its billing day. There are no long
  first cycles.
- A local midnight that does not exist (a DST change at 00:00) starts the day at the first
  instant that does exist.
"""

from __future__ import annotations

import calendar
import enum
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo


class Frequency(enum.Enum):
    MONTHLY = 1
    QUARTERLY = 3
    SEMI_ANNUAL = 6
    ANNUAL = 12


@dataclass(frozen=True)
class Cycle:
    start: datetime  # UTC instant of the local midnight the cycle starts at
    end: datetime  # UTC instant of the local midnight the next cycle starts at
    start_date: date  # the local dates, for documents and labels
    end_date: date


def clamped(year: int, month: int, day: int) -> date:
    """The billing day in a month, clamped to the month's last day."""
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


def add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def start_of_day(local_date: date, time_zone: str) -> datetime:
    """The first instant of a local date, in UTC."""
    zone = ZoneInfo(time_zone)
    # fold=0 maps a midnight lost to DST onto the transition, the first instant of the day.
    return datetime.combine(local_date, time(0), tzinfo=zone).astimezone(UTC)


def _cycle(start: date, end: date, time_zone: str) -> Cycle:
    return Cycle(start_of_day(start, time_zone), start_of_day(end, time_zone), start, end)


def cycle_starting(local_day: date, bill_cycle_day: int, frequency: Frequency, time_zone: str) -> Cycle:
    """The cycle that starts on `local_day` and ends at the first boundary after it."""
    if not 1 <= bill_cycle_day <= 31:
        raise ValueError("bill_cycle_day must be between 1 and 31")
    boundary = clamped(local_day.year, local_day.month, bill_cycle_day)
    if boundary <= local_day:
        year, month = add_months(boundary.year, boundary.month, frequency.value)
        boundary = clamped(year, month, bill_cycle_day)
    return _cycle(local_day, boundary, time_zone)


def first_cycle(created: datetime, bill_cycle_day: int, frequency: Frequency, time_zone: str) -> Cycle:
    return cycle_starting(created.astimezone(ZoneInfo(time_zone)).date(), bill_cycle_day, frequency, time_zone)


def next_cycle(previous: Cycle, bill_cycle_day: int, frequency: Frequency, time_zone: str) -> Cycle:
    """The cycle after `previous`, under the profile in force from it (a changed billing day or
    frequency gives one short transition cycle up to its first boundary)."""
    return cycle_starting(previous.end_date, bill_cycle_day, frequency, time_zone)
