"""Charging's account status follows customer's status changes; an older change never wins."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from evolutivo_charging.adapters import proto
from evolutivo_charging.domain.model import ChargingAccount, ChargingAccountStatus, InvalidChargingAccount

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
ACCOUNT = uuid.UUID("8f0c6c1e-5d55-4c4c-9d3b-1f7f1f1f1f1f")


def account() -> ChargingAccount:
    return ChargingAccount.learn(ACCOUNT, "EUR", "Europe/Madrid", ChargingAccountStatus.ACTIVE, NOW)


def test_a_learnt_account_has_the_status_it_was_opened_with() -> None:
    assert account().status_change_time is None


def test_a_suspension_stops_usage_and_a_reinstatement_resumes_it() -> None:
    a = account()
    assert a.change_status(ChargingAccountStatus.SUSPENDED, NOW + timedelta(minutes=1), LATER)
    assert (a.status, a.accepts_usage) == (ChargingAccountStatus.SUSPENDED, False)
    assert a.status_change_time == NOW + timedelta(minutes=1)
    assert a.update_time == LATER
    assert a.change_status(ChargingAccountStatus.ACTIVE, NOW + timedelta(minutes=2), LATER)
    assert a.accepts_usage


def test_an_older_status_change_never_overwrites_a_newer_one() -> None:
    a = account()
    a.change_status(ChargingAccountStatus.ACTIVE, NOW + timedelta(minutes=2), LATER)
    assert not a.change_status(ChargingAccountStatus.SUSPENDED, NOW + timedelta(minutes=1), LATER + timedelta(1))
    assert not a.change_status(ChargingAccountStatus.CLOSED, NOW + timedelta(minutes=2), LATER + timedelta(1))
    assert (a.status, a.status_change_time, a.update_time) == (
        ChargingAccountStatus.ACTIVE,
        NOW + timedelta(minutes=2),
        LATER,
    )


def test_change_times_are_stored_in_utc_and_must_be_aware() -> None:
    a = account()
    madrid = timezone(timedelta(hours=2))
    a.change_status(ChargingAccountStatus.CLOSED, LATER.astimezone(madrid), LATER.astimezone(madrid))
    assert a.status_change_time == LATER and a.status_change_time.utcoffset() == timedelta(0)
    with pytest.raises(InvalidChargingAccount, match="timezone-aware"):
        account().change_status(ChargingAccountStatus.SUSPENDED, datetime(2031, 5, 17), NOW)
    with pytest.raises(InvalidChargingAccount, match="timezone-aware"):
        ChargingAccount(ACCOUNT, "EUR", "UTC", ChargingAccountStatus.ACTIVE, NOW, datetime(2031, 5, 17))


def test_account_to_pb_carries_the_status_change_time() -> None:
    a = account()
    assert not proto.account_to_pb(a).HasField("status_change_time")
    a.change_status(ChargingAccountStatus.SUSPENDED, NOW + timedelta(minutes=1), LATER)
    pb = proto.account_to_pb(a)
    assert pb.status_change_time.ToDatetime(tzinfo=UTC) == NOW + timedelta(minutes=1)
    assert pb.update_time.ToDatetime(tzinfo=UTC) == LATER
