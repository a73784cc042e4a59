"""Purchases of charge offers, on the pure domain model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from evolutivo_customer.domain.model import (
    Account,
    AccountDetails,
    AccountType,
    BillingProfile,
    ProvisionedService,
    ServiceStatus,
    StatusActor,
)
from evolutivo_customer.domain.purchases import (
    OfferView,
    PriceOverride,
    Purchase,
    PurchaseCreated,
    PurchaseEnded,
    PurchaseState,
)
from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument

NOW = datetime(2026, 6, 10, 8, 0, tzinfo=UTC)
OFFER = OfferView("api_pro", 3, "EUR", frozenset({"api_calls", "monthly_fee"}), purchasable=True)


def account() -> Account:
    details = AccountDetails(display_name="Acme", currency_code="EUR", time_zone="Europe/Madrid")
    return Account.open(
        AccountType.BUSINESS, details, BillingProfile(bill_cycle_day=1), "A-1", NOW - timedelta(days=30)
    )


def buy(acc: Account | None = None, **overrides: object) -> Purchase:
    values: dict[str, object] = {
        "account": acc or account(),
        "service": None,
        "offer": OFFER,
        "code": "api_pro",
        "quantity": Decimal(1),
        "start": NOW,
        "end": None,
        "overrides": (),
        "now": NOW,
    }
    values.update(overrides)
    return Purchase.buy(**values)  # type: ignore[arg-type]


def test_a_purchase_records_the_offer_version_and_its_event() -> None:
    purchase = buy(overrides=(PriceOverride("api_calls", Decimal("0.0002")),))
    assert purchase.charge_offer_version == 3
    assert purchase.currency_code == "EUR"
    (event,) = purchase.events
    assert isinstance(event, PurchaseCreated) and event.time_zone == "Europe/Madrid"


def test_states_over_time() -> None:
    purchase = buy(start=NOW + timedelta(days=1), end=NOW + timedelta(days=31))
    assert purchase.state_at(NOW) is PurchaseState.PENDING
    assert purchase.state_at(NOW + timedelta(days=1)) is PurchaseState.ACTIVE
    assert purchase.state_at(NOW + timedelta(days=31)) is PurchaseState.ENDED


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"quantity": Decimal(0)}, "purchase.quantity"),
        ({"quantity": Decimal("-1")}, "purchase.quantity"),
        ({"quantity": Decimal("NaN")}, "purchase.quantity"),
        ({"quantity": Decimal("1.0000000001")}, "purchase.quantity"),
        ({"end": NOW}, "purchase.end_time"),
        ({"start": NOW - timedelta(days=31)}, "purchase.start_time"),
        ({"overrides": (PriceOverride("nope", Decimal(1)),)}, "purchase.price_overrides[0].charge_code"),
        (
            {"overrides": (PriceOverride("api_calls", Decimal(1)), PriceOverride("api_calls", Decimal(2)))},
            "purchase.price_overrides[1].charge_code",
        ),
        ({"overrides": (PriceOverride("api_calls", Decimal(-1)),)}, "purchase.price_overrides[0].price"),
    ],
)
def test_bad_purchases_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        buy(**overrides)
    assert refused.value.field == field


def test_only_purchasable_offers_in_the_account_currency_for_active_accounts() -> None:
    with pytest.raises(FailedPrecondition) as missing:
        buy(offer=None)
    assert missing.value.reason == "CHARGE_OFFER_NOT_PURCHASABLE"
    with pytest.raises(FailedPrecondition) as draft:
        buy(offer=OfferView("api_pro", 4, "EUR", frozenset(), purchasable=False))
    assert draft.value.reason == "CHARGE_OFFER_NOT_PURCHASABLE"
    with pytest.raises(FailedPrecondition) as currency:
        buy(offer=OfferView("api_pro", 1, "USD", frozenset(), purchasable=True))
    assert currency.value.reason == "CURRENCY_MISMATCH"
    suspended = account()
    suspended.suspend("unpaid", StatusActor.COLLECTIONS, "", [], NOW)
    with pytest.raises(FailedPrecondition) as inactive:
        buy(suspended)
    assert inactive.value.reason == "ACCOUNT_NOT_ACTIVE"


def test_not_for_a_closed_service() -> None:
    acc = account()
    line = ProvisionedService.provision(acc, "mobile_line", "+34600000001", "", {}, NOW)
    line.set_status(acc, ServiceStatus.CLOSED, "ported out", StatusActor.MANUAL, NOW)
    with pytest.raises(FailedPrecondition):
        buy(acc, service=line)


def test_end_and_cancel() -> None:
    running = buy()
    with pytest.raises(FailedPrecondition) as started:
        running.cancel(NOW + timedelta(hours=1))
    assert started.value.reason == "PURCHASE_STARTED"
    with pytest.raises(InvalidArgument) as past:
        running.end(NOW - timedelta(hours=1), NOW + timedelta(hours=1))
    assert past.value.field == "end_time"
    running.end(NOW + timedelta(days=5), NOW + timedelta(hours=1))
    assert isinstance(running.events[-1], PurchaseEnded)
    assert running.state_at(NOW + timedelta(days=5)) is PurchaseState.ENDED
    with pytest.raises(FailedPrecondition):
        running.end(NOW + timedelta(days=9), NOW + timedelta(days=6))

    later = buy(start=NOW + timedelta(days=2))
    later.cancel(NOW)
    assert later.state_at(NOW + timedelta(days=3)) is PurchaseState.CANCELLED
    with pytest.raises(FailedPrecondition):
        later.end(NOW + timedelta(days=9), NOW)
