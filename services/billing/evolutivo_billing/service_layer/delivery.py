"""Use cases of bill documents and their delivery by email (docs/billing.md, "Documents" and
"Delivery"): the customer details billing keeps from customer's events, a bill's PDF (rendered
once, then kept), and the delivery loop's step, which claims one due delivery, renders and emails
the bill and records the outcome, in one transaction."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from evolutivo_runtime.errors import FailedPrecondition, NotFound
from prometheus_client import Counter

from evolutivo_billing.adapters.delivery_repository import CustomerRepository, DeliveryRepository, DocumentRepository
from evolutivo_billing.domain.bills import Bill
from evolutivo_billing.domain.delivery import (
    BillDelivery,
    DeliveryAlreadySent,
    DeliveryState,
    Email,
    RetryPolicy,
    message_id,
)
from evolutivo_billing.domain.documents import (
    PDF_CONTENT_TYPE,
    AccountContact,
    AccountDetails,
    BillDocumentView,
    Customer,
    DeliveryMethod,
    Seller,
    StoredDocument,
    document_view,
    email_subject,
    email_text,
)
from evolutivo_billing.domain.notices import LetterView
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork

log = logging.getLogger(__name__)

DELIVERIES = Counter("evolutivo_billing_bill_delivery_attempts_total", "Bill delivery attempts by outcome", ["outcome"])
# The outcomes a delivery attempt is counted under (`retry`: it stays pending, tried again later).
DELIVERY_OUTCOMES = (*(s.value for s in DeliveryState if s is not DeliveryState.PENDING), "retry")
# Every outcome's series exists from the start: an alert's increase() cannot see the first attempt
# of a series that appears at 1 (deploy/k8s/monitoring).
for _outcome in DELIVERY_OUTCOMES:
    DELIVERIES.labels(_outcome)
DOCUMENTS_RENDERED = Counter("evolutivo_billing_bill_documents_rendered_total", "Bill PDFs rendered and kept")


class Mailer(Protocol):
    async def send(self, email: Email) -> list[str]: ...


@dataclass(frozen=True)
class Documents:
    """How bills' documents are made: the seller (BILLING_SELLER_*) and the PDF renderer; and
    dunning letters' (None: letters cannot be rendered, their deliveries fail and are retried)."""

    seller: Seller
    render: Callable[[BillDocumentView], bytes]
    render_letter: Callable[[LetterView], bytes] | None = None


@dataclass(frozen=True)
class DeliveryPolicy:
    """Who the emails come from (BILLING_SMTP_FROM) and how failed attempts are retried."""

    sender: str
    retry: RetryPolicy = field(default_factory=RetryPolicy)


# Customer's facts, applied in the consumer's transaction (the caller commits).


async def record_account(uow: BillingUnitOfWork, details: AccountDetails) -> None:
    """AccountCreated / AccountUpdated / BillingProfileChanged: the account's details, unless
    billing has a newer version."""
    await CustomerRepository(uow.session).save_account(details)


async def record_contact(uow: BillingUnitOfWork, contact: AccountContact) -> None:
    """ContactChanged: the contact (removed ones kept as removed), unless billing has a newer
    version; without its personal data when the account's was erased."""
    customers = CustomerRepository(uow.session)
    if await customers.is_erased(contact.account_id):
        contact = contact.erased()
    await customers.save_contact(contact)


async def erase_personal_data(uow: BillingUnitOfWork, details: AccountDetails) -> None:
    """PersonalDataErased: the account's details as erased and its contacts without name, email or
    address. Documents already rendered stay (bills are kept for statutory retention); no email
    goes to the account any more (its deliveries end NO_RECIPIENT)."""
    await CustomerRepository(uow.session).erase(details)


# Documents.


async def _document(uow: BillingUnitOfWork, bill: Bill, documents: Documents, now: datetime) -> StoredDocument:
    """The bill's kept PDF; rendered (in a thread: rendering is CPU work) and kept when it has
    none. Two renderings at once keep the first committed; both return that one."""
    kept = DocumentRepository(uow.session)
    stored = await kept.get(bill.bill_id)
    if stored is not None:
        return stored
    customer = await CustomerRepository(uow.session).customer(bill.account_id)
    view = document_view(bill, documents.seller, customer)
    content = await asyncio.to_thread(documents.render, view)
    rendered = StoredDocument(
        bill.bill_id, PDF_CONTENT_TYPE, view.file_name, content, hashlib.sha256(content).hexdigest(), now
    )
    await kept.add(rendered)
    DOCUMENTS_RENDERED.inc()
    return await kept.get(bill.bill_id) or rendered


async def _issued_bill(uow: BillingUnitOfWork, bill_id: uuid.UUID) -> Bill:
    bill = await uow.bills.get(bill_id, with_charge_ids=False)
    if bill is None:
        raise NotFound("bill", str(bill_id))
    if bill.number is None:
        raise FailedPrecondition(
            "BILL_NOT_ISSUED", f"bill {bill_id} was never issued (draft or suppressed): it has no document"
        )
    return bill


