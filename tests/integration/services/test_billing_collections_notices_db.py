"""Collections notices, contact attempts and aging with credit notes against a real, migrated
billing database and a real SMTP server (aiosmtpd): the processor makes a payment reminder and a
dunning letter on their days; the delivery loop emails each once (the letter with its PDF, read
back from what the server received), retries while the server refuses, fails for good after the
last attempt, sends nothing for a case that closed meanwhile, never twice from two racing loops;
the case's action records the outcome; the notice RPCs; collectors' contact attempts over the
RPCs; aging less what credit notes took, as of any date.

Balance (the late fee's adjustment) is stood in for by a gateway that keeps its contract (one
effect per request id), as in test_billing_collections_db.py."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import io
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.message import EmailMessage
from typing import Any, cast
from zoneinfo import ZoneInfo

import pypdf
import pytest
from aiosmtpd.controller import Controller
from evolutivo.balance.v1 import events_pb2 as balance_events
from evolutivo.balance.v1 import payment_pb2
from evolutivo.billing.v1 import billing_service_pb2 as billing_pb
from evolutivo.billing.v1 import collections_events_pb2 as cev
from evolutivo.billing.v1 import collections_pb2 as cpb
from evolutivo.billing.v1 import collections_service_pb2 as pb
from evolutivo.customer.v1 import account_pb2, contact_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo_billing.adapters import events, pdf
from evolutivo_billing.adapters.collections_tables import (
    collections_contact_attempts,
    collections_notice_documents,
    collections_notices,
    collections_request_log,
)
from evolutivo_billing.adapters.orm import bills, inbox, outbox
from evolutivo_billing.adapters.smtp import SmtpMailer
from evolutivo_billing.domain.bills import Charge, TaxRates
from evolutivo_billing.domain.delivery import RetryPolicy
from evolutivo_billing.domain.documents import Seller
from evolutivo_billing.entrypoints.app import MIGRATIONS
from evolutivo_billing.entrypoints.collections_processor import CollectionsProcessor
from evolutivo_billing.entrypoints.consumers import subscriptions
from evolutivo_billing.entrypoints.cycle_closer import CycleCloser
from evolutivo_billing.entrypoints.delivery_loop import DeliveryLoop
from evolutivo_billing.entrypoints.grpc_api import BillingServicer
from evolutivo_billing.entrypoints.grpc_collections import CollectionsServicer
from evolutivo_billing.service_layer import bills as bill_use_cases
from evolutivo_billing.service_layer.bills import BillPolicy
from evolutivo_billing.service_layer.collections import CollectionsUnitOfWork, ProcessorPolicy
from evolutivo_billing.service_layer.delivery import DeliveryPolicy, Documents
from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.money import from_money, to_money
from evolutivo_runtime.timestamps import to_date, to_timestamp
from evolutivo_stack.embedded import free_port
from google.protobuf.message import Message
from sqlalchemy import select
from support.databases import MigratedDatabase, ServiceDb
from support.jetstream import consumer_for, message, process

MADRID = ZoneInfo("Europe/Madrid")
NO_CONTEXT: Any = None
SENDER = "billing@evolutivo.test"
SELLER = Seller(name="Evolutivo Telecom S.L.", payment_instructions=("IBAN ES91 2100 0418 4502 0005 1332",))
DOCUMENTS = Documents(SELLER, pdf.render, pdf.render_letter)
RETRY = RetryPolicy(max_attempts=3, first_delay=timedelta(minutes=1), max_delay=timedelta(minutes=10))
PROCESSOR = ProcessorPolicy(batch_size=10, lease=timedelta(minutes=2), retry_delay=timedelta(minutes=1))
BILLS = BillPolicy(TaxRates({"standard": Decimal("0.21"), "exempt": Decimal("0")}))


def madrid(day: date, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=MADRID).astimezone(UTC)


NOW = madrid(date(2031, 5, 10), 12)
# Billing day 15, 5 days to pay: the first bill is issued 15 May and due 20 May.
DUE = date(2031, 5, 20)


def day(n: int, hour: int = 9) -> datetime:
    return madrid(DUE + timedelta(days=n), hour)


STEPS = [
    cpb.CollectionsStep(days_past_due=3, action=cpb.COLLECTIONS_ACTION_TYPE_REMINDER_EMAIL, template="gentle"),
    cpb.CollectionsStep(
        days_past_due=10,
        action=cpb.COLLECTIONS_ACTION_TYPE_LATE_FEE,
        late_fee=cpb.LateFeeRule(fixed_amounts=[to_money(Decimal("5.00"), "EUR")]),
    ),
    cpb.CollectionsStep(days_past_due=12, action=cpb.COLLECTIONS_ACTION_TYPE_DUNNING_LETTER, template="final"),
]


# A real SMTP server.


@dataclass
class MailServer:
    """aiosmtpd handler: keeps what it accepts; answers 451 to the next `refuse_next` messages and
    550 to the recipients in `unknown`; `delay` slows each DATA down."""

    port: int = 0
    received: list[EmailMessage] = field(default_factory=list)
    refuse_next: int = 0
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
            return "451 4.3.0 try again later"
        self.received.append(
            cast(EmailMessage, email.message_from_bytes(envelope.content, policy=email.policy.default))
        )
        return "250 2.0.0 accepted"

    def notices(self) -> list[EmailMessage]:
        """The notices' emails (bills' go to other contacts, if any)."""
        return [m for m in self.received if str(m["Message-ID"]).startswith("<notice-")]


@pytest.fixture
def smtp() -> Iterator[MailServer]:
    server = MailServer(port=free_port())
    controller = Controller(server, hostname="127.0.0.1", port=server.port)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


@dataclass
class Balance:
    """Balance's side of the late fee: one effect per request id."""

    fees: dict[uuid.UUID, Decimal] = field(default_factory=dict)

    async def post_late_fee(
        self, account_id: uuid.UUID, amount: Decimal, currency_code: str, reason: str, request_id: uuid.UUID
    ) -> str:
        self.fees.setdefault(request_id, amount)
        return f"entry-{request_id}"

    async def write_off(self, *args: Any) -> str:
        raise AssertionError("no write-off in these scenarios")

    async def suspend(self, *args: Any) -> str:
        raise AssertionError("no suspension in these scenarios")

    async def reinstate(self, *args: Any) -> str:
        raise AssertionError("no reinstatement in these scenarios")


