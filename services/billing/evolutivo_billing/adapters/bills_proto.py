"""Translation between bills / bill items and the evolutivo.billing.v1 messages, and of charging's
RatedCharge into what billing keeps of a charge."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from evolutivo.billing.v1 import bill_pb2, credit_note_pb2
from evolutivo.charging.v1 import usage_pb2
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.money import from_money, to_money
from evolutivo_runtime.pagination import decode_keyset, encode_keyset
from evolutivo_runtime.timestamps import from_timestamp, to_date, to_timestamp

from evolutivo_billing.domain.bills import (
    Bill,
    BillItem,
    BillLine,
    BillListPosition,
    BillStatus,
    BillTax,
    BillTrigger,
    Charge,
    ItemListPosition,
    Tier,
)
from evolutivo_billing.domain.credit_notes import CreditNote, CreditNoteListPosition

_STATUSES = {
    BillStatus.DRAFT: bill_pb2.BILL_STATUS_DRAFT,
    BillStatus.ISSUED: bill_pb2.BILL_STATUS_ISSUED,
    BillStatus.PARTIALLY_PAID: bill_pb2.BILL_STATUS_PARTIALLY_PAID,
    BillStatus.PAID: bill_pb2.BILL_STATUS_PAID,
    BillStatus.OVERDUE: bill_pb2.BILL_STATUS_OVERDUE,
    BillStatus.VOID: bill_pb2.BILL_STATUS_VOID,
    BillStatus.WRITTEN_OFF: bill_pb2.BILL_STATUS_WRITTEN_OFF,
}
_TRIGGERS = {
    BillTrigger.CYCLE: bill_pb2.BILL_TRIGGER_CYCLE,
    BillTrigger.ON_DEMAND: bill_pb2.BILL_TRIGGER_ON_DEMAND,
    BillTrigger.THRESHOLD: bill_pb2.BILL_TRIGGER_THRESHOLD,
}
# Charging's ChargeKind, by the name billing keeps ("usage", "recurring"...).
_KIND_PREFIX = "CHARGE_KIND_"


def decimal_to_str(value: Decimal) -> str:
    """Plain notation, exactly the value: Decimal("1E+3") -> "1000"."""
    return format(value, "f")


def _decimal(value: str, what: str) -> Decimal:
    try:
        parsed = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{what} {value!r} is not a decimal") from None
    if not parsed.is_finite():
        raise ValueError(f"{what} {value!r} is not finite")
    return parsed


def _tier_from_pb(pb: usage_pb2.TierLine, charge_id: str) -> Tier:
    what = f"charge {charge_id!r}: tier {pb.tier}"
    return Tier(
        pb.tier,
        _decimal(pb.units or "0", f"{what} units"),
        _decimal(pb.unit_price or "0", f"{what} unit_price"),
        _decimal(pb.flat_fee or "0", f"{what} flat_fee"),
        _decimal(pb.amount or "0", f"{what} amount"),
    )


def tier_to_pb(tier: Tier) -> bill_pb2.BillTier:
    return bill_pb2.BillTier(
        tier=tier.tier,
        units=decimal_to_str(tier.units),
        unit_price=decimal_to_str(tier.unit_price),
        flat_fee=decimal_to_str(tier.flat_fee),
        amount=decimal_to_str(tier.amount),
    )


# Looked up per charge on the ingest path: a dict, not ChargeKind.values() (a new list each call).
_KIND_NAMES = {number: name for name, number in usage_pb2.ChargeKind.items()}


def charge_from_pb(pb: usage_pb2.RatedCharge, currency_code: str) -> Charge:
    """A charge from ChargesCreated (whose currency_code is every amount's). A malformed one is a
    broken event: ValueError."""
    if not pb.HasField("amount") or not pb.HasField("event_time"):
        raise ValueError(f"charge {pb.charge_id!r}: amount and event_time are required")
    if pb.amount.currency_code and pb.amount.currency_code != currency_code:
        raise ValueError(f"charge {pb.charge_id!r}: amount in {pb.amount.currency_code}, event in {currency_code}")
    try:
        quantity = Decimal(pb.quantity or "0")
    except InvalidOperation:
        raise ValueError(f"charge {pb.charge_id!r}: quantity {pb.quantity!r} is not a decimal") from None
    if not quantity.is_finite():
        raise ValueError(f"charge {pb.charge_id!r}: quantity {pb.quantity!r} is not finite")
    kind = _KIND_NAMES.get(pb.kind, "CHARGE_KIND_UNSPECIFIED")
    return Charge(
        charge_id=uuid.UUID(pb.charge_id),
        account_id=uuid.UUID(pb.account_id),
        kind=kind.removeprefix(_KIND_PREFIX).lower(),
        event_id=pb.event_id,
        charge_offer_code=pb.charge_offer_code,
        charge_offer_version=pb.charge_offer_version,
        charge_code=pb.charge_code,
        tax_code=pb.tax_code,
        quantity=quantity,
        amount=from_money(pb.amount),
        currency_code=currency_code,
        event_time=from_timestamp(pb.event_time),
        bill_cycle_id=uuid.UUID(pb.bill_cycle_id) if pb.bill_cycle_id else None,
        late=pb.late,
        unrounded_amount=_decimal(pb.unrounded_amount, f"charge {pb.charge_id!r}: unrounded_amount")
        if pb.unrounded_amount
        else None,
        tiers=tuple(_tier_from_pb(t, pb.charge_id) for t in pb.tiers),
    )


def item_to_pb(item: BillItem) -> bill_pb2.BillItem:
    c = item.charge
    return bill_pb2.BillItem(
        charge_id=str(c.charge_id),
        account_id=str(c.account_id),
        bill_cycle_id=str(item.bill_cycle_id),
        rated_bill_cycle_id=str(c.bill_cycle_id) if c.bill_cycle_id else "",
        kind=c.kind,
        event_id=c.event_id,
        charge_offer_code=c.charge_offer_code,
        charge_offer_version=c.charge_offer_version,
        charge_code=c.charge_code,
        tax_code=c.tax_code,
        quantity=decimal_to_str(c.quantity),
        amount=to_money(c.amount, c.currency_code),
        event_time=to_timestamp(c.event_time),
        late=item.late,
        period_start_date=to_date(item.period.start),
        period_end_date=to_date(item.period.end),
        receive_time=to_timestamp(item.receive_time),
        unrounded_amount=decimal_to_str(c.unrounded_amount) if c.unrounded_amount is not None else "",
        tiers=[tier_to_pb(t) for t in c.tiers],
    )


def _line_to_pb(line: BillLine, currency: str, with_charge_ids: bool) -> bill_pb2.BillLine:
    return bill_pb2.BillLine(
        line_number=line.line_number,
        charge_offer_code=line.key.charge_offer_code,
        charge_code=line.key.charge_code,
        tax_code=line.key.tax_code,
        quantity=decimal_to_str(line.quantity),
        amount=to_money(line.amount, currency),
        period_start_date=to_date(line.key.period_start),
        period_end_date=to_date(line.key.period_end),
        charge_count=line.charge_count,
        charge_ids=[str(i) for i in line.charge_ids] if with_charge_ids else [],
        unit_price=decimal_to_str(line.unit_price) if line.unit_price is not None else "",
        tiers=[tier_to_pb(t) for t in line.tiers],
    )


def _tax_to_pb(tax: BillTax, currency: str) -> bill_pb2.BillTax:
    return bill_pb2.BillTax(
        tax_code=tax.tax_code,
        rate=decimal_to_str(tax.rate),
        taxable_amount=to_money(tax.taxable_amount, currency),
        tax_amount=to_money(tax.tax_amount, currency),
    )


def bill_to_pb(bill: Bill, with_charge_ids: bool = True) -> bill_pb2.Bill:
    currency = bill.currency_code
    return bill_pb2.Bill(
        bill_id=str(bill.bill_id),
        bill_unit_id=str(bill.bill_unit_id),
        account_id=str(bill.account_id),
        bill_cycle_id=str(bill.bill_cycle_id) if bill.bill_cycle_id else "",
        status=_STATUSES[bill.status],
        bill_number=bill.number.number if bill.number else "",
        currency_code=currency,
        period_start_date=to_date(bill.period.start),
        period_end_date=to_date(bill.period.end),
        issue_date=to_date(bill.issue_date),
        due_date=to_date(bill.due_date),
        lines=[_line_to_pb(line, currency, with_charge_ids) for line in bill.lines],
        taxes=[_tax_to_pb(tax, currency) for tax in bill.taxes],
        subtotal=to_money(bill.subtotal, currency),
        tax_total=to_money(bill.tax_total, currency),
        total=to_money(bill.total, currency),
        create_time=to_timestamp(bill.create_time),
        issue_time=to_timestamp(bill.issue_time),
        suppressed=bill.suppressed,
        paid_amount=to_money(bill.paid_amount, currency),
        open_amount=to_money(bill.open_amount, currency),
        overdue_time=to_timestamp(bill.overdue_time),
        trigger=_TRIGGERS[bill.trigger],
        previous_balance=to_money(bill.statement.previous_balance, currency),
        payments_received=to_money(bill.statement.payments_received, currency),
        credits=to_money(bill.statement.credits, currency),
        credit_applied=to_money(bill.credit_applied, currency),
        amount_due=to_money(bill.amount_due, currency),
        credited_amount=to_money(bill.credited_amount, currency),
    )


def credit_note_to_pb(note: CreditNote) -> credit_note_pb2.CreditNote:
    currency = note.currency_code
    return credit_note_pb2.CreditNote(
        credit_note_id=str(note.credit_note_id),
        bill_id=str(note.bill_id),
        bill_unit_id=str(note.bill_unit_id),
        account_id=str(note.account_id),
        credit_note_number=note.number.number if note.number else "",
        currency_code=currency,
        reason=note.reason,
        lines=[
            credit_note_pb2.CreditNoteLine(
                line_number=line.line_number,
                bill_line_number=line.bill_line_number,
                charge_offer_code=line.charge_offer_code,
                charge_code=line.charge_code,
                tax_code=line.tax_code,
                amount=to_money(line.amount, currency),
            )
            for line in note.lines
        ],
        subtotal=to_money(note.subtotal, currency),
        tax_total=to_money(note.tax_total, currency),
        total=to_money(note.total, currency),
        issue_date=to_date(note.issue_date),
        issue_time=to_timestamp(note.issue_time),
        actor=note.actor,
        voids_bill=note.voids_bill,
    )


# ListCreditNotes page tokens: the last note's issue time and id, and the request's filters.
def credit_notes_page_token(position: CreditNoteListPosition, account_id: uuid.UUID, bill_id: uuid.UUID | None) -> str:
    return encode_keyset(
        position.issue_time.isoformat(), str(position.credit_note_id), str(account_id), str(bill_id or "")
    )


def credit_notes_before_from_token(
    token: str, account_id: uuid.UUID, bill_id: uuid.UUID | None
) -> CreditNoteListPosition | None:
    key = decode_keyset(token, 4)
    if key is None:
        return None
    issue_time, credit_note_id, issued_for, issued_bill = key
    try:
        position = CreditNoteListPosition(datetime.fromisoformat(issue_time), uuid.UUID(credit_note_id))
    except ValueError:
        raise InvalidArgument("page_token", "is not a token this service issued") from None
    if position.issue_time.utcoffset() is None:
        raise InvalidArgument("page_token", "is not a token this service issued")
    if issued_for != str(account_id) or issued_bill != str(bill_id or ""):
        raise InvalidArgument("page_token", "was issued for a request with a different account_id or bill_id")
    return position


# ListBills page tokens: the last bill's sort key and the account they were issued for.
def bills_page_token(position: BillListPosition, account_id: uuid.UUID) -> str:
    return encode_keyset(
        position.issue_date.isoformat(), position.create_time.isoformat(), str(position.bill_id), str(account_id)
    )


def bills_before_from_token(token: str, account_id: uuid.UUID) -> BillListPosition | None:
    key = decode_keyset(token, 4)
    if key is None:
        return None
    issue_date, create_time, bill_id, issued_for = key
    try:
        position = BillListPosition(
            date.fromisoformat(issue_date), datetime.fromisoformat(create_time), uuid.UUID(bill_id)
        )
    except ValueError:
        raise InvalidArgument("page_token", "is not a token this service issued") from None
    if position.create_time.utcoffset() is None:
        raise InvalidArgument("page_token", "is not a token this service issued")
    if issued_for != str(account_id):
        raise InvalidArgument("page_token", "was issued for a request with a different account_id")
    return position


# ListUnbilledItems page tokens: the last item's event time and charge id, and the account.
def items_page_token(position: ItemListPosition, account_id: uuid.UUID) -> str:
    return encode_keyset(position.event_time.isoformat(), str(position.charge_id), str(account_id))


def items_after_from_token(token: str, account_id: uuid.UUID) -> ItemListPosition | None:
    key = decode_keyset(token, 3)
    if key is None:
        return None
    event_time, charge_id, issued_for = key
    try:
        position = ItemListPosition(datetime.fromisoformat(event_time), uuid.UUID(charge_id))
    except ValueError:
        raise InvalidArgument("page_token", "is not a token this service issued") from None
    if position.event_time.utcoffset() is None:
        raise InvalidArgument("page_token", "is not a token this service issued")
    if issued_for != str(account_id):
        raise InvalidArgument("page_token", "was issued for a request with a different account_id")
    return position
