"""Billing's view of customer's account: the status on the bill unit (an older change never wins),
a billing profile change pending until the next cycle, and the billing summary for the overview."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from evolutivo.billing.v1 import bill_unit_pb2
from evolutivo.customer.v1 import account_pb2
from evolutivo_billing.adapters import proto
from evolutivo_billing.domain.model import (
    AccountStatus,
    BillingFrequency,
    BillingProfile,
    BillingSummary,
    BillUnit,
    CollectionsState,
    InvalidBillUnit,
    OpenBill,
)

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
ACCOUNT = uuid.UUID("8f0c6c1e-5d55-4c4c-9d3b-1f7f1f1f1f1f")
PROFILE = BillingProfile(bill_cycle_day=15, frequency=BillingFrequency.MONTHLY, payment_terms_days=30)


def unit(time_zone: str = "Europe/Madrid", currency: str = "EUR") -> BillUnit:
    return BillUnit.open(ACCOUNT, currency, time_zone, PROFILE, NOW)


# Account status.


def test_a_new_unit_has_the_status_its_account_was_opened_with() -> None:
    u = unit()
    assert u.account_status is AccountStatus.ACTIVE
    assert u.account_status_change_time is None


def test_a_status_change_is_recorded_with_its_time_in_utc() -> None:
    u = unit()
    madrid = timezone(timedelta(hours=2))
    assert u.record_account_status(AccountStatus.SUSPENDED, (NOW + timedelta(hours=1)).astimezone(madrid))
    assert u.account_status is AccountStatus.SUSPENDED
    assert u.account_status_change_time == NOW + timedelta(hours=1)
    assert u.account_status_change_time.utcoffset() == timedelta(0)


def test_an_older_status_change_never_overwrites_a_newer_one() -> None:
    u = unit()
    assert u.record_account_status(AccountStatus.ACTIVE, NOW + timedelta(minutes=2))  # the reinstatement
    assert not u.record_account_status(AccountStatus.SUSPENDED, NOW + timedelta(minutes=1))  # arrives late
    assert u.account_status is AccountStatus.ACTIVE
    assert u.account_status_change_time == NOW + timedelta(minutes=2)
    # The same change again (a republished event) changes nothing either.
    assert not u.record_account_status(AccountStatus.CLOSED, NOW + timedelta(minutes=2))
    assert (u.account_status, u.account_status_change_time) == (AccountStatus.ACTIVE, NOW + timedelta(minutes=2))
    assert u.record_account_status(AccountStatus.CLOSED, NOW + timedelta(minutes=3))
    assert (u.account_status, u.account_status_change_time) == (AccountStatus.CLOSED, NOW + timedelta(minutes=3))


def test_a_naive_change_time_is_refused() -> None:
    with pytest.raises(InvalidBillUnit, match="timezone-aware"):
        unit().record_account_status(AccountStatus.SUSPENDED, datetime(2031, 5, 17, 9, 30))
    with pytest.raises(InvalidBillUnit, match="timezone-aware"):
        unit().schedule_profile_change(PROFILE, datetime(2031, 5, 17, 9, 30))


# Billing profile changes.

QUARTERLY = BillingProfile(bill_cycle_day=1, frequency=BillingFrequency.QUARTERLY, payment_terms_days=10)


def test_a_profile_change_waits_for_the_next_cycle() -> None:
    u = unit()
    assert u.schedule_profile_change(QUARTERLY, NOW + timedelta(days=1))
    assert u.profile == PROFILE, "the current cycle keeps the profile it started with"
    assert u.pending_profile == QUARTERLY
    assert u.profile_change_time == NOW + timedelta(days=1)
    assert u.apply_pending_profile()
    assert u.profile == QUARTERLY
    assert u.pending_profile is None
    assert not u.apply_pending_profile()


def test_a_later_change_replaces_the_pending_one_and_an_older_one_is_ignored() -> None:
    u = unit()
    weekly_terms = BillingProfile(bill_cycle_day=15, payment_terms_days=7)
    assert u.schedule_profile_change(QUARTERLY, NOW + timedelta(days=2))
    assert not u.schedule_profile_change(weekly_terms, NOW + timedelta(days=1))
    assert u.pending_profile == QUARTERLY
    assert u.schedule_profile_change(weekly_terms, NOW + timedelta(days=3))
    assert u.pending_profile == weekly_terms


def test_changing_back_to_the_profile_in_force_cancels_the_pending_change() -> None:
    u = unit()
    u.schedule_profile_change(QUARTERLY, NOW + timedelta(days=1))
    assert u.schedule_profile_change(PROFILE, NOW + timedelta(days=2))
    assert u.pending_profile is None
    assert u.profile_change_time == NOW + timedelta(days=2)


# The billing summary.


def bill(number: str, due: date, open_amount: str, total: str = "100") -> OpenBill:
    return OpenBill(uuid.uuid4(), number, Decimal(total), Decimal(open_amount), due)


def test_a_summary_without_bills_owes_nothing_overdue() -> None:
    summary = BillingSummary.of(unit(), [], CollectionsState(), NOW)
    assert summary.overdue_total == Decimal(0)
    assert summary.open_bills == []
    assert not summary.collections.in_collections


def test_overdue_bills_are_those_past_due_in_the_units_time_zone() -> None:
    # 23:30 UTC on 16 May is already 17 May in Madrid, still 16 May in New York.
    late_evening = datetime(2031, 5, 16, 23, 30, tzinfo=UTC)
    due_16th = bill("B-2", date(2031, 5, 16), "40.50")
    due_today = bill("B-3", date(2031, 5, 17), "10")
    overdue = bill("B-1", date(2031, 4, 16), "25.25")
    paid_off = bill("B-0", date(2031, 3, 16), "0")
    madrid = BillingSummary.of(
        unit("Europe/Madrid"), [due_today, due_16th, overdue, paid_off], CollectionsState(), late_evening
    )
    assert madrid.today == date(2031, 5, 17)
    assert [b.bill_number for b in madrid.open_bills] == ["B-0", "B-1", "B-2", "B-3"], "earliest due first"
    assert madrid.overdue_total == Decimal("65.75")
    new_york = BillingSummary.of(
        unit("America/New_York"), [due_today, due_16th, overdue], CollectionsState(), late_evening
    )
    assert new_york.overdue_total == Decimal("25.25")


def test_summary_to_pb() -> None:
    u = unit()
    overdue = bill("B-1", date(2031, 4, 16), "25.250000001", total="125.5")
    current = bill("B-2", date(2031, 6, 1), "80")
    collections = CollectionsState(True, "case-7", "reminder", Decimal("25.250000001"), 31)
    pb = proto.summary_to_pb(BillingSummary.of(u, [current, overdue], collections, NOW))
    assert pb.bill_unit == proto.unit_to_pb(u)
    first, second = pb.open_bills
    assert (first.bill_id, first.bill_number, first.overdue) == (str(overdue.bill_id), "B-1", True)
    assert (first.total.currency_code, first.total.units, first.total.nanos) == ("EUR", 125, 500_000_000)
    assert (first.open_amount.units, first.open_amount.nanos) == (25, 250_000_001)
    assert (first.due_date.year, first.due_date.month, first.due_date.day) == (2031, 4, 16)
    assert (second.bill_number, second.overdue) == ("B-2", False)
    assert (pb.overdue_total.currency_code, pb.overdue_total.units, pb.overdue_total.nanos) == ("EUR", 25, 250_000_001)
    c = pb.collections
    assert (c.in_collections, c.case_id, c.stage, c.days_past_due) == (True, "case-7", "reminder", 31)
    assert (c.overdue_amount.currency_code, c.overdue_amount.units) == ("EUR", 25)


def test_an_empty_summary_has_zero_amounts_in_the_units_currency() -> None:
    pb = proto.summary_to_pb(BillingSummary.of(unit(currency="USD"), [], CollectionsState(), NOW))
    assert list(pb.open_bills) == []
    assert (pb.overdue_total.currency_code, pb.overdue_total.units, pb.overdue_total.nanos) == ("USD", 0, 0)
    assert pb.HasField("collections") and not pb.collections.in_collections
    assert pb.collections.overdue_amount.currency_code == "USD"


# The bill unit on the wire.


def test_unit_to_pb_carries_the_status_and_the_pending_profile() -> None:
    u = unit()
    pb = proto.unit_to_pb(u)
    assert pb.account_status == bill_unit_pb2.ACCOUNT_STATUS_ACTIVE
    assert not pb.HasField("account_status_change_time")
    assert not pb.HasField("pending_profile")
    u.record_account_status(AccountStatus.SUSPENDED, NOW + timedelta(minutes=1))
    u.schedule_profile_change(QUARTERLY, NOW + timedelta(minutes=2))
    pb = proto.unit_to_pb(u)
    assert pb.account_status == bill_unit_pb2.ACCOUNT_STATUS_SUSPENDED
    assert pb.account_status_change_time.ToDatetime(tzinfo=UTC) == NOW + timedelta(minutes=1)
    assert (pb.bill_cycle_day, pb.frequency) == (15, bill_unit_pb2.BILLING_FREQUENCY_MONTHLY)
    pending = pb.pending_profile
    assert (pending.bill_cycle_day, pending.frequency, pending.payment_terms_days) == (
        1,
        bill_unit_pb2.BILLING_FREQUENCY_QUARTERLY,
        10,
    )
    assert pending.change_time.ToDatetime(tzinfo=UTC) == NOW + timedelta(minutes=2)


@pytest.mark.parametrize(
    ("customer", "expected"),
    [
        (account_pb2.ACCOUNT_STATUS_ACTIVE, AccountStatus.ACTIVE),
        (account_pb2.ACCOUNT_STATUS_SUSPENDED, AccountStatus.SUSPENDED),
        (account_pb2.ACCOUNT_STATUS_CLOSED, AccountStatus.CLOSED),
    ],
)
def test_status_from_customer(customer: int, expected: AccountStatus) -> None:
    assert proto.status_from_customer_pb(customer) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize("customer", [account_pb2.ACCOUNT_STATUS_UNSPECIFIED, 99])
def test_a_status_without_counterpart_is_a_broken_event(customer: int) -> None:
    with pytest.raises(ValueError, match="status"):
        proto.status_from_customer_pb(customer)  # type: ignore[arg-type]
