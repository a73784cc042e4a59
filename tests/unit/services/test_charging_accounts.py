"""Charging's domain rules: its own view of an account, learnt from customer's events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from evolutivo_charging.domain.model import ChargingAccount, ChargingAccountStatus, InvalidChargingAccount

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
ACCOUNT = uuid.UUID("8f0c6c1e-5d55-4c4c-9d3b-1f7f1f1f1f1f")


def test_learn_records_what_rating_needs() -> None:
    account = ChargingAccount.learn(ACCOUNT, "EUR", "Europe/Madrid", ChargingAccountStatus.ACTIVE, NOW)
    assert account == ChargingAccount(ACCOUNT, "EUR", "Europe/Madrid", ChargingAccountStatus.ACTIVE, NOW)


def test_update_time_is_stored_in_utc() -> None:
    local = NOW.astimezone(timezone(timedelta(hours=-5)))
    account = ChargingAccount.learn(ACCOUNT, "USD", "America/New_York", ChargingAccountStatus.ACTIVE, local)
    assert account.update_time == NOW
    assert account.update_time.utcoffset() == timedelta(0)


def test_a_naive_instant_is_refused() -> None:
    with pytest.raises(InvalidChargingAccount, match="timezone-aware"):
        ChargingAccount.learn(ACCOUNT, "EUR", "UTC", ChargingAccountStatus.ACTIVE, datetime(2031, 5, 17))


@pytest.mark.parametrize(
    ("status", "accepts"),
    [
        (ChargingAccountStatus.ACTIVE, True),
        (ChargingAccountStatus.SUSPENDED, False),
        (ChargingAccountStatus.CLOSED, False),
    ],
)
def test_only_active_accounts_accept_new_usage(status: ChargingAccountStatus, accepts: bool) -> None:
    assert ChargingAccount.learn(ACCOUNT, "EUR", "UTC", status, NOW).accepts_usage is accepts


@pytest.mark.parametrize("code", ["", "eur", "EURO"])
def test_currency_must_be_an_iso_code(code: str) -> None:
    with pytest.raises(InvalidChargingAccount, match="currency_code"):
        ChargingAccount.learn(ACCOUNT, code, "UTC", ChargingAccountStatus.ACTIVE, NOW)


@pytest.mark.parametrize("zone", ["", "Mars/Olympus_Mons"])
def test_time_zone_must_be_an_iana_zone(zone: str) -> None:
    with pytest.raises(InvalidChargingAccount, match="time_zone"):
        ChargingAccount.learn(ACCOUNT, "EUR", zone, ChargingAccountStatus.ACTIVE, NOW)
