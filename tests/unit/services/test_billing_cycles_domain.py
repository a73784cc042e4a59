"""Bill cycles' domain rules (opening, closing, when a profile change applies) and their adapters:
protobuf translation, events, page tokens, settings and the closer's wiring."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
from evolutivo.billing.v1 import bill_cycle_pb2, events_pb2
from evolutivo_billing.adapters import events, proto
from evolutivo_billing.domain.cycles import (
    BillCycle,
    BillCycleClosed,
    BillCycleOpened,
    BillCycleStatus,
    InvalidBillCycle,
)
from evolutivo_billing.domain.model import BillingFrequency, BillingProfile, BillUnit, InvalidBillUnit
from evolutivo_billing.entrypoints.app import definition
from evolutivo_billing.entrypoints.cycle_closer import CycleCloser
from evolutivo_billing.settings import BillingSettings
from evolutivo_runtime.clock import FixedClock
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.pagination import encode_keyset
from evolutivo_runtime.server.app import Runtime

MADRID = ZoneInfo("Europe/Madrid")
ACCOUNT = uuid.UUID("8f0c6c1e-5d55-4c4c-9d3b-1f7f1f1f1f1f")
DELAY = timedelta(hours=1)
MONTHLY_15 = BillingProfile(15, BillingFrequency.MONTHLY, 30)
QUARTERLY_1 = BillingProfile(1, BillingFrequency.QUARTERLY, 10)


def madrid(year: int, month: int, day: int, hour: int = 0) -> datetime:
    """The UTC instant of a Madrid wall-clock time (CET +1 in winter, CEST +2 in summer)."""
    return datetime(year, month, day, hour, tzinfo=MADRID).astimezone(UTC)


def unit(profile: BillingProfile = MONTHLY_15, created: datetime | None = None) -> BillUnit:
    return BillUnit.open(ACCOUNT, "EUR", "Europe/Madrid", profile, created or madrid(2031, 5, 10, 12))


# Opening.


def test_the_first_cycle_starts_on_the_local_day_the_account_was_created() -> None:
    u = unit()
    # 22:30 UTC on 31 May is 00:30 on 1 June in Madrid: the cycle starts on 1 June, local.
    cycle = BillCycle.first(u, datetime(2031, 5, 31, 22, 30, tzinfo=UTC))
    assert (cycle.start_date, cycle.end_date) == (date(2031, 6, 1), date(2031, 6, 15))
    assert cycle.start_time == datetime(2031, 5, 31, 22, 0, tzinfo=UTC)  # 1 June 00:00 CEST
    assert cycle.end_time == datetime(2031, 6, 14, 22, 0, tzinfo=UTC)
    assert (cycle.bill_unit_id, cycle.account_id, cycle.time_zone) == (u.bill_unit_id, ACCOUNT, "Europe/Madrid")
    assert (cycle.sequence, cycle.status, cycle.close_time) == (1, BillCycleStatus.OPEN, None)
    assert cycle.events == [BillCycleOpened(cycle)]


def test_the_first_cycle_follows_the_units_profile() -> None:
    cycle = BillCycle.first(unit(QUARTERLY_1), madrid(2031, 5, 10, 12))
    assert (cycle.start_date, cycle.end_date) == (date(2031, 5, 10), date(2031, 8, 1))


def test_a_naive_creation_instant_is_refused() -> None:
    with pytest.raises(InvalidBillCycle, match="timezone-aware"):
        BillCycle.first(unit(), datetime(2031, 5, 10, 12))


# When a cycle is due.


def test_a_cycle_is_due_at_its_end_plus_the_late_usage_delay() -> None:
    cycle = BillCycle.first(unit(), madrid(2031, 5, 10, 12))
    end = cycle.end_time
    assert cycle.due_time(DELAY) == end + DELAY
    assert not cycle.is_due(end, DELAY)
    assert not cycle.is_due(end + DELAY - timedelta(microseconds=1), DELAY)
    assert cycle.is_due(end + DELAY, DELAY)
    assert cycle.is_due(end, timedelta(0)), "with no delay it is due at its end"


def test_a_cycle_is_not_closed_before_it_is_due() -> None:
    u = unit()
    cycle = BillCycle.first(u, madrid(2031, 5, 10, 12))
    with pytest.raises(InvalidBillCycle, match="not due"):
        cycle.close(u, cycle.end_time + DELAY - timedelta(seconds=1), DELAY)
    assert cycle.status is BillCycleStatus.OPEN


# Closing.


def test_closing_marks_the_cycle_closed_and_opens_the_next_where_it_ends() -> None:
    u = unit()
    cycle = BillCycle.first(u, madrid(2031, 5, 10, 12))
    cycle.events.clear()
    now = cycle.end_time + DELAY + timedelta(minutes=7)
    following = cycle.close(u, now, DELAY)
    assert (cycle.status, cycle.close_time) == (BillCycleStatus.CLOSED, now)
    assert (following.status, following.close_time, following.sequence) == (BillCycleStatus.OPEN, None, 2)
    assert following.start_time == cycle.end_time
    assert (following.start_date, following.end_date) == (date(2031, 5, 15), date(2031, 6, 15))
    assert following.bill_cycle_id != cycle.bill_cycle_id
    assert (following.bill_unit_id, following.account_id, following.time_zone) == (
        u.bill_unit_id,
        ACCOUNT,
        "Europe/Madrid",
    )
    assert cycle.events == [BillCycleClosed(cycle, following)]
    assert following.events == [BillCycleOpened(following)]


def test_a_cycle_closes_once() -> None:
    u = unit()
    cycle = BillCycle.first(u, madrid(2031, 5, 10, 12))
    now = cycle.end_time + DELAY
    cycle.close(u, now, DELAY)
    with pytest.raises(InvalidBillCycle, match="already closed"):
        cycle.close(u, now, DELAY)
    assert not cycle.is_due(now, DELAY), "a closed cycle is never due"


def test_a_cycle_closes_only_with_its_own_unit() -> None:
    cycle = BillCycle.first(unit(), madrid(2031, 5, 10, 12))
    with pytest.raises(InvalidBillCycle, match="not a cycle of"):
        cycle.close(unit(), cycle.end_time + DELAY, DELAY)


def test_closing_in_sequence_tiles_time_across_the_dst_change() -> None:
    u = unit(BillingProfile(31))
    cycle = BillCycle.first(u, madrid(2031, 1, 20, 9))
    cycles = [cycle]
    for _ in range(5):
        cycle = cycle.close(u, cycle.end_time + DELAY, DELAY)
        cycles.append(cycle)
    assert [c.sequence for c in cycles] == [1, 2, 3, 4, 5, 6]
    assert [c.end_date for c in cycles] == [
        date(2031, 1, 31),
        date(2031, 2, 28),
        date(2031, 3, 31),
        date(2031, 4, 30),
        date(2031, 5, 31),
        date(2031, 6, 30),
    ]
    for previous, current in itertools.pairwise(cycles):
        assert current.start_time == previous.end_time
    # 31 March 00:00 is CEST (UTC+2): Madrid moved its clocks on 30 March 2031.
    assert cycles[2].end_time == datetime(2031, 3, 30, 22, 0, tzinfo=UTC)


# A profile change takes effect from the next cycle.


def test_a_profile_changed_during_the_cycle_applies_from_the_next() -> None:
    u = unit()
    cycle = BillCycle.first(u, madrid(2031, 5, 10, 12))
    assert u.schedule_profile_change(QUARTERLY_1, madrid(2031, 5, 12, 9))
    following = cycle.close(u, cycle.end_time + DELAY, DELAY)
    assert (u.profile, u.pending_profile) == (QUARTERLY_1, None)
    # The transition cycle: from the old boundary (15 May) to the new profile's first boundary.
    assert (following.start_date, following.end_date) == (date(2031, 5, 15), date(2031, 8, 1))
    after = following.close(u, following.end_time + DELAY, DELAY)
    assert (after.start_date, after.end_date) == (date(2031, 8, 1), date(2031, 11, 1))


def test_a_profile_changed_after_the_cycle_ended_waits_for_the_next_close() -> None:
    """A change made during the late-usage delay was made in the next cycle: it applies from the
    cycle after that."""
    u = unit()
    cycle = BillCycle.first(u, madrid(2031, 5, 10, 12))
    assert u.schedule_profile_change(QUARTERLY_1, cycle.end_time + timedelta(minutes=10))
    following = cycle.close(u, cycle.end_time + DELAY, DELAY)
    assert (u.profile, u.pending_profile) == (MONTHLY_15, QUARTERLY_1)
    assert (following.start_date, following.end_date) == (date(2031, 5, 15), date(2031, 6, 15))
    after = following.close(u, following.end_time + DELAY, DELAY)
    assert (u.profile, u.pending_profile) == (QUARTERLY_1, None)
    assert (after.start_date, after.end_date) == (date(2031, 6, 15), date(2031, 9, 1))


def test_a_profile_changed_at_the_boundary_belongs_to_the_next_cycle() -> None:
    u = unit()
    cycle = BillCycle.first(u, madrid(2031, 5, 10, 12))
    assert u.schedule_profile_change(QUARTERLY_1, cycle.end_time)
    cycle.close(u, cycle.end_time + DELAY, DELAY)
    assert u.pending_profile == QUARTERLY_1


def test_start_cycle_at_without_a_pending_profile_changes_nothing() -> None:
    u = unit()
    assert not u.start_cycle_at(madrid(2031, 6, 15))
    assert (u.profile, u.pending_profile) == (MONTHLY_15, None)
    with pytest.raises(InvalidBillUnit, match="timezone-aware"):
        u.start_cycle_at(datetime(2031, 6, 15))


# Adapters.


def _closed_pair() -> tuple[BillCycle, BillCycle]:
    u = unit()
    cycle = BillCycle.first(u, madrid(2031, 5, 10, 12))
    following = cycle.close(u, cycle.end_time + DELAY + timedelta(seconds=3), DELAY)
    return cycle, following


def test_cycle_to_pb() -> None:
    cycle, following = _closed_pair()
    pb = proto.cycle_to_pb(cycle)
    assert (pb.bill_cycle_id, pb.bill_unit_id, pb.account_id) == (
        str(cycle.bill_cycle_id),
        str(cycle.bill_unit_id),
        str(ACCOUNT),
    )
    assert (pb.sequence, pb.time_zone, pb.status) == (1, "Europe/Madrid", bill_cycle_pb2.BILL_CYCLE_STATUS_CLOSED)
    assert pb.start_time.ToDatetime(tzinfo=UTC) == cycle.start_time
    assert pb.end_time.ToDatetime(tzinfo=UTC) == cycle.end_time
    assert (pb.start_date.year, pb.start_date.month, pb.start_date.day) == (2031, 5, 10)
    assert (pb.end_date.year, pb.end_date.month, pb.end_date.day) == (2031, 5, 15)
    assert pb.close_time.ToDatetime(tzinfo=UTC) == cycle.close_time
    open_pb = proto.cycle_to_pb(following)
    assert open_pb.status == bill_cycle_pb2.BILL_CYCLE_STATUS_OPEN
    assert not open_pb.HasField("close_time")


def test_cycle_events_encode_to_their_subjects() -> None:
    cycle, following = _closed_pair()
    subject, message = events.encode(BillCycleOpened(following))
    assert subject == "evolutivo.billing.v1.bill_cycle.opened"
    assert isinstance(message, events_pb2.BillCycleOpened)
    assert message.bill_cycle == proto.cycle_to_pb(following)
    subject, message = events.encode(BillCycleClosed(cycle, following))
    assert subject == "evolutivo.billing.v1.bill_cycle.closed"
    assert isinstance(message, events_pb2.BillCycleClosed)
    assert message.bill_cycle == proto.cycle_to_pb(cycle)
    assert message.next_bill_cycle == proto.cycle_to_pb(following)


def test_cycle_page_tokens_round_trip_for_their_account_only() -> None:
    token = proto.cycles_page_token(7, ACCOUNT)
    assert proto.cycles_before_from_token(token, ACCOUNT) == 7
    assert proto.cycles_before_from_token("", ACCOUNT) is None
    with pytest.raises(InvalidArgument, match="different account_id") as other:
        proto.cycles_before_from_token(token, uuid.uuid4())
    assert other.value.field == "page_token"


@pytest.mark.parametrize(
    "token",
    ["!!", encode_keyset("x", str(ACCOUNT)), encode_keyset("-1", str(ACCOUNT)), encode_keyset("7"), "e30="],
)
def test_foreign_cycle_page_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        proto.cycles_before_from_token(token, ACCOUNT)
    assert refused.value.field == "page_token"


# Settings and wiring.


def test_cycle_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BILLING_CYCLE_CHECK_SECONDS", "BILLING_LATE_USAGE_DELAY_SECONDS", "BILLING_CYCLE_CLOSE_BATCH_SIZE"):
        monkeypatch.delenv(name, raising=False)
    settings = BillingSettings()
    assert (settings.cycle_check_seconds, settings.late_usage_delay_seconds, settings.cycle_close_batch_size) == (
        5.0,
        3600.0,
        100,
    )


async def test_cycle_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Async: wiring opens the gRPC channels to customer and balance, which need a running loop (as in serve()).
    monkeypatch.setenv("BILLING_CYCLE_CHECK_SECONDS", "0.5")
    monkeypatch.setenv("BILLING_LATE_USAGE_DELAY_SECONDS", "60")
    monkeypatch.setenv("BILLING_CYCLE_CLOSE_BATCH_SIZE", "7")
    service = definition()
    runtime = Runtime(
        "billing",
        service.settings,
        engine=cast(Any, None),
        sessions=cast(Any, None),
        nc=cast(Any, None),
        js=cast(Any, None),
        clock=FixedClock(datetime(2031, 5, 10, tzinfo=UTC)),
    )
    wiring = service.wire(runtime)
    # Billing runs several loops (cycle closer, delivery, collections); exactly one closes cycles.
    (closer,) = [
        owner for loop in wiring.background if isinstance(owner := getattr(loop, "__self__", None), CycleCloser)
    ]
    assert (closer.check_seconds, closer.late_usage_delay, closer.batch_size) == (0.5, timedelta(seconds=60), 7)
