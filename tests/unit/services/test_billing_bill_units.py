"""Billing's domain rules: a bill unit per account, built from the account's billing profile."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from evolutivo_billing.domain.model import (
    MAX_PAYMENT_TERMS_DAYS,
    BillingFrequency,
    BillingProfile,
    BillUnit,
    BillUnitCreated,
    InvalidBillUnit,
    ListPosition,
)

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
ACCOUNT = uuid.UUID("8f0c6c1e-5d55-4c4c-9d3b-1f7f1f1f1f1f")


def test_open_builds_the_unit_from_the_account_and_records_its_creation() -> None:
    profile = BillingProfile(bill_cycle_day=31, frequency=BillingFrequency.QUARTERLY, payment_terms_days=15)
    unit = BillUnit.open(ACCOUNT, "EUR", "Europe/Madrid", profile, NOW)
    assert unit.account_id == ACCOUNT
    assert (unit.currency_code, unit.time_zone, unit.profile) == ("EUR", "Europe/Madrid", profile)
    assert unit.create_time == NOW
    assert isinstance(unit.bill_unit_id, uuid.UUID)
    assert unit.events == [BillUnitCreated(unit)]


def test_every_open_has_its_own_id() -> None:
    profile = BillingProfile(bill_cycle_day=1)
    assert BillUnit.open(ACCOUNT, "EUR", "UTC", profile, NOW).bill_unit_id != (
        BillUnit.open(ACCOUNT, "EUR", "UTC", profile, NOW).bill_unit_id
    )


def test_create_time_is_stored_in_utc() -> None:
    madrid_summer = timezone(timedelta(hours=2))
    unit = BillUnit.open(ACCOUNT, "EUR", "Europe/Madrid", BillingProfile(1), NOW.astimezone(madrid_summer))
    assert unit.create_time == NOW
    assert unit.create_time.utcoffset() == timedelta(0)


def test_a_naive_instant_is_refused() -> None:
    with pytest.raises(InvalidBillUnit, match="timezone-aware"):
        BillUnit.open(ACCOUNT, "EUR", "UTC", BillingProfile(1), datetime(2031, 5, 17, 9, 30))


def test_profile_defaults_are_monthly_with_thirty_days_to_pay() -> None:
    profile = BillingProfile(bill_cycle_day=5)
    assert profile.frequency is BillingFrequency.MONTHLY
    assert profile.payment_terms_days == 30


@pytest.mark.parametrize("day", [1, 15, 28, 31])
def test_any_day_of_the_month_closes_a_cycle(day: int) -> None:
    assert BillingProfile(bill_cycle_day=day).bill_cycle_day == day


@pytest.mark.parametrize("day", [0, -1, 32, 100])
def test_bill_cycle_day_out_of_range_is_refused(day: int) -> None:
    with pytest.raises(InvalidBillUnit, match="bill_cycle_day"):
        BillingProfile(bill_cycle_day=day)


@pytest.mark.parametrize("days", [0, 30, MAX_PAYMENT_TERMS_DAYS])
def test_payment_terms_within_range(days: int) -> None:
    assert BillingProfile(bill_cycle_day=1, payment_terms_days=days).payment_terms_days == days


@pytest.mark.parametrize("days", [-1, MAX_PAYMENT_TERMS_DAYS + 1])
def test_payment_terms_out_of_range_are_refused(days: int) -> None:
    with pytest.raises(InvalidBillUnit, match="payment_terms_days"):
        BillingProfile(bill_cycle_day=1, payment_terms_days=days)


@pytest.mark.parametrize("code", ["", "eur", "EURO", "E1R", "€"])
def test_currency_must_be_an_iso_code(code: str) -> None:
    with pytest.raises(InvalidBillUnit, match="currency_code"):
        BillUnit.open(ACCOUNT, code, "UTC", BillingProfile(1), NOW)


@pytest.mark.parametrize("zone", ["", "Mars/Olympus_Mons", "europe/madrid", "+02:00"])
def test_time_zone_must_be_an_iana_zone(zone: str) -> None:
    with pytest.raises(InvalidBillUnit, match="time_zone"):
        BillUnit.open(ACCOUNT, "EUR", zone, BillingProfile(1), NOW)


@pytest.mark.parametrize(
    ("frequency", "months"),
    [
        (BillingFrequency.MONTHLY, 1),
        (BillingFrequency.QUARTERLY, 3),
        (BillingFrequency.SEMI_ANNUAL, 6),
        (BillingFrequency.ANNUAL, 12),
    ],
)
def test_cycle_length(frequency: BillingFrequency, months: int) -> None:
    assert frequency.months == months


def test_listing_order_is_oldest_first_then_by_id() -> None:
    low, high = uuid.UUID(int=1), uuid.UUID(int=2)
    later = NOW + timedelta(microseconds=1)
    positions = [ListPosition(later, low), ListPosition(NOW, high), ListPosition(NOW, low)]
    assert sorted(positions) == [ListPosition(NOW, low), ListPosition(NOW, high), ListPosition(later, low)]


def test_a_unit_knows_its_listing_position() -> None:
    unit = BillUnit.open(ACCOUNT, "EUR", "UTC", BillingProfile(1), NOW)
    assert unit.position == ListPosition(NOW, unit.bill_unit_id)
