"""Sync states: where each suite record stands with respect to the ERP. Plain Python: no protobuf, no SQL."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime


class InvalidSyncState(ValueError):
    """A sync state that breaks its rules."""


class EntityType(enum.Enum):
    """Kinds of suite records the gateway keeps in step with an ERP."""

    CUSTOMER = "customer"
    INVOICE = "invoice"
    CREDIT_NOTE = "credit_note"
    PAYMENT = "payment"
    # A payment's reversal; its id is the payment's.
    PAYMENT_REVERSAL = "payment_reversal"
    # Debt written off; its id is balance's write-off ledger entry.
    WRITE_OFF = "write_off"
    # A collections case referred to an agency; its id is billing's event id.
    REFERRAL = "collections_referral"
    # A later application of a payment's credit to a newly issued bill (billing's PaymentAllocated
    # of sequence 2, 3, ...); its id is allocation_entity_id(payment id, sequence).
    PAYMENT_ALLOCATION = "payment_allocation"
    # An application of a credit note's credit to bills (billing's CreditNoteAllocated: 1 at issue,
    # to its own bill; 2, 3, ... to later bills); its id is
    # allocation_entity_id(credit note id, sequence, EntityType.CREDIT_NOTE_ALLOCATION).
    CREDIT_NOTE_ALLOCATION = "credit_note_allocation"


def allocation_entity_id(
    owner_id: uuid.UUID, sequence: int, kind: EntityType = EntityType.PAYMENT_ALLOCATION
) -> uuid.UUID:
    """The id of allocation number `sequence` of a payment's (or credit note's) credit: uuid5 in
    the owner's id as namespace, of "<kind>:<sequence>" ("payment_allocation:2",
    "credit_note_allocation:1"; stable, so a redelivery names the same record)."""
    return uuid.uuid5(owner_id, f"{kind.value}:{sequence}")


@dataclass(frozen=True)
class AllocatedCredit:
    """Money whose allocation to bills billing decides and announces in sequence: a payment's
    (PaymentAllocated) or a credit note's (CreditNoteAllocated). The gateway keeps each allocation
    and books it in the ERP after its owner, in sequence, by one code path for both."""

    # The record whose credit is allocated (its job books it in the ERP first).
    owner: EntityType
    # The records of its allocations.
    allocation: EntityType
    # The first sequence that is a record (a job) of its own: a payment's allocation 1 is how its
    # own job books it; a credit note is booked whole, and every allocation of it moves its credit.
    first_record: int

    def lock_name(self, owner_id: uuid.UUID) -> str:
        """The advisory lock the owner's event and its allocations take turns on (a payment's
        PaymentRecorded and PaymentAllocated may reach two consumers of two streams at once)."""
        return f"erp_gateway:{self.owner.value}:{owner_id}"


PAYMENT_CREDIT = AllocatedCredit(EntityType.PAYMENT, EntityType.PAYMENT_ALLOCATION, 2)
CREDIT_NOTE_CREDIT = AllocatedCredit(EntityType.CREDIT_NOTE, EntityType.CREDIT_NOTE_ALLOCATION, 1)
ALLOCATED_CREDITS = {credit.allocation: credit for credit in (PAYMENT_CREDIT, CREDIT_NOTE_CREDIT)}


class SyncStatus(enum.Enum):
    # Known to the gateway, waiting for a connection to send it to.
    PENDING = "pending"
    SYNCED = "synced"
    FAILED = "failed"


@dataclass
class SyncState:
    """The gateway's record of one suite entity and its ERP counterpart."""

    entity_type: EntityType
    entity_id: uuid.UUID
    status: SyncStatus
    # The ERP's id for the record once synced; "" before.
    erp_id: str
    update_time: datetime

    def __post_init__(self) -> None:
        if self.status is SyncStatus.SYNCED and not self.erp_id:
            raise InvalidSyncState("a synced record has the ERP's id")
        if self.update_time.utcoffset() is None:
            raise InvalidSyncState("update_time must be timezone-aware")

    @classmethod
    def pending(cls, entity_type: EntityType, entity_id: uuid.UUID, now: datetime) -> SyncState:
        """A record the gateway has just learnt of: waits to be sent to an ERP."""
        if now.utcoffset() is None:
            raise InvalidSyncState("update_time must be timezone-aware")
        return cls(
            entity_type=entity_type,
            entity_id=entity_id,
            status=SyncStatus.PENDING,
            erp_id="",
            update_time=now.astimezone(UTC),
        )


@dataclass(frozen=True)
class ReceivedRecord:
    """A suite record as a consumer received it: what `store_payloads` keeps and jobs send."""

    entity_id: uuid.UUID
    account_id: uuid.UUID
    payload: bytes
    version: datetime
