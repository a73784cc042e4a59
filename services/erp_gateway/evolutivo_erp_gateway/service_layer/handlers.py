"""Use cases of the ERP gateway. Plain functions over a unit of work."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol

from evolutivo.balance.v1 import ledger_pb2, payment_pb2
from evolutivo.billing.v1 import bill_pb2, collections_events_pb2, credit_note_pb2, events_pb2
from evolutivo.customer.v1 import account_pb2, contact_pb2
from evolutivo_runtime.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, ServiceError
from evolutivo_runtime.money import from_money
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter, Gauge

from evolutivo_erp_gateway.adapters.crypto import UndecryptableSecret
from evolutivo_erp_gateway.adapters.erp import (
    AuthFailed,
    ErpAdapter,
    ErpError,
    InvoiceAllocation,
    MappingMissing,
    Problem,
    ProblemKind,
    Unreachable,
)
from evolutivo_erp_gateway.adapters.factory import Adapters
from evolutivo_erp_gateway.domain import journal as gl
from evolutivo_erp_gateway.domain.connections import IMPORTED_PAYMENT_PREFIX, Connection, ConnectionType
from evolutivo_erp_gateway.domain.jobs import SETTLEMENT_PREDECESSORS, CircuitBreaker, JobState, RetryPolicy, SyncJob
from evolutivo_erp_gateway.domain.model import (
    ALLOCATED_CREDITS,
    CREDIT_NOTE_CREDIT,
    PAYMENT_CREDIT,
    AllocatedCredit,
    EntityType,
    ReceivedRecord,
    SyncState,
    SyncStatus,
    allocation_entity_id,
)
from evolutivo_erp_gateway.service_layer.unit_of_work import ErpGatewayUnitOfWork

log = logging.getLogger(__name__)

# How long a job waiting for its prerequisite (its customer, the invoices before a payment) waits
# before it looks again; waiting costs no attempt.
PREREQUISITE_WAIT = timedelta(seconds=2)
# How long a job waits for a prerequisite the gateway has not even received (billing's allocation
# of a payment, the BillIssued of a bill billing allocated it to) before each further wait counts
# as a failed attempt: the job then ends DEAD, in the dead-letter list, instead of waiting unseen
# for ever (billing dead-lettered the event, a payment recorded before PaymentAllocated existed).
# A prerequisite that is queued and retrying (the ERP is down) is waited for without limit.
MISSING_PREREQUISITE_WAIT = timedelta(hours=1)
# The ERP id kept for a later allocation of a payment reversed before it was sent: nothing was.
NOT_SENT_REVERSED = "not-sent:payment-reversed"
# The ERP id kept for a credit note's allocation that gave no bill anything (its bill owed nothing).
NOT_SENT_EMPTY = "not-sent:nothing-allocated"
# The ERP id kept for a credit note's allocation at issue (sequence 1) to its own bill when that
# bill is not in the ERP: the gateway never received its BillIssued, which billing published before
# the note's on the same stream, so no invoice job for it will come (as the note itself, whose job
# then posts it without its invoice, and referrals, which leave such bills out).
NOT_SENT_BILL_NOT_IN_ERP = "not-sent:bill-not-in-erp"


async def await_sync(uow: ErpGatewayUnitOfWork, entity_type: EntityType, entity_id: uuid.UUID, now: datetime) -> bool:
    """On a new suite record: a PENDING sync state for it, exactly once; False when it was known already.

    Runs inside the consumer's transaction (the caller commits)."""
    return await uow.sync_states.add(SyncState.pending(entity_type, entity_id, now))


async def get_sync_state(
    uow: ErpGatewayUnitOfWork, entity_type: EntityType, entity_id: uuid.UUID
) -> tuple[SyncState, list[SyncJob]]:
    async with uow:
        state = await uow.sync_states.get(entity_type, entity_id)
        if state is None:
            raise NotFound("sync_state", f"{entity_type.value}/{entity_id}")
        return state, await uow.jobs.of_entity(entity_type, entity_id)


# --- records received (consumers; the caller commits) ----------------------------------------------
async def receive(
    uow: ErpGatewayUnitOfWork,
    entity_type: EntityType,
    entity_id: uuid.UUID,
    account_id: uuid.UUID,
    payload: bytes,
    version: datetime,
    skip_connections: Sequence[uuid.UUID] = (),
) -> None:
    """Keeps the record's latest payload and queues a job for every connection that takes it (a
    job sent already is sent again: the record changed). An older version (an event overtaken by a
    later one) or a redelivered one changes nothing."""
    now = uow.clock.now()
    if not await uow.sync_states.store_payload(entity_type, entity_id, account_id, payload, version, now):
        return
    for connection in await uow.connections.all():
        if connection.takes(entity_type) and connection.connection_id not in skip_connections:
            await uow.jobs.upsert(
                connection.connection_id, entity_type, entity_id, account_id, version, now, rearm=True
            )


async def customer_changed(uow: ErpGatewayUnitOfWork, account: account_pb2.Account) -> None:
    account_id = uuid.UUID(account.account_id)
    # The account's update time orders its versions (AccountCreated has none: its create time).
    stamp = account.update_time if account.HasField("update_time") else account.create_time
    version = stamp.ToDatetime(tzinfo=UTC) if stamp.seconds or stamp.nanos else datetime(1970, 1, 1, tzinfo=UTC)
    await receive(uow, EntityType.CUSTOMER, account_id, account_id, account.SerializeToString(), version)


