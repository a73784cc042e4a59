"""Webhook connections against a real local HTTP receiver: each record POSTed once it succeeds,
signed with HMAC-SHA256 over a timestamp and the body, retried with backoff while the receiver
fails, with the same delivery id on every retry."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from evolutivo.balance.v1 import events_pb2 as balance_events
from evolutivo.balance.v1 import ledger_pb2, payment_pb2
from evolutivo.billing.v1 import bill_pb2, collections_events_pb2, collections_pb2, credit_note_pb2
from evolutivo.billing.v1 import events_pb2 as billing_events
from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2 as pb
from evolutivo_erp_gateway.adapters import events, proto
from evolutivo_erp_gateway.adapters.crypto import SecretCipher, generate_key
from evolutivo_erp_gateway.adapters.factory import Adapters
from evolutivo_erp_gateway.adapters.orm import inbox, outbox
from evolutivo_erp_gateway.adapters.webhook import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, verify
from evolutivo_erp_gateway.domain.connections import Connection, ConnectionType, Mapping
from evolutivo_erp_gateway.domain.jobs import CircuitBreaker, JobState, RetryPolicy
from evolutivo_erp_gateway.domain.model import EntityType, allocation_entity_id
from evolutivo_erp_gateway.entrypoints.app import MIGRATIONS
from evolutivo_erp_gateway.entrypoints.consumers import ACCOUNT_CREATED, BILL_ISSUED, subscriptions
from evolutivo_erp_gateway.entrypoints.grpc_api import ErpGatewayServicer
from evolutivo_erp_gateway.service_layer import handlers
from evolutivo_erp_gateway.service_layer.unit_of_work import ErpGatewayUnitOfWork
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.money import to_money
from evolutivo_runtime.timestamps import to_timestamp
from google.protobuf.field_mask_pb2 import FieldMask
from support.databases import MigratedDatabase, ServiceDb
from support.jetstream import FakeMsg, consumer_for, message, process

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
SECRET = "whsec-test-0123456789"
POLICY = RetryPolicy(base=dt.timedelta(seconds=1), cap=dt.timedelta(seconds=4), max_attempts=5)
NO_CONTEXT: Any = None


class ErpDb(ServiceDb):
    def uow(self) -> ErpGatewayUnitOfWork:
        return ErpGatewayUnitOfWork(self.sessions, outbox, self.clock, events.encode)


@dataclass
class Receiver:
    """A real HTTP server on a free local port that fails the first `failures` requests."""

    failures: int = 0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        self.received.append((headers, body))
        if self.failures > 0:
            self.failures -= 1
            return 503
        return 204


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(state.answer(dict(self.headers.items()), body))
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/erp-hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@dataclass
class Setup:
    db: ErpDb
    adapters: Adapters
    connection: Connection


@pytest.fixture
async def setup(migrated_database: MigratedDatabase, receiver: Receiver) -> AsyncIterator[Setup]:
    async with ErpDb.open(await migrated_database("erp_gateway", MIGRATIONS), NOW) as db:
        adapters = Adapters(SecretCipher([generate_key()]), 10.0, db.clock.now)
        connection = Connection(
            connection_id=uuid.uuid4(),
            display_name="Data warehouse hook",
            type=ConnectionType.WEBHOOK,
            endpoint_url=receiver.url,
            database="",
            username="",
            mapping=Mapping(),
            enabled=True,
            import_payments=False,
            has_credentials=False,
            create_time=NOW,
            update_time=NOW,
        )
        connection = await handlers.create_connection(db.uow(), adapters, connection, SECRET, None)
        yield Setup(db, adapters, connection)


async def run_jobs(setup: Setup) -> None:
    while await handlers.run_next_job(setup.db.uow(), setup.adapters, POLICY) is not None:
        pass


async def test_a_customer_is_posted_signed_and_retried_until_the_receiver_takes_it(
    setup: Setup, receiver: Receiver
) -> None:
    account_id = str(uuid.uuid4())
    account = account_pb2.Account(
        account_id=account_id, account_number="A-00000042", display_name="Acme", update_time=to_timestamp(NOW)
    )
    msg = message("evolutivo.customer.v1.account.created", customer_events.AccountCreated(account=account), NOW)
    await process(consumer_for(subscriptions(), stream_name("customer"), setup.db.uow, inbox), msg)
    receiver.failures = 2
    await run_jobs(setup)
    async with setup.db.uow() as uow:
        job = await uow.jobs.find(setup.connection.connection_id, EntityType.CUSTOMER, uuid.UUID(account_id))
    assert job is not None and (job.state, job.attempts) == (JobState.RETRYING, 1)
    assert "HTTP 503" in job.last_error
    for _ in range(3):
        setup.db.clock.advance(POLICY.cap)
        await run_jobs(setup)
    async with setup.db.uow() as uow:
        job = await uow.jobs.find(setup.connection.connection_id, EntityType.CUSTOMER, uuid.UUID(account_id))
    assert job is not None and job.state is JobState.SUCCEEDED
    # Three deliveries (two refused), then nothing more: the job is done.
    assert len(receiver.received) == 3
    delivery_ids = {headers[DELIVERY_HEADER] for headers, _ in receiver.received}
    assert len(delivery_ids) == 1
    for headers, body in receiver.received:
        assert headers[EVENT_HEADER] == "customer.upserted"
        assert verify(SECRET, headers[SIGNATURE_HEADER], body, setup.db.clock.now(), dt.timedelta(minutes=1))
        assert not verify("another-secret", headers[SIGNATURE_HEADER], body, setup.db.clock.now())
        document = json.loads(body)
        assert (document["event"], document["entity_id"]) == ("customer.upserted", account_id)
        assert document["data"]["account_number"] == "A-00000042"


async def test_test_connection_posts_a_signed_probe(setup: Setup, receiver: Receiver) -> None:
    servicer = ErpGatewayServicer(setup.db.uow, setup.adapters)
    request = pb.TestConnectionRequest(connection_id=str(setup.connection.connection_id))
    assert (await servicer.TestConnection(request, NO_CONTEXT)).ok
    ((headers, body),) = receiver.received
    assert verify(SECRET, headers[SIGNATURE_HEADER], body, setup.db.clock.now(), dt.timedelta(minutes=1))
    receiver.failures = 1
    response = await servicer.TestConnection(request, NO_CONTEXT)
    assert [(p.kind, p.message) for p in response.problems] == [
        (pb.CONNECTION_PROBLEM_KIND_ERP_ERROR, "webhook answered HTTP 503")
    ]


async def test_replicas_running_jobs_at_once_send_each_record_once(setup: Setup, receiver: Receiver) -> None:
    ids = [str(uuid.uuid4()) for _ in range(8)]
    msgs = [
        message(
            "evolutivo.customer.v1.account.created",
            customer_events.AccountCreated(
                account=account_pb2.Account(account_id=i, account_number=f"A-{n:08d}", update_time=to_timestamp(NOW))
            ),
            NOW,
        )
        for n, i in enumerate(ids)
    ]
    await process(consumer_for(subscriptions(), stream_name("customer"), setup.db.uow, inbox), *msgs)

    async def replica() -> int:
        ran = 0
        while await handlers.run_next_job(setup.db.uow(), setup.adapters, POLICY) is not None:
            ran += 1
        return ran

    # Three loops claim with FOR UPDATE SKIP LOCKED: together they run each job exactly once.
    assert sum(await asyncio.gather(replica(), replica(), replica())) == len(ids)
    sent = sorted(json.loads(body)["entity_id"] for _, body in receiver.received)
    assert sent == sorted(ids)


async def test_a_connection_that_keeps_failing_is_paused_then_probed_and_resumed(
    setup: Setup, receiver: Receiver
) -> None:
    breaker = CircuitBreaker(threshold=2, pause=dt.timedelta(minutes=1))
    down = setup.connection.updated(NOW, endpoint_url="http://127.0.0.1:9/erp-hook")  # nothing listens on 9
    async with setup.db.uow() as uow:
        await uow.connections.save(down, None, replace_secret=False)
        await uow.commit()
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for n, account_id in enumerate(ids):
        account = account_pb2.Account(account_id=account_id, account_number=f"A-{n:08d}", update_time=to_timestamp(NOW))
        msg = message("evolutivo.customer.v1.account.created", customer_events.AccountCreated(account=account), NOW)
        await process(consumer_for(subscriptions(), stream_name("customer"), setup.db.uow, inbox), msg)

    async def run() -> list[JobState]:
        ran = []
        while (job := await handlers.run_next_job(setup.db.uow(), setup.adapters, POLICY, breaker=breaker)) is not None:
            ran.append(job.state)
        return ran

    # Two failures in a row open the breaker: the third job is not even tried.
    assert await run() == [JobState.RETRYING, JobState.RETRYING]
    servicer = ErpGatewayServicer(setup.db.uow, setup.adapters)
    read = await servicer.GetConnection(pb.GetConnectionRequest(connection_id=str(down.connection_id)), NO_CONTEXT)
    assert read.connection.paused_until.ToDatetime(tzinfo=dt.UTC) == NOW + breaker.pause
    setup.db.clock.advance(POLICY.cap)
    assert await run() == []  # still paused, although the retries are due
    # After the pause one attempt probes it; it fails, so it pauses again.
    setup.db.clock.advance(breaker.pause)
    assert await run() == [JobState.RETRYING]
    # The receiver is back (the URL fixed): the next probe succeeds and the breaker closes.
    async with setup.db.uow() as uow:
        await uow.connections.save(setup.connection.updated(NOW), None, replace_secret=False)
        await uow.commit()
    setup.db.clock.advance(breaker.pause + POLICY.cap)
    assert await run() == [JobState.SUCCEEDED] * 3
    read = await servicer.GetConnection(pb.GetConnectionRequest(connection_id=str(down.connection_id)), NO_CONTEXT)
    assert not read.connection.HasField("paused_until")
    assert sorted(json.loads(body)["entity_id"] for _, body in receiver.received) == sorted(ids)


async def deliver(setup: Setup, service: str, *msgs: FakeMsg) -> None:
    await process(consumer_for(subscriptions(), stream_name(service), setup.db.uow, inbox), *msgs)
    assert all(m.acked for m in msgs)


def money(text: str) -> Any:
    return to_money(Decimal(text), "EUR")


async def test_a_referred_case_is_handed_to_the_connections_marked_for_referrals(
    setup: Setup, receiver: Receiver
) -> None:
    servicer = ErpGatewayServicer(setup.db.uow, setup.adapters)
    c = proto.connection_to_pb(setup.connection)
    c.collections_referrals = True
    await servicer.UpdateConnection(
        pb.UpdateConnectionRequest(connection=c, update_mask=FieldMask(paths=["collections_referrals"])), NO_CONTEXT
    )
    account_id, bill_id, event_id = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    account = account_pb2.Account(account_id=account_id, account_number="A-00000077", update_time=to_timestamp(NOW))
    bill = bill_pb2.Bill(
        bill_id=bill_id,
        account_id=account_id,
        bill_number="F-77",
        currency_code="EUR",
        lines=[bill_pb2.BillLine(line_number=1, charge_offer_code="FIBER", amount=money("60.50"))],
        tax_total=money("0"),
        total=money("60.50"),
    )
    referral = collections_events_pb2.CollectionsCaseReferred(
        collections_case=collections_pb2.CollectionsCase(case_id=str(uuid.uuid4()), account_id=account_id),
        agency="RECOBROS-NORTE",
        overdue_amount=money("60.50"),
        bill_ids=[bill_id],
    )
    referred = message("evolutivo.billing.v1.collections_case.referred", referral, NOW, event_id=event_id)
    # The referral arrives first: it waits for its customer and the invoice of its bill.
    await deliver(setup, "billing", referred)
    await deliver(setup, "customer", message(ACCOUNT_CREATED, customer_events.AccountCreated(account=account), NOW))
    await deliver(setup, "billing", message(BILL_ISSUED, billing_events.BillIssued(bill=bill), NOW))
    for _ in range(3):
        await run_jobs(setup)
        setup.db.clock.advance(dt.timedelta(seconds=5))
    await deliver(setup, "billing", referred.again())
    await run_jobs(setup)
    events_sent = [headers[EVENT_HEADER] for headers, _ in receiver.received]
    assert events_sent == ["customer.upserted", "invoice.posted", "collections_case.referred"]
    headers, body = receiver.received[-1]
    assert verify(SECRET, headers[SIGNATURE_HEADER], body, setup.db.clock.now(), dt.timedelta(minutes=1))
    document = json.loads(body)
    assert (document["event"], document["entity_id"]) == ("collections_case.referred", event_id)
    assert (document["data"]["agency"], document["data"]["bill_ids"]) == ("RECOBROS-NORTE", [bill_id])
    # A connection not marked for referrals gets none.
    servicer_jobs = await servicer.ListSyncJobs(pb.ListSyncJobsRequest(entity_id=event_id), NO_CONTEXT)
    assert [j.connection_id for j in servicer_jobs.jobs] == [str(setup.connection.connection_id)]


async def test_reversals_and_write_offs_are_posted_as_their_own_deliveries(setup: Setup, receiver: Receiver) -> None:
    account_id = str(uuid.uuid4())
    account = account_pb2.Account(account_id=account_id, account_number="A-00000078", update_time=to_timestamp(NOW))
    payment = payment_pb2.Payment(
        payment_id=str(uuid.uuid4()),
        account_id=account_id,
        amount=money("10.00"),
        reference="bank-78",
        received_time=to_timestamp(NOW),
    )
    reversed_payment = payment_pb2.Payment()
    reversed_payment.CopyFrom(payment)
    reversed_payment.state = payment_pb2.PAYMENT_STATE_REVERSED
    reversed_payment.reverse_time.CopyFrom(to_timestamp(NOW))
    entry = ledger_pb2.LedgerEntry(
        entry_id=str(uuid.uuid4()),
        account_id=account_id,
        amount=money("-3.00"),
        source_type="collections_case",
        source_id=str(uuid.uuid4()),
        effective_time=to_timestamp(NOW),
    )
    await deliver(setup, "customer", message(ACCOUNT_CREATED, customer_events.AccountCreated(account=account), NOW))
    await deliver(setup, "billing", allocated(payment, 1, [], "10.00"))
    await deliver(
        setup,
        "balance",
        message("evolutivo.balance.v1.payment.recorded", balance_events.PaymentRecorded(payment=payment), NOW),
        message("evolutivo.balance.v1.payment.reversed", balance_events.PaymentReversed(payment=reversed_payment), NOW),
        message("evolutivo.balance.v1.write_off.made", balance_events.WriteOffMade(entry=entry), NOW),
    )
    await run_jobs(setup)
    sent = [(headers[EVENT_HEADER], json.loads(body)["entity_id"]) for headers, body in receiver.received]
    assert sent == [
        ("customer.upserted", account_id),
        ("payment.recorded", payment.payment_id),
        ("payment.reversed", payment.payment_id),
        ("write_off.made", entry.entry_id),
    ]
    # The payment and its reversal share the payment's id, not their delivery id.
    assert len({headers[DELIVERY_HEADER] for headers, _ in receiver.received}) == 4


def allocated(payment: payment_pb2.Payment, sequence: int, parts: list[tuple[str, str]], unallocated: str) -> FakeMsg:
    """Billing's PaymentAllocated: allocation number `sequence` of the payment, (bill id, amount) each."""
    event = billing_events.PaymentAllocated(
        payment_id=payment.payment_id,
        account_id=payment.account_id,
        sequence=sequence,
        allocations=[billing_events.BillAllocation(bill_id=b, amount=money(amount)) for b, amount in parts],
        payment_amount=payment.amount,
        unallocated_amount=money(unallocated),
    )
    return message("evolutivo.billing.v1.payment.allocated", event, NOW)


