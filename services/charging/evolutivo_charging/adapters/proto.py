"""Translation between the domain model and the evolutivo.charging.v1 messages (and customer's events)."""

from __future__ import annotations

from evolutivo.charging.v1 import charging_account_pb2
from evolutivo.customer.v1 import account_pb2
from evolutivo_runtime.timestamps import to_timestamp
from google.protobuf.timestamp_pb2 import Timestamp

from evolutivo_charging.domain.model import ChargingAccount, ChargingAccountStatus

_STATUSES = {
    ChargingAccountStatus.ACTIVE: charging_account_pb2.CHARGING_ACCOUNT_STATUS_ACTIVE,
    ChargingAccountStatus.SUSPENDED: charging_account_pb2.CHARGING_ACCOUNT_STATUS_SUSPENDED,
    ChargingAccountStatus.CLOSED: charging_account_pb2.CHARGING_ACCOUNT_STATUS_CLOSED,
}
_CUSTOMER_STATUSES = {
    account_pb2.ACCOUNT_STATUS_ACTIVE: ChargingAccountStatus.ACTIVE,
    account_pb2.ACCOUNT_STATUS_SUSPENDED: ChargingAccountStatus.SUSPENDED,
    account_pb2.ACCOUNT_STATUS_CLOSED: ChargingAccountStatus.CLOSED,
}


def account_to_pb(account: ChargingAccount) -> charging_account_pb2.ChargingAccount:
    update_time = Timestamp()
    update_time.FromDatetime(account.update_time)
    return charging_account_pb2.ChargingAccount(
        account_id=str(account.account_id),
        currency_code=account.currency_code,
        time_zone=account.time_zone,
        status=_STATUSES[account.status],
        update_time=update_time,
        status_change_time=to_timestamp(account.status_change_time),
    )


def status_from_customer_pb(status: account_pb2.AccountStatus.ValueType) -> ChargingAccountStatus:
    """The account's status as customer published it; an unspecified or unknown status is a broken event."""
    try:
        return _CUSTOMER_STATUSES[status]
    except KeyError:
        raise ValueError(f"customer account status {status} has no charging counterpart") from None
