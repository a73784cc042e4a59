"""Bill documents and delivery against a real, migrated PostgreSQL and a real SMTP server (aiosmtpd):
the customer details billing keeps from customer's events (through the runtime's consumer), a
delivery added in the transaction that issues a bill, the delivery loop emailing the bill's PDF
once (read back from what the server received), retried with backoff while the server refuses,
FAILED after the last attempt and retried on request, two loops racing without sending twice,
no email without a recipient or for postal delivery, and GetBillDocument rendering once."""

from __future__ import annotations

import asyncio
import email
import email.policy
import io
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import pypdf
import pytest
from aiosmtpd.controller import Controller
from evolutivo.billing.v1 import document_pb2
from evolutivo.customer.v1 import account_pb2, contact_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_billing.adapters import events, pdf
from evolutivo_billing.adapters.orm import bill_deliveries, bill_documents, bills, inbox, outbox
from evolutivo_billing.adapters.smtp import DirectoryMailer, SmtpMailer
from evolutivo_billing.domain.bills import Bill, Charge, TaxRates
from evolutivo_billing.domain.delivery import RetryPolicy
from evolutivo_billing.domain.documents import Seller
from evolutivo_billing.entrypoints.app import MIGRATIONS
from evolutivo_billing.entrypoints.consumers import subscriptions
from evolutivo_billing.entrypoints.cycle_closer import CycleCloser
from evolutivo_billing.entrypoints.delivery_loop import DeliveryLoop
from evolutivo_billing.entrypoints.grpc_api import BillingServicer
from evolutivo_billing.service_layer import bills as bill_use_cases
from evolutivo_billing.service_layer.bills import BillPolicy
from evolutivo_billing.service_layer.delivery import DeliveryPolicy, Documents, Mailer
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork
from evolutivo_runtime.clock import FixedClock
from evolutivo_runtime.db import create_engine, session_factory
from evolutivo_runtime.errors import FailedPrecondition, NotFound
from evolutivo_runtime.messaging.consumer import EventConsumer
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.timestamps import to_timestamp
from evolutivo_stack.embedded import free_port
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from support.databases import MigratedDatabase
from support.jetstream import FakeMsg, consumer_for, message, process

MADRID = ZoneInfo("Europe/Madrid")
NO_CONTEXT: Any = None
SENDER = "billing@evolutivo.test"
SELLER = Seller(
    name="Evolutivo Telecom S.L.",
    address_lines=("Calle Mayor 1", "28013 Madrid"),
    tax_id="ESB12345678",
    payment_instructions=("IBAN ES91 2100 0418 4502 0005 1332",),
)
DOCUMENTS = Documents(SELLER, pdf.render)
RETRY = RetryPolicy(max_attempts=3, first_delay=timedelta(minutes=1), max_delay=timedelta(minutes=10))
POLICY = BillPolicy(TaxRates({"standard": Decimal("0.21")}))
SUPPRESSING = BillPolicy(POLICY.tax_rates, suppress_zero_bills=True)

ACCOUNT_CREATED = "evolutivo.customer.v1.account.created"
ACCOUNT_UPDATED = "evolutivo.customer.v1.account.updated"
CONTACT_CHANGED = "evolutivo.customer.v1.contact.changed"
PERSONAL_DATA_ERASED = "evolutivo.customer.v1.account.personal_data_erased"


def madrid(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=MADRID).astimezone(UTC)


NOW = madrid(2031, 5, 10, 12)
# The first cycle of an account created at NOW (billing day 15) ends on 15 May; no late-usage delay.
AFTER_FIRST_CYCLE = madrid(2031, 5, 15, 0, 5)


# A real SMTP server.


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage


@dataclass
class MailServer:
    """aiosmtpd handler: keeps what it accepts; answers 451 (try again later) to the next
    `refuse_next` messages and 550 to the recipients in `unknown`; `delay` slows each DATA down."""

    port: int = 0
    received: list[Received] = field(default_factory=list)
    refuse_next: int = 0
    refused: int = 0
    unknown: set[str] = field(default_factory=set)
    delay: float = 0.0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.unknown:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)  # widens the window in which two senders could overlap
        if self.refuse_next > 0:
            self.refuse_next -= 1
            self.refused += 1
            return "451 4.3.0 try again later"
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 2.0.0 accepted"

    def mailer(self) -> SmtpMailer:
        return SmtpMailer("127.0.0.1", self.port, starttls=False, timeout=10)