class NoticesDb(ServiceDb):
    def uow(self) -> CollectionsUnitOfWork:
        return CollectionsUnitOfWork(self.sessions, outbox, self.clock, events.encode, collections_request_log)

    def api(self) -> CollectionsServicer:
        return CollectionsServicer(self.uow, DOCUMENTS)

    def processor(self) -> CollectionsProcessor:
        return CollectionsProcessor(self.uow, Balance(), check_seconds=0.05, policy=PROCESSOR)

    def loop(self, server: MailServer) -> DeliveryLoop:
        mailer = SmtpMailer("127.0.0.1", server.port, starttls=False, timeout=10)
        return DeliveryLoop(self.uow, DOCUMENTS, mailer, DeliveryPolicy(SENDER, RETRY), check_seconds=0.05)

    async def at(self, instant: datetime) -> None:
        """Moves the clock and lets the bill run and the overdue marker catch up."""
        self.clock.instant = instant
        closer = CycleCloser(self.uow, timedelta(0), check_seconds=0.05, batch_size=10, policy=BILLS)
        await closer.catch_up()
        await closer.mark_overdue()

    async def deliver(self, stream: str, subject: str, event: Message) -> None:
        consumer = consumer_for(subscriptions(), stream_name(stream), self.uow, inbox)
        msg = message(subject, event, self.clock.now())
        await process(consumer, msg)
        assert msg.acked, f"{subject} applies"

    async def published(self, subject: str, kind: type[Message]) -> list[Any]:
        rows = await self.rows(select(outbox.c.payload).where(outbox.c.subject == subject).order_by(outbox.c.seq))
        return [kind.FromString(r.payload) for r in rows]

    async def case(self, account_id: uuid.UUID) -> cpb.CollectionsCase:
        found = await self.api().ListCollectionsCases(
            pb.ListCollectionsCasesRequest(account_id=str(account_id)), NO_CONTEXT
        )
        (listed,) = found.collections_cases
        got = await self.api().GetCollectionsCase(pb.GetCollectionsCaseRequest(case_id=listed.case_id), NO_CONTEXT)
        return got.collections_case

    async def notice(self, notice_id: str) -> cpb.CollectionsNotice:
        return (
            await self.api().GetCollectionsNotice(pb.GetCollectionsNoticeRequest(notice_id=notice_id), NO_CONTEXT)
        ).notice