async def contact_changed(
    uow: ErpGatewayUnitOfWork, contact: contact_pb2.Contact, removed: bool, occurred_at: datetime
) -> None:
    """A contact is part of its customer: the customer is sent again (once the gateway has it)."""
    account_id = uuid.UUID(contact.account_id)
    payload = None if removed else contact.SerializeToString()
    if not await uow.contacts.store(account_id, uuid.UUID(contact.contact_id), payload, occurred_at):
        return
    await _customer_again(uow, account_id)


async def personal_data_erased(uow: ErpGatewayUnitOfWork, account: account_pb2.Account) -> None:
    """The erased account replaces the customer (its name is gone) and its contacts are forgotten."""
    account_id = uuid.UUID(account.account_id)
    await uow.contacts.erase(account_id)
    await customer_changed(uow, account)
    await _customer_again(uow, account_id)


async def _customer_again(uow: ErpGatewayUnitOfWork, account_id: uuid.UUID) -> None:
    version = await uow.sync_states.payload_version(EntityType.CUSTOMER, account_id)
    if version is None:
        return  # the account itself has not arrived: its job, when it does, sends the contacts too
    now = uow.clock.now()
    for connection in await uow.connections.all():
        if connection.takes(EntityType.CUSTOMER):
            await uow.jobs.upsert(
                connection.connection_id, EntityType.CUSTOMER, account_id, account_id, version, now, rearm=True
            )


def _money_lines(
    lines: Sequence[bill_pb2.BillLine] | Sequence[credit_note_pb2.CreditNoteLine],
) -> list[tuple[str, Decimal]]:
    return [(line.charge_offer_code, from_money(line.amount)) for line in lines]


def _time(ts: Timestamp, fallback: datetime) -> datetime:
    return ts.ToDatetime(tzinfo=UTC) if ts.seconds or ts.nanos else fallback


async def bill_issued(uow: ErpGatewayUnitOfWork, bill: bill_pb2.Bill) -> None:
    """The bill is kept (`receive`, as an INVOICE at its issue time) and its postings journalled."""
    await bills_issued(uow, [bill])


async def bills_issued(uow: ErpGatewayUnitOfWork, bills: Sequence[bill_pb2.Bill]) -> None:
    """`bill_issued` for the bills of a fetched batch, in order, set-based (docs/performance.md):
    their payloads in one statement, the jobs of each connection taking invoices in one, their
    postings in one: the rows `receive` and `postings.add` leave, bill after bill (a bill given
    twice counts at its latest version)."""
    # A bill without an issue time is versioned by the clock when it is read, bill by bill, as
    # one at a time would be (a later copy of it then wins).
    records = [
        ReceivedRecord(
            uuid.UUID(bill.bill_id),
            uuid.UUID(bill.account_id),
            bill.SerializeToString(),
            _time(bill.issue_time, uow.clock.now()),
        )
        for bill in bills
    ]
    now = uow.clock.now()
    stored = await uow.sync_states.store_payloads(EntityType.INVOICE, records, now)
    if stored:
        taking = [c.connection_id for c in await uow.connections.all() if c.takes(EntityType.INVOICE)]
        await uow.jobs.rearm_many(taking, EntityType.INVOICE, stored, now)
    await uow.postings.add_many(
        [
            gl.JournalEntry(
                "bill",
                bill.bill_id,
                bill.currency_code,
                record.version,
                gl.bill_postings(_money_lines(bill.lines), from_money(bill.tax_total), from_money(bill.total)),
            )
            for bill, record in zip(bills, records, strict=True)
        ]
    )


async def credit_note_issued(uow: ErpGatewayUnitOfWork, note: credit_note_pb2.CreditNote) -> None:
    issued = _time(note.issue_time, uow.clock.now())
    # Taking turns with its allocations (see _allocations_follow).
    await uow.credit_note_allocations.lock(uuid.UUID(note.credit_note_id))
    await receive(
        uow,
        EntityType.CREDIT_NOTE,
        uuid.UUID(note.credit_note_id),
        uuid.UUID(note.account_id),
        note.SerializeToString(),
        issued,
    )
    postings = gl.credit_note_postings(_money_lines(note.lines), from_money(note.tax_total), from_money(note.total))
    await uow.postings.add("credit_note", note.credit_note_id, note.currency_code, issued, postings)
    # Its allocations that arrived before it follow it to its connections.
    await _allocations_follow(uow, CREDIT_NOTE_CREDIT, uuid.UUID(note.credit_note_id))


async def payment_recorded(uow: ErpGatewayUnitOfWork, payment: payment_pb2.Payment) -> None:
    received = _time(payment.received_time, uow.clock.now())
    # Taking turns with its allocations (see _allocations_follow).
    await uow.allocations.lock(uuid.UUID(payment.payment_id))
    # A payment the gateway imported from an ERP is in that ERP already: not sent back to it.
    came_from = await uow.inbound.connections_of_reference(payment.reference)
    await receive(
        uow,
        EntityType.PAYMENT,
        uuid.UUID(payment.payment_id),
        uuid.UUID(payment.account_id),
        payment.SerializeToString(),
        received,
        skip_connections=came_from,
    )
    amount = from_money(payment.amount)
    await uow.postings.add(
        "payment", payment.payment_id, payment.amount.currency_code, received, gl.payment_postings(amount)
    )
    # Later allocations of its credit that arrived before the payment follow it to its connections.
    await _allocations_follow(uow, PAYMENT_CREDIT, uuid.UUID(payment.payment_id))