@pytest.fixture
def smtp() -> Iterator[MailServer]:
    server = MailServer(port=free_port())
    controller = Controller(server, hostname="127.0.0.1", port=server.port)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


def attachment(message: EmailMessage) -> tuple[str, bytes]:
    (part,) = list(message.iter_attachments())
    assert part.get_content_type() == "application/pdf"
    return part.get_filename() or "", cast(bytes, part.get_content())


def pdf_text(content: bytes) -> str:
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(content)).pages)


# The database.


@dataclass
class BillingDb:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    clock: FixedClock

    def uow(self) -> BillingUnitOfWork:
        return BillingUnitOfWork(self.sessions, outbox, self.clock, events.encode)

    def customer_consumer(self) -> EventConsumer[BillingUnitOfWork]:
        return consumer_for(subscriptions(), stream_name("customer"), self.uow, inbox)

    def loop(self, mailer: Mailer) -> DeliveryLoop:
        return DeliveryLoop(self.uow, DOCUMENTS, mailer, DeliveryPolicy(SENDER, RETRY), check_seconds=0.05)

    def servicer(self) -> BillingServicer:
        return BillingServicer(self.uow, DOCUMENTS)

    async def rows(self, query: Any) -> list[Any]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).all())

    async def delivery(self, bill_id: uuid.UUID) -> document_pb2.BillDelivery:
        request = document_pb2.GetBillDeliveryRequest(bill_id=str(bill_id))
        return (await self.servicer().GetBillDelivery(request, NO_CONTEXT)).delivery


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[BillingDb]:
    url = await migrated_database("billing_delivery", MIGRATIONS)
    engine = create_engine(url, pool_size=8)
    try:
        yield BillingDb(engine, session_factory(engine), FixedClock(NOW))
    finally:
        await engine.dispose()


# Customer's events, as the relay publishes them.


def customer_account(
    account_id: uuid.UUID,
    name: str = "Facturas Ibéricas SL",
    method: account_pb2.DeliveryMethod.ValueType = account_pb2.DELIVERY_METHOD_EMAIL,
    updated: datetime = NOW,
) -> account_pb2.Account:
    return account_pb2.Account(
        account_id=str(account_id),
        account_number=f"A-{account_id.hex[:8]}",
        type=account_pb2.ACCOUNT_TYPE_BUSINESS,
        display_name=name,
        currency_code="EUR",
        time_zone="Europe/Madrid",
        tax_id="ESB87654321",
        status=account_pb2.ACCOUNT_STATUS_ACTIVE,
        billing_profile=account_pb2.BillingProfile(
            bill_cycle_day=15,
            frequency=account_pb2.BILLING_FREQUENCY_MONTHLY,
            payment_terms_days=14,
            delivery=account_pb2.DeliveryPreferences(method=method, attach_pdf=True),
        ),
        create_time=to_timestamp(NOW),
        update_time=to_timestamp(updated),
    )


def account_created(
    account_id: uuid.UUID, method: account_pb2.DeliveryMethod.ValueType = account_pb2.DELIVERY_METHOD_EMAIL
) -> FakeMsg:
    event = customer_events.AccountCreated(account=customer_account(account_id, method=method))
    return message(ACCOUNT_CREATED, event, NOW)


def contact_changed(
    account_id: uuid.UUID,
    email_address: str,
    at: datetime = NOW,
    contact_id: uuid.UUID | None = None,
    role: contact_pb2.ContactRole.ValueType = contact_pb2.CONTACT_ROLE_BILLING,
    kind: customer_events.ChangeKind.ValueType = customer_events.CHANGE_KIND_ADDED,
) -> FakeMsg:
    contact = contact_pb2.Contact(
        contact_id=str(contact_id or uuid.uuid4()),
        account_id=str(account_id),
        role=role,
        name="Accounts payable",
        email=email_address,
        create_time=to_timestamp(NOW),
        update_time=to_timestamp(at),
    )
    event = customer_events.ContactChanged(kind=kind, contact=contact)
    return message(CONTACT_CHANGED, event, at)


async def apply(db: BillingDb, *msgs: FakeMsg) -> None:
    await process(db.customer_consumer(), *msgs)
    assert all(m.acked for m in msgs), "every event applies"


