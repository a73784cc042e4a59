"""Use cases of collections notices (docs/collections.md, "Notices"): reading a notice and a
dunning letter's PDF (rendered once, then kept), and the delivery loop's step for notices, which
claims one due notice, renders and emails it, records the outcome on the notice and on the case's
action, in one transaction."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from datetime import datetime

from evolutivo_runtime.errors import FailedPrecondition, NotFound
from prometheus_client import Counter

from evolutivo_billing.adapters.collections_repository import CollectionsRepository
from evolutivo_billing.adapters.delivery_repository import CustomerRepository
from evolutivo_billing.adapters.notices_repository import NoticeRepository
from evolutivo_billing.domain.delivery import DeliveryState, Email, NoticeDelivery, NoticeOnlyState, notice_message_id
from evolutivo_billing.domain.documents import PDF_CONTENT_TYPE
from evolutivo_billing.domain.notices import (
    Notice,
    NoticeDocument,
    email_subject,
    email_text,
    letter_view,
    recipients,
)
from evolutivo_billing.service_layer.delivery import DELIVERY_OUTCOMES, DeliveryPolicy, Documents, Mailer
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork

log = logging.getLogger(__name__)

NOTICE_DELIVERIES = Counter(
    "evolutivo_billing_notice_delivery_attempts_total", "Collections notice delivery attempts by outcome", ["outcome"]
)
for _outcome in DELIVERY_OUTCOMES:
    NOTICE_DELIVERIES.labels(_outcome)  # present from the start, as the bills' (delivery.py)
NO_RECIPIENT = "the account has no collections, billing or primary contact with an email address"


async def get_notice(uow: BillingUnitOfWork, notice_id: uuid.UUID) -> Notice:
    async with uow:
        notice = await NoticeRepository(uow.session).get(notice_id)
    if notice is None:
        raise NotFound("collections_notice", str(notice_id))
    return notice


async def _document(uow: BillingUnitOfWork, notice: Notice, documents: Documents, now: datetime) -> NoticeDocument:
    """The letter's kept PDF; rendered (in a thread: CPU work) and kept when it has none. Two
    renderings at once keep the first committed; both return that one."""
    kept = NoticeRepository(uow.session)
    stored = await kept.document(notice.notice_id)
    if stored is not None:
        return stored
    if documents.render_letter is None:
        raise RuntimeError("no dunning letter renderer is configured")
    customer = await CustomerRepository(uow.session).customer(notice.account_id)
    view = letter_view(notice, documents.seller, customer)
    content = await asyncio.to_thread(documents.render_letter, view)
    rendered = NoticeDocument(
        notice.notice_id, PDF_CONTENT_TYPE, view.file_name, content, hashlib.sha256(content).hexdigest(), now
    )
    await kept.add_document(rendered)
    return await kept.document(notice.notice_id) or rendered


async def get_notice_document(uow: BillingUnitOfWork, notice_id: uuid.UUID, documents: Documents) -> NoticeDocument:
    """A dunning letter's PDF: the kept one, or rendered now and kept. FAILED_PRECONDITION for a
    payment reminder (an email, without a document)."""
    async with uow:
        notice = await NoticeRepository(uow.session).get(notice_id)
        if notice is None:
            raise NotFound("collections_notice", str(notice_id))
        if not notice.is_letter:
            raise FailedPrecondition(
                "NOTICE_NOT_A_LETTER", f"notice {notice_id} is a payment reminder: an email without a document"
            )
        document = await _document(uow, notice, documents, uow.clock.now())
        await uow.commit()
    return document


async def deliver_next_notice(
    uow: BillingUnitOfWork, documents: Documents, mailer: Mailer, policy: DeliveryPolicy
) -> NoticeDelivery | None:
    """One step of the delivery loop for notices: claims the earliest due PENDING notice (`SKIP
    LOCKED`: replicas claim different ones; None when nothing is due) and in the same transaction
    renders the letter if it has none, emails it and records the outcome; a delivery that ended
    (sent, failed for good, nobody to send to, cancelled) writes its outcome on the case's action.
    A crash after the SMTP server accepted the email and before the commit sends it again
    (at-least-once: the same Message-ID)."""
    async with uow:
        now = uow.clock.now()
        notices = NoticeRepository(uow.session)
        notice = await notices.claim_due(now)
        if notice is None:
            return None
        delivery = await _attempt(uow, notice, documents, mailer, policy, now)
        await notices.save_delivery(delivery)
        if delivery.state is not DeliveryState.PENDING:
            await _record_on_case(uow, notice, delivery)
        await uow.commit()
    NOTICE_DELIVERIES.labels(delivery.state.value if delivery.state is not DeliveryState.PENDING else "retry").inc()
    log.info(
        "collections notice delivery attempted",
        extra={
            "notice_id": str(notice.notice_id),
            "case_id": str(notice.case_id),
            "state": delivery.state.value,
            "attempts": delivery.attempts,
            "last_error": delivery.last_error,
        },
    )
    return delivery


async def _attempt(
    uow: BillingUnitOfWork,
    notice: Notice,
    documents: Documents,
    mailer: Mailer,
    policy: DeliveryPolicy,
    now: datetime,
) -> NoticeDelivery:
    delivery = notice.delivery
    case = await CollectionsRepository(uow.session).get_case(notice.case_id)
    if case is None or not case.is_open:
        reason = case.close_reason.value if case is not None and case.close_reason else "closed"
        return delivery.cancelled(now, f"not sent: its case closed ({reason}) before it went out")
    customer = await CustomerRepository(uow.session).customer(notice.account_id)
    to = recipients(customer)
    if not to:
        return delivery.no_recipient(now, NO_RECIPIENT)
    mid = notice_message_id(notice.notice_id, policy.sender)
    try:
        view = letter_view(notice, documents.seller, customer)
        attachment = b""
        attachment_name = ""
        if notice.is_letter:
            # A savepoint: a failed rendering or store leaves the transaction usable for the outcome.
            async with uow.session.begin_nested():
                document = await _document(uow, notice, documents, now)
            attachment, attachment_name = document.content, document.file_name
        refused = await mailer.send(
            Email(
                sender=policy.sender,
                recipients=to,
                subject=email_subject(view),
                text=email_text(view),
                message_id=mid,
                attachment=attachment,
                attachment_name=attachment_name,
                date=now,
            )
        )
    except Exception as exc:  # any failure of this attempt is retried, then FAILED
        log.warning("notice delivery attempt failed", extra={"notice_id": str(notice.notice_id)}, exc_info=exc)
        return delivery.failed_attempt(now, f"{type(exc).__name__}: {exc}", policy.retry, to, mid)
    accepted = tuple(r for r in to if r not in refused)
    return delivery.sent(now, accepted, mid, f"refused by the server: {', '.join(refused)}" if refused else "")


def outcome_text(notice: Notice, delivery: NoticeDelivery) -> str:
    """What the case's action says once the notice's delivery ended."""
    what = "dunning letter" if notice.is_letter else "reminder email"
    match delivery.state:
        case DeliveryState.SENT:
            return f"{what} sent to {', '.join(delivery.recipients)}"
        case DeliveryState.FAILED:
            return f"{what} not sent after {delivery.attempts} attempts: {delivery.last_error}"
        case DeliveryState.NO_RECIPIENT:
            return f"{what} not sent: {NO_RECIPIENT}"
        case NoticeOnlyState.CANCELLED:
            return f"{what} {delivery.last_error}"
    return f"{what} {delivery.state.value}"


async def _record_on_case(uow: BillingUnitOfWork, notice: Notice, delivery: NoticeDelivery) -> None:
    """The delivery's outcome on the action that made the notice. The case is locked (as the
    processor holds it while it saves its actions), so neither overwrites the other."""
    repo = CollectionsRepository(uow.session)
    case = await repo.get_case(notice.case_id, for_update=True)
    if case is None:
        return
    details: dict[str, object] = {
        "delivery": {
            "state": delivery.state.value,
            "attempts": delivery.attempts,
            "recipients": list(delivery.recipients),
            "message_id": delivery.message_id,
            "sent_time": delivery.sent_time.isoformat() if delivery.sent_time else None,
        }
    }
    case.record_notice_outcome(notice.action_sequence, outcome_text(notice, delivery), details)
    await repo.save_case(case)