async def payment_allocated(uow: ErpGatewayUnitOfWork, allocated: events_pb2.PaymentAllocated) -> None:
    """Billing's allocation of a payment to bills is kept: the first (sequence 1, how billing
    allocated the payment when it recorded it) is what the payment's job books in the ERP; each
    later one (its credit applied to a new bill) is a PAYMENT_ALLOCATION record of its own, queued
    for the connections the payment goes to (not the ERP a payment was imported from). A
    redelivered one changes nothing."""
    await _allocated(uow, PAYMENT_CREDIT, allocated.payment_id, allocated)


async def credit_note_allocated(uow: ErpGatewayUnitOfWork, allocated: events_pb2.CreditNoteAllocated) -> None:
    """Billing's allocation of a credit note's credit to bills is kept, each (sequence 1 at issue,
    to its own bill, as well as later ones) a CREDIT_NOTE_ALLOCATION record of its own, queued for
    the connections the credit note goes to. A redelivered one changes nothing."""
    await _allocated(uow, CREDIT_NOTE_CREDIT, allocated.credit_note_id, allocated)


async def _allocated(
    uow: ErpGatewayUnitOfWork,
    credit: AllocatedCredit,
    owner: str,
    allocated: events_pb2.PaymentAllocated | events_pb2.CreditNoteAllocated,
) -> None:
    owner_id = uuid.UUID(owner)
    if allocated.sequence < 1:
        raise ValueError(f"{type(allocated).__name__} of {owner_id} has sequence {allocated.sequence}")
    entity_id = allocation_entity_id(owner_id, allocated.sequence, credit.allocation)
    account_id = uuid.UUID(allocated.account_id)
    payload = allocated.SerializeToString()
    now = uow.clock.now()
    allocations = uow.allocations_of(credit)
    await allocations.lock(owner_id)
    if not await allocations.add(owner_id, allocated.sequence, entity_id, account_id, payload, now):
        return
    if allocated.sequence < credit.first_record:
        return  # the owner's job reads it (a payment's allocation 1)
    await uow.sync_states.store_payload(credit.allocation, entity_id, account_id, payload, now, now)
    await _allocations_follow(uow, credit, owner_id)


async def _allocations_follow(uow: ErpGatewayUnitOfWork, credit: AllocatedCredit, owner_id: uuid.UUID) -> None:
    """A job for each allocation of the owner's credit that is a record of its own, on each
    connection the owner (payment, credit note) has a job on (whichever of the owner and the
    allocation arrives second queues it; an existing job is left as it is). The caller holds the
    owner's lock (AllocationRepository.lock): two replicas applying the owner and its allocation at
    once would otherwise each miss the other's uncommitted rows."""
    connections = await uow.jobs.connections_of(credit.owner, owner_id)
    if not connections:
        return
    now = uow.clock.now()
    for entity_id, account_id, received in await uow.allocations_of(credit).later_of(owner_id):
        for connection_id in connections:
            await uow.jobs.upsert(connection_id, credit.allocation, entity_id, account_id, received, now)


async def payment_reversed(uow: ErpGatewayUnitOfWork, payment: payment_pb2.Payment) -> None:
    reversed_at = _time(payment.reverse_time, uow.clock.now())
    # A payment imported from an ERP was not sent to it: neither is its reversal (the ERP's user
    # reverses the ERP's own payment there).
    came_from = await uow.inbound.connections_of_reference(payment.reference)
    await receive(
        uow,
        EntityType.PAYMENT_REVERSAL,
        uuid.UUID(payment.payment_id),
        uuid.UUID(payment.account_id),
        payment.SerializeToString(),
        reversed_at,
        skip_connections=came_from,
    )
    amount = from_money(payment.amount)
    await uow.postings.add(
        "payment_reversal",
        payment.payment_id,
        payment.amount.currency_code,
        reversed_at,
        gl.payment_reversal_postings(amount),
    )


async def write_off_made(uow: ErpGatewayUnitOfWork, entry: ledger_pb2.LedgerEntry, effective_time: datetime) -> None:
    await receive(
        uow,
        EntityType.WRITE_OFF,
        uuid.UUID(entry.entry_id),
        uuid.UUID(entry.account_id),
        entry.SerializeToString(),
        effective_time,
    )
    # The entry is a credit (negative): the amount given up is its opposite.
    amount = from_money(entry.amount)
    await uow.postings.add(
        "write_off", entry.entry_id, entry.amount.currency_code, effective_time, gl.write_off_postings(-amount)
    )


async def case_referred(
    uow: ErpGatewayUnitOfWork,
    event: collections_events_pb2.CollectionsCaseReferred,
    event_id: uuid.UUID,
    occurred_at: datetime,
) -> None:
    """Queued for the connections marked for referrals; billing's event id names the referral (a
    case may be referred more than once, to different agencies)."""
    account_id = uuid.UUID(event.collections_case.account_id)
    await receive(uow, EntityType.REFERRAL, event_id, account_id, event.SerializeToString(), occurred_at)


# --- connections -------------------------------------------------------------------------------------
def _encrypt(adapters: Adapters, secret: str) -> bytes | None:
    if not secret:
        return None
    if adapters.cipher is None:
        raise FailedPrecondition(
            "CREDENTIAL_KEY_MISSING", "secret: the gateway has no credential key configured to store it encrypted"
        )
    return adapters.cipher.encrypt(secret)