@pytest.fixture
async def db(migrated_database: MigratedDatabase) -> AsyncIterator[NoticesDb]:
    url = await migrated_database("billing_notices", MIGRATIONS)
    async with NoticesDb.open(url, NOW, pool_size=10) as opened:
        await opened.api().CreateCollectionsScenario(
            pb.CreateCollectionsScenarioRequest(
                scenario=cpb.CollectionsScenario(display_name="Standard", steps=STEPS), request_id=str(uuid.uuid4())
            ),
            NO_CONTEXT,
        )
        yield opened


def contact(account_id: uuid.UUID, role: contact_pb2.ContactRole.ValueType, address: str) -> Message:
    return customer_events.ContactChanged(
        kind=customer_events.CHANGE_KIND_ADDED,
        contact=contact_pb2.Contact(
            contact_id=str(uuid.uuid4()),
            account_id=str(account_id),
            role=role,
            name="Cobros",
            email=address,
            create_time=to_timestamp(NOW),
            update_time=to_timestamp(NOW),
        ),
    )


async def account_with_overdue_bill(db: NoticesDb, *contacts: tuple[int, str], amount: str = "10.00") -> uuid.UUID:
    """An account created at NOW (Madrid, billing day 15, 5 days to pay) with these contacts and
    one charge of `amount` + 21% tax: its bill is issued 15 May, due 20 May."""
    account_id = uuid.uuid4()
    db.clock.instant = NOW
    account = account_pb2.Account(
        account_id=str(account_id),
        account_number=f"A-{account_id.hex[:6]}",
        type=account_pb2.ACCOUNT_TYPE_BUSINESS,
        display_name="Cobros SL",
        currency_code="EUR",
        time_zone="Europe/Madrid",
        status=account_pb2.ACCOUNT_STATUS_ACTIVE,
        billing_profile=account_pb2.BillingProfile(
            bill_cycle_day=15, frequency=account_pb2.BILLING_FREQUENCY_MONTHLY, payment_terms_days=5
        ),
        create_time=to_timestamp(NOW),
        update_time=to_timestamp(NOW),
    )
    await db.deliver(
        "customer", "evolutivo.customer.v1.account.created", customer_events.AccountCreated(account=account)
    )
    for role, address in contacts:
        await db.deliver("customer", "evolutivo.customer.v1.contact.changed", contact(account_id, role, address))
    async with db.uow() as uow:
        await bill_use_cases.record_charges(
            uow,
            [
                Charge(
                    charge_id=uuid.uuid4(),
                    account_id=account_id,
                    kind="usage",
                    event_id=f"evt-{uuid.uuid4().hex[:10]}",
                    charge_offer_code="api_pro",
                    charge_offer_version=1,
                    charge_code="api_calls",
                    tax_code="standard",
                    quantity=Decimal(1),
                    amount=Decimal(amount),
                    currency_code="EUR",
                    event_time=NOW,
                    bill_cycle_id=None,
                )
            ],
        )
        await uow.commit()
    return account_id


