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
from dataclasses import dataclass, field, replace
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
from evolutivo.erp_gateway.v1 import sync_job_pb2
from evolutivo_erp_gateway.adapters import events, proto
from evolutivo_erp_gateway.adapters.crypto import SecretCipher, generate_key
from evolutivo_erp_gateway.adapters.factory import Adapters
from evolutivo_erp_gateway.adapters.orm import inbox, outbox
from evolutivo_erp_gateway.adapters.webhook import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, verify
from evolutivo_erp_gateway.domain.connections import Connection, ConnectionType
from evolutivo_erp_gateway.domain.jobs import CircuitBreaker, JobState, RetryPolicy, SyncJob
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
from prometheus_client import REGISTRY
from support.databases import MigratedDatabase, ServiceDb
from support.erp import a_connection
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
        connection = a_connection(ConnectionType.WEBHOOK, "Data warehouse hook", receiver.url, NOW)
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


def attempts(outcome: str) -> float:
    """evolutivo_erp_sync_attempts_total for customers, with this outcome, so far."""
    sample = REGISTRY.get_sample_value(
        "evolutivo_erp_sync_attempts_total", {"entity_type": "customer", "outcome": outcome}
    )
    return sample or 0.0


def gauge(state: JobState) -> float | None:
    return REGISTRY.get_sample_value("evolutivo_erp_sync_jobs", {"state": state.value})