async def open_account(
    db: BillingDb, *emails: str, method: account_pb2.DeliveryMethod.ValueType = account_pb2.DELIVERY_METHOD_EMAIL
) -> uuid.UUID:
    """An account billing knows (its bill unit opened by AccountCreated) with billing contacts."""
    account_id = uuid.uuid4()
    await apply(db, account_created(account_id, method=method), *(contact_changed(account_id, e) for e in emails))
    return account_id


async def charge(db: BillingDb, account_id: uuid.UUID, amount: str) -> None:
    async with db.uow() as uow:
        await bill_use_cases.record_charges(
            uow,
            [
                Charge(
                    charge_id=uuid.uuid4(),
                    account_id=account_id,
                    kind="usage",
                    event_id=f"evt-{uuid.uuid4().hex[:10]}",
                    charge_offer_code="api_metered",
                    charge_offer_version=1,
                    charge_code="api_calls",
                    tax_code="standard",
                    quantity=Decimal(100),
                    amount=Decimal(amount),
                    currency_code="EUR",
                    event_time=NOW + timedelta(hours=1),
                    bill_cycle_id=None,
                )
            ],
        )
        await uow.commit()


async def issue_first_bills(db: BillingDb, *account_ids: uuid.UUID) -> list[Bill]:
    """The clock past the accounts' first cycle: the cycle closer issues their bills."""
    db.clock.instant = max(db.clock.instant, AFTER_FIRST_CYCLE)
    await CycleCloser(db.uow, timedelta(0), 0.05, 100, POLICY).catch_up()
    found = []
    async with db.uow() as uow:
        for account_id in account_ids:
            (listed,) = await uow.bills.list_for_account(account_id, None, 10)
            bill = await uow.bills.get(listed.bill_id)
            assert bill is not None and bill.number is not None
            found.append(bill)
    return found


# The delivery row.


async def test_issuing_a_bill_adds_its_pending_delivery_in_the_same_transaction(db: BillingDb) -> None:
    account_id = await open_account(db, "ap@example.com")
    await charge(db, account_id, "12.34")
    (bill,) = await issue_first_bills(db, account_id)

    delivery = await db.delivery(bill.bill_id)
    assert (delivery.state, delivery.attempts, delivery.account_id) == (
        document_pb2.BILL_DELIVERY_STATE_PENDING,
        0,
        str(account_id),
    )
    assert delivery.next_attempt_time == to_timestamp(bill.issue_time), "due at once, on the service clock"
    assert delivery.create_time == to_timestamp(bill.issue_time)

    # A bill never issued (a suppressed zero bill) gets none; nor does a bill updated again.
    quiet = await open_account(db, "quiet@example.com")
    db.clock.instant = AFTER_FIRST_CYCLE
    await CycleCloser(
        db.uow, timedelta(0), 0.05, 100, BillPolicy(POLICY.tax_rates, suppress_zero_bills=True)
    ).catch_up()
    (suppressed,) = await db.rows(select(bills.c.bill_id, bills.c.suppressed).where(bills.c.account_id == quiet))
    assert suppressed.suppressed
    with pytest.raises(NotFound):
        await db.delivery(suppressed.bill_id)
    async with db.engine.begin() as conn:
        await conn.execute(update(bills).where(bills.c.bill_id == bill.bill_id).values(paid_amount=Decimal("1.00")))
    assert len(await db.rows(select(bill_deliveries))) == 1


# Sending.


async def test_the_loop_emails_the_pdf_to_the_billing_contacts_once(db: BillingDb, smtp: MailServer) -> None:
    account_id = await open_account(db, "ap@example.com", "cfo@example.com")
    await charge(db, account_id, "1234.50")
    (bill,) = await issue_first_bills(db, account_id)
    loop = db.loop(smtp.mailer())

    assert await loop.deliver_due() == 1
    assert await loop.deliver_due() == 0, "a sent bill is not sent again"
    (received,) = smtp.received
    assert (received.sender, sorted(received.recipients)) == (SENDER, ["ap@example.com", "cfo@example.com"])
    assert received.message["Message-ID"] == f"<bill-{bill.bill_id}@evolutivo.test>"
    assert received.message["Subject"] == f"Invoice {bill.number.number if bill.number else ''} from {SELLER.name}"
    name, content = attachment(received.message)
    assert name == f"{bill.number.number if bill.number else ''}.pdf"
    text = pdf_text(content)
    # 1,234.50 + 21% = 1,493.75 (259.245 rounds half up to 259.25).
    assert bill.total == Decimal("1493.75")
    for expected in (
        bill.number.number if bill.number else "?",
        "Facturas Ibéricas SL",
        "1,234.50 EUR",
        "1,493.75 EUR",
    ):
        assert expected in text

    delivery = await db.delivery(bill.bill_id)
    assert (delivery.state, delivery.attempts, delivery.sent_time, list(delivery.recipients)) == (
        document_pb2.BILL_DELIVERY_STATE_SENT,
        1,
        to_timestamp(AFTER_FIRST_CYCLE),
        ["ap@example.com", "cfo@example.com"],
    )
    assert not delivery.HasField("next_attempt_time")
    # The document kept is the one sent.
    document = (
        await db.servicer().GetBillDocument(document_pb2.GetBillDocumentRequest(bill_id=str(bill.bill_id)), NO_CONTEXT)
    ).document
    assert (document.content, document.content_type, document.file_name) == (content, "application/pdf", name)