async def pay(db: NoticesDb, account_id: uuid.UUID, amount: str) -> None:
    payment = payment_pb2.Payment(
        payment_id=str(uuid.uuid4()),
        account_id=str(account_id),
        balance_group_id=str(uuid.uuid4()),
        amount=to_money(Decimal(amount), "EUR"),
        method=payment_pb2.PAYMENT_METHOD_TYPE_BANK_TRANSFER,
        reference=f"ref-{uuid.uuid4().hex[:8]}",
        received_time=to_timestamp(db.clock.now()),
        state=payment_pb2.PAYMENT_STATE_RECORDED,
    )
    await db.deliver(
        "balance", "evolutivo.balance.v1.payment.recorded", balance_events.PaymentRecorded(payment=payment)
    )


def pdf_text(content: bytes) -> str:
    return " ".join(" ".join(p.extract_text().split()) for p in pypdf.PdfReader(io.BytesIO(content)).pages)


COLLECTIONS = contact_pb2.CONTACT_ROLE_COLLECTIONS
PRIMARY = contact_pb2.CONTACT_ROLE_PRIMARY


async def test_a_reminder_and_a_dunning_letter_are_emailed_once_and_the_case_records_it(
    db: NoticesDb, smtp: MailServer
) -> None:
    account_id = await account_with_overdue_bill(db, (PRIMARY, "boss@cobros.test"), (COLLECTIONS, "deudas@cobros.test"))
    processor, loop = db.processor(), db.loop(smtp)
    await db.at(day(3))
    await processor.check()
    await processor.check()
    await loop.deliver_due()
    await loop.deliver_due()

    (reminder,) = smtp.notices()
    case = await db.case(account_id)
    action = case.actions[0]
    (requested,) = await db.published(
        "evolutivo.billing.v1.collections_notice.requested", cev.CollectionsNoticeRequested
    )
    assert action.notice_id == requested.notice_id == action.request_id
    assert reminder["Message-ID"] == f"<notice-{action.notice_id}@evolutivo.test>"
    assert (reminder["To"], reminder["From"]) == ("deudas@cobros.test", SENDER)
    assert reminder["Subject"] == "Payment reminder: 12.10 EUR overdue from Evolutivo Telecom S.L."
    assert list(reminder.iter_attachments()) == []
    (bill,) = await db.rows(select(bills).where(bills.c.account_id == account_id))
    body = cast(EmailMessage, reminder.get_body(("plain",))).get_content()
    assert f"Invoice {bill.bill_number}, due 2031-05-20 (3 days ago): 12.10 EUR unpaid of 12.10 EUR" in body
    assert "IBAN ES91 2100 0418 4502 0005 1332" in body
    assert (action.state, action.outcome) == (
        cpb.COLLECTIONS_ACTION_STATE_DONE,
        "reminder email sent to deudas@cobros.test",
    )
    notice = await db.notice(action.notice_id)
    assert (notice.delivery_state, notice.attempts, notice.recipients, notice.message_id) == (
        cpb.COLLECTIONS_NOTICE_DELIVERY_STATE_SENT,
        1,
        ["deudas@cobros.test"],
        reminder["Message-ID"],
    )
    assert [b.bill_number for b in notice.bills] == [bill.bill_number]
    with pytest.raises(FailedPrecondition):
        await db.api().GetCollectionsNoticeDocument(
            pb.GetCollectionsNoticeDocumentRequest(notice_id=action.notice_id), NO_CONTEXT
        )

    # Day 12: the late fee (day 10) and the letter, with its PDF attached.
    await db.at(day(12))
    await processor.check()
    await loop.deliver_due()
    await loop.deliver_due()
    assert len(smtp.notices()) == 2
    letter_email = smtp.notices()[1]
    (part,) = list(letter_email.iter_attachments())
    attached = cast(bytes, part.get_content())
    assert part.get_content_type() == "application/pdf"
    assert part.get_filename() == f"dunning-letter-A-{account_id.hex[:6]}-2031-06-01.pdf"
    text = pdf_text(attached)
    for expected in ("DUNNING LETTER", bill.bill_number, "12.10 EUR", "Late fees charged", "5.00 EUR", "IBAN ES91"):
        assert expected in text, expected
    case = await db.case(account_id)
    letter = case.actions[2]
    assert letter.outcome == "dunning letter sent to deudas@cobros.test"
    # The kept PDF is the one sent.
    document = (
        await db.api().GetCollectionsNoticeDocument(
            pb.GetCollectionsNoticeDocumentRequest(notice_id=letter.notice_id), NO_CONTEXT
        )
    ).document
    assert (document.content, document.sha256) == (attached, hashlib.sha256(attached).hexdigest())
    assert await db.count(collections_notice_documents) == 1
    assert from_money((await db.notice(letter.notice_id)).late_fees) == Decimal("5.00")
    with pytest.raises(NotFound):
        await db.notice(str(uuid.uuid4()))