async def get_bill_document(uow: BillingUnitOfWork, bill_id: uuid.UUID, documents: Documents) -> StoredDocument:
    """The PDF of an issued bill: the kept one, or rendered now and kept."""
    async with uow:
        bill = await _issued_bill(uow, bill_id)
        document = await _document(uow, bill, documents, uow.clock.now())
        await uow.commit()
    return document


# Deliveries.


async def get_bill_delivery(uow: BillingUnitOfWork, bill_id: uuid.UUID) -> BillDelivery:
    async with uow:
        delivery = await DeliveryRepository(uow.session).get(bill_id)
        if delivery is None:
            raise NotFound("bill_delivery", str(bill_id))
        return delivery


async def retry_bill_delivery(uow: BillingUnitOfWork, bill_id: uuid.UUID) -> BillDelivery:
    """The delivery PENDING and due now, its attempts counted again; one for a bill issued before
    billing kept deliveries. FAILED_PRECONDITION for a bill never issued or already sent.
    Idempotent: a repeated call finds it PENDING and only makes it due now again."""
    async with uow:
        now = uow.clock.now()
        deliveries = DeliveryRepository(uow.session)
        delivery = await deliveries.get(bill_id, for_update=True)
        if delivery is None:
            bill = await _issued_bill(uow, bill_id)
            await deliveries.add(BillDelivery.scheduled(bill.bill_id, bill.account_id, now))
            delivery = await deliveries.get(bill_id, for_update=True)
            assert delivery is not None  # added, or added by a concurrent retry
        try:
            delivery = delivery.retry(now)
        except DeliveryAlreadySent:
            raise FailedPrecondition(
                "BILL_ALREADY_SENT", f"bill {bill_id} was sent at {delivery.sent_time}", {"bill_id": str(bill_id)}
            ) from None
        await deliveries.save(delivery)
        await uow.commit()
    return delivery


async def deliver_next(
    uow: BillingUnitOfWork, documents: Documents, mailer: Mailer, policy: DeliveryPolicy
) -> BillDelivery | None:
    """One step of the delivery loop: claims the earliest due PENDING delivery (`SKIP LOCKED`:
    replicas claim different ones; None when nothing is due), and in the same transaction renders
    the bill's PDF if it has none, emails it and records the outcome. The row stays locked while
    the SMTP server is talked to, so no other replica sends it meanwhile; a crash after the server
    accepted the email and before the commit sends it again (at-least-once: the same Message-ID)."""
    async with uow:
        now = uow.clock.now()
        deliveries = DeliveryRepository(uow.session)
        claimed = await deliveries.claim_due(now)
        if claimed is None:
            return None
        delivery = await _attempt(uow, claimed, documents, mailer, policy, now)
        await deliveries.save(delivery)
        await uow.commit()
    DELIVERIES.labels(delivery.state.value if delivery.state is not DeliveryState.PENDING else "retry").inc()
    log.info(
        "bill delivery attempted",
        extra={
            "bill_id": str(delivery.bill_id),
            "state": delivery.state.value,
            "attempts": delivery.attempts,
            "last_error": delivery.last_error,
        },
    )
    return delivery


async def _attempt(
    uow: BillingUnitOfWork,
    delivery: BillDelivery,
    documents: Documents,
    mailer: Mailer,
    policy: DeliveryPolicy,
    now: datetime,
) -> BillDelivery:
    customer: Customer = await CustomerRepository(uow.session).customer(delivery.account_id)
    if customer.delivery_method is not DeliveryMethod.EMAIL:
        return delivery.not_by_email(now, customer.delivery_method.value)
    recipients = tuple(customer.recipients())
    if not recipients:
        return delivery.no_recipient(now)
    mid = message_id(delivery.bill_id, policy.sender)
    try:
        bill = await uow.bills.get(delivery.bill_id, with_charge_ids=False)
        if bill is None:  # the foreign key rules it out
            raise LookupError(f"bill {delivery.bill_id} does not exist")
        # A savepoint: a failed rendering or store leaves the transaction usable for the outcome.
        async with uow.session.begin_nested():
            document = await _document(uow, bill, documents, now)
        view = document_view(bill, documents.seller, customer)
        refused = await mailer.send(
            Email(
                sender=policy.sender,
                recipients=recipients,
                subject=email_subject(view),
                text=email_text(view),
                message_id=mid,
                attachment=document.content,
                attachment_name=document.file_name,
                attachment_type=document.content_type,
                date=now,
            )
        )
    except Exception as exc:  # any failure of this attempt is retried, then FAILED
        log.warning("bill delivery attempt failed", extra={"bill_id": str(delivery.bill_id)}, exc_info=exc)
        return delivery.failed_attempt(now, f"{type(exc).__name__}: {exc}", policy.retry, recipients, mid)
    accepted = tuple(r for r in recipients if r not in refused)
    return delivery.sent(now, accepted, mid, f"refused by the server: {', '.join(refused)}" if refused else "")
