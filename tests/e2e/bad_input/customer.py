"""CustomerService: accounts, contacts, provisioned services, payment methods, purchases."""

from __future__ import annotations

from datetime import timedelta

from evolutivo.customer.v1 import (
    account_pb2,
    contact_pb2,
    payment_method_pb2,
    provisioned_service_pb2,
    purchase_pb2,
)
from evolutivo.customer.v1 import customer_service_pb2 as pb
from evolutivo_runtime.timestamps import to_timestamp
from google.protobuf.field_mask_pb2 import FieldMask
from google.type import postal_address_pb2

from bad_input import ABORTED, EXISTS, FAILED, INVALID, NOT_FOUND, OK, Case, case
from bad_input.values import (
    BLANK,
    CONTROL,
    EMOJI,
    HUGE_UNITS,
    NOT_A_TOKEN,
    NOT_UUID,
    NUL,
    SCRIPT,
    SQL,
    UNKNOWN,
    date,
    long,
    money,
)
from bad_input.world import World

S = "/evolutivo.customer.v1.CustomerService/"
MANUAL = account_pb2.STATUS_ACTOR_MANUAL


def account(**fields: object) -> account_pb2.Account:
    """A valid new account, with `fields` replaced."""
    values: dict[str, object] = {
        "type": account_pb2.ACCOUNT_TYPE_BUSINESS,
        "display_name": "Nueva SL",
        "currency_code": "EUR",
        "time_zone": "Europe/Madrid",
    }
    values.update(fields)
    return account_pb2.Account(**values)  # type: ignore[arg-type]


def profile(**fields: object) -> account_pb2.BillingProfile:
    values: dict[str, object] = {
        "bill_cycle_day": 1,
        "frequency": account_pb2.BILLING_FREQUENCY_MONTHLY,
        "payment_terms_days": 14,
    }
    values.update(fields)
    return account_pb2.BillingProfile(**values)  # type: ignore[arg-type]


def create(**fields: object) -> pb.CreateAccountRequest:
    return pb.CreateAccountRequest(account=account(**fields))


def update(w: World, path: str, **fields: object) -> pb.UpdateAccountRequest:
    return pb.UpdateAccountRequest(
        account=account_pb2.Account(account_id=w.account_id, **fields),  # type: ignore[arg-type]
        update_mask=FieldMask(paths=[path]),
    )


def email(address: str) -> contact_pb2.Contact:
    return contact_pb2.Contact(role=contact_pb2.CONTACT_ROLE_BILLING, email=address)


def card(**fields: object) -> payment_method_pb2.PaymentMethod:
    values: dict[str, object] = {
        "provider": "stripe",
        "provider_token": "tok_visa_ok",
        "brand": "visa",
        "last4": "4242",
        "expiry_month": 12,
        "expiry_year": 2040,
    }
    values.update(fields)
    return payment_method_pb2.PaymentMethod(card=payment_method_pb2.CardDetails(**values))  # type: ignore[arg-type]


def sepa(iban: str) -> payment_method_pb2.PaymentMethod:
    return payment_method_pb2.PaymentMethod(
        sepa_direct_debit=payment_method_pb2.SepaDirectDebitDetails(
            iban=iban, mandate_id="M-1", mandate_signature_date=date(2024, 1, 10), account_holder="Nueva SL"
        )
    )


def purchase(w: World, account_id: str | None = None, **fields: object) -> pb.CreatePurchaseRequest:
    values: dict[str, object] = {"charge_offer_code": w.offer_code}
    values.update(fields)
    return pb.CreatePurchaseRequest(
        account_id=account_id or w.account_id,
        purchase=purchase_pb2.Purchase(**values),  # type: ignore[arg-type]
    )


def ids(method: str, field: str, build: object, *, unknown: bool = True) -> list[Case]:
    """A malformed, an SQL-looking and (with `unknown`) a well-formed unknown id in `field`."""
    make = build  # (World, id) -> request
    rows = [
        case(S + method, f"{field} not a UUID", lambda w: make(w, NOT_UUID), INVALID, field),  # type: ignore[operator]
        case(S + method, f"{field} SQL-looking", lambda w: make(w, SQL), INVALID, field),  # type: ignore[operator]
    ]
    if unknown:
        rows.append(case(S + method, f"{field} unknown", lambda w: make(w, UNKNOWN), NOT_FOUND))  # type: ignore[operator]
    return rows


