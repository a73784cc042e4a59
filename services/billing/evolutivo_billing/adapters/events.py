"""Domain events -> the protobuf events billing publishes, and their subjects."""

from __future__ import annotations

from evolutivo.billing.v1 import events_pb2
from evolutivo_runtime.money import to_money
from google.protobuf.message import Message

from evolutivo_billing.adapters import bills_proto, collections_proto, proto
from evolutivo_billing.domain.bills import BillIssued, BillOverdue, BillPaid, BillPartiallyPaid, BillVoided
from evolutivo_billing.domain.credit_notes import CreditNoteAllocated, CreditNoteIssued
from evolutivo_billing.domain.cycles import BillCycleClosed, BillCycleOpened
from evolutivo_billing.domain.model import BillUnitCreated
from evolutivo_billing.domain.payments import Allocation, PaymentAllocated

BILL_UNIT_CREATED = "evolutivo.billing.v1.bill_unit.created"
BILL_CYCLE_OPENED = "evolutivo.billing.v1.bill_cycle.opened"
BILL_CYCLE_CLOSED = "evolutivo.billing.v1.bill_cycle.closed"
BILL_ISSUED = "evolutivo.billing.v1.bill.issued"
BILL_PAID = "evolutivo.billing.v1.bill.paid"
BILL_PARTIALLY_PAID = "evolutivo.billing.v1.bill.partially_paid"
BILL_OVERDUE = "evolutivo.billing.v1.bill.overdue"
BILL_VOIDED = "evolutivo.billing.v1.bill.voided"
CREDIT_NOTE_ISSUED = "evolutivo.billing.v1.credit_note.issued"
PAYMENT_ALLOCATED = "evolutivo.billing.v1.payment.allocated"
CREDIT_NOTE_ALLOCATED = "evolutivo.billing.v1.credit_note.allocated"


def _allocations(allocations: tuple[Allocation, ...], currency: str) -> list[events_pb2.BillAllocation]:
    return [events_pb2.BillAllocation(bill_id=str(a.bill_id), amount=to_money(a.amount, currency)) for a in allocations]


def encode(event: object) -> tuple[str, Message]:
    match event:
        case BillUnitCreated(bill_unit=unit):
            return BILL_UNIT_CREATED, events_pb2.BillUnitCreated(bill_unit=proto.unit_to_pb(unit))
        case BillCycleOpened(bill_cycle=cycle):
            return BILL_CYCLE_OPENED, events_pb2.BillCycleOpened(bill_cycle=proto.cycle_to_pb(cycle))
        case BillCycleClosed(bill_cycle=cycle, next_bill_cycle=following):
            return BILL_CYCLE_CLOSED, events_pb2.BillCycleClosed(
                bill_cycle=proto.cycle_to_pb(cycle), next_bill_cycle=proto.cycle_to_pb(following)
            )
        case BillIssued(bill=bill):
            # Without the lines' charge ids (GetBill has them): the event stays small.
            return BILL_ISSUED, events_pb2.BillIssued(bill=bills_proto.bill_to_pb(bill, with_charge_ids=False))
        case BillPaid(bill=bill):
            return BILL_PAID, events_pb2.BillPaid(bill=bills_proto.bill_to_pb(bill, with_charge_ids=False))
        case BillPartiallyPaid(bill=bill):
            return BILL_PARTIALLY_PAID, events_pb2.BillPartiallyPaid(
                bill=bills_proto.bill_to_pb(bill, with_charge_ids=False)
            )
        case BillOverdue(bill=bill):
            return BILL_OVERDUE, events_pb2.BillOverdue(bill=bills_proto.bill_to_pb(bill, with_charge_ids=False))
        case BillVoided(bill=bill, credit_note_id=credit_note_id):
            return BILL_VOIDED, events_pb2.BillVoided(
                bill=bills_proto.bill_to_pb(bill, with_charge_ids=False), credit_note_id=str(credit_note_id)
            )
        case CreditNoteIssued(credit_note=note):
            return CREDIT_NOTE_ISSUED, events_pb2.CreditNoteIssued(credit_note=bills_proto.credit_note_to_pb(note))
        case PaymentAllocated() as allocated:
            currency = allocated.currency_code
            return PAYMENT_ALLOCATED, events_pb2.PaymentAllocated(
                payment_id=str(allocated.payment_id),
                account_id=str(allocated.account_id),
                sequence=allocated.sequence,
                allocations=_allocations(allocated.allocations, currency),
                payment_amount=to_money(allocated.payment_amount, currency),
                unallocated_amount=to_money(allocated.unallocated, currency),
            )
        case CreditNoteAllocated() as allocated:
            currency = allocated.currency_code
            return CREDIT_NOTE_ALLOCATED, events_pb2.CreditNoteAllocated(
                credit_note_id=str(allocated.credit_note_id),
                account_id=str(allocated.account_id),
                sequence=allocated.sequence,
                allocations=_allocations(allocated.allocations, currency),
                credit_note_amount=to_money(allocated.credit_note_total, currency),
                unallocated_amount=to_money(allocated.unallocated, currency),
            )
    # Collections' events (docs/collections.md) are encoded by their own module.
    encoded = collections_proto.encode(event)
    if encoded is not None:
        return encoded
    raise TypeError(f"no protobuf event for {type(event).__name__}")
