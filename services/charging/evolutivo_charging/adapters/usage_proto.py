"""Translation between usage rating's domain and the evolutivo.charging.v1 usage messages, and
from customer's purchases and billing's cycles.

Decimals travel as strings in plain notation; amounts as google.type.Money.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

from evolutivo.billing.v1 import bill_cycle_pb2
from evolutivo.charging.v1 import charging_service_pb2, usage_pb2
from evolutivo.customer.v1 import purchase_pb2
from evolutivo_runtime.errors import InvalidArgument, to_rpc_status
from evolutivo_runtime.money import from_money, to_money
from evolutivo_runtime.timestamps import to_timestamp

from evolutivo_charging.adapters.catalog_proto import decimal_to_str, instant_from_pb
from evolutivo_charging.adapters.usage_repository import RerateRunRow, StoredUsage
from evolutivo_charging.domain.usage import (
    BillCycle,
    BillCycleStatus,
    ChargeKind,
    Purchase,
    RatedCharge,
    Received,
    UsageEvent,
    UsageResult,
    UsageStatus,
)

# ErrorInfo.domain of the errors carried inside results (the interceptor uses the same).
ERROR_DOMAIN = "charging.evolutivo.io"

STATUSES: dict[UsageStatus, usage_pb2.UsageStatus.ValueType] = {
    UsageStatus.RATED: usage_pb2.USAGE_STATUS_RATED,
    UsageStatus.UNRATED: usage_pb2.USAGE_STATUS_UNRATED,
    UsageStatus.REJECTED: usage_pb2.USAGE_STATUS_REJECTED,
}
_KINDS: dict[ChargeKind, usage_pb2.ChargeKind.ValueType] = {
    ChargeKind.USAGE: usage_pb2.CHARGE_KIND_USAGE,
    ChargeKind.RECURRING: usage_pb2.CHARGE_KIND_RECURRING,
    ChargeKind.ONE_TIME: usage_pb2.CHARGE_KIND_ONE_TIME,
    ChargeKind.REVERSAL: usage_pb2.CHARGE_KIND_REVERSAL,
}


def received_from_pb(event: usage_pb2.UsageEvent, field: str) -> Received:
    """A request's event, validated; invalid, it carries the error naming its field."""
    try:
        parsed = UsageEvent.validated(
            field,
            event.event_id,
            event.account_id,
            event.event_type,
            instant_from_pb(event, "event_time", f"{field}.event_time"),
            event.quantity,
            dict(event.properties),
            event.service_id,
        )
    except InvalidArgument as error:
        return Received(event.event_id, field, None, error)
    return Received(event.event_id, field, parsed)


def event_to_pb(event: UsageEvent) -> usage_pb2.UsageEvent:
    return usage_pb2.UsageEvent(
        event_id=event.event_id,
        account_id=str(event.account_id),
        event_type=event.event_type,
        event_time=to_timestamp(event.event_time),
        quantity=decimal_to_str(event.quantity),
        properties=dict(event.properties),
        service_id=str(event.service_id) if event.service_id else "",
    )


def charge_to_pb(charge: RatedCharge) -> usage_pb2.RatedCharge:
    return usage_pb2.RatedCharge(
        charge_id=str(charge.charge_id),
        account_id=str(charge.account_id),
        kind=_KINDS[charge.kind],
        event_id=charge.event_id,
        purchase_id=str(charge.purchase_id),
        charge_offer_code=charge.charge_offer_code,
        charge_offer_version=charge.charge_offer_version,
        charge_code=charge.charge_code,
        balance_group=charge.balance_group,
        tax_code=charge.tax_code,
        quantity=decimal_to_str(charge.quantity),
        amount=to_money(charge.amount, charge.currency_code),
        unrounded_amount=decimal_to_str(charge.unrounded_amount),
        tiers=[
            usage_pb2.TierLine(
                tier=line.tier,
                units=decimal_to_str(line.units),
                unit_price=decimal_to_str(line.unit_price),
                flat_fee=decimal_to_str(line.flat_fee),
                amount=decimal_to_str(line.amount),
            )
            for line in charge.tiers
        ],
        event_time=to_timestamp(charge.event_time),
        rate_time=to_timestamp(charge.rate_time),
        bill_cycle_id=str(charge.bill_cycle_id),
        late=charge.late,
        reverses_charge_id=str(charge.reverses_charge_id) if charge.reverses_charge_id else "",
        rerate_run_id=str(charge.rerate_run_id) if charge.rerate_run_id else "",
        replaces_charge_id=str(charge.replaces_charge_id) if charge.replaces_charge_id else "",
    )


