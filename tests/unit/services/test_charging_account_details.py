"""Charging's account currency and time zone follow customer's AccountUpdated; an older update
never overwrites a newer one, and rating prices new usage in the new currency."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_charging.domain.catalog import Charge, ChargeOffer, OfferStatus, PerUnit
from evolutivo_charging.domain.model import ChargingAccount, ChargingAccountStatus, InvalidChargingAccount
from evolutivo_charging.domain.rating import NotRated, Plan, plan
from evolutivo_charging.domain.usage import BillCycle, BillCycleStatus, Purchase, Reason, UsageEvent
from evolutivo_charging.entrypoints.consumers import subscriptions

NOW = datetime(2031, 5, 17, 9, 30, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
ACCOUNT = uuid.UUID("8f0c6c1e-5d55-4c4c-9d3b-1f7f1f1f1f1f")


def account(details_time: datetime | None = NOW) -> ChargingAccount:
    return ChargingAccount.learn(ACCOUNT, "EUR", "Europe/Madrid", ChargingAccountStatus.ACTIVE, NOW, details_time)


def test_a_learnt_account_knows_as_of_when_its_details_are() -> None:
    assert account().details_change_time == NOW
    assert account(None).details_change_time is None
    madrid = timezone(timedelta(hours=2))
    assert account(NOW.astimezone(madrid)).details_change_time == NOW
    with pytest.raises(InvalidChargingAccount, match="timezone-aware"):
        account(datetime(2031, 5, 17))


def test_currency_and_time_zone_follow_an_update() -> None:
    a = account()
    assert a.update_details("USD", "America/New_York", NOW + timedelta(minutes=1), LATER)
    assert (a.currency_code, a.time_zone) == ("USD", "America/New_York")
    assert (a.details_change_time, a.update_time) == (NOW + timedelta(minutes=1), LATER)
    assert (a.status, a.status_change_time) == (ChargingAccountStatus.ACTIVE, None), "the status is untouched"


def test_an_older_update_after_a_newer_one_changes_nothing() -> None:
    a = account()
    assert a.update_details("GBP", "Europe/London", NOW + timedelta(minutes=2), LATER)
    assert not a.update_details("USD", "America/New_York", NOW + timedelta(minutes=1), LATER + timedelta(1))
    # The same update again (a redelivery) changes nothing either.
    assert not a.update_details("GBP", "Europe/London", NOW + timedelta(minutes=2), LATER + timedelta(1))
    assert (a.currency_code, a.time_zone, a.details_change_time, a.update_time) == (
        "GBP",
        "Europe/London",
        NOW + timedelta(minutes=2),
        LATER,
    )


def test_an_update_no_newer_than_the_account_learnt_changes_nothing() -> None:
    a = account(NOW + timedelta(minutes=5))  # learnt from an event carrying a later snapshot
    assert not a.update_details("USD", "UTC", NOW + timedelta(minutes=1), LATER)
    assert a.currency_code == "EUR"
    # Accounts learnt before the details were ordered (details_change_time NULL) take any update.
    b = account(None)
    assert b.update_details("USD", "UTC", NOW - timedelta(days=1), LATER)
    assert b.currency_code == "USD"


def test_a_malformed_update_is_refused_whole() -> None:
    a = account()
    with pytest.raises(InvalidChargingAccount, match="currency_code"):
        a.update_details("usd", "UTC", LATER, LATER)
    with pytest.raises(InvalidChargingAccount, match="time_zone"):
        a.update_details("USD", "Mars/Olympus", LATER, LATER)
    with pytest.raises(InvalidChargingAccount, match="timezone-aware"):
        a.update_details("USD", "UTC", datetime(2031, 5, 17), LATER)
    assert (a.currency_code, a.time_zone, a.details_change_time) == ("EUR", "Europe/Madrid", NOW)


def _rate(a: ChargingAccount, offer_currency: str) -> Plan | NotRated:
    charge = Charge("api_calls", "API calls", PerUnit(Decimal("0.01")), event_type="api.call")
    offer = ChargeOffer(
        charge_offer_id=uuid.uuid4(),
        code="pro",
        version=1,
        name="Pro",
        description="",
        currency_code=offer_currency,
        valid_from=NOW - timedelta(days=30),
        valid_to=None,
        status=OfferStatus.ACTIVE,
        charges=(charge,),
        create_time=NOW - timedelta(days=30),
        activate_time=NOW - timedelta(days=30),
    )
    purchase = Purchase(
        purchase_id=uuid.UUID(int=1),
        account_id=ACCOUNT,
        service_id=None,
        charge_offer_code="pro",
        charge_offer_version=1,
        quantity=Decimal(1),
        start_time=NOW - timedelta(days=30),
        end_time=None,
        cancel_time=None,
    )
    cycle = BillCycle(
        uuid.UUID(int=2), ACCOUNT, NOW - timedelta(days=1), NOW + timedelta(days=30), BillCycleStatus.OPEN
    )
    event = UsageEvent.validated("event", "e-1", str(ACCOUNT), "api.call", LATER, "3", {}, "")
    return plan(event, a, [purchase], {"pro": [offer]}, [cycle])


def test_rating_prices_usage_in_the_currency_after_an_update() -> None:
    a = account()
    a.update_details("USD", "America/New_York", NOW + timedelta(minutes=1), LATER)
    rated = _rate(a, "USD")
    assert isinstance(rated, Plan) and rated.currency_code == "USD"
    # A purchase of an offer in the old currency no longer matches the account: kept unrated.
    refused = _rate(a, "EUR")
    assert isinstance(refused, NotRated) and refused.reason is Reason.CURRENCY_MISMATCH


def test_consumes_account_updated_from_customer() -> None:
    sub, _ = subscriptions()
    assert "evolutivo.customer.v1.account.updated" in sub.subjects
    assert sub.handlers["evolutivo.customer.v1.AccountUpdated"].message_type is customer_events.AccountUpdated


def test_update_details_returns_an_equal_account_when_refused() -> None:
    a = account()
    before = dataclasses.replace(a)
    assert not a.update_details("USD", "UTC", NOW, LATER)
    assert a == before
