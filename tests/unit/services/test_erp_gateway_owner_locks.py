"""The ERP gateway's consumers name, per event, the owner lock its handler takes (taken up front
for a whole batch by the runtime consumer, so batches do not deadlock)."""

from __future__ import annotations

import uuid

import pytest
from evolutivo.balance.v1 import events_pb2 as balance_events
from evolutivo.balance.v1 import payment_pb2
from evolutivo.billing.v1 import credit_note_pb2
from evolutivo.billing.v1 import events_pb2 as billing_events
from evolutivo_erp_gateway.domain.model import CREDIT_NOTE_CREDIT, PAYMENT_CREDIT
from evolutivo_erp_gateway.entrypoints.consumers import OWNER_LOCKS, subscriptions
from evolutivo_runtime.messaging.streams import stream_name

PAYMENT = uuid.uuid4()
NOTE = uuid.uuid4()


def test_a_payment_and_its_allocations_name_the_same_lock() -> None:
    recorded = balance_events.PaymentRecorded(payment=payment_pb2.Payment(payment_id=str(PAYMENT)))
    # An upper-case id is the same payment: the handlers read ids as UUIDs.
    allocated = billing_events.PaymentAllocated(payment_id=str(PAYMENT).upper())
    expected = [PAYMENT_CREDIT.lock_name(PAYMENT)]
    assert OWNER_LOCKS[recorded.DESCRIPTOR.full_name](recorded) == expected
    assert OWNER_LOCKS[allocated.DESCRIPTOR.full_name](allocated) == expected


def test_a_credit_note_and_its_allocations_name_the_same_lock_apart_from_payments() -> None:
    issued = billing_events.CreditNoteIssued(credit_note=credit_note_pb2.CreditNote(credit_note_id=str(NOTE)))
    allocated = billing_events.CreditNoteAllocated(credit_note_id=str(NOTE))
    expected = [CREDIT_NOTE_CREDIT.lock_name(NOTE)]
    assert OWNER_LOCKS[issued.DESCRIPTOR.full_name](issued) == expected
    assert OWNER_LOCKS[allocated.DESCRIPTOR.full_name](allocated) == expected
    assert CREDIT_NOTE_CREDIT.lock_name(NOTE) != PAYMENT_CREDIT.lock_name(NOTE)


def test_a_bad_id_raises() -> None:
    allocated = billing_events.PaymentAllocated(payment_id="x")
    with pytest.raises(ValueError):
        OWNER_LOCKS[allocated.DESCRIPTOR.full_name](allocated)


def test_each_stream_names_the_locks_of_its_owner_and_allocation_events_only() -> None:
    named = {s.stream: set(s.advisory_locks) for s in subscriptions()}
    assert named == {
        stream_name("customer"): set(),
        stream_name("billing"): {
            billing_events.PaymentAllocated.DESCRIPTOR.full_name,
            billing_events.CreditNoteIssued.DESCRIPTOR.full_name,
            billing_events.CreditNoteAllocated.DESCRIPTOR.full_name,
        },
        stream_name("balance"): {balance_events.PaymentRecorded.DESCRIPTOR.full_name},
    }


def test_the_lock_names_are_those_earlier_releases_took() -> None:
    # Replicas of two releases run side by side during a rolling upgrade: a renamed lock would
    # hash to another key and the two would not take turns.
    assert PAYMENT_CREDIT.lock_name(PAYMENT) == f"erp_gateway:payment:{PAYMENT}"
    assert CREDIT_NOTE_CREDIT.lock_name(NOTE) == f"erp_gateway:credit_note:{NOTE}"