async def test_a_payment_carries_billings_allocation_and_later_allocations_follow(
    setup: Setup, receiver: Receiver
) -> None:
    account_id = str(uuid.uuid4())
    account = account_pb2.Account(account_id=account_id, account_number="A-00000091", update_time=to_timestamp(NOW))
    bills = [
        bill_pb2.Bill(
            bill_id=str(uuid.uuid4()),
            account_id=account_id,
            bill_number=f"F-9{i}",
            lines=[bill_pb2.BillLine(line_number=1, charge_offer_code="MOBILE", amount=money(total))],
            tax_total=money("0"),
            total=money(total),
        )
        for i, total in enumerate(("12.10", "4.84"))
    ]
    payment = payment_pb2.Payment(
        payment_id=str(uuid.uuid4()),
        account_id=account_id,
        amount=money("20.00"),
        reference="bank-91",
        received_time=to_timestamp(NOW),
    )
    await deliver(setup, "customer", message(ACCOUNT_CREATED, customer_events.AccountCreated(account=account), NOW))
    await deliver(
        setup,
        "balance",
        message("evolutivo.balance.v1.payment.recorded", balance_events.PaymentRecorded(payment=payment), NOW),
    )
    # Billing's later allocation may reach the gateway before the first and before its bill.
    await deliver(setup, "billing", allocated(payment, 2, [(bills[1].bill_id, "4.84")], "3.06"))
    await deliver(setup, "billing", allocated(payment, 1, [(bills[0].bill_id, "12.10")], "7.90"))
    await run_jobs(setup)
    assert [headers[EVENT_HEADER] for headers, _ in receiver.received] == ["customer.upserted"]
    await deliver(setup, "billing", *(message(BILL_ISSUED, billing_events.BillIssued(bill=b), NOW) for b in bills))
    for _ in range(3):
        await run_jobs(setup)
        setup.db.clock.advance(dt.timedelta(seconds=5))
    documents = [json.loads(body) for _, body in receiver.received]
    assert [d["event"] for d in documents] == [
        "customer.upserted",
        "invoice.posted",
        "invoice.posted",
        "payment.recorded",
        "payment.allocated",
    ]
    recorded, later = documents[3], documents[4]
    assert recorded["entity_id"] == payment.payment_id
    assert recorded["data"]["allocations"] == [
        {"bill_id": bills[0].bill_id, "amount": {"currency_code": "EUR", "units": "12", "nanos": 100000000}}
    ]
    assert recorded["data"]["unallocated_amount"] == {"currency_code": "EUR", "units": "7", "nanos": 900000000}
    assert (later["entity_id"], later["data"]["payment_id"], later["data"]["sequence"]) == (
        payment.payment_id,
        payment.payment_id,
        2,
    )
    assert later["data"]["allocations"] == [
        {"bill_id": bills[1].bill_id, "amount": {"currency_code": "EUR", "units": "4", "nanos": 840000000}}
    ]
    for headers, body in receiver.received:
        assert verify(SECRET, headers[SIGNATURE_HEADER], body, setup.db.clock.now(), dt.timedelta(minutes=5))


