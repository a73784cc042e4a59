"""Billing cycles in the account's zone: month ends, leap years, DST and profile changes."""

from __future__ import annotations

import calendar
import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from evolutivo_billing.domain.calendar import Cycle, Frequency, first_cycle, next_cycle, start_of_day
from hypothesis import given
from hypothesis import strategies as st


def dates(cycles: list[Cycle]) -> list[tuple[date, date]]:
    return [(c.start_date, c.end_date) for c in cycles]


def run(created: datetime, day: int, frequency: Frequency, zone: str, count: int) -> list[Cycle]:
    cycles = [first_cycle(created, day, frequency, zone)]
    while len(cycles) < count:
        cycles.append(next_cycle(cycles[-1], day, frequency, zone))
    return cycles


def test_day_31_clamps_month_by_month_without_drifting() -> None:
    cycles = run(datetime(2027, 12, 31, 12, tzinfo=UTC), 31, Frequency.MONTHLY, "Europe/Madrid", 5)
    assert dates(cycles) == [
        (date(2027, 12, 31), date(2028, 1, 31)),
        (date(2028, 1, 31), date(2028, 2, 29)),  # leap year
        (date(2028, 2, 29), date(2028, 3, 31)),
        (date(2028, 3, 31), date(2028, 4, 30)),
        (date(2028, 4, 30), date(2028, 5, 31)),
    ]


@pytest.mark.parametrize("day", [29, 30, 31])
def test_february_of_a_common_year(day: int) -> None:
    cycle = first_cycle(datetime(2026, 2, 10, tzinfo=UTC), day, Frequency.MONTHLY, "UTC")
    assert cycle.end_date == date(2026, 2, 28)
    assert next_cycle(cycle, day, Frequency.MONTHLY, "UTC").end_date == date(2026, 3, day)


def test_the_first_cycle_is_short_unless_created_on_the_billing_day() -> None:
    short = first_cycle(datetime(2026, 1, 10, 9, tzinfo=UTC), 1, Frequency.MONTHLY, "UTC")
    assert (short.start_date, short.end_date) == (date(2026, 1, 10), date(2026, 2, 1))
    whole = first_cycle(datetime(2026, 1, 1, 9, tzinfo=UTC), 1, Frequency.MONTHLY, "UTC")
    assert (whole.start_date, whole.end_date) == (date(2026, 1, 1), date(2026, 2, 1))


def test_the_local_day_decides_not_the_utc_day() -> None:
    # 23:30 UTC on 31 January is already 1 February in Madrid.
    cycle = first_cycle(datetime(2026, 1, 31, 23, 30, tzinfo=UTC), 1, Frequency.MONTHLY, "Europe/Madrid")
    assert (cycle.start_date, cycle.end_date) == (date(2026, 2, 1), date(2026, 3, 1))
    assert cycle.start == datetime(2026, 1, 31, 23, 0, tzinfo=UTC)


def test_boundaries_are_local_midnights_across_dst() -> None:
    zone = "Europe/Madrid"
    cycles = run(datetime(2026, 3, 1, 12, tzinfo=UTC), 1, Frequency.MONTHLY, zone, 2)
    assert cycles[0].end == datetime(2026, 3, 31, 22, 0, tzinfo=UTC)  # 1 April 00:00 CEST (UTC+2)
    assert cycles[0].start == datetime(2026, 2, 28, 23, 0, tzinfo=UTC)  # 1 March 00:00 CET (UTC+1)
    assert cycles[0].end - cycles[0].start == timedelta(days=31) - timedelta(hours=1)


def test_a_midnight_lost_to_dst_starts_the_day_at_its_first_instant() -> None:
    # Chile moved from -04 to -03 at 00:00 on 6 September 2026: that day starts at 01:00 local.
    zone = "America/Santiago"
    start = start_of_day(date(2026, 9, 6), zone)
    assert start == datetime(2026, 9, 6, 4, 0, tzinfo=UTC)
    assert start.astimezone(ZoneInfo(zone)).date() == date(2026, 9, 6)
    assert (start - timedelta(microseconds=1)).astimezone(ZoneInfo(zone)).date() == date(2026, 9, 5)


def test_quarterly_and_annual_cycles() -> None:
    quarterly = run(datetime(2026, 1, 15, tzinfo=UTC), 15, Frequency.QUARTERLY, "UTC", 3)
    assert dates(quarterly) == [
        (date(2026, 1, 15), date(2026, 4, 15)),
        (date(2026, 4, 15), date(2026, 7, 15)),
        (date(2026, 7, 15), date(2026, 10, 15)),
    ]
    annual = run(datetime(2028, 2, 29, tzinfo=UTC), 29, Frequency.ANNUAL, "UTC", 2)
    assert dates(annual) == [(date(2028, 2, 29), date(2029, 2, 28)), (date(2029, 2, 28), date(2030, 2, 28))]


def test_a_new_billing_day_applies_from_the_next_cycle_through_one_short_cycle() -> None:
    current = first_cycle(datetime(2026, 5, 1, tzinfo=UTC), 1, Frequency.MONTHLY, "UTC")
    transition = next_cycle(current, 20, Frequency.MONTHLY, "UTC")
    assert (transition.start_date, transition.end_date) == (date(2026, 6, 1), date(2026, 6, 20))
    assert next_cycle(transition, 20, Frequency.MONTHLY, "UTC").end_date == date(2026, 7, 20)


zones = st.sampled_from(
    ["UTC", "Europe/Madrid", "America/New_York", "America/Santiago", "Australia/Lord_Howe", "Asia/Kathmandu"]
)


@given(
    created=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)),
    day=st.integers(min_value=1, max_value=31),
    frequency=st.sampled_from(list(Frequency)),
    zone=zones,
)
def test_cycles_tile_time_without_gaps_or_overlaps(
    created: datetime, day: int, frequency: Frequency, zone: str
) -> None:
    cycles = run(created, day, frequency, zone, 14)
    assert cycles[0].start <= created < cycles[0].end
    for previous, current in itertools.pairwise(cycles):
        assert current.start == previous.end
        assert current.end > current.start
        last_day = calendar.monthrange(current.end_date.year, current.end_date.month)[1]
        assert current.end_date.day == min(day, last_day), "every boundary is the clamped billing day"