async def test_a_refusing_server_is_retried_with_backoff_until_it_accepts(db: BillingDb, smtp: MailServer) -> None:
    account_id = await open_account(db, "ap@example.com")
    await charge(db, account_id, "10.00")
    (bill,) = await issue_first_bills(db, account_id)
    loop = db.loop(smtp.mailer())
    smtp.refuse_next = 2

    assert await loop.deliver_due() == 1
    first = await db.delivery(bill.bill_id)
    assert (first.state, first.attempts) == (document_pb2.BILL_DELIVERY_STATE_PENDING, 1)
    assert "451" in first.last_error
    assert first.next_attempt_time == to_timestamp(AFTER_FIRST_CYCLE + timedelta(minutes=1))
    assert await loop.deliver_due() == 0, "not due before its backoff"

    db.clock.advance(timedelta(minutes=1))
    assert await loop.deliver_due() == 1
    second = await db.delivery(bill.bill_id)
    assert (second.state, second.attempts) == (document_pb2.BILL_DELIVERY_STATE_PENDING, 2)
    assert second.next_attempt_time == to_timestamp(db.clock.now() + timedelta(minutes=2)), "the wait doubles"

    db.clock.advance(timedelta(minutes=2))
    assert await loop.deliver_due() == 1
    sent = await db.delivery(bill.bill_id)
    assert (sent.state, sent.attempts, sent.last_error) == (document_pb2.BILL_DELIVERY_STATE_SENT, 3, "")
    assert (smtp.refused, len(smtp.received)) == (2, 1)
    assert smtp.received[0].message["Message-ID"] == sent.message_id == f"<bill-{bill.bill_id}@evolutivo.test>"


async def test_failed_after_the_last_attempt_until_retried_on_request(db: BillingDb, smtp: MailServer) -> None:
    account_id = await open_account(db, "ap@example.com")
    await charge(db, account_id, "10.00")
    (bill,) = await issue_first_bills(db, account_id)
    # Nothing listens on this port: every attempt fails to connect.
    loop = db.loop(SmtpMailer("127.0.0.1", free_port(), starttls=False, timeout=5))
    for _ in range(RETRY.max_attempts):
        assert await loop.deliver_due() == 1
        db.clock.advance(RETRY.max_delay)
    failed = await db.delivery(bill.bill_id)
    assert (failed.state, failed.attempts) == (document_pb2.BILL_DELIVERY_STATE_FAILED, RETRY.max_attempts)
    assert failed.last_error and not failed.HasField("next_attempt_time")
    assert await loop.deliver_due() == 0, "FAILED is not retried by itself"

    servicer = db.servicer()
    request = document_pb2.RetryBillDeliveryRequest(bill_id=str(bill.bill_id))
    retried = (await servicer.RetryBillDelivery(request, NO_CONTEXT)).delivery
    assert (retried.state, retried.attempts, retried.next_attempt_time) == (
        document_pb2.BILL_DELIVERY_STATE_PENDING,
        0,
        to_timestamp(db.clock.now()),
    )
    assert await db.loop(smtp.mailer()).deliver_due() == 1
    assert (await db.delivery(bill.bill_id)).state == document_pb2.BILL_DELIVERY_STATE_SENT
    assert len(smtp.received) == 1
    with pytest.raises(FailedPrecondition) as refused:
        await servicer.RetryBillDelivery(request, NO_CONTEXT)
    assert refused.value.reason == "BILL_ALREADY_SENT"


