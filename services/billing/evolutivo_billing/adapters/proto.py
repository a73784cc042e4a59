"""Translation between the domain model and the evolutivo.billing.v1 messages (and customer's events)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from decimal import Decimal

from evolutivo.billing.v1 import bill_cycle_pb2, bill_unit_pb2, billing_service_pb2, billing_summary_pb2
from evolutivo.customer.v1 import account_pb2
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.money import from_money, to_money
from evolutivo_runtime.pagination import decode_keyset, decode_token, encode_keyset, encode_token
from evolutivo_runtime.timestamps import to_date, to_timestamp
from google.protobuf.timestamp_pb2 import Timestamp

from evolutivo_billing.domain.cycles import BillCycle, BillCycleStatus
from evolutivo_billing.domain.model import (
    AccountStatus,
    BillingFrequency,
    BillingProfile,
    BillingSummary,
    BillUnit,
    ListPosition,
)

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
_STATUSES = {
    AccountStatus.ACTIVE: bill_unit_pb2.ACCOUNT_STATUS_ACTIVE,
    AccountStatus.SUSPENDED: bill_unit_pb2.ACCOUNT_STATUS_SUSPENDED,
    AccountStatus.CLOSED: bill_unit_pb2.ACCOUNT_STATUS_CLOSED,
}
_CYCLE_STATUSES = {
    BillCycleStatus.OPEN: bill_cycle_pb2.BILL_CYCLE_STATUS_OPEN,
    BillCycleStatus.CLOSED: bill_cycle_pb2.BILL_CYCLE_STATUS_CLOSED,
}
_CUSTOMER_STATUSES = {
    account_pb2.ACCOUNT_STATUS_ACTIVE: AccountStatus.ACTIVE,
    account_pb2.ACCOUNT_STATUS_SUSPENDED: AccountStatus.SUSPENDED,
    account_pb2.ACCOUNT_STATUS_CLOSED: AccountStatus.CLOSED,
}


def unit_to_pb(unit: BillUnit) -> bill_unit_pb2.BillUnit:
    create_time = Timestamp()
    create_time.FromDatetime(unit.create_time)
    pb = bill_unit_pb2.BillUnit(
        bill_unit_id=str(unit.bill_unit_id),
        account_id=str(unit.account_id),
        currency_code=unit.currency_code,
        time_zone=unit.time_zone,
        bill_cycle_day=unit.profile.bill_cycle_day,
        frequency=_FREQUENCIES[unit.profile.frequency],
        payment_terms_days=unit.profile.payment_terms_days,
        create_time=create_time,
        account_status=_STATUSES[unit.account_status],
        account_status_change_time=to_timestamp(unit.account_status_change_time),
    )
    if unit.threshold_amount is not None:
        pb.threshold_amount.CopyFrom(to_money(unit.threshold_amount, unit.currency_code))
    if unit.pending_profile is not None:
        pending = unit.pending_profile
        pb.pending_profile.CopyFrom(
            bill_unit_pb2.PendingBillingProfile(
                bill_cycle_day=pending.bill_cycle_day,
                frequency=_FREQUENCIES[pending.frequency],
                payment_terms_days=pending.payment_terms_days,
                change_time=to_timestamp(unit.profile_change_time),
            )
        )
    return pb


def cycle_to_pb(cycle: BillCycle) -> bill_cycle_pb2.BillCycle:
    return bill_cycle_pb2.BillCycle(
        bill_cycle_id=str(cycle.bill_cycle_id),
        bill_unit_id=str(cycle.bill_unit_id),
        account_id=str(cycle.account_id),
        sequence=cycle.sequence,
        start_time=to_timestamp(cycle.start_time),
        end_time=to_timestamp(cycle.end_time),
        start_date=to_date(cycle.start_date),
        end_date=to_date(cycle.end_date),
        status=_CYCLE_STATUSES[cycle.status],
        close_time=to_timestamp(cycle.close_time),
        time_zone=cycle.time_zone,
    )


def summary_to_pb(summary: BillingSummary) -> billing_service_pb2.GetBillingSummaryResponse:
    currency = summary.bill_unit.currency_code
    c = summary.collections
    return billing_service_pb2.GetBillingSummaryResponse(
        bill_unit=unit_to_pb(summary.bill_unit),
        open_bills=[
            billing_summary_pb2.BillSummary(
                bill_id=str(b.bill_id),
                bill_number=b.bill_number,
                total=to_money(b.total, currency),
                open_amount=to_money(b.open_amount, currency),
                due_date=to_date(b.due_date),
                overdue=b.is_overdue(summary.today),
            )
            for b in summary.open_bills
        ],
        overdue_total=to_money(summary.overdue_total, currency),
        collections=billing_summary_pb2.CollectionsSummary(
            in_collections=c.in_collections,
            case_id=c.case_id,
            stage=c.stage,
            overdue_amount=to_money(c.overdue_amount, currency),
            days_past_due=c.days_past_due,
        ),
    )


def status_from_customer_pb(status: account_pb2.AccountStatus.ValueType) -> AccountStatus:
    """The account's status as customer published it; an unspecified or unknown status is a broken event."""
    try:
        return _CUSTOMER_STATUSES[status]
    except KeyError:
        raise ValueError(f"customer account status {status} has no billing counterpart") from None


def threshold_from_customer_pb(pb: account_pb2.BillingProfile, currency_code: str) -> Decimal | None:
    """The profile's threshold in the account's currency; None when unset or zero. One in another
    currency is a broken event."""
    if not pb.HasField("threshold_amount"):
        return None
    if pb.threshold_amount.currency_code and pb.threshold_amount.currency_code != currency_code:
        raise ValueError(f"threshold in {pb.threshold_amount.currency_code}, the account bills in {currency_code}")
    amount = from_money(pb.threshold_amount)
    return amount if amount > 0 else None


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


# ListBillCycles page tokens: the last cycle's sequence (the next page lists lower ones) and the
# account they were issued for.
def cycles_page_token(before: int, account_id: uuid.UUID) -> str:
    return encode_keyset(str(before), str(account_id))


def cycles_before_from_token(token: str, account_id: uuid.UUID) -> int | None:
    """The sequence a ListBillCycles page token resumes below; None for the first page."""
    key = decode_keyset(token, 2)
    if key is None:
        return None
    before, issued_for = key
    if not (before.isascii() and before.isdigit()):
        raise InvalidArgument("page_token", "is not a token this service issued")
    if issued_for != str(account_id):
        raise InvalidArgument("page_token", "was issued for a request with a different account_id")
    return int(before)
