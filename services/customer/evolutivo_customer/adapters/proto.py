"""Translation between the account model and the evolutivo.customer.v1 messages."""

from __future__ import annotations

from decimal import Decimal

from evolutivo.customer.v1 import account_pb2, provisioned_service_pb2
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.money import from_money, to_money
from evolutivo_runtime.timestamps import from_date, to_date, to_timestamp

from evolutivo_customer.domain.model import (
    Account,
    AccountDetails,
    AccountStatus,
    AccountType,
    BillingFrequency,
    BillingProfile,
    DeliveryMethod,
    DeliveryPreferences,
    ProvisionedService,
    ServiceStatus,
    StatusActor,
)

TYPES: dict[int, AccountType] = {
    account_pb2.ACCOUNT_TYPE_INDIVIDUAL: AccountType.INDIVIDUAL,
    account_pb2.ACCOUNT_TYPE_BUSINESS: AccountType.BUSINESS,
}
STATUSES: dict[int, AccountStatus] = {
    account_pb2.ACCOUNT_STATUS_ACTIVE: AccountStatus.ACTIVE,
    account_pb2.ACCOUNT_STATUS_SUSPENDED: AccountStatus.SUSPENDED,
    account_pb2.ACCOUNT_STATUS_CLOSED: AccountStatus.CLOSED,
}
ACTORS: dict[int, StatusActor] = {
    account_pb2.STATUS_ACTOR_MANUAL: StatusActor.MANUAL,
    account_pb2.STATUS_ACTOR_COLLECTIONS: StatusActor.COLLECTIONS,
    account_pb2.STATUS_ACTOR_FRAUD: StatusActor.FRAUD,
}
FREQUENCIES: dict[int, BillingFrequency] = {
    account_pb2.BILLING_FREQUENCY_MONTHLY: BillingFrequency.MONTHLY,
    account_pb2.BILLING_FREQUENCY_QUARTERLY: BillingFrequency.QUARTERLY,
    account_pb2.BILLING_FREQUENCY_SEMI_ANNUAL: BillingFrequency.SEMI_ANNUAL,
    account_pb2.BILLING_FREQUENCY_ANNUAL: BillingFrequency.ANNUAL,
}
DELIVERY_METHODS: dict[int, DeliveryMethod] = {
    account_pb2.DELIVERY_METHOD_EMAIL: DeliveryMethod.EMAIL,
    account_pb2.DELIVERY_METHOD_POSTAL: DeliveryMethod.POSTAL,
    account_pb2.DELIVERY_METHOD_PORTAL: DeliveryMethod.PORTAL,
}
SERVICE_STATUSES: dict[int, ServiceStatus] = {
    provisioned_service_pb2.SERVICE_STATUS_ACTIVE: ServiceStatus.ACTIVE,
    provisioned_service_pb2.SERVICE_STATUS_SUSPENDED: ServiceStatus.SUSPENDED,
    provisioned_service_pb2.SERVICE_STATUS_CLOSED: ServiceStatus.CLOSED,
}


def _invert(mapping: dict[int, object]) -> dict[object, int]:
    return {v: k for k, v in mapping.items()}


_TYPES_PB = _invert(TYPES)  # type: ignore[arg-type]
_STATUSES_PB = _invert(STATUSES)  # type: ignore[arg-type]
_ACTORS_PB = _invert(ACTORS)  # type: ignore[arg-type]
_FREQUENCIES_PB = _invert(FREQUENCIES)  # type: ignore[arg-type]
_DELIVERY_PB = _invert(DELIVERY_METHODS)  # type: ignore[arg-type]
_SERVICE_STATUSES_PB = _invert(SERVICE_STATUSES)  # type: ignore[arg-type]


def account_type_from_pb(value: int, field: str = "account.type") -> AccountType:
    if value not in TYPES:
        raise InvalidArgument(field, "must be ACCOUNT_TYPE_INDIVIDUAL or ACCOUNT_TYPE_BUSINESS")
    return TYPES[value]


def actor_from_pb(value: int, field: str = "actor") -> StatusActor:
    if value not in ACTORS:
        raise InvalidArgument(field, "is required: STATUS_ACTOR_MANUAL, STATUS_ACTOR_COLLECTIONS or STATUS_ACTOR_FRAUD")
    return ACTORS[value]


def details_from_pb(pb: account_pb2.Account) -> AccountDetails:
    return AccountDetails(
        display_name=pb.display_name,
        currency_code=pb.currency_code,
        time_zone=pb.time_zone,
        locale=pb.locale,
        country_code=pb.country_code,
        tax_id=pb.tax_id,
        date_of_birth=from_date(pb.date_of_birth, "account.date_of_birth") if pb.HasField("date_of_birth") else None,
        labels=dict(pb.labels),
    )