async def create_connection(
    uow: ErpGatewayUnitOfWork,
    adapters: Adapters,
    connection: Connection,
    secret: str,
    request_id: uuid.UUID | None,
) -> Connection:
    """Stores the connection and queues every record the gateway knows for it; a retry with the same
    request id returns the first connection."""
    connection.validate()
    token = _encrypt(adapters, secret)
    connection = replace(connection, has_credentials=token is not None)
    async with uow:
        if request_id is not None:
            prior = await uow.connections.by_request_id(request_id)
            if prior is not None:
                return prior
        if not await uow.connections.add(connection, token, request_id):
            prior = await uow.connections.by_request_id(request_id) if request_id else None
            if prior is None:
                raise ServiceError("CONNECTION_CONFLICT", "the connection could not be stored; retry")
            return prior
        now = uow.clock.now()
        for entity_type, entity_id, account_id, version in await uow.sync_states.with_payload():
            if connection.takes(entity_type):
                await uow.jobs.upsert(connection.connection_id, entity_type, entity_id, account_id, version, now)
        await uow.commit()
        return connection


async def get_connection(uow: ErpGatewayUnitOfWork, connection_id: uuid.UUID) -> Connection:
    async with uow:
        connection = await uow.connections.get(connection_id)
        if connection is None:
            raise NotFound("connection", str(connection_id))
        return connection