async def test_the_operator_sees_jobs_by_state_and_attempts_by_outcome(setup: Setup, receiver: Receiver) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    await deliver(
        setup,
        "customer",
        *(
            message(
                "evolutivo.customer.v1.account.created",
                customer_events.AccountCreated(
                    account=account_pb2.Account(
                        account_id=i, account_number=f"A-{n:08d}", update_time=to_timestamp(NOW)
                    )
                ),
                NOW,
            )
            for n, i in enumerate(ids)
        ),
    )
    counted = await handlers.count_jobs(setup.db.uow())
    assert counted == {JobState.PENDING: 3, JobState.RETRYING: 0, JobState.DEAD: 0}
    assert [gauge(s) for s in counted] == [3, 0, 0]

    before = {o: attempts(o) for o in ("succeeded", "retrying", "dead")}
    receiver.failures = 100
    await run_jobs(setup)
    assert attempts("retrying") - before["retrying"] == 3
    assert await handlers.count_jobs(setup.db.uow()) == {JobState.PENDING: 0, JobState.RETRYING: 3, JobState.DEAD: 0}
    # Every attempt fails until the policy gives up: the jobs are dead, each counted once as such.
    for _ in range(POLICY.max_attempts):
        setup.db.clock.advance(POLICY.cap * 2)
        await run_jobs(setup)
    assert attempts("dead") - before["dead"] == 3
    assert attempts("retrying") - before["retrying"] == 3 * (POLICY.max_attempts - 1)
    assert await handlers.count_jobs(setup.db.uow()) == {JobState.PENDING: 0, JobState.RETRYING: 0, JobState.DEAD: 3}
    assert gauge(JobState.DEAD) == 3

    # The receiver is back and the operator retries one: it succeeds, two stay dead.
    receiver.failures = 0
    async with setup.db.uow() as uow:
        job = await uow.jobs.find(setup.connection.connection_id, EntityType.CUSTOMER, uuid.UUID(ids[0]))
    assert job is not None
    await handlers.retry_job(setup.db.uow(), job.job_id)
    assert (await handlers.count_jobs(setup.db.uow()))[JobState.PENDING] == 1
    await run_jobs(setup)
    assert attempts("succeeded") - before["succeeded"] == 1
    assert await handlers.count_jobs(setup.db.uow()) == {JobState.PENDING: 0, JobState.RETRYING: 0, JobState.DEAD: 2}
    assert [gauge(s) for s in (JobState.PENDING, JobState.RETRYING, JobState.DEAD)] == [0, 0, 2]


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
    payment = a_payment(account_id, "10.00", "bank-78")
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
        payment_recorded(payment),
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
    bills = [a_bill(account_id, f"F-9{i}", total) for i, total in enumerate(("12.10", "4.84"))]
    payment = a_payment(account_id, "20.00", "bank-91")
    await deliver(setup, "customer", message(ACCOUNT_CREATED, customer_events.AccountCreated(account=account), NOW))
    await deliver(
        setup,
        "balance",
        payment_recorded(payment),
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
    paid, later = (a_bill(account_id, f"F-8{i}", total) for i, total in enumerate(("12.10", "4.84")))
    note = a_note(paid, "CN-81", "6.00")
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


async def job_of(setup: Setup, entity_type: EntityType, entity_id: uuid.UUID | str) -> SyncJob:
    async with setup.db.uow() as uow:
        job = await uow.jobs.find(setup.connection.connection_id, entity_type, uuid.UUID(str(entity_id)))
    assert job is not None, f"no {entity_type.value} job {entity_id}"
    return job


async def kill(setup: Setup, job: SyncJob) -> None:
    """As if the ERP had refused the job until its attempts ran out."""
    async with setup.db.uow() as uow:
        await uow.jobs.save(replace(job, state=JobState.DEAD, attempts=POLICY.max_attempts, last_error="refused"))
        await uow.commit()


async def run_until_settled(setup: Setup) -> None:
    """Runs the jobs while the clock moves past every backoff and wait (the policy's attempts twice over)."""
    for _ in range(2 * POLICY.max_attempts):
        await run_jobs(setup)
        setup.db.clock.advance(POLICY.cap + handlers.PREREQUISITE_WAIT)


def a_bill(account_id: str, number: str, total: str) -> bill_pb2.Bill:
    return bill_pb2.Bill(
        bill_id=str(uuid.uuid4()),
        account_id=account_id,
        bill_number=number,
        lines=[bill_pb2.BillLine(line_number=1, charge_offer_code="MOBILE", amount=money(total))],
        tax_total=money("0"),
        total=money(total),
    )


def a_payment(account_id: str, amount: str, reference: str) -> payment_pb2.Payment:
    return payment_pb2.Payment(
        payment_id=str(uuid.uuid4()),
        account_id=account_id,
        amount=money(amount),
        reference=reference,
        received_time=to_timestamp(NOW),
    )


def payment_recorded(payment: payment_pb2.Payment) -> FakeMsg:
    return message("evolutivo.balance.v1.payment.recorded", balance_events.PaymentRecorded(payment=payment), NOW)


def a_note(bill: bill_pb2.Bill, number: str, total: str) -> credit_note_pb2.CreditNote:
    return credit_note_pb2.CreditNote(
        credit_note_id=str(uuid.uuid4()),
        bill_id=bill.bill_id,
        account_id=bill.account_id,
        credit_note_number=number,
        currency_code="EUR",
        lines=[credit_note_pb2.CreditNoteLine(line_number=1, charge_offer_code="MOBILE", amount=money(total))],
        subtotal=money(total),
        tax_total=money("0"),
        total=money(total),
        issue_time=to_timestamp(NOW),
    )


def write_off(account_id: str, amount: str) -> FakeMsg:
    entry = ledger_pb2.LedgerEntry(
        entry_id=str(uuid.uuid4()),
        account_id=account_id,
        amount=money(f"-{amount}"),
        source_type="collections_case",
        source_id=str(uuid.uuid4()),
        effective_time=to_timestamp(NOW),
    )
    return message("evolutivo.balance.v1.write_off.made", balance_events.WriteOffMade(entry=entry), NOW)


async def test_allocations_behind_a_dead_credit_note_end_in_the_dead_letter_list_naming_it(
    setup: Setup, receiver: Receiver
) -> None:
    """A credit note's job that is DEAD fails its allocations' attempts (each naming the dead job)
    instead of keeping them waiting unseen, and so the customer's write-off queued after them: each
    ends DEAD in the dead-letter list. An allocation whose previous one is DEAD fails the same way.
    Replayed in order, all go out."""
    account_id = str(uuid.uuid4())
    account = account_pb2.Account(account_id=account_id, account_number="A-00000093", update_time=to_timestamp(NOW))
    own, later = a_bill(account_id, "F-931", "12.10"), a_bill(account_id, "F-932", "4.84")
    note = a_note(own, "CN-93", "10.00")
    await deliver(setup, "customer", message(ACCOUNT_CREATED, customer_events.AccountCreated(account=account), NOW))
    await deliver(
        setup,
        "billing",
        message(BILL_ISSUED, billing_events.BillIssued(bill=own), NOW),
        message("evolutivo.billing.v1.credit_note.issued", billing_events.CreditNoteIssued(credit_note=note), NOW),
        note_allocated(note, 1, [(own.bill_id, "10.00")], "0"),
        message(BILL_ISSUED, billing_events.BillIssued(bill=later), NOW),
    )
    await deliver(setup, "balance", write_off(account_id, "4.84"))
    note_job = await job_of(setup, EntityType.CREDIT_NOTE, note.credit_note_id)
    await kill(setup, note_job)
    # Billing's later allocation (a made-up one: the note's credit was all used at issue, which
    # the gateway does not check) waits on allocation 1.
    await deliver(setup, "billing", note_allocated(note, 2, [(later.bill_id, "4.84")], "0"))
    await run_until_settled(setup)

    nid = uuid.UUID(note.credit_note_id)
    one, two = [
        await job_of(
            setup, EntityType.CREDIT_NOTE_ALLOCATION, allocation_entity_id(nid, s, EntityType.CREDIT_NOTE_ALLOCATION)
        )
        for s in (1, 2)
    ]
    (written_off,) = [j for j in await all_jobs(setup) if j.entity_type is EntityType.WRITE_OFF]
    assert (one.state, one.attempts) == (JobState.DEAD, POLICY.max_attempts)
    assert f"the job of credit note {nid} is dead: replay it ({note_job.job_id})" in one.last_error
    assert (two.state, two.attempts) == (JobState.DEAD, POLICY.max_attempts)
    assert f"the job of credit note {nid} is dead: replay it ({note_job.job_id})" in two.last_error
    assert written_off.state is JobState.DEAD
    assert f"the job of credit_note {nid} is dead: replay it ({note_job.job_id})" in written_off.last_error
    assert "credit_note.allocated" not in [headers[EVENT_HEADER] for headers, _ in receiver.received]
    servicer = ErpGatewayServicer(setup.db.uow, setup.adapters)
    dead = await servicer.ListSyncJobs(pb.ListSyncJobsRequest(state=sync_job_pb2.SYNC_JOB_STATE_DEAD), NO_CONTEXT)
    assert {j.job_id for j in dead.jobs} == {str(j.job_id) for j in (note_job, one, two, written_off)}

    # The note replayed, allocation 2 replayed before allocation 1 fails naming allocation 1.
    await handlers.retry_job(setup.db.uow(), note_job.job_id)
    await run_jobs(setup)
    await handlers.retry_job(setup.db.uow(), two.job_id)
    await run_jobs(setup)
    two = await job_of(setup, EntityType.CREDIT_NOTE_ALLOCATION, two.entity_id)
    assert (two.state, two.attempts) == (JobState.RETRYING, 1)
    assert f"the job of allocation 1 of credit note {nid} is dead: replay it ({one.job_id})" in two.last_error
    for job in (one, two, written_off):
        await handlers.retry_job(setup.db.uow(), job.job_id)
        await run_jobs(setup)
    assert [headers[EVENT_HEADER] for headers, _ in receiver.received][-4:] == [
        "credit_note.posted",
        "credit_note.allocated",
        "credit_note.allocated",
        "write_off.made",
    ]


async def test_a_payments_allocation_behind_its_dead_payment_ends_in_the_dead_letter_list(
    setup: Setup, receiver: Receiver
) -> None:
    """The same code path for a payment's later allocation: its payment's job DEAD fails it."""
    account_id = str(uuid.uuid4())
    account = account_pb2.Account(account_id=account_id, account_number="A-00000094", update_time=to_timestamp(NOW))
    later = a_bill(account_id, "F-941", "4.84")
    payment = a_payment(account_id, "20.00", "bank-94")
    await deliver(setup, "customer", message(ACCOUNT_CREATED, customer_events.AccountCreated(account=account), NOW))
    await deliver(
        setup,
        "balance",
        payment_recorded(payment),
    )
    paid = await job_of(setup, EntityType.PAYMENT, payment.payment_id)
    await kill(setup, paid)
    await deliver(
        setup,
        "billing",
        allocated(payment, 1, [], "20.00"),
        message(BILL_ISSUED, billing_events.BillIssued(bill=later), NOW),
        allocated(payment, 2, [(later.bill_id, "4.84")], "15.16"),
    )
    await run_until_settled(setup)
    pid = uuid.UUID(payment.payment_id)
    two = await job_of(setup, EntityType.PAYMENT_ALLOCATION, allocation_entity_id(pid, 2))
    assert (two.state, two.attempts) == (JobState.DEAD, POLICY.max_attempts)
    assert f"the job of payment {pid} is dead: replay it ({paid.job_id})" in two.last_error
    for job in (paid, two):
        await handlers.retry_job(setup.db.uow(), job.job_id)
        await run_jobs(setup)
    assert [headers[EVENT_HEADER] for headers, _ in receiver.received][-2:] == ["payment.recorded", "payment.allocated"]


async def test_a_notes_allocation_at_issue_to_a_bill_the_gateway_never_received_is_not_sent(
    setup: Setup, receiver: Receiver
) -> None:
    """The note's bill was issued before the gateway consumed billing's stream: it has no invoice
    job and never will (its BillIssued came before the note's). The note goes out without it, as
    before; its allocation at issue to that bill is recorded as not sent once the note's job
    succeeded, instead of waiting an hour and going DEAD, and the later allocations follow it."""
    account_id = str(uuid.uuid4())
    account = account_pb2.Account(account_id=account_id, account_number="A-00000095", update_time=to_timestamp(NOW))
    old, later = a_bill(account_id, "F-951", "12.10"), a_bill(account_id, "F-952", "4.84")
    note = a_note(old, "CN-95", "10.00")
    # The note and its allocations arrive before the customer: nothing goes out until it does.
    await deliver(
        setup,
        "billing",
        message("evolutivo.billing.v1.credit_note.issued", billing_events.CreditNoteIssued(credit_note=note), NOW),
        note_allocated(note, 1, [(old.bill_id, "7.10")], "2.90"),
        message(BILL_ISSUED, billing_events.BillIssued(bill=later), NOW),
        note_allocated(note, 2, [(later.bill_id, "2.90")], "0"),
    )
    await run_jobs(setup)
    nid = uuid.UUID(note.credit_note_id)
    one_id, two_id = [allocation_entity_id(nid, s, EntityType.CREDIT_NOTE_ALLOCATION) for s in (1, 2)]
    one = await job_of(setup, EntityType.CREDIT_NOTE_ALLOCATION, one_id)
    assert (one.state, one.last_error) == (JobState.PENDING, f"waiting for customer {account_id}")
    await deliver(setup, "customer", message(ACCOUNT_CREATED, customer_events.AccountCreated(account=account), NOW))
    for _ in range(3):
        setup.db.clock.advance(handlers.PREREQUISITE_WAIT)
        await run_jobs(setup)
    one = await job_of(setup, EntityType.CREDIT_NOTE_ALLOCATION, one_id)
    two = await job_of(setup, EntityType.CREDIT_NOTE_ALLOCATION, two_id)
    assert (one.state, one.attempts, one.erp_id) == (JobState.SUCCEEDED, 0, handlers.NOT_SENT_BILL_NOT_IN_ERP)
    assert (two.state, two.erp_id) == (JobState.SUCCEEDED, f"{note.credit_note_id}:2")
    documents = [json.loads(body) for _, body in receiver.received]
    # The note and the later invoice depend on each other in neither direction: a fetched batch's
    # bills are queued first (its BillIssued applied together, docs/erp_gateway.md), so the invoice
    # goes before the note that came before it on billing's stream; the allocation waits for both.
    assert [d["event"] for d in documents] == [
        "customer.upserted",
        "invoice.posted",
        "credit_note.posted",
        "credit_note.allocated",
    ]
    assert (documents[-1]["data"]["sequence"], documents[-1]["data"]["allocations"][0]["bill_id"]) == (
        2,
        later.bill_id,
    )


async def all_jobs(setup: Setup) -> list[SyncJob]:
    return [job for _, job in await handlers.list_jobs(setup.db.uow(), None, None, None, None, 0, 1000)]