def note_allocated(
    note: credit_note_pb2.CreditNote, sequence: int, parts: list[tuple[str, str]], unallocated: str
) -> FakeMsg:
    """Billing's CreditNoteAllocated: allocation number `sequence` of the note, (bill id, amount) each."""
    event = billing_events.CreditNoteAllocated(
        credit_note_id=note.credit_note_id,
        account_id=note.account_id,
        sequence=sequence,
        allocations=[billing_events.BillAllocation(bill_id=b, amount=money(amount)) for b, amount in parts],
        credit_note_amount=note.total,
        unallocated_amount=money(unallocated),
    )
    return message("evolutivo.billing.v1.credit_note.allocated", event, NOW)


async def test_a_credit_notes_allocations_follow_it_in_sequence(setup: Setup, receiver: Receiver) -> None:
    account_id = str(uuid.uuid4())
    account = account_pb2.Account(account_id=account_id, account_number="A-00000092", update_time=to_timestamp(NOW))
    paid, later = (
        bill_pb2.Bill(
            bill_id=str(uuid.uuid4()),
            account_id=account_id,
            bill_number=f"F-8{i}",
            lines=[bill_pb2.BillLine(line_number=1, charge_offer_code="MOBILE", amount=money(total))],
            tax_total=money("0"),
            total=money(total),
        )
        for i, total in enumerate(("12.10", "4.84"))
    )
    note = credit_note_pb2.CreditNote(
        credit_note_id=str(uuid.uuid4()),
        bill_id=paid.bill_id,
        account_id=account_id,
        credit_note_number="CN-81",
        currency_code="EUR",
        lines=[credit_note_pb2.CreditNoteLine(line_number=1, charge_offer_code="MOBILE", amount=money("6.00"))],
        subtotal=money("6.00"),
        tax_total=money("0"),
        total=money("6.00"),
        issue_time=to_timestamp(NOW),
    )
    await deliver(setup, "customer", message(ACCOUNT_CREATED, customer_events.AccountCreated(account=account), NOW))
    # Its bill was paid when the note was issued: allocation 1 gives nothing (nothing is sent for it);
    # a later bill takes 4.84 of its credit (allocation 2, before the note and the bill).
    await deliver(setup, "billing", note_allocated(note, 2, [(later.bill_id, "4.84")], "1.16"))
    await deliver(
        setup,
        "billing",
        message(BILL_ISSUED, billing_events.BillIssued(bill=paid), NOW),
        message("evolutivo.billing.v1.credit_note.issued", billing_events.CreditNoteIssued(credit_note=note), NOW),
        note_allocated(note, 1, [], "6.00"),
    )
    await run_jobs(setup)
    await deliver(setup, "billing", message(BILL_ISSUED, billing_events.BillIssued(bill=later), NOW))
    for _ in range(3):
        await run_jobs(setup)
        setup.db.clock.advance(dt.timedelta(seconds=5))
    documents = [json.loads(body) for _, body in receiver.received]
    assert [d["event"] for d in documents] == [
        "customer.upserted",
        "invoice.posted",
        "credit_note.posted",
        "invoice.posted",
        "credit_note.allocated",
    ]
    allocation = documents[4]
    assert (allocation["entity_id"], allocation["data"]["credit_note_id"], allocation["data"]["sequence"]) == (
        note.credit_note_id,
        note.credit_note_id,
        2,
    )
    assert allocation["data"]["account_id"] == account_id
    assert allocation["data"]["allocations"] == [
        {"bill_id": later.bill_id, "amount": {"currency_code": "EUR", "units": "4", "nanos": 840000000}}
    ]
    nid = uuid.UUID(note.credit_note_id)
    async with setup.db.uow() as uow:
        first, second = [
            await uow.jobs.find(
                setup.connection.connection_id,
                EntityType.CREDIT_NOTE_ALLOCATION,
                allocation_entity_id(nid, sequence, EntityType.CREDIT_NOTE_ALLOCATION),
            )
            for sequence in (1, 2)
        ]
    assert first is not None and second is not None
    assert (first.state, first.erp_id) == (JobState.SUCCEEDED, handlers.NOT_SENT_EMPTY)
    assert (second.state, second.erp_id) == (JobState.SUCCEEDED, f"{note.credit_note_id}:2")