async def test_a_notice_is_retried_while_the_server_refuses_and_fails_after_the_last_attempt(
    db: NoticesDb, smtp: MailServer
) -> None:
    retried = await account_with_overdue_bill(db, (COLLECTIONS, "deudas@cobros.test"))
    refused = await account_with_overdue_bill(db, (COLLECTIONS, "nobody@cobros.test"))
    smtp.refuse_next = 2
    smtp.unknown = {"nobody@cobros.test"}
    loop = db.loop(smtp)
    await db.at(day(3))
    await db.processor().check()
    start = db.clock.now()
    for delay in (timedelta(0), timedelta(minutes=1), timedelta(minutes=3)):
        db.clock.instant = start + delay
        await loop.deliver_due()
        await loop.deliver_due()  # nothing more is due before the backoff ends

    (sent,) = smtp.notices()
    assert sent["To"] == "deudas@cobros.test"
    ok = (await db.case(retried)).actions[0]
    assert ok.outcome == "reminder email sent to deudas@cobros.test"
    assert (await db.notice(ok.notice_id)).attempts == 3
    failed = (await db.case(refused)).actions[0]
    assert failed.state == cpb.COLLECTIONS_ACTION_STATE_DONE
    assert failed.outcome.startswith("reminder email not sent after 3 attempts: SMTPRecipientsRefused")
    notice = await db.notice(failed.notice_id)
    assert (notice.delivery_state, notice.next_attempt_time.seconds) == (
        cpb.COLLECTIONS_NOTICE_DELIVERY_STATE_FAILED,
        0,
    )
    db.clock.instant += timedelta(hours=2)
    assert await loop.deliver_due() == 0


async def test_a_notice_whose_case_closed_before_it_went_out_is_not_sent(db: NoticesDb, smtp: MailServer) -> None:
    account_id = await account_with_overdue_bill(db, (COLLECTIONS, "deudas@cobros.test"))
    smtp.refuse_next = 1
    loop = db.loop(smtp)
    await db.at(day(3))
    await db.processor().check()
    await loop.deliver_due()
    assert smtp.notices() == []
    await pay(db, account_id, "12.10")
    db.clock.instant += timedelta(minutes=5)
    await loop.deliver_due()
    assert smtp.notices() == []
    action = (await db.case(account_id)).actions[0]
    assert action.outcome == "reminder email not sent: its case closed (paid) before it went out"
    notice = await db.notice(action.notice_id)
    assert notice.delivery_state == cpb.COLLECTIONS_NOTICE_DELIVERY_STATE_CANCELLED


