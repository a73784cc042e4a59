"""Account rules, on the pure domain model (no database, no gRPC)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from evolutivo_customer.domain.model import (
    Account,
    AccountCreated,
    AccountDetails,
    AccountStatus,
    AccountStatusChanged,
    AccountType,
    AccountUpdated,
    BillingProfile,
    BillingProfileChanged,
    ProvisionedService,
    ServiceStatus,
    StatusActor,
    validate_status_change,
)
from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument

NOW = datetime(2026, 3, 31, 23, 30, tzinfo=UTC)


def details(**overrides: object) -> AccountDetails:
    values: dict[str, object] = {
        "display_name": "Acme Distribuciones SL",
        "currency_code": "EUR",
        "time_zone": "Europe/Madrid",
        "locale": "es-ES",
        "country_code": "es",
        "tax_id": "B12345674",
    }
    values.update(overrides)
    return AccountDetails(**values)  # type: ignore[arg-type]


def open_account(**overrides: object) -> Account:
    return Account.open(
        AccountType.BUSINESS, details(**overrides), BillingProfile(bill_cycle_day=31), "A-00000001", NOW
    )


def service(account: Account, identifier: str) -> ProvisionedService:
    return ProvisionedService.provision(account, "mobile_line", identifier, "", {}, NOW)


def test_open_normalises_and_records_creation() -> None:
    account = open_account(display_name="  Acme  ")
    assert account.details.display_name == "Acme"
    assert account.details.country_code == "ES"
    assert account.status is AccountStatus.ACTIVE
    assert [type(e) for e in account.events] == [AccountCreated]


def test_default_billing_day_is_the_opening_day_in_the_account_zone() -> None:
    # 23:30 UTC on 31 March is already 1 April in Madrid (UTC+2 in summer time).
    account = Account.open(AccountType.BUSINESS, details(), None, "A-1", NOW)
    assert account.billing_profile.bill_cycle_day == 1
    account = Account.open(AccountType.BUSINESS, details(time_zone="America/New_York"), None, "A-2", NOW)
    assert account.billing_profile.bill_cycle_day == 31


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"currency_code": "EUX"}, "account.currency_code"),
        ({"time_zone": "Europe/Atlantis"}, "account.time_zone"),
        ({"display_name": "x" * 201}, "account.display_name"),
        ({"display_name": "   "}, "account.display_name"),
        ({"locale": "not a tag!"}, "account.locale"),
        ({"country_code": "XX"}, "account.country_code"),
        ({"tax_id": "B12345670"}, "account.tax_id"),
        ({"country_code": "", "tax_id": "B12345674"}, "account.tax_id"),
        ({"labels": {"Bad Key": "v"}}, "account.labels['Bad Key']"),
        ({"date_of_birth": date(1990, 1, 1)}, "account.date_of_birth"),
    ],
)
def test_bad_details_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        open_account(**overrides)
    assert refused.value.field == field


@pytest.mark.parametrize("day", [0, 32, -1])
def test_billing_day_outside_1_to_31_is_refused(day: int) -> None:
    with pytest.raises(InvalidArgument) as refused:
        Account.open(AccountType.BUSINESS, details(), BillingProfile(bill_cycle_day=day), "A-1", NOW)
    assert refused.value.field == "account.billing_profile.bill_cycle_day"


def test_threshold_must_fit_the_currency_minor_unit() -> None:
    ok = BillingProfile(bill_cycle_day=5, threshold_amount=Decimal("100.50"))
    ok.check("EUR")
    with pytest.raises(InvalidArgument) as refused:
        BillingProfile(bill_cycle_day=5, threshold_amount=Decimal("100.5")).check("JPY")
    assert refused.value.field == "account.billing_profile.threshold_amount.units"
    with pytest.raises(InvalidArgument):
        BillingProfile(bill_cycle_day=5, threshold_amount=Decimal("0")).check("EUR")


def test_date_of_birth_only_for_individuals_and_in_the_past() -> None:
    person = Account.open(AccountType.INDIVIDUAL, details(date_of_birth=date(1990, 5, 17), tax_id=""), None, "A-1", NOW)
    assert person.details.date_of_birth == date(1990, 5, 17)
    with pytest.raises(InvalidArgument):
        Account.open(AccountType.INDIVIDUAL, details(date_of_birth=date(2030, 1, 1), tax_id=""), None, "A-2", NOW)


def test_update_records_what_changed_and_profile_changes_separately() -> None:
    account = open_account()
    account.events.clear()
    changed = account.update(details(display_name="Acme Iberia SL"), BillingProfile(bill_cycle_day=15), NOW)
    assert changed == ["display_name", "billing_profile"]
    assert [type(e) for e in account.events] == [AccountUpdated, BillingProfileChanged]
    assert account.version == 2
    profile_event = account.events[1]
    assert isinstance(profile_event, BillingProfileChanged)
    assert profile_event.previous.bill_cycle_day == 31


def test_an_update_that_changes_nothing_records_nothing() -> None:
    account = open_account()
    account.events.clear()
    assert account.update(account.details, account.billing_profile, NOW) == []
    assert account.events == [] and account.version == 1


def test_currency_is_fixed_once_the_account_has_charges() -> None:
    account = open_account()
    account.update(details(currency_code="USD"), account.billing_profile, NOW)
    assert account.details.currency_code == "USD"
    account.has_charges = True
    with pytest.raises(FailedPrecondition) as refused:
        account.update(details(currency_code="EUR"), account.billing_profile, NOW)
    assert refused.value.reason == "CURRENCY_FIXED"


def test_suspend_cascades_and_reinstate_restores_only_what_it_suspended() -> None:
    account = open_account()
    line_a, line_b, line_c = (
        service(account, "+34600000001"),
        service(account, "+34600000002"),
        service(account, "+3460000003"),
    )
    line_c.set_status(account, ServiceStatus.SUSPENDED, "lost phone", StatusActor.MANUAL, NOW)
    account.events.clear()

    suspended = account.suspend("unpaid", StatusActor.COLLECTIONS, "case-1", [line_a, line_b, line_c], NOW)
    assert suspended == [line_a, line_b]
    assert all(s.status is ServiceStatus.SUSPENDED and s.suspended_with_account for s in suspended)
    assert not line_c.suspended_with_account

    reinstated = account.reinstate("paid", StatusActor.COLLECTIONS, "case-1", [line_a, line_b, line_c], NOW)
    assert reinstated == [line_a, line_b]
    assert line_a.status is ServiceStatus.ACTIVE and line_b.status is ServiceStatus.ACTIVE
    assert line_c.status is ServiceStatus.SUSPENDED, "a service suspended on its own stays suspended"
    assert [type(e) for e in account.events] == [AccountStatusChanged, AccountStatusChanged]
    assert account.status_actor is StatusActor.COLLECTIONS and account.status_reason == "paid"


def test_status_changes_follow_the_lifecycle() -> None:
    account = open_account()
    with pytest.raises(FailedPrecondition):
        account.reinstate("why", StatusActor.MANUAL, "", [], NOW)
    account.suspend("fraud check", StatusActor.FRAUD, "", [], NOW)
    with pytest.raises(FailedPrecondition):
        account.suspend("again", StatusActor.FRAUD, "", [], NOW)


def test_closing_is_refused_while_money_is_owed_unless_forced() -> None:
    account = open_account()
    line = service(account, "+34600000001")
    with pytest.raises(FailedPrecondition) as refused:
        account.close("moving away", StatusActor.MANUAL, "op-7", Decimal("12.30"), False, [line], NOW)
    assert refused.value.reason == "ACCOUNT_OWES_MONEY"
    assert account.status is AccountStatus.ACTIVE and line.status is ServiceStatus.ACTIVE
    closed = account.close("deceased", StatusActor.MANUAL, "op-7", Decimal("12.30"), True, [line], NOW)
    assert closed == [line] and line.status is ServiceStatus.CLOSED
    assert account.status is AccountStatus.CLOSED
    with pytest.raises(FailedPrecondition):
        account.update(account.details, account.billing_profile, NOW)


def test_a_credit_balance_does_not_block_closing() -> None:
    account = open_account()
    account.close("moving away", StatusActor.MANUAL, "", Decimal("-5.00"), False, [], NOW)
    assert account.status is AccountStatus.CLOSED


def test_every_status_change_needs_a_reason_and_an_actor() -> None:
    with pytest.raises(InvalidArgument) as no_reason:
        validate_status_change("  ", StatusActor.MANUAL)
    assert no_reason.value.field == "reason"
    with pytest.raises(InvalidArgument) as no_actor:
        validate_status_change("because", None)
    assert no_actor.value.field == "actor"


def test_a_service_of_a_suspended_account_starts_suspended_with_it() -> None:
    account = open_account()
    account.suspend("unpaid", StatusActor.COLLECTIONS, "", [], NOW)
    line = service(account, "+34600000009")
    assert line.status is ServiceStatus.SUSPENDED and line.suspended_with_account
    with pytest.raises(FailedPrecondition):
        line.set_status(account, ServiceStatus.ACTIVE, "try", StatusActor.MANUAL, NOW)


def test_personal_data_is_erased_only_from_closed_accounts() -> None:
    account = Account.open(AccountType.INDIVIDUAL, details(date_of_birth=date(1980, 1, 1), tax_id=""), None, "A-1", NOW)
    with pytest.raises(FailedPrecondition):
        account.erase_personal_data(NOW)
    account.close("gdpr", StatusActor.MANUAL, "", Decimal(0), False, [], NOW)
    account.erase_personal_data(NOW)
    assert account.details.display_name == "[erased]" and account.details.date_of_birth is None
    assert account.details.currency_code == "EUR", "what finance needs stays"
    version = account.version
    account.erase_personal_data(NOW)
    assert account.version == version, "erasing twice changes nothing"


def test_account_ids_are_unique() -> None:
    assert open_account().account_id != open_account().account_id
    assert isinstance(open_account().account_id, uuid.UUID)
