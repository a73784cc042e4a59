"""Translation between the domain model and the evolutivo.customer.v1 messages."""

from __future__ import annotations

from evolutivo.customer.v1 import account_pb2
from evolutivo_runtime.errors import InvalidArgument
from google.protobuf.timestamp_pb2 import Timestamp

from evolutivo_customer.domain.model import (
    Account,
    AccountStatus,
    AccountType,
    BillingFrequency,
    BillingProfile,
    NewAccount,
)

_TYPES = {
    account_pb2.ACCOUNT_TYPE_INDIVIDUAL: AccountType.INDIVIDUAL,
    account_pb2.ACCOUNT_TYPE_BUSINESS: AccountType.BUSINESS,
}
_STATUSES = {
    AccountStatus.ACTIVE: account_pb2.ACCOUNT_STATUS_ACTIVE,
    AccountStatus.SUSPENDED: account_pb2.ACCOUNT_STATUS_SUSPENDED,
    AccountStatus.CLOSED: account_pb2.ACCOUNT_STATUS_CLOSED,
}
_FREQUENCIES = {
    account_pb2.BILLING_FREQUENCY_MONTHLY: BillingFrequency.MONTHLY,
    account_pb2.BILLING_FREQUENCY_QUARTERLY: BillingFrequency.QUARTERLY,
    account_pb2.BILLING_FREQUENCY_SEMI_ANNUAL: BillingFrequency.SEMI_ANNUAL,
    account_pb2.BILLING_FREQUENCY_ANNUAL: BillingFrequency.ANNUAL,
}


def new_account_from_pb(pb: account_pb2.Account) -> NewAccount:
    if pb.type not in _TYPES:
        raise InvalidArgument("account.type", "must be ACCOUNT_TYPE_INDIVIDUAL or ACCOUNT_TYPE_BUSINESS")
    profile = None
    if pb.HasField("billing_profile"):
        p = pb.billing_profile
        frequency = _FREQUENCIES.get(p.frequency, BillingFrequency.MONTHLY) if p.frequency else BillingFrequency.MONTHLY
        if p.frequency and p.frequency not in _FREQUENCIES:
            raise InvalidArgument("account.billing_profile.frequency", "is not a known billing frequency")
        profile = BillingProfile(
            bill_cycle_day=p.bill_cycle_day,
            frequency=frequency,
            payment_terms_days=p.payment_terms_days,
        )
    return NewAccount(
        type=_TYPES[pb.type],
        display_name=pb.display_name,
        currency_code=pb.currency_code,
        time_zone=pb.time_zone,
        locale=pb.locale,
        billing_profile=profile,
        labels=dict(pb.labels),
    )


def account_to_pb(account: Account) -> account_pb2.Account:
    create_time = Timestamp()
    create_time.FromDatetime(account.create_time)
    frequency = {v: k for k, v in _FREQUENCIES.items()}[account.billing_profile.frequency]
    return account_pb2.Account(
        account_id=str(account.account_id),
        account_number=account.account_number,
        type={v: k for k, v in _TYPES.items()}[account.type],
        display_name=account.display_name,
        currency_code=account.currency_code,
        time_zone=account.time_zone,
        locale=account.locale,
        status=_STATUSES[account.status],
        billing_profile=account_pb2.BillingProfile(
            bill_cycle_day=account.billing_profile.bill_cycle_day,
            frequency=frequency,
            payment_terms_days=account.billing_profile.payment_terms_days,
        ),
        labels=account.labels,
        create_time=create_time,
    )