async def test_two_loops_racing_send_each_bill_once(db: BillingDb, smtp: MailServer) -> None:
    accounts = [await open_account(db, f"ap{n}@example.com") for n in range(6)]
    for account_id in accounts:
        await charge(db, account_id, "5.00")
    issued = await issue_first_bills(db, *accounts)
    smtp.delay = 0.05

    done = await asyncio.gather(db.loop(smtp.mailer()).deliver_due(), db.loop(smtp.mailer()).deliver_due())
    assert sum(done) == len(issued)
    ids = sorted(r.message["Message-ID"] for r in smtp.received)
    assert ids == sorted(f"<bill-{b.bill_id}@evolutivo.test>" for b in issued), "each bill once"
    states = await db.rows(select(bill_deliveries.c.state, bill_deliveries.c.attempts))
    assert sorted(states) == [("sent", 1)] * len(issued)


async def test_a_refused_recipient_does_not_stop_the_others(db: BillingDb, smtp: MailServer) -> None:
    account_id = await open_account(db, "ap@example.com", "gone@example.com")
    await charge(db, account_id, "5.00")
    (bill,) = await issue_first_bills(db, account_id)
    smtp.unknown = {"gone@example.com"}
    await db.loop(smtp.mailer()).deliver_due()
    delivery = await db.delivery(bill.bill_id)
    assert (delivery.state, list(delivery.recipients)) == (document_pb2.BILL_DELIVERY_STATE_SENT, ["ap@example.com"])
    assert "gone@example.com" in delivery.last_error
    assert [r.recipients for r in smtp.received] == [["ap@example.com"]]


async def test_no_recipient_or_postal_delivery_sends_nothing(db: BillingDb, smtp: MailServer) -> None:
    nobody = await open_account(db)
    postal = await open_account(db, "ap@example.com", method=account_pb2.DELIVERY_METHOD_POSTAL)
    technical = uuid.uuid4()
    await apply(
        db,
        account_created(technical),
        contact_changed(technical, "ops@example.com", role=contact_pb2.CONTACT_ROLE_TECHNICAL),
    )
    for account_id in (nobody, postal, technical):
        await charge(db, account_id, "5.00")
    to_nobody, by_post, to_ops = await issue_first_bills(db, nobody, postal, technical)

    assert await db.loop(smtp.mailer()).deliver_due() == 3
    assert smtp.received == []
    for bill, state in (
        (to_nobody, document_pb2.BILL_DELIVERY_STATE_NO_RECIPIENT),
        (by_post, document_pb2.BILL_DELIVERY_STATE_NOT_BY_EMAIL),
        (to_ops, document_pb2.BILL_DELIVERY_STATE_NO_RECIPIENT),
    ):
        assert (await db.delivery(bill.bill_id)).state == state

    # Once the account has a billing contact, a retry sends it.
    await apply(db, contact_changed(nobody, "late@example.com", at=NOW + timedelta(days=6)))
    await db.servicer().RetryBillDelivery(
        document_pb2.RetryBillDeliveryRequest(bill_id=str(to_nobody.bill_id)), NO_CONTEXT
    )
    assert await db.loop(smtp.mailer()).deliver_due() == 1
    assert [r.recipients for r in smtp.received] == [["late@example.com"]]


async def test_contacts_follow_customers_order_and_erasure_stops_the_emails(db: BillingDb, smtp: MailServer) -> None:
    account_id = await open_account(db)
    contact_id = uuid.uuid4()
    newer = contact_changed(
        account_id, "new@example.com", NOW + timedelta(hours=2), contact_id, kind=customer_events.CHANGE_KIND_UPDATED
    )
    older = contact_changed(account_id, "old@example.com", NOW + timedelta(hours=1), contact_id)
    await apply(db, newer, older)
    other = uuid.uuid4()
    await apply(
        db,
        contact_changed(account_id, "other@example.com", NOW, other),
        contact_changed(
            account_id, "other@example.com", NOW + timedelta(hours=3), other, kind=customer_events.CHANGE_KIND_REMOVED
        ),
        contact_changed(account_id, "other@example.com", NOW + timedelta(hours=3), other),
    )
    await charge(db, account_id, "5.00")
    (first,) = await issue_first_bills(db, account_id)
    await db.loop(smtp.mailer()).deliver_due()
    assert [r.recipients for r in smtp.received] == [["new@example.com"]], "the newer change wins; removed stays"

    # Erasure: the next bill goes to nobody, and a contact change arriving later brings no one back.
    erased = account_pb2.Account(
        account_id=str(account_id),
        display_name="[erased]",
        currency_code="EUR",
        time_zone="Europe/Madrid",
        personal_data_erased=True,
        update_time=to_timestamp(NOW + timedelta(days=1)),
    )
    await apply(
        db,
        message(PERSONAL_DATA_ERASED, customer_events.PersonalDataErased(account=erased), NOW + timedelta(days=1)),
        contact_changed(account_id, "back@example.com", NOW + timedelta(days=2), contact_id),
    )
    await charge(db, account_id, "5.00")
    db.clock.instant = madrid(2031, 6, 15, 0, 5)
    await CycleCloser(db.uow, timedelta(0), 0.05, 100, POLICY).catch_up()
    async with db.uow() as uow:
        second, _ = await uow.bills.list_for_account(account_id, None, 10)
    assert second.bill_id != first.bill_id
    await db.loop(smtp.mailer()).deliver_due()
    assert (await db.delivery(second.bill_id)).state == document_pb2.BILL_DELIVERY_STATE_NO_RECIPIENT
    assert len(smtp.received) == 1