async def test_two_loops_racing_send_each_notice_once(db: NoticesDb, smtp: MailServer) -> None:
    accounts = [await account_with_overdue_bill(db, (COLLECTIONS, f"d{i}@cobros.test")) for i in range(4)]
    await db.at(day(3))
    await db.processor().check()
    smtp.delay = 0.05
    await asyncio.gather(db.loop(smtp).deliver_due(), db.loop(smtp).deliver_due())
    assert sorted(m["To"] for m in smtp.notices()) == [f"d{i}@cobros.test" for i in range(4)]
    assert len({m["Message-ID"] for m in smtp.notices()}) == 4
    for account_id in accounts:
        assert (await db.case(account_id)).actions[0].outcome.startswith("reminder email sent to")
    assert await db.count(collections_notices) == 4


async def test_contact_attempts_over_the_rpcs(db: NoticesDb) -> None:
    account_id = await account_with_overdue_bill(db, (COLLECTIONS, "deudas@cobros.test"))
    await db.at(day(1))
    await db.processor().check()
    case = await db.case(account_id)
    api = db.api()
    await db.at(day(4))
    request = pb.RecordCollectionsContactAttemptRequest(
        case_id=case.case_id,
        attempt=cpb.CollectionsContactAttempt(
            channel=cpb.COLLECTIONS_CONTACT_CHANNEL_PHONE,
            outcome=cpb.COLLECTIONS_CONTACT_OUTCOME_NO_ANSWER,
            note="rang twice",
            actor="agent-7",
            contact_time=to_timestamp(day(4, 8)),
        ),
        request_id=str(uuid.uuid4()),
    )
    first = (await api.RecordCollectionsContactAttempt(request, NO_CONTEXT)).attempt
    again = (await api.RecordCollectionsContactAttempt(request, NO_CONTEXT)).attempt
    assert again == first, "a retry returns the first attempt"
    assert (first.case_id, first.account_id, first.actor, first.contact_time) == (
        case.case_id,
        str(account_id),
        "agent-7",
        to_timestamp(day(4, 8)),
    )
    await db.at(day(5))
    disputed = (
        await api.RecordCollectionsContactAttempt(
            pb.RecordCollectionsContactAttemptRequest(
                case_id=case.case_id,
                attempt=cpb.CollectionsContactAttempt(
                    channel=cpb.COLLECTIONS_CONTACT_CHANNEL_PHONE,
                    outcome=cpb.COLLECTIONS_CONTACT_OUTCOME_DISPUTED,
                    note="says the May invoice is wrong",
                    actor="agent-7",
                ),
                request_id=str(uuid.uuid4()),
            ),
            NO_CONTEXT,
        )
    ).attempt
    assert disputed.contact_time == to_timestamp(day(5))
    assert await db.count(collections_contact_attempts) == 2
    recorded = await db.published(
        "evolutivo.billing.v1.collections_contact_attempt.recorded", cev.CollectionsContactAttemptRecorded
    )
    assert [r.attempt.outcome for r in recorded] == [
        cpb.COLLECTIONS_CONTACT_OUTCOME_NO_ANSWER,
        cpb.COLLECTIONS_CONTACT_OUTCOME_DISPUTED,
    ]

    # Newest first, a page at a time.
    page = await api.ListCollectionsContactAttempts(
        pb.ListCollectionsContactAttemptsRequest(case_id=case.case_id, page_size=1), NO_CONTEXT
    )
    assert [a.attempt_id for a in page.attempts] == [disputed.attempt_id] and page.next_page_token
    rest = await api.ListCollectionsContactAttempts(
        pb.ListCollectionsContactAttemptsRequest(case_id=case.case_id, page_size=1, page_token=page.next_page_token),
        NO_CONTEXT,
    )
    assert [a.attempt_id for a in rest.attempts] == [first.attempt_id] and rest.next_page_token == ""

    # Bad input names the field and changes nothing.
    for attempt, field_name in (
        (cpb.CollectionsContactAttempt(outcome=cpb.COLLECTIONS_CONTACT_OUTCOME_REFUSED, actor="a"), "attempt.channel"),
        (cpb.CollectionsContactAttempt(channel=cpb.COLLECTIONS_CONTACT_CHANNEL_SMS, actor="a"), "attempt.outcome"),
        (
            cpb.CollectionsContactAttempt(
                channel=cpb.COLLECTIONS_CONTACT_CHANNEL_SMS,
                outcome=cpb.COLLECTIONS_CONTACT_OUTCOME_REFUSED,
                actor="a",
                contact_time=to_timestamp(day(6)),
            ),
            "attempt.contact_time",
        ),
        (
            cpb.CollectionsContactAttempt(
                channel=cpb.COLLECTIONS_CONTACT_CHANNEL_SMS, outcome=cpb.COLLECTIONS_CONTACT_OUTCOME_REFUSED
            ),
            "attempt.actor",
        ),
    ):
        with pytest.raises(InvalidArgument) as caught:
            await api.RecordCollectionsContactAttempt(
                pb.RecordCollectionsContactAttemptRequest(
                    case_id=case.case_id, attempt=attempt, request_id=str(uuid.uuid4())
                ),
                NO_CONTEXT,
            )
        assert caught.value.field == field_name
    assert await db.count(collections_contact_attempts) == 2
    with pytest.raises(NotFound):
        await api.ListCollectionsContactAttempts(
            pb.ListCollectionsContactAttemptsRequest(case_id=str(uuid.uuid4())), NO_CONTEXT
        )