def run_to_pb(run: RerateRunRow) -> usage_pb2.RerateRun:
    return usage_pb2.RerateRun(
        rerate_run_id=str(run.rerate_run_id),
        account_id=str(run.account_id),
        start_time=to_timestamp(run.start_time),
        end_time=to_timestamp(run.end_time),
        charge_offer_code=run.charge_offer_code,
        request_id=run.request_id,
        events_rerated=run.events_rerated,
        events_changed=run.events_changed,
        charges_reversed=run.charges_reversed,
        charges_created=run.charges_created,
        net_amount=to_money(run.net_amount, run.currency_code),
        create_time=to_timestamp(run.create_time),
    )


def result_to_pb(
    result: UsageResult, translated: Mapping[uuid.UUID, usage_pb2.RatedCharge] | None = None
) -> usage_pb2.UsageResult:
    """`translated`: charges already in protobuf (those the call published), reused as they are."""
    error = to_rpc_status(result.error, ERROR_DOMAIN) if result.error is not None else None
    known = translated or {}
    return usage_pb2.UsageResult(
        event_id=result.event_id,
        status=STATUSES[result.status] if result.status is not None else usage_pb2.USAGE_STATUS_UNSPECIFIED,
        charges=[known.get(c.charge_id) or charge_to_pb(c) for c in result.charges],
        reason=result.reason,
        error=error,
    )


def single_result(result: UsageResult) -> usage_pb2.UsageResult:
    """RecordUsage's answer: an event refused or rejected raises its error (the interceptor makes
    it the call's status); otherwise its result."""
    if result.error is not None:
        raise result.error
    return result_to_pb(result)


def kept_to_pb(stored: StoredUsage) -> charging_service_pb2.UnratedUsage:
    return charging_service_pb2.UnratedUsage(
        event=event_to_pb(stored.event),
        status=STATUSES[stored.status],
        reason=stored.reason,
        receive_time=to_timestamp(stored.receive_time),
    )


# Other services' messages. A malformed one is a broken event: ValueError, and the consumer
# retries it, then dead-letters it.


def uuid_field(value: str, what: str) -> uuid.UUID:
    """A UUID field of another service's event; ValueError (a broken event) when it is not one."""
    return _uuid(value, what)


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ValueError(f"{what} must be a UUID, not {value!r}") from None


def _instant(message: object, name: str, what: str) -> datetime | None:
    try:
        return instant_from_pb(message, name, what)
    except InvalidArgument as error:
        raise ValueError(error.message) from None


def purchase_from_pb(p: purchase_pb2.Purchase) -> Purchase:
    start = _instant(p, "start_time", "purchase.start_time")
    if start is None:
        raise ValueError("purchase.start_time is required")
    try:
        quantity = Decimal(p.quantity) if p.quantity else Decimal(1)
        overrides = tuple((o.charge_code, from_money(o.price)) for o in p.price_overrides)
    except (ArithmeticError, ValueError) as error:
        raise ValueError(f"purchase {p.purchase_id}: {error}") from None
    if not p.charge_offer_code:
        raise ValueError("purchase.charge_offer_code is required")
    return Purchase(
        purchase_id=_uuid(p.purchase_id, "purchase.purchase_id"),
        account_id=_uuid(p.account_id, "purchase.account_id"),
        service_id=_uuid(p.service_id, "purchase.service_id") if p.service_id else None,
        charge_offer_code=p.charge_offer_code,
        charge_offer_version=p.charge_offer_version,
        quantity=quantity,
        start_time=start,
        end_time=_instant(p, "end_time", "purchase.end_time"),
        cancel_time=_instant(p, "cancel_time", "purchase.cancel_time"),
        price_overrides=overrides,
    )


_CYCLE_STATUSES = {
    bill_cycle_pb2.BILL_CYCLE_STATUS_OPEN: BillCycleStatus.OPEN,
    bill_cycle_pb2.BILL_CYCLE_STATUS_CLOSED: BillCycleStatus.CLOSED,
}


def cycle_from_pb(c: bill_cycle_pb2.BillCycle) -> BillCycle:
    start = _instant(c, "start_time", "bill_cycle.start_time")
    end = _instant(c, "end_time", "bill_cycle.end_time")
    if start is None or end is None or end <= start:
        raise ValueError(f"bill cycle {c.bill_cycle_id}: start_time and end_time are required, end after start")
    return BillCycle(
        bill_cycle_id=_uuid(c.bill_cycle_id, "bill_cycle.bill_cycle_id"),
        account_id=_uuid(c.account_id, "bill_cycle.account_id"),
        start_time=start,
        end_time=end,
        # The event says which (opened or closed); the message's own status only informs.
        status=_CYCLE_STATUSES.get(c.status, BillCycleStatus.OPEN),
        bill_unit_id=_uuid(c.bill_unit_id, "bill_cycle.bill_unit_id") if c.bill_unit_id else None,
        sequence=c.sequence,
        close_time=_instant(c, "close_time", "bill_cycle.close_time"),
        time_zone=c.time_zone,
    )