async def list_connections(
    uow: ErpGatewayUnitOfWork, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[Connection]:
    async with uow:
        return await uow.connections.list(after, limit)


UPDATABLE = (
    "display_name",
    "endpoint_url",
    "database",
    "username",
    "mapping",
    "enabled",
    "import_payments",
    "collections_referrals",
    "secret",
)


async def update_connection(
    uow: ErpGatewayUnitOfWork,
    adapters: Adapters,
    connection_id: uuid.UUID,
    changes: dict[str, object],
    secret: str | None,
    etag: str,
) -> Connection:
    """Applies `changes` (field -> value; `secret` not None replaces the secret) after checking them."""
    async with uow:
        current = await uow.connections.get(connection_id, lock=True)
        if current is None:
            raise NotFound("connection", str(connection_id))
        if etag and etag != current.etag:
            # AIP-154, as everywhere in the suite: a stale etag is ABORTED (read again and retry).
            raise Aborted("ETAG_MISMATCH", "connection.etag: the connection changed since it was read")
        token = _encrypt(adapters, secret) if secret else None
        has_credentials = (token is not None) if secret is not None else current.has_credentials
        updated = current.updated(uow.clock.now(), has_credentials=has_credentials, **changes)
        updated.validate()
        await uow.connections.save(updated, token, replace_secret=secret is not None)
        await uow.commit()
        return updated


async def delete_connection(uow: ErpGatewayUnitOfWork, connection_id: uuid.UUID, etag: str) -> None:
    """Removes the connection with its jobs and imported-payment records; what the ERP has stays."""
    async with uow:
        current = await uow.connections.get(connection_id, lock=True)
        if current is None:
            raise NotFound("connection", str(connection_id))
        if etag and etag != current.etag:
            raise Aborted("ETAG_MISMATCH", "etag: the connection changed since it was read")
        await uow.connections.delete(connection_id)
        await uow.commit()


async def rotate_secrets(uow: ErpGatewayUnitOfWork, adapters: Adapters) -> tuple[int, list[uuid.UUID]]:
    """Every stored secret re-encrypted under the newest key (the first of the settings); the
    connections whose secret no key opens are returned, unchanged (without any key configured:
    every one). One transaction: all or none."""
    rotated, unreadable = 0, []
    async with uow:
        for connection_id, token in await uow.connections.stored_secrets():
            try:
                if adapters.cipher is None:
                    raise UndecryptableSecret("no credential key configured")
                fresh = adapters.cipher.rotate(token)
            except UndecryptableSecret:
                unreadable.append(connection_id)
                continue
            await uow.connections.set_secret(connection_id, fresh)
            rotated += 1
        await uow.commit()
    log.info("connection secrets rotated", extra={"rotated": rotated, "unreadable": len(unreadable)})
    return rotated, unreadable


async def test_connection(uow: ErpGatewayUnitOfWork, adapters: Adapters, connection_id: uuid.UUID) -> list[Problem]:
    async with uow:
        connection = await uow.connections.get(connection_id)
        if connection is None:
            raise NotFound("connection", str(connection_id))
        token = await uow.connections.secret(connection_id)
    if connection.type in (ConnectionType.TRYTON, ConnectionType.ODOO) and token is None:
        return [Problem(ProblemKind.CONFIG_INVALID, "no secret stored: set one with UpdateConnection")]
    adapter = adapters.open(connection, token)
    try:
        return await adapter.test()
    finally:
        await adapter.aclose()


# --- sync jobs ---------------------------------------------------------------------------------------
async def list_jobs(
    uow: ErpGatewayUnitOfWork,
    connection_id: uuid.UUID | None,
    state: JobState | None,
    entity_type: EntityType | None,
    entity_id: uuid.UUID | None,
    after: int,
    limit: int,
) -> list[tuple[int, SyncJob]]:
    async with uow:
        return await uow.jobs.list(connection_id, state, entity_type, entity_id, after, limit)


async def retry_job(uow: ErpGatewayUnitOfWork, job_id: uuid.UUID) -> SyncJob:
    """A dead or retrying job is due now with a fresh set of attempts; a succeeded one is refused."""
    async with uow:
        job = await uow.jobs.get(job_id, lock=True)
        if job is None:
            raise NotFound("sync_job", str(job_id))
        if job.state is JobState.SUCCEEDED:
            raise FailedPrecondition("JOB_SUCCEEDED", "the job has succeeded: there is nothing to retry")
        now = uow.clock.now()
        job = replace(job, state=JobState.PENDING, attempts=0, next_attempt_time=now, update_time=now)
        await uow.jobs.save(job)
        await uow.commit()
        return job


class AdapterOpener(Protocol):
    def open(self, connection: Connection, token: bytes | None) -> ErpAdapter: ...


class _Waiting(Exception):
    """The job's prerequisite is not in the ERP yet."""


class _Missing(_Waiting):
    """The job's prerequisite has not reached the gateway (see MISSING_PREREQUISITE_WAIT)."""


class _PrerequisiteDead(ErpError):
    """The job's prerequisite is DEAD: a failed attempt of this job too, naming it, so that the
    operator sees the cause (replaying the prerequisite, then this job, sends both)."""


def _after(job: SyncJob, what: str) -> None:
    """A prerequisite job (`what` names its record) must have succeeded: one still queued or
    retrying is waited for (no attempt spent); a DEAD one fails this job's attempt, naming it, so
    that a job behind a dead one ends in the dead-letter list too instead of waiting unseen for
    ever (and holding up the write-offs queued after it)."""
    if job.state is JobState.DEAD:
        raise _PrerequisiteDead(f"the job of {what} is dead: replay it ({job.job_id})")
    if job.state is not JobState.SUCCEEDED:
        raise _Waiting(f"waiting for {what}")


async def _party(uow: ErpGatewayUnitOfWork, connection: Connection, account_id: uuid.UUID) -> str:
    customer = await uow.jobs.find(connection.connection_id, EntityType.CUSTOMER, account_id)
    # Once the party exists its id is kept, also while a newer version of the customer is queued.
    if customer is not None and customer.erp_id:
        return customer.erp_id
    preset = connection.mapping.customers.get(str(account_id), "")
    if preset and customer is None:
        return preset
    raise _Waiting(f"waiting for customer {account_id}")


async def _perform(uow: ErpGatewayUnitOfWork, adapter: ErpAdapter, connection: Connection, job: SyncJob) -> str:
    payload = await uow.sync_states.payload(job.entity_type, job.entity_id)
    if payload is None:
        raise ErpError(f"the gateway has no copy of {job.entity_type.value} {job.entity_id}")
    if job.entity_type is EntityType.CUSTOMER:
        known = job.erp_id or connection.mapping.customers.get(str(job.entity_id), "")
        contacts = [contact_pb2.Contact.FromString(c) for c in await uow.contacts.of_account(job.entity_id)]
        return await adapter.upsert_customer(account_pb2.Account.FromString(payload), known, contacts)
    party = await _party(uow, connection, job.account_id)
    if job.entity_type is EntityType.INVOICE:
        return await adapter.post_invoice(bill_pb2.Bill.FromString(payload), party)
    if job.entity_type is EntityType.CREDIT_NOTE:
        note = credit_note_pb2.CreditNote.FromString(payload)
        bill_id = uuid.UUID(note.bill_id)
        invoice = await uow.jobs.find(connection.connection_id, EntityType.INVOICE, bill_id)
        if invoice is not None:
            _after(invoice, f"invoice of bill {bill_id}")
        bill_payload = await uow.sync_states.payload(EntityType.INVOICE, bill_id)
        bill = bill_pb2.Bill.FromString(bill_payload) if bill_payload else None
        return await adapter.post_credit_note(note, party, bill)
    if job.entity_type is EntityType.PAYMENT_REVERSAL:
        paid = await uow.jobs.find(connection.connection_id, EntityType.PAYMENT, job.entity_id)
        if paid is None:
            raise ErpError(f"payment {job.entity_id} was never queued for this connection: nothing to reverse")
        _after(paid, f"payment {job.entity_id}")
        # Its later allocations first: each is then in the ERP (and undone with the payment) or
        # known to be moot (it sees the reversal and sends nothing).
        for entity_id, _, _ in await uow.allocations.later_of(job.entity_id):
            allocation = await uow.jobs.find(connection.connection_id, EntityType.PAYMENT_ALLOCATION, entity_id)
            if allocation is not None:
                _after(allocation, f"allocation {entity_id} of payment {job.entity_id}")
        return await adapter.reverse_payment(payment_pb2.Payment.FromString(payload), party, paid.erp_id)
    if job.entity_type is EntityType.PAYMENT:
        # Booked as billing allocated it: after billing's first allocation of it and the invoices of
        # the bills it names (whatever the order the payment and the bills reached the gateway in).
        first = await uow.allocations.payload(job.entity_id, 1)
        if first is None:
            raise _Missing(f"waiting for billing's allocation of payment {job.entity_id}")
        allocated = events_pb2.PaymentAllocated.FromString(first)
        allocations = await _allocated_invoices(uow, connection, allocated.allocations)
        return await adapter.record_payment(payment_pb2.Payment.FromString(payload), party, allocations)
    if job.entity_type in ALLOCATED_CREDITS:
        return await _allocate(uow, adapter, connection, ALLOCATED_CREDITS[job.entity_type], party, payload)
    if job.entity_type is EntityType.REFERRAL:
        referral = collections_events_pb2.CollectionsCaseReferred.FromString(payload)
        invoices = await _invoices_of(uow, connection, referral.bill_ids)
        return await adapter.refer_case(referral, str(job.entity_id), party, invoices)
    # A write-off is split over the invoices open when it is sent: it goes after the customer's
    # records queued before it that open or settle invoices.
    earlier = await uow.jobs.unfinished_before(
        connection.connection_id, job.account_id, SETTLEMENT_PREDECESSORS, await uow.jobs.sequence(job.job_id)
    )
    if earlier is not None:
        _after(earlier, f"{earlier.entity_type.value} {earlier.entity_id}")
    if job.entity_type is not EntityType.WRITE_OFF:
        raise ErpError(f"the gateway does not send records of type {job.entity_type.value}")
    entry = ledger_pb2.LedgerEntry.FromString(payload)
    # A bill's own write-off settles that bill's invoice first.
    preferred = await _invoices_of(uow, connection, [entry.source_id] if entry.source_type == "bill" else [])
    return await adapter.write_off(entry, party, preferred)


async def _allocate(
    uow: ErpGatewayUnitOfWork,
    adapter: ErpAdapter,
    connection: Connection,
    credit: AllocatedCredit,
    party: str,
    payload: bytes,
) -> str:
    """An allocation of a payment's or a credit note's credit booked in the ERP (that much of the
    owner's open credit moved onto each invoice), after the owner's job and the invoices' jobs
    succeeded, in billing's order."""
    allocated: events_pb2.PaymentAllocated | events_pb2.CreditNoteAllocated
    if credit is PAYMENT_CREDIT:
        allocated = events_pb2.PaymentAllocated.FromString(payload)
        owner_id = uuid.UUID(allocated.payment_id)
    else:
        allocated = events_pb2.CreditNoteAllocated.FromString(payload)
        owner_id = uuid.UUID(allocated.credit_note_id)
    what = f"{credit.owner.value.replace('_', ' ')} {owner_id}"
    owner = await uow.jobs.find(connection.connection_id, credit.owner, owner_id)
    if owner is None:
        raise ErpError(f"{what} was never queued for this connection: nothing to allocate")
    if (
        credit is PAYMENT_CREDIT
        and await uow.sync_states.payload_version(EntityType.PAYMENT_REVERSAL, owner_id) is not None
    ):
        # Reversed: billing took back whatever the payment paid; its reversal undoes in the ERP
        # what was sent, and this was not.
        return NOT_SENT_REVERSED
    _after(owner, what)
    # In billing's order: the credit left for this allocation is what the ones before it left (Odoo
    # applies the credit open on the payment or credit note).
    before = await uow.jobs.find(
        connection.connection_id,
        credit.allocation,
        allocation_entity_id(owner_id, allocated.sequence - 1, credit.allocation),
    )
    if before is not None:
        _after(before, f"allocation {allocated.sequence - 1} of {what}")
    if not allocated.allocations:
        return NOT_SENT_EMPTY  # a credit note whose bill owed nothing when it was issued
    owner_payload = await uow.sync_states.payload(credit.owner, owner_id)
    if owner_payload is None:
        raise ErpError(f"the gateway has no copy of {what}")
    if credit is PAYMENT_CREDIT:
        allocations = await _allocated_invoices(uow, connection, allocated.allocations)
        payment = payment_pb2.Payment.FromString(owner_payload)
        return await adapter.allocate_credit(payment, party, owner.erp_id, allocated.sequence, allocations)
    note = credit_note_pb2.CreditNote.FromString(owner_payload)
    if allocated.sequence == 1 and await _own_bill_not_in_erp(uow, connection, note, allocated.allocations):
        return NOT_SENT_BILL_NOT_IN_ERP
    allocations = await _allocated_invoices(uow, connection, allocated.allocations)
    return await adapter.allocate_credit_note(note, party, owner.erp_id, allocated.sequence, allocations)


async def _own_bill_not_in_erp(
    uow: ErpGatewayUnitOfWork,
    connection: Connection,
    note: credit_note_pb2.CreditNote,
    allocated: Sequence[events_pb2.BillAllocation],
) -> bool:
    """Whether a credit note's allocation at issue (to its own bill) goes to a bill that has no
    invoice job on this connection. Asked once the note's job succeeded: billing published the
    bill's BillIssued before the note's CreditNoteIssued on the same stream, so a bill without a
    job by now is one the gateway never received (issued before it consumed billing's stream) and
    never will; the note went to the ERP without it (as referrals leave such bills out)."""
    if any(a.bill_id != note.bill_id for a in allocated):
        return False
    job = await uow.jobs.find(connection.connection_id, EntityType.INVOICE, uuid.UUID(note.bill_id))
    return job is None


async def _allocated_invoices(
    uow: ErpGatewayUnitOfWork, connection: Connection, allocated: Sequence[events_pb2.BillAllocation]
) -> list[InvoiceAllocation]:
    """Billing's allocation with each bill's invoice in the ERP; waits until every one is there (a
    bill whose BillIssued has not reached the gateway yet too: billing allocated to it, so it comes)."""
    result = []
    for allocation in allocated:
        bill_id = uuid.UUID(allocation.bill_id)
        invoice = await uow.jobs.find(connection.connection_id, EntityType.INVOICE, bill_id)
        if invoice is None:
            raise _Missing(f"waiting for bill {bill_id} (billing allocated to it; its BillIssued has not come)")
        if invoice.state is JobState.DEAD:
            raise _PrerequisiteDead(f"the invoice job of bill {bill_id} is dead: replay it ({invoice.job_id})")
        if invoice.state is not JobState.SUCCEEDED:
            raise _Waiting(f"waiting for invoice of bill {bill_id}")
        result.append(InvoiceAllocation(invoice.erp_id, allocation.bill_id, from_money(allocation.amount)))
    return result


async def _invoices_of(uow: ErpGatewayUnitOfWork, connection: Connection, bill_ids: Sequence[str]) -> list[str]:
    """The ERP's invoices of these bills; waits for those queued and not sent yet (a bill the
    gateway never received is left out)."""
    invoices = []
    for bill_id in bill_ids:
        try:
            job = await uow.jobs.find(connection.connection_id, EntityType.INVOICE, uuid.UUID(bill_id))
        except ValueError:
            continue
        if job is None:
            continue
        if job.state is not JobState.SUCCEEDED:
            raise _Waiting(f"waiting for invoice of bill {bill_id}")
        invoices.append(job.erp_id)
    return invoices


# Called (by tests) between the ERP's answer and the gateway's commit, to simulate a crash there.
AfterErp = Callable[[SyncJob, str], None]


# What an operator watches (deploy/README.md "What to watch", deploy/k8s/monitoring): dead jobs need
# one (RetryJob once the cause is fixed); a growing retrying count is an ERP refusing or down.
SYNC_ATTEMPTS = Counter(
    "evolutivo_erp_sync_attempts_total",
    "Sync jobs run against an ERP, by record type and outcome: succeeded, retrying, dead, or waiting "
    "(a record it needs is not in the ERP yet; not counted as an attempt)",
    ["entity_type", "outcome"],
)
SYNC_JOBS = Gauge(
    "evolutivo_erp_sync_jobs",
    "Sync jobs not done, by state (pending, retrying, dead), as the gateway's database holds them: "
    "every replica reports the same numbers",
    ["state"],
)
UNFINISHED_STATES = (JobState.PENDING, JobState.RETRYING, JobState.DEAD)
# The outcomes SYNC_ATTEMPTS counts: a run's final state, or waiting for a prerequisite.
SYNC_OUTCOMES = (JobState.SUCCEEDED.value, JobState.RETRYING.value, JobState.DEAD.value, "waiting")
PAYMENT_IMPORT_FAILURES = Counter(
    "evolutivo_erp_payment_import_failures_total",
    "Payment import polls that failed (an ERP or balance not answering); the next poll tries again",
)


async def count_jobs(uow: ErpGatewayUnitOfWork) -> dict[JobState, int]:
    """The jobs not done, by state, also set on SYNC_JOBS."""
    async with uow:
        counted = await uow.jobs.count_by_state(UNFINISHED_STATES)
    found = {state: counted.get(state, 0) for state in UNFINISHED_STATES}
    for state, count in found.items():
        SYNC_JOBS.labels(state.value).set(count)
    return found


async def run_next_job(
    uow: ErpGatewayUnitOfWork,
    adapters: AdapterOpener,
    policy: RetryPolicy,
    after_erp: AfterErp | None = None,
    breaker: CircuitBreaker = CircuitBreaker(),  # noqa: B008 -- frozen, never mutated
) -> SyncJob | None:
    """Claims the next due job (FOR UPDATE SKIP LOCKED), sends it and records the outcome in the
    same transaction; None when no job is due. The row stays locked while the ERP is called, so a
    job runs in one replica at a time; a crash before the commit leaves it due again, and the
    adapter finds in the ERP what the first attempt created."""
    async with uow:
        now = uow.clock.now()
        job = await uow.jobs.claim_due(now)
        if job is None:
            return None
        connection = await uow.connections.get(job.connection_id)
        assert connection is not None  # the claim joined it
        token = await uow.connections.secret(job.connection_id)
        adapter: ErpAdapter | None = None
        outcome = ""
        try:
            adapter = adapters.open(connection, token)
            erp_id = await _perform(uow, adapter, connection, job)
        except _Waiting as waiting:
            if isinstance(waiting, _Missing) and now - job.create_time > MISSING_PREREQUISITE_WAIT:
                job = _failed(job, f"{waiting} for over {MISSING_PREREQUISITE_WAIT}", policy, now)
            else:
                job = replace(job, last_error=str(waiting), next_attempt_time=now + PREREQUISITE_WAIT, update_time=now)
                outcome = "waiting"
        except Exception as exc:
            # Any failure is an attempt (a bug too, so that one bad record cannot block the loop).
            if not isinstance(exc, ErpError):
                log.exception("sync job raised", extra={"job_id": str(job.job_id)})
            job = _failed(job, f"{type(exc).__name__}: {exc}"[:1000], policy, now)
            if isinstance(exc, (Unreachable, AuthFailed)):
                # The connection failed, not the record: count it towards the breaker.
                await uow.connections.connection_failed(job.connection_id, breaker.threshold, now + breaker.pause)
        else:
            if after_erp is not None:
                after_erp(job, erp_id)
            job = replace(job, state=JobState.SUCCEEDED, erp_id=erp_id, last_error="", update_time=now)
            await uow.connections.connection_answered(job.connection_id)
            state = await uow.sync_states.get(job.entity_type, job.entity_id)
            await uow.sync_states.set_status(
                job.entity_type, job.entity_id, SyncStatus.SYNCED, "" if state and state.erp_id else erp_id, now
            )
        finally:
            if adapter is not None:
                await adapter.aclose()
        if job.state is JobState.DEAD:
            await uow.sync_states.set_status(job.entity_type, job.entity_id, SyncStatus.FAILED, "", now)
        await uow.jobs.save(job)
        await uow.commit()
        SYNC_ATTEMPTS.labels(job.entity_type.value, outcome or job.state.value).inc()
        return job


def _failed(job: SyncJob, error: str, policy: RetryPolicy, now: datetime) -> SyncJob:
    attempts = job.attempts + 1
    if policy.exhausted(attempts):
        log.error("sync job dead", extra={"job_id": str(job.job_id), "error": error})
        return replace(job, state=JobState.DEAD, attempts=attempts, last_error=error, update_time=now)
    log.warning("sync job failed", extra={"job_id": str(job.job_id), "error": error})
    return replace(
        job,
        state=JobState.RETRYING,
        attempts=attempts,
        last_error=error,
        next_attempt_time=now + policy.delay(attempts),
        update_time=now,
    )


# --- inbound payments ---------------------------------------------------------------------------------
class PaymentRecorder(Protocol):
    async def record_payment(self, account_id: uuid.UUID, amount: Decimal, currency_code: str, reference: str) -> str:
        """Records the payment in balance (idempotent on the reference); returns balance's payment id.
        Raises InvalidArgument / FailedPrecondition when balance refuses it, ServiceError else."""
        ...


IMPORT_BATCH = 500


async def import_payments(
    uow_factory: Callable[[], ErpGatewayUnitOfWork], adapters: AdapterOpener, balance: PaymentRecorder
) -> int:
    """One poll of every connection that imports payments (the ERPs of IMPORTED_PAYMENT_PREFIX);
    returns how many were recorded."""
    async with uow_factory() as uow:
        importing = [
            c
            for c in await uow.connections.all()
            if c.enabled and c.import_payments and c.type in IMPORTED_PAYMENT_PREFIX
        ]
    recorded = 0
    for connection in importing:
        recorded += await _import_from(uow_factory, adapters, balance, connection)
    return recorded


async def _import_from(
    uow_factory: Callable[[], ErpGatewayUnitOfWork],
    adapters: AdapterOpener,
    balance: PaymentRecorder,
    connection: Connection,
) -> int:
    async with uow_factory() as uow:
        cursor = await uow.connections.cursor(connection.connection_id)
        token = await uow.connections.secret(connection.connection_id)
    adapter = adapters.open(connection, token)
    recorded = 0
    try:
        payments, after = await adapter.payments_since(cursor, IMPORT_BATCH)
        for payment in payments:
            # Balance is idempotent on it; the ERP's payment id is what makes it one payment.
            reference = f"{IMPORTED_PAYMENT_PREFIX[connection.type]}:{payment.erp_id}"
            amount = Decimal(payment.amount_text)
            async with uow_factory() as uow:
                status = await uow.inbound.status(connection.connection_id, payment.erp_id)
                if status in ("recorded", "ignored"):
                    continue
                account_id = await uow.jobs.account_for_erp_id(connection.connection_id, payment.party)
                if account_id is None:
                    inverse = {v: k for k, v in connection.mapping.customers.items()}
                    account_id = uuid.UUID(inverse[payment.party]) if payment.party in inverse else None
                if status is None:
                    # Committed before balance is called: the PaymentRecorded that follows finds it
                    # and does not send the payment back to this ERP. A crash after this commit
                    # leaves it pending, and the next poll records it (balance is idempotent on the
                    # reference).
                    await uow.inbound.add(
                        connection_id=connection.connection_id,
                        erp_id=payment.erp_id,
                        reference=reference,
                        account_id=account_id,
                        amount=amount,
                        currency_code=payment.currency_code,
                        status="pending",
                        payment_id="",
                        reason="",
                        create_time=uow.clock.now(),
                    )
                    await uow.commit()
            outcome: tuple[str, str, str]
            if account_id is None:
                outcome = ("ignored", "", f"party {payment.party} is no suite customer")
            else:
                try:
                    payment_id = await balance.record_payment(account_id, amount, payment.currency_code, reference)
                except (InvalidArgument, FailedPrecondition) as refused:
                    outcome = ("ignored", "", f"balance refused: {refused}")
                else:
                    outcome = ("recorded", payment_id, "")
                    recorded += 1
            async with uow_factory() as uow:
                await uow.inbound.resolve(connection.connection_id, payment.erp_id, *outcome)
                await uow.commit()
        if after is not None and after != cursor:
            async with uow_factory() as uow:
                await uow.connections.set_cursor(connection.connection_id, after)
                await uow.commit()
    finally:
        await adapter.aclose()
    return recorded


# --- general ledger -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportedJournal:
    journal: gl.Journal
    erp_move_id: str


async def export_journal(
    uow: ErpGatewayUnitOfWork,
    adapters: AdapterOpener,
    connection_id: uuid.UUID,
    start: datetime,
    end: datetime,
    currency_code: str,
    post: bool,
    reference: str,
) -> ExportedJournal:
    if end <= start:
        raise InvalidArgument("end_time", "must be after start_time")
    async with uow:
        connection = await uow.connections.get(connection_id)
        if connection is None:
            raise NotFound("connection", str(connection_id))
        token = await uow.connections.secret(connection_id)
        postings = await uow.postings.in_period(currency_code, start, end)
    journal = gl.journal(currency_code, postings, connection.mapping.accounts)
    if not post:
        return ExportedJournal(journal, "")
    if connection.type not in (ConnectionType.TRYTON, ConnectionType.ODOO):
        raise FailedPrecondition(
            "CONNECTION_TAKES_NO_JOURNAL", "post: only Tryton and Odoo connections take journal entries"
        )
    if not journal.lines:
        raise FailedPrecondition("JOURNAL_EMPTY", "post: the period has no movements to post")
    adapter = adapters.open(connection, token)
    try:
        on = (end - timedelta(microseconds=1)).date()
        erp_move_id = await adapter.post_journal(journal, on, reference)
    except MappingMissing as exc:
        raise FailedPrecondition("MAPPING_MISSING", str(exc)) from None
    except ErpError as exc:
        raise FailedPrecondition("ERP_FAILED", f"the ERP refused the journal entry: {exc}") from None
    finally:
        await adapter.aclose()
    return ExportedJournal(journal, erp_move_id)