def profile_from_pb(pb: account_pb2.BillingProfile, currency_code: str) -> BillingProfile:
    prefix = "account.billing_profile"
    if pb.frequency and pb.frequency not in FREQUENCIES:
        raise InvalidArgument(f"{prefix}.frequency", "is not a known billing frequency")
    if pb.delivery.method and pb.delivery.method not in DELIVERY_METHODS:
        raise InvalidArgument(f"{prefix}.delivery.method", "is not a known delivery method")
    threshold: Decimal | None = None
    if pb.HasField("threshold_amount"):
        if pb.threshold_amount.currency_code not in ("", currency_code):
            raise InvalidArgument(
                f"{prefix}.threshold_amount.currency_code", f"must be the account's currency, {currency_code}"
            )
        try:
            threshold = from_money(pb.threshold_amount)
        except ValueError as exc:
            raise InvalidArgument(f"{prefix}.threshold_amount", str(exc)) from None
    return BillingProfile(
        bill_cycle_day=pb.bill_cycle_day,
        frequency=FREQUENCIES.get(pb.frequency, BillingFrequency.MONTHLY),
        payment_terms_days=pb.payment_terms_days,
        threshold_amount=threshold,
        delivery=DeliveryPreferences(
            method=DELIVERY_METHODS.get(pb.delivery.method, DeliveryMethod.EMAIL),
            attach_pdf=pb.delivery.attach_pdf if pb.HasField("delivery") else True,
        ),
        collections_exempt=pb.collections_exempt,
        collections_scenario_id=pb.collections_scenario_id,
    )


def profile_to_pb(profile: BillingProfile, currency_code: str) -> account_pb2.BillingProfile:
    pb = account_pb2.BillingProfile(
        bill_cycle_day=profile.bill_cycle_day,
        frequency=_FREQUENCIES_PB[profile.frequency],  # type: ignore[arg-type]
        payment_terms_days=profile.payment_terms_days,
        delivery=account_pb2.DeliveryPreferences(
            method=_DELIVERY_PB[profile.delivery.method],  # type: ignore[arg-type]
            attach_pdf=profile.delivery.attach_pdf,
        ),
        collections_exempt=profile.collections_exempt,
        collections_scenario_id=profile.collections_scenario_id,
    )
    if profile.threshold_amount is not None:
        pb.threshold_amount.CopyFrom(to_money(profile.threshold_amount, currency_code))
    return pb


def account_to_pb(account: Account) -> account_pb2.Account:
    d = account.details
    pb = account_pb2.Account(
        account_id=str(account.account_id),
        account_number=account.account_number,
        type=_TYPES_PB[account.type],  # type: ignore[arg-type]
        display_name=d.display_name,
        currency_code=d.currency_code,
        time_zone=d.time_zone,
        locale=d.locale,
        status=_STATUSES_PB[account.status],  # type: ignore[arg-type]
        billing_profile=profile_to_pb(account.billing_profile, d.currency_code),
        labels=d.labels,
        create_time=to_timestamp(account.create_time),
        country_code=d.country_code,
        tax_id=d.tax_id,
        date_of_birth=to_date(d.date_of_birth),
        update_time=to_timestamp(account.update_time),
        etag=account.etag,
        personal_data_erased=account.personal_data_erased_at is not None,
    )
    if account.status_change_time is not None:
        pb.last_status_change.CopyFrom(
            account_pb2.StatusChange(
                status=_STATUSES_PB[account.status],  # type: ignore[arg-type]
                reason=account.status_reason,
                actor=_ACTORS_PB.get(account.status_actor, 0),  # type: ignore[arg-type]
                actor_id=account.status_actor_id,
                change_time=to_timestamp(account.status_change_time),
            )
        )
    return pb


def service_status_from_pb(value: int, field: str = "status") -> ServiceStatus:
    if value not in SERVICE_STATUSES:
        raise InvalidArgument(field, "must be SERVICE_STATUS_ACTIVE, SERVICE_STATUS_SUSPENDED or SERVICE_STATUS_CLOSED")
    return SERVICE_STATUSES[value]


def service_status_to_pb(status: ServiceStatus | None) -> int:
    return _SERVICE_STATUSES_PB[status] if status is not None else 0


def service_to_pb(service: ProvisionedService) -> provisioned_service_pb2.ProvisionedService:
    return provisioned_service_pb2.ProvisionedService(
        service_id=str(service.service_id),
        account_id=str(service.account_id),
        kind=service.kind,
        identifier=service.identifier,
        description=service.description,
        status=service_status_to_pb(service.status),  # type: ignore[arg-type]
        suspended_with_account=service.suspended_with_account,
        status_reason=service.status_reason,
        status_actor=_ACTORS_PB.get(service.status_actor, 0),  # type: ignore[arg-type]
        labels=service.labels,
        create_time=to_timestamp(service.create_time),
        update_time=to_timestamp(service.update_time),
    )