async def test_aging_takes_off_what_credit_notes_took_as_of_each_date(db: NoticesDb) -> None:
    voided = await account_with_overdue_bill(db, amount="10.00")
    credited = await account_with_overdue_bill(db, amount="20.00")
    await db.at(day(5))
    await db.processor().check()
    assert (await db.case(voided)).state == (await db.case(credited)).state == cpb.COLLECTIONS_CASE_STATE_OPEN
    billing = BillingServicer(db.uow, policy=BILLS)

    async def bill_of(account_id: uuid.UUID) -> Any:
        (row,) = await db.rows(select(bills).where(bills.c.account_id == account_id))
        return row

    # Day 8: the first bill credited whole (VOID); 5.00 + tax credited off the second's line.
    await db.at(day(8))
    for account_id, whole, lines in (
        (voided, True, []),
        (
            credited,
            False,
            [billing_pb.CreditNoteLineRequest(bill_line_number=1, amount=to_money(Decimal("5.00"), "EUR"))],
        ),
    ):
        await billing.CreateCreditNote(
            billing_pb.CreateCreditNoteRequest(
                bill_id=str((await bill_of(account_id)).bill_id),
                whole_bill=whole,
                lines=lines,
                reason="goodwill",
                actor="ops",
                request_id=str(uuid.uuid4()),
            ),
            NO_CONTEXT,
        )
    assert (await bill_of(voided)).status == "void"
    assert (await bill_of(credited)).credited_amount == Decimal("6.05")

    async def aging(as_of: date) -> tuple[Decimal, dict[str, Decimal]]:
        report = await db.api().GetAging(pb.GetAgingRequest(as_of_date=to_date(as_of)), NO_CONTEXT)
        (total,) = report.totals
        return from_money(total.days_1_to_30), {
            a.account_id: from_money(a.buckets.days_1_to_30) for a in report.accounts
        }

    # As of day 5 nothing was credited: both bills are open in full.
    assert await aging(DUE + timedelta(days=5)) == (
        Decimal("36.30"),
        {str(voided): Decimal("12.10"), str(credited): Decimal("24.20")},
    )
    # As of day 8 the void owes nothing and the credit is taken off.
    assert await aging(DUE + timedelta(days=8)) == (Decimal("18.15"), {str(credited): Decimal("18.15")})

    # The case of the voided bill closes at the processor's next check; the other's stays open.
    await db.processor().check()
    assert (await db.case(voided)).state == cpb.COLLECTIONS_CASE_STATE_CLOSED
    assert (await db.case(credited)).state == cpb.COLLECTIONS_CASE_STATE_OPEN