# Documents.


async def test_get_bill_document_renders_once_and_keeps_it(db: BillingDb) -> None:
    account_id = await open_account(db, "ap@example.com")
    await charge(db, account_id, "99.99")
    (bill,) = await issue_first_bills(db, account_id)
    servicer = db.servicer()
    request = document_pb2.GetBillDocumentRequest(bill_id=str(bill.bill_id))

    first = (await servicer.GetBillDocument(request, NO_CONTEXT)).document
    assert first.content.startswith(b"%PDF-") and len(first.sha256) == 64
    assert bill.number is not None and bill.number.number in pdf_text(first.content)
    assert first.render_time == to_timestamp(db.clock.now())

    # The customer's name changes and time passes: the bill's document stays as it was rendered.
    renamed = customer_account(account_id, name="Renamed SL", updated=NOW + timedelta(days=3))
    updated = customer_events.AccountUpdated(account=renamed, changed_fields=["display_name"])
    await apply(db, message(ACCOUNT_UPDATED, updated, NOW + timedelta(days=3)))
    db.clock.advance(timedelta(days=3))
    again = (await servicer.GetBillDocument(request, NO_CONTEXT)).document
    assert (again.content, again.sha256, again.render_time) == (first.content, first.sha256, first.render_time)
    assert len(await db.rows(select(bill_documents))) == 1

    with pytest.raises(NotFound):
        await servicer.GetBillDocument(document_pb2.GetBillDocumentRequest(bill_id=str(uuid.uuid4())), NO_CONTEXT)


async def test_a_bill_never_issued_has_no_document(db: BillingDb) -> None:
    account_id = await open_account(db, "ap@example.com")
    db.clock.instant = AFTER_FIRST_CYCLE
    await CycleCloser(
        db.uow, timedelta(0), 0.05, 100, BillPolicy(POLICY.tax_rates, suppress_zero_bills=True)
    ).catch_up()
    (draft,) = await db.rows(select(bills.c.bill_id).where(bills.c.account_id == account_id))
    with pytest.raises(FailedPrecondition) as refused:
        await db.servicer().GetBillDocument(document_pb2.GetBillDocumentRequest(bill_id=str(draft.bill_id)), NO_CONTEXT)
    assert refused.value.reason == "BILL_NOT_ISSUED"
    with pytest.raises(FailedPrecondition):
        await db.servicer().RetryBillDelivery(
            document_pb2.RetryBillDeliveryRequest(bill_id=str(draft.bill_id)), NO_CONTEXT
        )


async def test_without_smtp_the_emails_are_written_to_the_outbox_folder(db: BillingDb, tmp_path: Path) -> None:
    account_id = await open_account(db, "ap@example.com")
    await charge(db, account_id, "5.00")
    (bill,) = await issue_first_bills(db, account_id)
    assert await db.loop(DirectoryMailer(tmp_path / "outbox")).deliver_due() == 1
    (written,) = list((tmp_path / "outbox").iterdir())
    parsed = email.message_from_bytes(written.read_bytes(), policy=email.policy.default)
    assert parsed["Message-ID"] == f"<bill-{bill.bill_id}@evolutivo.test>"
    assert bill.number is not None and bill.number.number in pdf_text(attachment(parsed)[1])
    assert (await db.delivery(bill.bill_id)).state == document_pb2.BILL_DELIVERY_STATE_SENT
