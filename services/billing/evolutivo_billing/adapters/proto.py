"""Translation between the domain model and the evolutivo.billing.v1 messages (and customer's events)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

from evolutivo.billing.v1 import bill_unit_pb2
from evolutivo.customer.v1 import account_pb2
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.pagination import decode_token, encode_token
from google.protobuf.timestamp_pb2 import Timestamp

from evolutivo_billing.domain.model import BillingFrequency, BillingProfile, BillUnit, ListPosition

_FREQUENCIES = {
    BillingFrequency.MONTHLY: bill_unit_pb2.BILLING_FREQUENCY_MONTHLY,
    BillingFrequency.QUARTERLY: bill_unit_pb2.BILLING_FREQUENCY_QUARTERLY,
    BillingFrequency.SEMI_ANNUAL: bill_unit_pb2.BILLING_FREQUENCY_SEMI_ANNUAL,
    BillingFrequency.ANNUAL: bill_unit_pb2.BILLING_FREQUENCY_ANNUAL,
}
_CUSTOMER_FREQUENCIES = {
    account_pb2.BILLING_FREQUENCY_MONTHLY: BillingFrequency.MONTHLY,
    account_pb2.BILLING_FREQUENCY_QUARTERLY: BillingFrequency.QUARTERLY,
    account_pb2.BILLING_FREQUENCY_SEMI_ANNUAL: BillingFrequency.SEMI_ANNUAL,
    account_pb2.BILLING_FREQUENCY_ANNUAL: BillingFrequency.ANNUAL,
}


def unit_to_pb(unit: BillUnit) -> bill_unit_pb2.BillUnit:
    create_time = Timestamp()
    create_time.FromDatetime(unit.create_time)
    return bill_unit_pb2.BillUnit(
        bill_unit_id=str(unit.bill_unit_id),
        account_id=str(unit.account_id),
        currency_code=unit.currency_code,
        time_zone=unit.time_zone,
        bill_cycle_day=unit.profile.bill_cycle_day,
        frequency=_FREQUENCIES[unit.profile.frequency],
        payment_terms_days=unit.profile.payment_terms_days,
        create_time=create_time,
    )


def profile_from_customer_pb(pb: account_pb2.BillingProfile) -> BillingProfile:
    """The account's billing profile as customer published it. Unspecified frequency is monthly, as in customer."""
    if pb.frequency and pb.frequency not in _CUSTOMER_FREQUENCIES:
        raise ValueError(f"unknown customer billing frequency {pb.frequency}")
    return BillingProfile(
        bill_cycle_day=pb.bill_cycle_day,
        frequency=_CUSTOMER_FREQUENCIES.get(pb.frequency, BillingFrequency.MONTHLY),
        payment_terms_days=pb.payment_terms_days,
    )


# Page tokens: an opaque (base64) JSON cursor holding the last unit's sort key and the request's
# account filter, so a token is only honoured by a request with the filter it was issued for.
def page_token(position: ListPosition, account_id: uuid.UUID | None) -> str:
    cursor = {
        "t": position.create_time.isoformat(),
        "id": str(position.bill_unit_id),
        "a": str(account_id) if account_id else "",
    }
    return encode_token(json.dumps(cursor, separators=(",", ":")))


def position_from_token(token: str, account_id: uuid.UUID | None) -> ListPosition | None:
    """The position a page token resumes from; None for the first page."""
    cursor = decode_token(token)
    if not cursor:
        return None
    try:
        fields = json.loads(cursor)
        position = ListPosition(datetime.fromisoformat(fields["t"]), uuid.UUID(fields["id"]))
        filtered = fields["a"]
    except (ValueError, TypeError, KeyError):
        raise InvalidArgument("page_token", "is not a token this service issued") from None
    if position.create_time.utcoffset() is None:
        raise InvalidArgument("page_token", "is not a token this service issued")
    if filtered != (str(account_id) if account_id else ""):
        raise InvalidArgument("page_token", "was issued for a request with a different account_id")
    return position