CASES: list[Case] = [
    # --- CreateAccount
    case(S + "CreateAccount", "account missing", lambda w: pb.CreateAccountRequest(), INVALID, "account"),
    case(S + "CreateAccount", "type unspecified", lambda w: create(type=0), INVALID, "account.type"),
    case(S + "CreateAccount", "type out of the enum", lambda w: create(type=77), INVALID, "account.type"),
    case(
        S + "CreateAccount", "display name missing", lambda w: create(display_name=""), INVALID, "account.display_name"
    ),
    case(
        S + "CreateAccount", "display name blank", lambda w: create(display_name=BLANK), INVALID, "account.display_name"
    ),
    case(
        S + "CreateAccount",
        "display name over-long",
        lambda w: create(display_name=long(201)),
        INVALID,
        "account.display_name",
    ),
    case(
        S + "CreateAccount",
        "display name of 250 emoji",
        lambda w: create(display_name=EMOJI),
        INVALID,
        "account.display_name",
    ),
    case(
        S + "CreateAccount",
        "display name with NUL",
        lambda w: create(display_name=NUL),
        INVALID,
        "account.display_name",
    ),
    case(
        S + "CreateAccount",
        "display name with control characters",
        lambda w: create(display_name=CONTROL),
        INVALID,
        "account.display_name",
    ),
    case(S + "CreateAccount", "currency missing", lambda w: create(currency_code=""), INVALID, "account.currency_code"),
    case(
        S + "CreateAccount", "currency unknown", lambda w: create(currency_code="ZZZ"), INVALID, "account.currency_code"
    ),
    case(
        S + "CreateAccount",
        "currency lower-case",
        lambda w: create(currency_code="eur"),
        INVALID,
        "account.currency_code",
    ),
    case(
        S + "CreateAccount",
        "currency SQL-looking",
        lambda w: create(currency_code=SQL),
        INVALID,
        "account.currency_code",
    ),
    case(S + "CreateAccount", "time zone missing", lambda w: create(time_zone=""), INVALID, "account.time_zone"),
    case(
        S + "CreateAccount",
        "time zone unknown",
        lambda w: create(time_zone="Mars/Olympus_Mons"),
        INVALID,
        "account.time_zone",
    ),
    case(
        S + "CreateAccount",
        "time zone a path",
        lambda w: create(time_zone="../../etc/passwd"),
        INVALID,
        "account.time_zone",
    ),
    case(S + "CreateAccount", "locale malformed", lambda w: create(locale="es_ES!!"), INVALID, "account.locale"),
    case(S + "CreateAccount", "country unknown", lambda w: create(country_code="ZZ"), INVALID, "account.country_code"),
    case(
        S + "CreateAccount",
        "tax id malformed for its country",
        lambda w: create(country_code="ES", tax_id="12345"),
        INVALID,
        "account.tax_id",
    ),
    case(
        S + "CreateAccount",
        "date of birth 30 February",
        lambda w: create(type=account_pb2.ACCOUNT_TYPE_INDIVIDUAL, date_of_birth=date(1990, 2, 30)),
        INVALID,
        "account.date_of_birth",
    ),
    case(
        S + "CreateAccount",
        "date of birth in the future",
        lambda w: create(type=account_pb2.ACCOUNT_TYPE_INDIVIDUAL, date_of_birth=date(2999, 1, 1)),
        INVALID,
        "account.date_of_birth",
    ),
    case(
        S + "CreateAccount",
        "date of birth of a business",
        lambda w: create(date_of_birth=date(1990, 1, 1)),
        INVALID,
        "account.date_of_birth",
    ),
    case(
        S + "CreateAccount",
        "bill cycle day 0",
        lambda w: create(billing_profile=profile(bill_cycle_day=0)),
        INVALID,
        "account.billing_profile.bill_cycle_day",
    ),
    case(
        S + "CreateAccount",
        "bill cycle day 32",
        lambda w: create(billing_profile=profile(bill_cycle_day=32)),
        INVALID,
        "account.billing_profile.bill_cycle_day",
    ),
    case(
        S + "CreateAccount",
        "payment terms negative",
        lambda w: create(billing_profile=profile(payment_terms_days=-1)),
        INVALID,
        "account.billing_profile.payment_terms_days",
    ),
    case(
        S + "CreateAccount",
        "payment terms huge",
        lambda w: create(billing_profile=profile(payment_terms_days=2_000_000_000)),
        INVALID,
        "account.billing_profile.payment_terms_days",
    ),
    case(
        S + "CreateAccount",
        "threshold negative",
        lambda w: create(billing_profile=profile(threshold_amount=money(-10))),
        INVALID,
        "account.billing_profile.threshold_amount",
    ),
    case(
        S + "CreateAccount",
        "threshold zero",
        lambda w: create(billing_profile=profile(threshold_amount=money(0))),
        INVALID,
        "account.billing_profile.threshold_amount",
    ),
    case(
        S + "CreateAccount",
        "threshold in another currency",
        lambda w: create(billing_profile=profile(threshold_amount=money(100, currency="USD"))),
        INVALID,
        "account.billing_profile.threshold_amount",
    ),
    case(
        S + "CreateAccount",
        "threshold with units and nanos of opposite signs",
        lambda w: create(billing_profile=profile(threshold_amount=money(10, -500_000_000))),
        INVALID,
        "account.billing_profile.threshold_amount",
    ),
    case(
        S + "CreateAccount",
        "threshold finer than a cent",
        lambda w: create(billing_profile=profile(threshold_amount=money(10, 1))),
        INVALID,
        "account.billing_profile.threshold_amount",
    ),
    case(
        S + "CreateAccount",
        "threshold huge",
        lambda w: create(billing_profile=profile(threshold_amount=money(HUGE_UNITS))),
        INVALID,
        "account.billing_profile.threshold_amount",
    ),
    case(
        S + "CreateAccount",
        "frequency out of the enum",
        lambda w: create(billing_profile=profile(frequency=42)),
        INVALID,
        "account.billing_profile.frequency",
    ),
    case(
        S + "CreateAccount",
        "collections scenario not a UUID",
        lambda w: create(billing_profile=profile(collections_scenario_id=SQL)),
        INVALID,
        "account.billing_profile.collections_scenario_id",
    ),
    case(
        S + "CreateAccount",
        "label value over-long",
        lambda w: create(labels={"segment": long(5000)}),
        INVALID,
        "account.labels['segment']",
    ),
    case(
        S + "CreateAccount",
        "request id not a UUID",
        lambda w: pb.CreateAccountRequest(request_id=SQL, account=account()),
        INVALID,
        "request_id",
    ),
    case(
        S + "CreateAccount",
        "request id reused with another payload",
        lambda w: pb.CreateAccountRequest(request_id=w.account_request_id, account=account(display_name="Otra SL")),
        INVALID,
        "request_id",
    ),
    # --- GetAccount / ListAccounts
    *ids("GetAccount", "account_id", lambda w, v: pb.GetAccountRequest(account_id=v)),
    case(S + "GetAccount", "account id missing", lambda w: pb.GetAccountRequest(), INVALID, "account_id"),
    case(
        S + "ListAccounts", "page size negative", lambda w: pb.ListAccountsRequest(page_size=-1), INVALID, "page_size"
    ),
    case(
        S + "ListAccounts",
        "page token forged",
        lambda w: pb.ListAccountsRequest(page_token=NOT_A_TOKEN),
        INVALID,
        "page_token",
    ),
    case(S + "ListAccounts", "query over-long", lambda w: pb.ListAccountsRequest(query=long(201)), INVALID, "query"),
    case(S + "ListAccounts", "status out of the enum", lambda w: pb.ListAccountsRequest(status=9), INVALID, "status"),
    case(S + "ListAccounts", "query SQL-looking finds nothing", lambda w: pb.ListAccountsRequest(query=SQL), OK),
    case(S + "ListAccounts", "query LIKE wildcards", lambda w: pb.ListAccountsRequest(query="%_%"), OK),
    # --- UpdateAccount
    case(
        S + "UpdateAccount",
        "update mask missing",
        lambda w: pb.UpdateAccountRequest(account=account_pb2.Account(account_id=w.account_id, display_name="X")),
        INVALID,
        "update_mask",
    ),
    case(
        S + "UpdateAccount", "update mask names status", lambda w: update(w, "status", status=3), INVALID, "update_mask"
    ),
    case(
        S + "UpdateAccount", "update mask names an unknown field", lambda w: update(w, "nope"), INVALID, "update_mask"
    ),
    case(
        S + "UpdateAccount",
        "time zone invalid",
        lambda w: update(w, "time_zone", time_zone="Europe/Atlantis"),
        INVALID,
        "account.time_zone",
    ),
    case(
        S + "UpdateAccount",
        "display name with NUL",
        lambda w: update(w, "display_name", display_name=NUL),
        INVALID,
        "account.display_name",
    ),
    case(
        S + "UpdateAccount",
        "bill cycle day 0",
        lambda w: update(w, "billing_profile.bill_cycle_day", billing_profile=profile(bill_cycle_day=0)),
        INVALID,
        "account.billing_profile.bill_cycle_day",
    ),
    case(
        S + "UpdateAccount",
        "currency changed once charged",
        lambda w: update(w, "currency_code", currency_code="USD"),
        FAILED,
    ),
    case(
        S + "UpdateAccount",
        "account id not a UUID",
        lambda w: pb.UpdateAccountRequest(
            account=account_pb2.Account(account_id=NOT_UUID, display_name="X"),
            update_mask=FieldMask(paths=["display_name"]),
        ),
        INVALID,
        "account.account_id",
    ),
    case(
        S + "UpdateAccount",
        "unknown account",
        lambda w: pb.UpdateAccountRequest(
            account=account_pb2.Account(account_id=UNKNOWN, display_name="X"),
            update_mask=FieldMask(paths=["display_name"]),
        ),
        NOT_FOUND,
    ),
    case(
        S + "UpdateAccount",
        "stale etag",
        lambda w: pb.UpdateAccountRequest(
            account=account_pb2.Account(account_id=w.account_id, display_name="X", etag="v0-stale"),
            update_mask=FieldMask(paths=["display_name"]),
        ),
        ABORTED,
        reason="ETAG_MISMATCH",
    ),
    case(
        S + "UpdateAccount",
        "closed account",
        lambda w: pb.UpdateAccountRequest(
            account=account_pb2.Account(account_id=w.closed_account_id, display_name="Reabierta"),
            update_mask=FieldMask(paths=["display_name"]),
        ),
        FAILED,
    ),
    # --- SuspendAccount / ReinstateAccount / CloseAccount / ErasePersonalData
    *ids(
        "SuspendAccount",
        "account_id",
        lambda w, v: pb.SuspendAccountRequest(account_id=v, reason="r", actor=MANUAL),
    ),
    case(
        S + "SuspendAccount",
        "reason missing",
        lambda w: pb.SuspendAccountRequest(account_id=w.account_id, actor=MANUAL),
        INVALID,
        "reason",
    ),
    case(
        S + "SuspendAccount",
        "reason over-long",
        lambda w: pb.SuspendAccountRequest(account_id=w.account_id, reason=long(5000), actor=MANUAL),
        INVALID,
        "reason",
    ),
    case(
        S + "SuspendAccount",
        "actor unspecified",
        lambda w: pb.SuspendAccountRequest(account_id=w.account_id, reason="r"),
        INVALID,
        "actor",
    ),
    case(
        S + "SuspendAccount",
        "closed account",
        lambda w: pb.SuspendAccountRequest(account_id=w.closed_account_id, reason="r", actor=MANUAL),
        FAILED,
    ),
    case(
        S + "SuspendAccount",
        "request id not a UUID",
        lambda w: pb.SuspendAccountRequest(account_id=w.account_id, reason="r", actor=MANUAL, request_id=NOT_UUID),
        INVALID,
        "request_id",
    ),
    *ids(
        "ReinstateAccount",
        "account_id",
        lambda w, v: pb.ReinstateAccountRequest(account_id=v, reason="r", actor=MANUAL),
    ),
    case(
        S + "ReinstateAccount",
        "an active account",
        lambda w: pb.ReinstateAccountRequest(account_id=w.account_id, reason="r", actor=MANUAL),
        FAILED,
    ),
    case(
        S + "ReinstateAccount",
        "closed account",
        lambda w: pb.ReinstateAccountRequest(account_id=w.closed_account_id, reason="r", actor=MANUAL),
        FAILED,
    ),
    case(
        S + "ReinstateAccount",
        "reason with NUL",
        lambda w: pb.ReinstateAccountRequest(account_id=w.suspended_account_id, reason=NUL, actor=MANUAL),
        INVALID,
        "reason",
    ),
    *ids("CloseAccount", "account_id", lambda w, v: pb.CloseAccountRequest(account_id=v, reason="r", actor=MANUAL)),
    case(
        S + "CloseAccount",
        "forced without a reason",
        lambda w: pb.CloseAccountRequest(account_id=w.account_id, actor=MANUAL, force=True),
        INVALID,
        "reason",
    ),
    case(
        S + "CloseAccount",
        "closed account",
        lambda w: pb.CloseAccountRequest(account_id=w.closed_account_id, reason="again", actor=MANUAL),
        FAILED,
    ),
    *ids("ErasePersonalData", "account_id", lambda w, v: pb.ErasePersonalDataRequest(account_id=v)),
    case(
        S + "ErasePersonalData",
        "an active account",
        lambda w: pb.ErasePersonalDataRequest(account_id=w.account_id),
        FAILED,
    ),
    case(
        S + "ErasePersonalData",
        "request id not a UUID",
        lambda w: pb.ErasePersonalDataRequest(account_id=w.closed_account_id, request_id=SCRIPT),
        INVALID,
        "request_id",
    ),
    *ids("GetAccountOverview", "account_id", lambda w, v: pb.GetAccountOverviewRequest(account_id=v)),
    # --- Contacts
    *ids("AddContact", "account_id", lambda w, v: pb.AddContactRequest(account_id=v, contact=email("a@example.com"))),
    case(
        S + "AddContact", "contact missing", lambda w: pb.AddContactRequest(account_id=w.account_id), INVALID, "contact"
    ),
    case(
        S + "AddContact",
        "no channel",
        lambda w: pb.AddContactRequest(
            account_id=w.account_id, contact=contact_pb2.Contact(role=contact_pb2.CONTACT_ROLE_BILLING, name="X")
        ),
        INVALID,
        "contact.channel",
    ),
    case(
        S + "AddContact",
        "email malformed",
        lambda w: pb.AddContactRequest(account_id=w.account_id, contact=email("not-an-email")),
        INVALID,
        "contact.email",
    ),
    case(
        S + "AddContact",
        "email script-looking",
        lambda w: pb.AddContactRequest(account_id=w.account_id, contact=email(f"{SCRIPT}@example.com")),
        INVALID,
        "contact.email",
    ),
    case(
        S + "AddContact",
        "email over-long",
        lambda w: pb.AddContactRequest(account_id=w.account_id, contact=email(long(300) + "@example.com")),
        INVALID,
        "contact.email",
    ),
    case(
        S + "AddContact",
        "phone not E.164",
        lambda w: pb.AddContactRequest(
            account_id=w.account_id, contact=contact_pb2.Contact(role=contact_pb2.CONTACT_ROLE_PRIMARY, phone="12345")
        ),
        INVALID,
        "contact.phone",
    ),
    case(
        S + "AddContact",
        "postal address without a country",
        lambda w: pb.AddContactRequest(
            account_id=w.account_id,
            contact=contact_pb2.Contact(
                role=contact_pb2.CONTACT_ROLE_PRIMARY,
                postal_address=postal_address_pb2.PostalAddress(address_lines=["Calle Mayor 1"]),
            ),
        ),
        INVALID,
        "contact.postal_address.region_code",
    ),
    case(
        S + "AddContact",
        "role out of the enum",
        lambda w: pb.AddContactRequest(
            account_id=w.account_id, contact=contact_pb2.Contact(role=99, email="a@example.com")
        ),
        INVALID,
        "contact.role",
    ),
    case(
        S + "AddContact",
        "name with NUL",
        lambda w: pb.AddContactRequest(
            account_id=w.account_id,
            contact=contact_pb2.Contact(role=contact_pb2.CONTACT_ROLE_BILLING, name=NUL, email="a@example.com"),
        ),
        INVALID,
        "contact.name",
    ),
    case(
        S + "AddContact",
        "closed account",
        lambda w: pb.AddContactRequest(account_id=w.closed_account_id, contact=email("a@example.com")),
        FAILED,
    ),
    case(
        S + "UpdateContact",
        "update mask missing",
        lambda w: pb.UpdateContactRequest(
            contact=contact_pb2.Contact(account_id=w.account_id, contact_id=w.contact_id, email="b@example.com")
        ),
        INVALID,
        "update_mask",
    ),
    case(
        S + "UpdateContact",
        "email malformed",
        lambda w: pb.UpdateContactRequest(
            contact=contact_pb2.Contact(account_id=w.account_id, contact_id=w.contact_id, email="@@"),
            update_mask=FieldMask(paths=["email"]),
        ),
        INVALID,
        "contact.email",
    ),
    case(
        S + "UpdateContact",
        "contact id not a UUID",
        lambda w: pb.UpdateContactRequest(
            contact=contact_pb2.Contact(account_id=w.account_id, contact_id=NOT_UUID, email="b@example.com"),
            update_mask=FieldMask(paths=["email"]),
        ),
        INVALID,
        "contact.contact_id",
    ),
    case(
        S + "UpdateContact",
        "unknown contact",
        lambda w: pb.UpdateContactRequest(
            contact=contact_pb2.Contact(account_id=w.account_id, contact_id=UNKNOWN, email="b@example.com"),
            update_mask=FieldMask(paths=["email"]),
        ),
        NOT_FOUND,
    ),
    *ids("RemoveContact", "contact_id", lambda w, v: pb.RemoveContactRequest(account_id=w.account_id, contact_id=v)),
    case(
        S + "RemoveContact",
        "account id not a UUID",
        lambda w: pb.RemoveContactRequest(account_id=NOT_UUID, contact_id=w.contact_id),
        INVALID,
        "account_id",
    ),
    *ids("ListContacts", "account_id", lambda w, v: pb.ListContactsRequest(account_id=v), unknown=False),
    case(
        S + "ListContacts",
        "page token forged",
        lambda w: pb.ListContactsRequest(account_id=w.account_id, page_token=NOT_A_TOKEN),
        INVALID,
        "page_token",
    ),
    # --- Provisioned services
    *ids(
        "CreateProvisionedService",
        "account_id",
        lambda w, v: pb.CreateProvisionedServiceRequest(
            account_id=v, service=provisioned_service_pb2.ProvisionedService(kind="site", identifier="s1")
        ),
    ),
    case(
        S + "CreateProvisionedService",
        "kind missing",
        lambda w: pb.CreateProvisionedServiceRequest(
            account_id=w.account_id, service=provisioned_service_pb2.ProvisionedService(identifier="s1")
        ),
        INVALID,
        "service.kind",
    ),
    case(
        S + "CreateProvisionedService",
        "identifier over-long",
        lambda w: pb.CreateProvisionedServiceRequest(
            account_id=w.account_id,
            service=provisioned_service_pb2.ProvisionedService(kind="site", identifier=long(5000)),
        ),
        INVALID,
        "service.identifier",
    ),
    case(
        S + "CreateProvisionedService",
        "identifier taken",
        lambda w: pb.CreateProvisionedServiceRequest(
            account_id=w.account_id,
            service=provisioned_service_pb2.ProvisionedService(kind="mobile_line", identifier="+34600000001"),
        ),
        EXISTS,
    ),
    case(
        S + "CreateProvisionedService",
        "closed account",
        lambda w: pb.CreateProvisionedServiceRequest(
            account_id=w.closed_account_id,
            service=provisioned_service_pb2.ProvisionedService(kind="site", identifier="s"),
        ),
        FAILED,
    ),
    *ids(
        "ListProvisionedServices",
        "account_id",
        lambda w, v: pb.ListProvisionedServicesRequest(account_id=v),
        unknown=False,
    ),
    case(
        S + "ListProvisionedServices",
        "page size negative",
        lambda w: pb.ListProvisionedServicesRequest(account_id=w.account_id, page_size=-5),
        INVALID,
        "page_size",
    ),
    *ids(
        "SetProvisionedServiceStatus",
        "service_id",
        lambda w, v: pb.SetProvisionedServiceStatusRequest(
            account_id=w.account_id,
            service_id=v,
            status=provisioned_service_pb2.SERVICE_STATUS_SUSPENDED,
            reason="r",
            actor=MANUAL,
        ),
    ),
    case(
        S + "SetProvisionedServiceStatus",
        "status unspecified",
        lambda w: pb.SetProvisionedServiceStatusRequest(
            account_id=w.account_id, service_id=w.service_id, reason="r", actor=MANUAL
        ),
        INVALID,
        "status",
    ),
    case(
        S + "SetProvisionedServiceStatus",
        "reason missing",
        lambda w: pb.SetProvisionedServiceStatusRequest(
            account_id=w.account_id,
            service_id=w.service_id,
            status=provisioned_service_pb2.SERVICE_STATUS_SUSPENDED,
            actor=MANUAL,
        ),
        INVALID,
        "reason",
    ),
    # --- Payment methods
    *ids(
        "AddPaymentMethod",
        "account_id",
        lambda w, v: pb.AddPaymentMethodRequest(
            account_id=v, payment_method=payment_method_pb2.PaymentMethod(pay_on_invoice={})
        ),
    ),
    case(
        S + "AddPaymentMethod",
        "payment method missing",
        lambda w: pb.AddPaymentMethodRequest(account_id=w.account_id),
        INVALID,
        "payment_method",
    ),
    case(
        S + "AddPaymentMethod",
        "no details",
        lambda w: pb.AddPaymentMethodRequest(
            account_id=w.account_id, payment_method=payment_method_pb2.PaymentMethod()
        ),
        INVALID,
        "payment_method",
    ),
    case(
        S + "AddPaymentMethod",
        "IBAN failing mod-97",
        lambda w: pb.AddPaymentMethodRequest(account_id=w.account_id, payment_method=sepa("DE89370400440532013001")),
        INVALID,
        "payment_method.sepa_direct_debit.iban",
    ),
    case(
        S + "AddPaymentMethod",
        "IBAN SQL-looking",
        lambda w: pb.AddPaymentMethodRequest(account_id=w.account_id, payment_method=sepa(SQL)),
        INVALID,
        "payment_method.sepa_direct_debit.iban",
    ),
    case(
        S + "AddPaymentMethod",
        "card expiry month 13",
        lambda w: pb.AddPaymentMethodRequest(account_id=w.account_id, payment_method=card(expiry_month=13)),
        INVALID,
        "payment_method.card.expiry_month",
    ),
    case(
        S + "AddPaymentMethod",
        "card expired",
        lambda w: pb.AddPaymentMethodRequest(account_id=w.account_id, payment_method=card(expiry_year=2001)),
        INVALID,
        "payment_method.card.expiry_year",
    ),
    case(
        S + "AddPaymentMethod",
        "card last4 not digits",
        lambda w: pb.AddPaymentMethodRequest(account_id=w.account_id, payment_method=card(last4="42a2")),
        INVALID,
        "payment_method.card.last4",
    ),
    case(
        S + "AddPaymentMethod",
        "closed account",
        lambda w: pb.AddPaymentMethodRequest(
            account_id=w.closed_account_id, payment_method=payment_method_pb2.PaymentMethod(pay_on_invoice={})
        ),
        FAILED,
    ),
    *ids("ListPaymentMethods", "account_id", lambda w, v: pb.ListPaymentMethodsRequest(account_id=v), unknown=False),
    *ids(
        "RemovePaymentMethod",
        "payment_method_id",
        lambda w, v: pb.RemovePaymentMethodRequest(account_id=w.account_id, payment_method_id=v),
    ),
    *ids(
        "SetDefaultPaymentMethod",
        "payment_method_id",
        lambda w, v: pb.SetDefaultPaymentMethodRequest(account_id=w.account_id, payment_method_id=v),
    ),
    case(
        S + "SetDefaultPaymentMethod",
        "account id not a UUID",
        lambda w: pb.SetDefaultPaymentMethodRequest(account_id=SQL, payment_method_id=w.payment_method_id),
        INVALID,
        "account_id",
    ),
    # --- Purchases
    *ids("CreatePurchase", "account_id", lambda w, v: purchase(w, v)),
    case(
        S + "CreatePurchase",
        "purchase missing",
        lambda w: pb.CreatePurchaseRequest(account_id=w.account_id),
        INVALID,
        "purchase",
    ),
    case(
        S + "CreatePurchase",
        "offer code missing",
        lambda w: purchase(w, charge_offer_code=""),
        INVALID,
        "purchase.charge_offer_code",
    ),
    case(S + "CreatePurchase", "offer code unknown", lambda w: purchase(w, charge_offer_code="no_such_offer"), FAILED),
    case(
        S + "CreatePurchase",
        "offer code SQL-looking",
        lambda w: purchase(w, charge_offer_code=SQL),
        # Looked up as a value: no version in force (CHARGE_OFFER_NOT_PURCHASABLE), like any unknown code.
        FAILED,
    ),
    case(S + "CreatePurchase", "quantity NaN", lambda w: purchase(w, quantity="NaN"), INVALID, "purchase.quantity"),
    case(
        S + "CreatePurchase",
        "quantity Infinity",
        lambda w: purchase(w, quantity="Infinity"),
        INVALID,
        "purchase.quantity",
    ),
    case(S + "CreatePurchase", "quantity negative", lambda w: purchase(w, quantity="-1"), INVALID, "purchase.quantity"),
    case(S + "CreatePurchase", "quantity zero", lambda w: purchase(w, quantity="0"), INVALID, "purchase.quantity"),
    case(S + "CreatePurchase", "quantity huge", lambda w: purchase(w, quantity="1e400"), INVALID, "purchase.quantity"),
    case(
        S + "CreatePurchase",
        "quantity not a number",
        lambda w: purchase(w, quantity="two"),
        INVALID,
        "purchase.quantity",
    ),
    case(
        S + "CreatePurchase",
        "end before start",
        lambda w: purchase(
            w, start_time=to_timestamp(w.now + timedelta(days=2)), end_time=to_timestamp(w.now + timedelta(days=1))
        ),
        INVALID,
        "purchase.end_time",
    ),
    case(
        S + "CreatePurchase",
        "service id not a UUID",
        lambda w: purchase(w, service_id=NOT_UUID),
        INVALID,
        "purchase.service_id",
    ),
    case(
        S + "CreatePurchase",
        "price override in another currency",
        lambda w: purchase(
            w, price_overrides=[purchase_pb2.PriceOverride(charge_code="api_calls", price=money(1, currency="USD"))]
        ),
        INVALID,
        "purchase.price_overrides[0].price",
    ),
    case(
        S + "CreatePurchase",
        "price override negative",
        lambda w: purchase(w, price_overrides=[purchase_pb2.PriceOverride(charge_code="api_calls", price=money(-1))]),
        INVALID,
        "purchase.price_overrides[0].price",
    ),
    case(
        S + "CreatePurchase",
        "price override of an unknown charge",
        lambda w: purchase(w, price_overrides=[purchase_pb2.PriceOverride(charge_code="nope", price=money(1))]),
        INVALID,
        "purchase.price_overrides[0].charge_code",
    ),
    case(
        S + "CreatePurchase",
        "an offer in another currency (USD account)",
        lambda w: purchase(w, w.usd_account_id),
        FAILED,
    ),
    case(S + "CreatePurchase", "closed account", lambda w: purchase(w, w.closed_account_id), FAILED),
    case(
        S + "CreatePurchase",
        "request id not a UUID",
        lambda w: pb.CreatePurchaseRequest(
            account_id=w.account_id, purchase=purchase_pb2.Purchase(charge_offer_code=w.offer_code), request_id="1;--"
        ),
        INVALID,
        "request_id",
    ),
    *ids(
        "EndPurchase",
        "purchase_id",
        lambda w, v: pb.EndPurchaseRequest(
            account_id=w.account_id, purchase_id=v, end_time=to_timestamp(w.now + timedelta(days=40))
        ),
    ),
    case(
        S + "EndPurchase",
        "end time missing",
        lambda w: pb.EndPurchaseRequest(account_id=w.account_id, purchase_id=w.purchase_id),
        INVALID,
        "end_time",
    ),
    case(
        S + "EndPurchase",
        "end time in the past",
        lambda w: pb.EndPurchaseRequest(
            account_id=w.account_id, purchase_id=w.purchase_id, end_time=to_timestamp(w.now - timedelta(days=400))
        ),
        INVALID,
        "end_time",
    ),
    *ids(
        "CancelPurchase", "purchase_id", lambda w, v: pb.CancelPurchaseRequest(account_id=w.account_id, purchase_id=v)
    ),
    case(
        S + "CancelPurchase",
        "a purchase that started",
        lambda w: pb.CancelPurchaseRequest(account_id=w.account_id, purchase_id=w.purchase_id),
        FAILED,
    ),
    *ids("ListPurchases", "account_id", lambda w, v: pb.ListPurchasesRequest(account_id=v), unknown=False),
    case(
        S + "ListPurchases",
        "page token forged",
        lambda w: pb.ListPurchasesRequest(account_id=w.account_id, page_token=NOT_A_TOKEN),
        INVALID,
        "page_token",
    ),
]
