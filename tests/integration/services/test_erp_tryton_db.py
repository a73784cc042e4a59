"""The ERP gateway against a real PostgreSQL and a real Tryton (trytond from PyPI, started once per
session by support.tryton): events in through the service's consumers, sync jobs run by the same
function the background loop calls, and everything read back through Tryton's own JSON-RPC API."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import pytest
from evolutivo.balance.v1 import events_pb2 as balance_events
from evolutivo.balance.v1 import ledger_pb2, payment_pb2
from evolutivo.billing.v1 import bill_pb2, collections_events_pb2, collections_pb2, credit_note_pb2
from evolutivo.billing.v1 import events_pb2 as billing_events
from evolutivo.customer.v1 import account_pb2, contact_pb2
from evolutivo.customer.v1 import events_pb2 as customer_events
from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2 as pb
from evolutivo_erp_gateway.adapters import events, proto
from evolutivo_erp_gateway.adapters.crypto import SecretCipher, generate_key
from evolutivo_erp_gateway.adapters.erp import ErpAdapter
from evolutivo_erp_gateway.adapters.factory import Adapters
from evolutivo_erp_gateway.adapters.orm import connections, inbound_payments, inbox, metadata, outbox
from evolutivo_erp_gateway.adapters.tryton import TrytonClient
from evolutivo_erp_gateway.domain.connections import Connection, ConnectionType, Mapping
from evolutivo_erp_gateway.domain.jobs import JobState, RetryPolicy, SyncJob
from evolutivo_erp_gateway.domain.model import EntityType, allocation_entity_id
from evolutivo_erp_gateway.entrypoints.app import MIGRATIONS
from evolutivo_erp_gateway.entrypoints.consumers import subscriptions
from evolutivo_erp_gateway.entrypoints.grpc_api import ErpGatewayServicer
from evolutivo_erp_gateway.service_layer import handlers
from evolutivo_erp_gateway.service_layer.unit_of_work import ErpGatewayUnitOfWork
from evolutivo_runtime.errors import Aborted, NotFound
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.money import to_money
from evolutivo_runtime.timestamps import to_timestamp
from google.protobuf.field_mask_pb2 import FieldMask
from google.type import date_pb2, postal_address_pb2
from sqlalchemy import select
from support.databases import MigratedDatabase, ServiceDb
from support.jetstream import FakeMsg, consumer_for, message, process
from support.tryton import ADMIN, ADMIN_PASSWORD, Tryton, tryton  # noqa: F401  (the session's Tryton)

# Tryton's fiscal years are around the real today (support/tryton_bootstrap.py).
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
TODAY = NOW.date()
NO_CONTEXT: Any = None
FAST = RetryPolicy(base=dt.timedelta(seconds=1), cap=dt.timedelta(seconds=4), max_attempts=3)


class ErpDb(ServiceDb):
    def uow(self) -> ErpGatewayUnitOfWork:
        return ErpGatewayUnitOfWork(self.sessions, outbox, self.clock, events.encode)


@dataclass
class Gateway:
    db: ErpDb
    adapters: Adapters
    tryton: Tryton
    connection: Connection

    async def deliver(self, service: str, *msgs: FakeMsg) -> None:
        await process(consumer_for(subscriptions(), stream_name(service), self.db.uow, inbox), *msgs)
        assert all(m.acked for m in msgs), "every event applied"

    async def run_jobs(self, after_erp: handlers.AfterErp | None = None, adapters: Any = None) -> list[SyncJob]:
        """Runs due jobs until none is due (what the background loop does)."""
        ran = []
        for _ in range(50):
            job = await handlers.run_next_job(self.db.uow(), adapters or self.adapters, FAST, after_erp)
            if job is None:
                return ran
            ran.append(job)
        raise AssertionError("jobs kept running")

    async def job(self, entity_type: EntityType, entity_id: str) -> SyncJob:
        async with self.db.uow() as uow:
            job = await uow.jobs.find(self.connection.connection_id, entity_type, uuid.UUID(entity_id))
        assert job is not None
        return job


def mapping(server: Tryton) -> Mapping:
    return Mapping(
        taxes={code: str(tax) for code, tax in server.taxes.items()},
        journals={role: str(journal) for role, journal in server.journals.items()},
        accounts={
            "receivable": str(server.accounts["receivable"]),
            "revenue": str(server.accounts["revenue"]),
            "cash": str(server.accounts["cash"]),
            "tax": str(server.accounts["tax"]),
            "write_off": str(server.accounts["expense"]),
        },
    )


def new_connection(server: Tryton, **changes: Any) -> Connection:
    values: dict[str, Any] = {
        "connection_id": uuid.uuid4(),
        "display_name": "Tryton",
        "type": ConnectionType.TRYTON,
        "endpoint_url": server.url,
        "database": "",
        "username": ADMIN,
        "mapping": mapping(server),
        "enabled": True,
        "import_payments": True,
        "has_credentials": False,
        "create_time": NOW,
        "update_time": NOW,
    }
    values.update(changes)
    return Connection(**values)


@pytest.fixture
async def gateway(migrated_database: MigratedDatabase, tryton: Tryton) -> AsyncIterator[Gateway]:  # noqa: F811
    async with ErpDb.open(await migrated_database("erp_gateway", MIGRATIONS), NOW) as db:
        adapters = Adapters(SecretCipher([generate_key()]), 60.0, db.clock.now)
        connection = await handlers.create_connection(
            db.uow(), adapters, new_connection(tryton), ADMIN_PASSWORD, uuid.uuid4()
        )
        yield Gateway(db, adapters, tryton, connection)


async def tryton_client(server: Tryton) -> TrytonClient:
    client = TrytonClient(server.url, ADMIN, ADMIN_PASSWORD, 60.0)
    await client.login()
    return client


def money(text: str) -> Any:
    return to_money(Decimal(text), "EUR")


def today() -> date_pb2.Date:
    return date_pb2.Date(year=TODAY.year, month=TODAY.month, day=TODAY.day)


def account_created(account_id: str, number: str, name: str = "Acme Distribuciones SL") -> FakeMsg:
    account = account_pb2.Account(
        account_id=account_id,
        account_number=number,
        display_name=name,
        currency_code="EUR",
        create_time=to_timestamp(NOW),
        update_time=to_timestamp(NOW),
    )
    return message("evolutivo.customer.v1.account.created", customer_events.AccountCreated(account=account), NOW)


def account_updated(account_id: str, number: str, name: str, at: dt.datetime) -> FakeMsg:
    account = account_pb2.Account(
        account_id=account_id,
        account_number=number,
        display_name=name,
        currency_code="EUR",
        update_time=to_timestamp(at),
    )
    event = customer_events.AccountUpdated(account=account, changed_fields=["display_name"])
    return message("evolutivo.customer.v1.account.updated", event, at)


def bill(account_id: str, number: str, lines: list[tuple[str, str, str]]) -> bill_pb2.Bill:
    """lines: (charge offer, tax code, amount); taxed at 21% standard, 10% reduced, half up per code."""
    rates = {"standard": Decimal("0.21"), "reduced": Decimal("0.10")}
    bases: dict[str, Decimal] = {}
    for _, code, amount in lines:
        bases[code] = bases.get(code, Decimal(0)) + Decimal(amount)
    taxes = [
        bill_pb2.BillTax(
            tax_code=code,
            rate=str(rates[code]),
            taxable_amount=money(str(base)),
            tax_amount=money(str((base * rates[code]).quantize(Decimal("0.01"), "ROUND_HALF_UP"))),
        )
        for code, base in sorted(bases.items())
    ]
    subtotal = sum(bases.values(), Decimal(0))
    tax_total = sum((Decimal(t.tax_amount.units) + Decimal(t.tax_amount.nanos) / 10**9 for t in taxes), Decimal(0))
    return bill_pb2.Bill(
        bill_id=str(uuid.uuid4()),
        account_id=account_id,
        status=bill_pb2.BILL_STATUS_ISSUED,
        bill_number=number,
        currency_code="EUR",
        issue_date=today(),
        due_date=today(),
        lines=[
            bill_pb2.BillLine(
                line_number=i + 1,
                charge_offer_code=offer,
                charge_code="monthly",
                tax_code=code,
                quantity="1",
                amount=money(amount),
            )
            for i, (offer, code, amount) in enumerate(lines)
        ],
        taxes=taxes,
        subtotal=money(str(subtotal)),
        tax_total=money(str(tax_total)),
        total=money(str(subtotal + tax_total)),
        issue_time=to_timestamp(NOW),
    )


def bill_issued(b: bill_pb2.Bill) -> FakeMsg:
    return message("evolutivo.billing.v1.bill.issued", billing_events.BillIssued(bill=b), NOW)


def credit_note_issued(
    b: bill_pb2.Bill, number: str, amount: str, tax: str
) -> tuple[credit_note_pb2.CreditNote, FakeMsg]:
    line = b.lines[0]
    note = credit_note_pb2.CreditNote(
        credit_note_id=str(uuid.uuid4()),
        bill_id=b.bill_id,
        account_id=b.account_id,
        credit_note_number=number,
        currency_code="EUR",
        reason="goodwill",
        lines=[
            credit_note_pb2.CreditNoteLine(
                line_number=1,
                bill_line_number=line.line_number,
                charge_offer_code=line.charge_offer_code,
                charge_code=line.charge_code,
                tax_code=line.tax_code,
                amount=money(amount),
            )
        ],
        subtotal=money(amount),
        tax_total=money(tax),
        total=money(str(Decimal(amount) + Decimal(tax))),
        issue_date=today(),
        issue_time=to_timestamp(NOW),
    )
    return note, message(
        "evolutivo.billing.v1.credit_note.issued", billing_events.CreditNoteIssued(credit_note=note), NOW
    )


def payment_recorded(account_id: str, amount: str, reference: str | None = None) -> tuple[payment_pb2.Payment, FakeMsg]:
    payment = payment_pb2.Payment(
        payment_id=str(uuid.uuid4()),
        account_id=account_id,
        amount=money(amount),
        method=payment_pb2.PAYMENT_METHOD_TYPE_BANK_TRANSFER,
        reference=reference or f"bank-{uuid.uuid4().hex[:8]}",
        received_time=to_timestamp(NOW),
        state=payment_pb2.PAYMENT_STATE_RECORDED,
    )
    return payment, message(
        "evolutivo.balance.v1.payment.recorded", balance_events.PaymentRecorded(payment=payment), NOW
    )


def payment_allocated(
    payment: payment_pb2.Payment, sequence: int, parts: list[tuple[bill_pb2.Bill, str]], unallocated: str
) -> FakeMsg:
    """Billing's PaymentAllocated: allocation number `sequence` of the payment, (bill, amount) each."""
    event = billing_events.PaymentAllocated(
        payment_id=payment.payment_id,
        account_id=payment.account_id,
        sequence=sequence,
        allocations=[billing_events.BillAllocation(bill_id=b.bill_id, amount=money(amount)) for b, amount in parts],
        payment_amount=payment.amount,
        unallocated_amount=money(unallocated),
    )
    return message("evolutivo.billing.v1.payment.allocated", event, NOW)


def number() -> str:
    return uuid.uuid4().hex[:8].upper()


# --- connections ----------------------------------------------------------------------------------
async def test_migrations_create_exactly_the_tables_the_code_uses(gateway: Gateway) -> None:
    # The runtime's audit log (migration 0003) is the runtime's table, not in the service's metadata.
    assert [d for d in await gateway.db.schema_diff(metadata) if "audit_log" not in repr(d)] == []


async def test_the_secret_is_stored_encrypted_and_never_read_back(gateway: Gateway) -> None:
    stored = await gateway.db.scalar(
        select(connections.c.secret).where(connections.c.connection_id == gateway.connection.connection_id)
    )
    assert stored and ADMIN_PASSWORD.encode() not in stored
    servicer = ErpGatewayServicer(gateway.db.uow, gateway.adapters)
    read = (
        await servicer.GetConnection(
            pb.GetConnectionRequest(connection_id=str(gateway.connection.connection_id)), NO_CONTEXT
        )
    ).connection
    assert read.has_credentials
    assert ADMIN_PASSWORD not in str(read)
    listed = await servicer.ListConnections(pb.ListConnectionsRequest(), NO_CONTEXT)
    assert [c.connection_id for c in listed.connections] == [str(gateway.connection.connection_id)]


async def test_test_connection_says_what_is_wrong(gateway: Gateway) -> None:
    servicer = ErpGatewayServicer(gateway.db.uow, gateway.adapters)

    async def test(connection_id: uuid.UUID) -> list[tuple[int, str]]:
        response = await servicer.TestConnection(pb.TestConnectionRequest(connection_id=str(connection_id)), NO_CONTEXT)
        assert response.ok == (not response.problems)
        return [(p.kind, p.message) for p in response.problems]

    assert await test(gateway.connection.connection_id) == []

    async def other(secret: str, **changes: Any) -> uuid.UUID:
        made = await handlers.create_connection(
            gateway.db.uow(), gateway.adapters, new_connection(gateway.tryton, **changes), secret, None
        )
        return made.connection_id

    ((kind, text),) = await test(await other("wrong-password"))
    assert kind == pb.CONNECTION_PROBLEM_KIND_AUTH_FAILED and "admin" in text
    closed = f"http://127.0.0.1:9/{gateway.tryton.database}/"
    ((kind, _),) = await test(await other(ADMIN_PASSWORD, endpoint_url=closed))
    assert kind == pb.CONNECTION_PROBLEM_KIND_UNREACHABLE
    broken = mapping(gateway.tryton)
    broken = Mapping(
        taxes={"standard": "999999"}, journals=broken.journals, accounts={**broken.accounts, "cash": "888888"}
    )
    problems = await test(await other(ADMIN_PASSWORD, mapping=broken))
    assert {kind for kind, _ in problems} == {pb.CONNECTION_PROBLEM_KIND_MAPPING_MISSING}
    assert {text for _, text in problems} == {
        "mapping.accounts[cash]: no account.account 888888 in Tryton",
        "mapping.taxes[standard]: no account.tax 999999 in Tryton",
    }


async def test_update_connection_replaces_the_secret_and_checks_the_etag(gateway: Gateway) -> None:
    servicer = ErpGatewayServicer(gateway.db.uow, gateway.adapters)
    c = proto.connection_to_pb(gateway.connection)
    c.display_name = "Tryton (prod)"

    updated = (
        await servicer.UpdateConnection(
            pb.UpdateConnectionRequest(
                connection=c, update_mask=FieldMask(paths=["display_name", "secret"]), secret="nope"
            ),
            NO_CONTEXT,
        )
    ).connection
    assert (updated.display_name, updated.has_credentials, updated.etag) == ("Tryton (prod)", True, "v2")
    problems = (
        await servicer.TestConnection(pb.TestConnectionRequest(connection_id=c.connection_id), NO_CONTEXT)
    ).problems
    assert [p.kind for p in problems] == [pb.CONNECTION_PROBLEM_KIND_AUTH_FAILED]
    with pytest.raises(Aborted):  # c still carries the old etag (AIP-154)
        await servicer.UpdateConnection(
            pb.UpdateConnectionRequest(connection=c, update_mask=FieldMask(paths=["enabled"])), NO_CONTEXT
        )


# --- outbound -------------------------------------------------------------------------------------
async def test_customer_bills_credit_note_and_partial_payment_reach_tryton_once(gateway: Gateway) -> None:
    account_id, acct_number = str(uuid.uuid4()), f"A-{number()}"
    first = bill(account_id, f"F-{number()}", [("MOBILE", "standard", "10.50"), ("TV", "reduced", "4.99")])
    second = bill(account_id, f"F-{number()}", [("MOBILE", "standard", "20.00")])
    note, note_msg = credit_note_issued(first, f"CN-{number()}", "2.00", "0.42")
    payment, payment_msg = payment_recorded(account_id, "10.00")
    msgs_customer = [account_created(account_id, acct_number)]
    msgs_billing = [
        bill_issued(first),
        bill_issued(second),
        note_msg,
        payment_allocated(payment, 1, [(first, "10.00")], "0"),
    ]
    await gateway.deliver("customer", *msgs_customer)
    await gateway.deliver("billing", *msgs_billing)
    await gateway.deliver("balance", payment_msg)
    ran = await gateway.run_jobs()
    assert {j.state for j in ran} == {JobState.SUCCEEDED}
    # Redelivered events and a second pass create nothing more.
    await gateway.deliver("customer", *(m.again() for m in msgs_customer))
    await gateway.deliver("billing", *(m.again() for m in msgs_billing))
    assert await gateway.run_jobs() == []

    client = await tryton_client(gateway.tryton)
    try:
        parties = await client.search("party.party", [("code", "=", acct_number)])
        assert len(parties) == 1
        party = parties[0]
        assert (await gateway.job(EntityType.CUSTOMER, account_id)).erp_id == str(party)
        fields = ["state", "total_amount", "tax_amount", "untaxed_amount", "amount_to_pay", "party", "reference"]
        for b in (first, second):
            (invoice,) = await client.search("account.invoice", [("reference", "=", b.bill_number)])
            (row,) = await client.read("account.invoice", [invoice], fields)
            assert row["party"] == party
            assert row["state"] in ("posted", "paid")
            assert row["total_amount"] == Decimal(b.total.units) + Decimal(b.total.nanos) / 10**9
            assert (await gateway.job(EntityType.INVOICE, b.bill_id)).erp_id == str(invoice)
        (cn,) = await client.search("account.invoice", [("reference", "=", note.credit_note_number)])
        (row,) = await client.read("account.invoice", [cn], fields)
        assert (row["state"], row["total_amount"], row["tax_amount"]) == ("posted", Decimal("-2.42"), Decimal("-0.42"))
        # The payment: one posted move, its 10.00 set against the first invoice (the oldest).
        moves = await client.search("account.move", [("description", "=", f"evolutivo:payment:{payment.payment_id}")])
        assert len(moves) == 1
        (invoice,) = await client.search("account.invoice", [("reference", "=", first.bill_number)])
        (row,) = await client.read("account.invoice", [invoice], ["amount_to_pay", "state"])
        assert row["state"] == "posted"
        assert row["amount_to_pay"] == Decimal("18.20") - Decimal("10.00")  # 15.49 + 2.21 + 0.50 tax
    finally:
        await client.aclose()


async def test_an_invoice_waits_for_its_customer_and_a_customer_update_reaches_the_party(gateway: Gateway) -> None:
    account_id, acct_number = str(uuid.uuid4()), f"A-{number()}"
    b = bill(account_id, f"F-{number()}", [("MOBILE", "standard", "5.00")])
    await gateway.deliver("billing", bill_issued(b))
    await gateway.run_jobs()
    waiting = await gateway.job(EntityType.INVOICE, b.bill_id)
    assert (waiting.state, waiting.attempts) == (JobState.PENDING, 0)
    assert waiting.last_error == f"waiting for customer {account_id}"
    await gateway.deliver("customer", account_created(account_id, acct_number))
    gateway.db.clock.advance(dt.timedelta(seconds=5))
    await gateway.run_jobs()
    assert (await gateway.job(EntityType.INVOICE, b.bill_id)).state is JobState.SUCCEEDED
    # A later update renames the party; an older one arriving after it changes nothing.
    await gateway.deliver(
        "customer", account_updated(account_id, acct_number, "Acme Iberia SL", NOW + dt.timedelta(hours=1))
    )
    await gateway.deliver(
        "customer", account_updated(account_id, acct_number, "Stale Name", NOW + dt.timedelta(minutes=1))
    )
    await gateway.run_jobs()
    client = await tryton_client(gateway.tryton)
    try:
        (party,) = await client.search("party.party", [("code", "=", acct_number)])
        assert (await client.read("party.party", [party], ["name"]))[0]["name"] == "Acme Iberia SL"
    finally:
        await client.aclose()


class Crash(Exception):
    pass


async def test_retry_after_a_crash_finds_the_invoice_tryton_has(gateway: Gateway) -> None:
    account_id, acct_number = str(uuid.uuid4()), f"A-{number()}"
    await gateway.deliver("customer", account_created(account_id, acct_number))
    await gateway.run_jobs()
    b = bill(account_id, f"F-{number()}", [("MOBILE", "standard", "33.33")])
    await gateway.deliver("billing", bill_issued(b))

    created: list[str] = []

    def crash(job: SyncJob, erp_id: str) -> None:
        # Tryton has the posted invoice; the gateway dies before its commit records it.
        created.append(erp_id)
        raise Crash()

    with pytest.raises(Crash):
        await handlers.run_next_job(gateway.db.uow(), gateway.adapters, FAST, crash)
    job = await gateway.job(EntityType.INVOICE, b.bill_id)
    assert (job.state, job.erp_id, job.attempts) == (JobState.PENDING, "", 0)  # rolled back: due again
    (rerun,) = await gateway.run_jobs()
    assert (rerun.state, rerun.erp_id) == (JobState.SUCCEEDED, created[0])
    client = await tryton_client(gateway.tryton)
    try:
        invoices = await client.search("account.invoice", [("reference", "=", b.bill_number)])
        assert [str(i) for i in invoices] == created
        (row,) = await client.read("account.invoice", invoices, ["state", "total_amount"])
        assert (row["state"], row["total_amount"]) == ("posted", Decimal("40.33"))
    finally:
        await client.aclose()


async def test_tryton_down_then_back_an_hour_later_loses_and_duplicates_nothing(gateway: Gateway) -> None:
    account_id, acct_number = str(uuid.uuid4()), f"A-{number()}"
    b = bill(account_id, f"F-{number()}", [("FIBER", "standard", "49.90")])
    gateway.tryton.stop()
    try:
        await gateway.deliver("customer", account_created(account_id, acct_number))
        await gateway.deliver("billing", bill_issued(b))
        await gateway.run_jobs()
        failed = await gateway.job(EntityType.CUSTOMER, account_id)
        assert (failed.state, failed.attempts) == (JobState.RETRYING, 1)
        waiting = await gateway.job(EntityType.INVOICE, b.bill_id)
        assert (waiting.state, waiting.attempts, waiting.last_error) == (
            JobState.PENDING,
            0,
            f"waiting for customer {account_id}",
        )
        assert "Unreachable" in failed.last_error
        assert failed.next_attempt_time > NOW
    finally:
        gateway.tryton.start()
    gateway.db.clock.advance(dt.timedelta(hours=1))
    await gateway.run_jobs()
    assert (await gateway.job(EntityType.CUSTOMER, account_id)).state is JobState.SUCCEEDED
    assert (await gateway.job(EntityType.INVOICE, b.bill_id)).state is JobState.SUCCEEDED
    client = await tryton_client(gateway.tryton)
    try:
        assert len(await client.search("party.party", [("code", "=", acct_number)])) == 1
        assert len(await client.search("account.invoice", [("reference", "=", b.bill_number)])) == 1
    finally:
        await client.aclose()


async def test_exhausted_jobs_wait_dead_and_replay(gateway: Gateway) -> None:
    unmapped = Mapping(accounts=gateway.connection.mapping.accounts, journals=gateway.connection.mapping.journals)
    async with gateway.db.uow() as uow:
        await uow.connections.save(gateway.connection.updated(NOW, mapping=unmapped), None, replace_secret=False)
        await uow.commit()
    account_id = str(uuid.uuid4())
    b = bill(account_id, f"F-{number()}", [("MOBILE", "standard", "1.00")])
    await gateway.deliver("customer", account_created(account_id, f"A-{number()}"))
    await gateway.deliver("billing", bill_issued(b))
    for _ in range(FAST.max_attempts):
        await gateway.run_jobs()
        gateway.db.clock.advance(FAST.cap)
    dead = await gateway.job(EntityType.INVOICE, b.bill_id)
    assert (dead.state, dead.attempts) == (JobState.DEAD, FAST.max_attempts)
    assert "mapping.taxes[standard] is required" in dead.last_error
    servicer = ErpGatewayServicer(gateway.db.uow, gateway.adapters)
    listed = await servicer.ListSyncJobs(pb.ListSyncJobsRequest(state=4), NO_CONTEXT)  # DEAD
    assert [j.job_id for j in listed.jobs] == [str(dead.job_id)]
    async with gateway.db.uow() as uow:
        await uow.connections.save(gateway.connection, None, replace_secret=False)
        await uow.commit()
    replayed = (await servicer.RetrySyncJob(pb.RetrySyncJobRequest(job_id=str(dead.job_id)), NO_CONTEXT)).job
    assert (replayed.state, replayed.attempts) == (1, 0)
    await gateway.run_jobs()
    assert (await gateway.job(EntityType.INVOICE, b.bill_id)).state is JobState.SUCCEEDED


# --- inbound --------------------------------------------------------------------------------------
class Balance:
    """Stands in for balance's RecordPayment (idempotent on the reference, as balance is); the
    e2e suite drives the real one."""

    def __init__(self) -> None:
        self.payments: dict[str, tuple[uuid.UUID, Decimal, str]] = {}

    async def record_payment(self, account_id: uuid.UUID, amount: Decimal, currency_code: str, reference: str) -> str:
        self.payments.setdefault(reference, (account_id, amount, currency_code))
        return f"payment-of-{reference}"


async def test_a_payment_recorded_in_tryton_is_imported_once(gateway: Gateway) -> None:
    account_id, acct_number = str(uuid.uuid4()), f"A-{number()}"
    await gateway.deliver("customer", account_created(account_id, acct_number))
    await gateway.run_jobs()
    party = int((await gateway.job(EntityType.CUSTOMER, account_id)).erp_id)
    balance = Balance()
    await handlers.import_payments(gateway.db.uow, gateway.adapters, balance)  # sets the cursor
    client = await tryton_client(gateway.tryton)
    try:
        # A payment booked in Tryton (a bank statement line): cash debited, the party's receivable credited.
        accounts = gateway.tryton.accounts
        move = await client.create(
            "account.move",
            {
                "journal": gateway.tryton.journals["cash"],
                "date": TODAY,
                "description": "bank statement 2031-05",
                "lines": [
                    (
                        "create",
                        [
                            {"account": accounts["cash"], "debit": Decimal("25.00"), "credit": Decimal(0)},
                            {
                                "account": accounts["receivable"],
                                "party": party,
                                "debit": Decimal(0),
                                "credit": Decimal("25.00"),
                            },
                        ],
                    )
                ],
            },
        )
        await client.call("model.account.move.post", [move])
        lines = await client.search("account.move.line", [("move", "=", move), ("credit", ">", 0)])
    finally:
        await client.aclose()
    reference = f"tryton:{lines[0]}"
    assert await handlers.import_payments(gateway.db.uow, gateway.adapters, balance) == 1
    assert balance.payments == {reference: (uuid.UUID(account_id), Decimal("25.00"), "EUR")}
    # Polled again (and again after the gateway forgot its cursor): nothing new.
    assert await handlers.import_payments(gateway.db.uow, gateway.adapters, balance) == 0
    async with gateway.db.uow() as uow:
        await uow.session.execute(connections.update().values(import_cursor_time=None, import_cursor_id=None))
        await uow.commit()
    assert await handlers.import_payments(gateway.db.uow, gateway.adapters, balance) == 0
    # Balance announces the imported payment: it is not sent back to Tryton.
    payment, msg = payment_recorded(account_id, "25.00", reference)
    await gateway.deliver("balance", msg)
    # Nor are billing's allocations of it: its credit applied to a new bill stays Tryton's user's.
    later = bill(account_id, f"F-{number()}", [("MOBILE", "standard", "10.00")])
    await gateway.deliver(
        "billing",
        payment_allocated(payment, 1, [], "25.00"),
        bill_issued(later),
        payment_allocated(payment, 2, [(later, "12.10")], "12.90"),
    )
    async with gateway.db.uow() as uow:
        assert (
            await uow.jobs.find(gateway.connection.connection_id, EntityType.PAYMENT, uuid.UUID(payment.payment_id))
            is None
        )
        assert (
            await uow.jobs.connections_of(
                EntityType.PAYMENT_ALLOCATION, allocation_entity_id(uuid.UUID(payment.payment_id), 2)
            )
            == []
        )


async def test_more_payments_in_the_lookback_window_than_a_page_are_all_imported(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each poll re-reads the last minutes behind the cursor: a window holding more moves than a
    page once returned the same first page for ever, and the payments after it never came."""
    account_id = str(uuid.uuid4())
    await gateway.deliver("customer", account_created(account_id, f"A-{number()}"))
    await gateway.run_jobs()
    party = int((await gateway.job(EntityType.CUSTOMER, account_id)).erp_id)
    balance = Balance()
    await handlers.import_payments(gateway.db.uow, gateway.adapters, balance)  # sets the cursor
    client = await tryton_client(gateway.tryton)
    accounts = gateway.tryton.accounts
    amounts = [Decimal(f"{n}.25") for n in range(1, 6)]
    try:
        for n, amount in enumerate(amounts):
            move = await client.create(
                "account.move",
                {
                    "journal": gateway.tryton.journals["cash"],
                    "date": TODAY,
                    "description": f"bank statement line {n}",
                    "lines": [
                        (
                            "create",
                            [
                                {"account": accounts["cash"], "debit": amount, "credit": Decimal(0)},
                                {
                                    "account": accounts["receivable"],
                                    "party": party,
                                    "debit": Decimal(0),
                                    "credit": amount,
                                },
                            ],
                        )
                    ],
                },
            )
            await client.call("model.account.move.post", [move])
    finally:
        await client.aclose()
    monkeypatch.setattr(handlers, "IMPORT_BATCH", 2)
    for _ in range(10):
        if await handlers.import_payments(gateway.db.uow, gateway.adapters, balance) == 0:
            break
    assert sorted(amount for _, amount, _ in balance.payments.values()) == amounts


# --- general ledger --------------------------------------------------------------------------------
async def test_the_journal_of_a_period_balances_and_posts_to_tryton_once(gateway: Gateway) -> None:
    account_id = str(uuid.uuid4())
    b = bill(account_id, f"F-{number()}", [("MOBILE", "standard", "10.00"), ("TV", "reduced", "5.00")])
    _, note_msg = credit_note_issued(b, f"CN-{number()}", "1.00", "0.21")
    _, pay_msg = payment_recorded(account_id, "7.00")
    await gateway.deliver("billing", bill_issued(b), note_msg)
    await gateway.deliver("balance", pay_msg)
    servicer = ErpGatewayServicer(gateway.db.uow, gateway.adapters)
    request = pb.ExportJournalRequest(
        connection_id=str(gateway.connection.connection_id),
        start_time=to_timestamp(NOW - dt.timedelta(hours=1)),
        end_time=to_timestamp(NOW + dt.timedelta(hours=1)),
        currency_code="EUR",
    )
    exported = await servicer.ExportJournal(request, NO_CONTEXT)
    assert exported.debit_total == exported.credit_total
    lines = {(x.role, x.charge_offer_code): (x.debit, x.credit) for x in exported.lines}
    # Receivable: the bill's 17.60, less the credit note's 1.21 and the payment's 7.00.
    assert lines[("receivable", "")] == (money("9.39"), money("0"))
    assert lines[("revenue", "TV")] == (money("0"), money("5.00"))
    assert exported.csv.splitlines()[0] == "role,charge_offer_code,account,debit,credit,currency_code"
    request.post = True
    request.request_id = str(uuid.uuid4())
    posted = await servicer.ExportJournal(request, NO_CONTEXT)
    again = await servicer.ExportJournal(request, NO_CONTEXT)
    assert posted.erp_move_id == again.erp_move_id != ""
    client = await tryton_client(gateway.tryton)
    try:
        (row,) = await client.read("account.move", [int(posted.erp_move_id)], ["state", "lines"])
        assert row["state"] == "posted"
        move_lines = await client.read("account.move.line", row["lines"], ["debit", "credit"])
        assert sum(x["debit"] for x in move_lines) == sum(x["credit"] for x in move_lines) > 0
    finally:
        await client.aclose()


# Keeps the type checker honest about the adapter protocol the fixtures hand around.
_: Callable[[Connection, bytes | None], ErpAdapter] = Adapters(None, 1.0, lambda: NOW).open


# --- reversals, write-offs, customer fields, referrals, deleting and re-keying connections --------
def payment_reversed(payment: payment_pb2.Payment, at: dt.datetime) -> FakeMsg:
    reversed_payment = payment_pb2.Payment()
    reversed_payment.CopyFrom(payment)
    reversed_payment.state = payment_pb2.PAYMENT_STATE_REVERSED
    reversed_payment.reversal_reason = "bounced"
    reversed_payment.reverse_time.CopyFrom(to_timestamp(at))
    return message(
        "evolutivo.balance.v1.payment.reversed", balance_events.PaymentReversed(payment=reversed_payment), at
    )


def write_off_made(account_id: str, amount: str, source_type: str, source_id: str) -> tuple[str, FakeMsg]:
    entry = ledger_pb2.LedgerEntry(
        entry_id=str(uuid.uuid4()),
        account_id=account_id,
        type=ledger_pb2.LEDGER_ENTRY_TYPE_WRITE_OFF,
        amount=money(f"-{amount}"),
        source_type=source_type,
        source_id=source_id,
        reason_code="UNCOLLECTIBLE",
        effective_time=to_timestamp(NOW),
    )
    return entry.entry_id, message("evolutivo.balance.v1.write_off.made", balance_events.WriteOffMade(entry=entry), NOW)


def contact_changed(
    account_id: str, contact_id: str, kind: int, at: dt.datetime, role: int = 0, **channel: Any
) -> FakeMsg:
    contact = contact_pb2.Contact(
        contact_id=contact_id, account_id=account_id, role=role or contact_pb2.CONTACT_ROLE_BILLING, **channel
    )
    return message(
        "evolutivo.customer.v1.contact.changed",
        customer_events.ContactChanged(kind=kind, contact=contact),  # type: ignore[arg-type]
        at,
    )


def case_referred(account_id: str, agency: str, bills: list[bill_pb2.Bill], overdue: str) -> tuple[str, FakeMsg]:
    event_id = str(uuid.uuid4())
    event = collections_events_pb2.CollectionsCaseReferred(
        collections_case=collections_pb2.CollectionsCase(
            case_id=str(uuid.uuid4()), account_id=account_id, days_past_due=45
        ),
        agency=agency,
        overdue_amount=money(overdue),
        bill_ids=[b.bill_id for b in bills],
    )
    return event_id, message("evolutivo.billing.v1.collections_case.referred", event, NOW, event_id=event_id)


def total(b: bill_pb2.Bill) -> Decimal:
    return Decimal(b.total.units) + Decimal(b.total.nanos) / 10**9


async def test_a_reversed_payment_reopens_its_invoice_in_tryton_once(gateway: Gateway) -> None:
    account_id, acct_number = str(uuid.uuid4()), f"A-{number()}"
    b = bill(account_id, f"F-{number()}", [("MOBILE", "standard", "10.00")])  # 12.10
    payment, pay_msg = payment_recorded(account_id, "12.10")
    await gateway.deliver("customer", account_created(account_id, acct_number))
    await gateway.deliver("billing", bill_issued(b), payment_allocated(payment, 1, [(b, "12.10")], "0"))
    await gateway.deliver("balance", pay_msg)
    await gateway.run_jobs()
    client = await tryton_client(gateway.tryton)
    try:
        (invoice,) = await client.search("account.invoice", [("reference", "=", b.bill_number)])
        assert (await client.read("account.invoice", [invoice], ["state"]))[0]["state"] == "paid"
        reversal = payment_reversed(payment, NOW + dt.timedelta(minutes=5))
        await gateway.deliver("balance", reversal)

        def crash(job: SyncJob, erp_id: str) -> None:
            raise Crash()  # Tryton has the reversal; the gateway dies before recording it

        with pytest.raises(Crash):
            await handlers.run_next_job(gateway.db.uow(), gateway.adapters, FAST, crash)
        (rerun,) = await gateway.run_jobs()
        assert (rerun.entity_type, rerun.state) == (EntityType.PAYMENT_REVERSAL, JobState.SUCCEEDED)
        await gateway.deliver("balance", reversal.again())
        assert await gateway.run_jobs() == []

        moves = await client.search(
            "account.move", [("description", "=", f"evolutivo:payment_reversal:{payment.payment_id}")]
        )
        assert [str(m) for m in moves] == [rerun.erp_id]
        (move,) = await client.read("account.move", moves, ["state", "lines"])
        assert move["state"] == "posted"
        lines = await client.read("account.move.line", move["lines"], ["account", "debit", "credit", "reconciliation"])
        accounts = gateway.tryton.accounts
        assert sorted((x["account"], x["debit"], x["credit"]) for x in lines) == sorted(
            [(accounts["receivable"], Decimal("12.10"), Decimal(0)), (accounts["cash"], Decimal(0), Decimal("12.10"))]
        )
        # The invoice owes its total again; the payment's receivable and its reversal cancel out.
        (row,) = await client.read("account.invoice", [invoice], ["state", "amount_to_pay", "payment_lines"])
        assert (row["state"], row["amount_to_pay"], row["payment_lines"]) == ("posted", Decimal("12.10"), [])
        assert all(x["reconciliation"] for x in lines if x["account"] == accounts["receivable"])
    finally:
        await client.aclose()
    state = await handlers.get_sync_state(gateway.db.uow(), EntityType.PAYMENT_REVERSAL, uuid.UUID(payment.payment_id))
    assert state[0].erp_id == rerun.erp_id


async def test_a_write_off_settles_the_written_off_bill_first_in_tryton(gateway: Gateway) -> None:
    account_id, acct_number = str(uuid.uuid4()), f"A-{number()}"
    older = bill(account_id, f"F-{number()}", [("MOBILE", "standard", "20.00")])  # 24.20
    written_off = bill(account_id, f"F-{number()}", [("TV", "reduced", "5.00")])  # 5.50
    entry_id, msg = write_off_made(account_id, "5.50", "bill", written_off.bill_id)
    await gateway.deliver("customer", account_created(account_id, acct_number))
    await gateway.deliver("billing", bill_issued(older), bill_issued(written_off))
    await gateway.deliver("balance", msg)
    await gateway.run_jobs()
    await gateway.deliver("balance", msg.again())
    assert await gateway.run_jobs() == []
    job = await gateway.job(EntityType.WRITE_OFF, entry_id)
    assert job.state is JobState.SUCCEEDED
    client = await tryton_client(gateway.tryton)
    try:
        moves = await client.search("account.move", [("description", "=", f"evolutivo:write_off:{entry_id}")])
        assert [str(m) for m in moves] == [job.erp_id]
        (move,) = await client.read("account.move", moves, ["state", "journal", "lines"])
        assert (move["state"], move["journal"]) == ("posted", gateway.tryton.journals["general"])
        lines = await client.read("account.move.line", move["lines"], ["account", "debit", "credit"])
        assert sorted((x["account"], x["debit"], x["credit"]) for x in lines) == sorted(
            [
                (gateway.tryton.accounts["expense"], Decimal("5.50"), Decimal(0)),
                (gateway.tryton.accounts["receivable"], Decimal(0), Decimal("5.50")),
            ]
        )
        states = {}
        for b in (older, written_off):
            (invoice,) = await client.search("account.invoice", [("reference", "=", b.bill_number)])
            (row,) = await client.read("account.invoice", [invoice], ["state", "amount_to_pay"])
            states[b.bill_number] = (row["state"], row["amount_to_pay"])
        # The written-off bill is settled although the older one is open.
        assert states == {older.bill_number: ("posted", total(older)), written_off.bill_number: ("paid", Decimal(0))}
    finally:
        await client.aclose()


async def test_tax_id_emails_phones_and_addresses_reach_the_party_and_follow_changes(gateway: Gateway) -> None:
    account_id, acct_number = str(uuid.uuid4()), f"A-{number()}"
    email_id, phone_id, postal_id = (str(uuid.uuid4()) for _ in range(3))
    address = postal_address_pb2.PostalAddress(
        region_code="ES", postal_code="28013", locality="Madrid", address_lines=["Calle Mayor 1", "2º B"]
    )
    added = customer_events.CHANGE_KIND_ADDED
    # Contacts may arrive before their account: they are sent with it.
    await gateway.deliver(
        "customer",
        contact_changed(account_id, email_id, added, NOW, email="ap@acme.example", name="Accounts payable"),
        contact_changed(account_id, phone_id, added, NOW, role=contact_pb2.CONTACT_ROLE_PRIMARY, phone="+34911111111"),
        contact_changed(account_id, postal_id, added, NOW, postal_address=address, name="Facturación"),
    )
    created = account_created(account_id, acct_number)
    await gateway.deliver("customer", created)
    await gateway.run_jobs()

    async def party_fields() -> tuple[list[str], list[tuple[str, str, str]], list[dict[str, Any]]]:
        client = await tryton_client(gateway.tryton)
        try:
            (party,) = await client.search("party.party", [("code", "=", acct_number)])
            (row,) = await client.read("party.party", [party], ["identifiers", "contact_mechanisms", "addresses"])
            identifiers = [x["code"] for x in await client.read("party.identifier", row["identifiers"], ["code"])]
            mechanisms = await client.read(
                "party.contact_mechanism", row["contact_mechanisms"], ["type", "value", "comment"]
            )
            addresses = await client.read(
                "party.address", row["addresses"], ["street", "postal_code", "city", "attn", "invoice"]
            )
            return identifiers, sorted((m["type"], m["value"], m["comment"]) for m in mechanisms), addresses
        finally:
            await client.aclose()

    identifiers, mechanisms, addresses = await party_fields()
    assert identifiers == []
    assert mechanisms == sorted(
        [
            ("email", "ap@acme.example", f"evolutivo:contact:{email_id}"),
            ("phone", "+34911111111", f"evolutivo:contact:{phone_id}"),
        ]
    )
    ((street, postal_code, city, attn, invoice),) = [
        (a["street"], a["postal_code"], a["city"], a["attn"], a["invoice"]) for a in addresses
    ]
    assert (street, postal_code, city, attn, invoice) == ("Calle Mayor 1\n2º B", "28013", "Madrid", "Facturación", True)

    # The tax id is set, the email changes, the phone goes: the party follows, nothing doubles.
    later = NOW + dt.timedelta(hours=1)
    updated = account_pb2.Account(
        account_id=account_id,
        account_number=acct_number,
        display_name="Acme Distribuciones SL",
        tax_id="ESB12345678",
        update_time=to_timestamp(later),
    )
    await gateway.deliver(
        "customer",
        message(
            "evolutivo.customer.v1.account.updated",
            customer_events.AccountUpdated(account=updated, changed_fields=["tax_id"]),
            later,
        ),
        contact_changed(account_id, email_id, customer_events.CHANGE_KIND_UPDATED, later, email="pay@acme.example"),
        contact_changed(account_id, phone_id, customer_events.CHANGE_KIND_REMOVED, later, phone="+34911111111"),
        # An older change arriving late changes nothing.
        contact_changed(account_id, email_id, customer_events.CHANGE_KIND_UPDATED, NOW, email="stale@acme.example"),
    )
    await gateway.run_jobs()
    identifiers, mechanisms, addresses = await party_fields()
    assert identifiers == ["ESB12345678"]
    assert mechanisms == [("email", "pay@acme.example", f"evolutivo:contact:{email_id}")]
    assert len(addresses) == 1
    assert (await gateway.job(EntityType.CUSTOMER, account_id)).state is JobState.SUCCEEDED

    # Personal data erased: the party keeps its records (invoices point at them) without the data.
    erased_at = later + dt.timedelta(hours=1)
    erased = account_pb2.Account(
        account_id=account_id,
        account_number=acct_number,
        display_name="[erased]",
        personal_data_erased=True,
        update_time=to_timestamp(erased_at),
    )
    await gateway.deliver(
        "customer",
        message(
            "evolutivo.customer.v1.account.personal_data_erased",
            customer_events.PersonalDataErased(account=erased, erase_time=to_timestamp(erased_at)),
            erased_at,
        ),
    )
    await gateway.run_jobs()
    identifiers, mechanisms, addresses = await party_fields()
    assert (identifiers, mechanisms) == ([], [])
    assert [(a["street"], a["postal_code"], a["city"], a["attn"]) for a in addresses] == [("", "", "", "")]


async def test_a_referred_case_becomes_a_note_and_a_category_on_the_party(gateway: Gateway) -> None:
    servicer = ErpGatewayServicer(gateway.db.uow, gateway.adapters)
    c = proto.connection_to_pb(gateway.connection)
    c.collections_referrals = True
    await servicer.UpdateConnection(
        pb.UpdateConnectionRequest(connection=c, update_mask=FieldMask(paths=["collections_referrals"])), NO_CONTEXT
    )
    # Another Tryton connection, not marked for referrals, receives none.
    unmarked = await handlers.create_connection(
        gateway.db.uow(), gateway.adapters, new_connection(gateway.tryton, import_payments=False), ADMIN_PASSWORD, None
    )
    account_id, acct_number = str(uuid.uuid4()), f"A-{number()}"
    b = bill(account_id, f"F-{number()}", [("MOBILE", "standard", "50.00")])
    referral_id, msg = case_referred(account_id, "RECOBROS-NORTE", [b], "60.50")
    await gateway.deliver("customer", account_created(account_id, acct_number))
    await gateway.deliver("billing", bill_issued(b), msg)
    await gateway.run_jobs()
    await gateway.deliver("billing", msg.again())
    await gateway.run_jobs()
    job = await gateway.job(EntityType.REFERRAL, referral_id)
    assert job.state is JobState.SUCCEEDED
    async with gateway.db.uow() as uow:
        assert await uow.jobs.find(unmarked.connection_id, EntityType.REFERRAL, uuid.UUID(referral_id)) is None
    client = await tryton_client(gateway.tryton)
    try:
        (party,) = await client.search("party.party", [("code", "=", acct_number)])
        (row,) = await client.read("party.party", [party], ["categories"])
        names = [x["name"] for x in await client.read("party.category", row["categories"], ["name"])]
        assert names == ["Collections agency: RECOBROS-NORTE"]
        notes = await client.search("ir.note", [("resource", "=", f"party.party,{party}")])
        assert [str(n) for n in notes] == [job.erp_id]
        (note,) = await client.read("ir.note", notes, ["message"])
        (invoice,) = await client.search("account.invoice", [("reference", "=", b.bill_number)])
        (number_row,) = await client.read("account.invoice", [invoice], ["number"])
        assert note["message"].startswith(f"evolutivo:referral:{referral_id}\n")
        assert "RECOBROS-NORTE" in note["message"] and "60.50 EUR" in note["message"]
        assert f"Invoices: {number_row['number']} (bill {b.bill_number})." in note["message"]
    finally:
        await client.aclose()


async def test_rotating_the_key_rewrites_every_secret_and_deleting_a_connection_removes_its_jobs(
    gateway: Gateway,
) -> None:
    old_key, new_key = generate_key(), generate_key()
    # The fixture's connection was stored under another key: rewrite it under old_key first.
    async with gateway.db.uow() as uow:
        await uow.connections.set_secret(
            gateway.connection.connection_id, SecretCipher([old_key]).encrypt(ADMIN_PASSWORD)
        )
        await uow.commit()
    lost = await handlers.create_connection(
        gateway.db.uow(),
        Adapters(SecretCipher([generate_key()]), 60.0, gateway.db.clock.now),  # a key nobody keeps
        new_connection(gateway.tryton, import_payments=False, display_name="Lost key"),
        ADMIN_PASSWORD,
        None,
    )
    rotating = Adapters(SecretCipher([new_key, old_key]), 60.0, gateway.db.clock.now)
    servicer = ErpGatewayServicer(gateway.db.uow, rotating)
    rotated = await servicer.RotateConnectionSecrets(pb.RotateConnectionSecretsRequest(), NO_CONTEXT)
    assert (rotated.rotated_count, list(rotated.unreadable_connection_ids)) == (1, [str(lost.connection_id)])
    # The old key can go: the new one alone opens the secret, and Tryton still accepts it.
    only_new = ErpGatewayServicer(gateway.db.uow, Adapters(SecretCipher([new_key]), 60.0, gateway.db.clock.now))
    request = pb.TestConnectionRequest(connection_id=str(gateway.connection.connection_id))
    assert (await only_new.TestConnection(request, NO_CONTEXT)).ok
    stored = await gateway.db.scalar(
        select(connections.c.secret).where(connections.c.connection_id == gateway.connection.connection_id)
    )
    assert SecretCipher([new_key]).decrypt(stored) == ADMIN_PASSWORD

    # Deleting: the etag guards it; the connection, its jobs and its imported payments go.
    account_id = str(uuid.uuid4())
    await gateway.deliver("customer", account_created(account_id, f"A-{number()}"))
    connection_id = str(gateway.connection.connection_id)
    await gateway.run_jobs(adapters=rotating)
    await handlers.import_payments(gateway.db.uow, rotating, Balance())
    async with gateway.db.uow() as uow:  # an imported payment the connection's delete takes along
        await uow.inbound.add(
            connection_id=gateway.connection.connection_id,
            erp_id="424242",
            reference="tryton:424242",
            account_id=uuid.UUID(account_id),
            amount=Decimal("1.00"),
            currency_code="EUR",
            status="recorded",
            payment_id="p",
            reason="",
            create_time=NOW,
        )
        await uow.commit()
    with pytest.raises(Aborted):
        await servicer.DeleteConnection(pb.DeleteConnectionRequest(connection_id=connection_id, etag="v0"), NO_CONTEXT)
    current = await servicer.GetConnection(pb.GetConnectionRequest(connection_id=connection_id), NO_CONTEXT)
    await servicer.DeleteConnection(
        pb.DeleteConnectionRequest(connection_id=connection_id, etag=current.connection.etag), NO_CONTEXT
    )
    with pytest.raises(NotFound):
        await servicer.GetConnection(pb.GetConnectionRequest(connection_id=connection_id), NO_CONTEXT)
    listed = await servicer.ListSyncJobs(pb.ListSyncJobsRequest(connection_id=connection_id), NO_CONTEXT)
    assert list(listed.jobs) == []
    assert await gateway.db.count(inbound_payments) == 0
    with pytest.raises(NotFound):
        await servicer.DeleteConnection(pb.DeleteConnectionRequest(connection_id=connection_id), NO_CONTEXT)
    # New records are queued for the remaining connection only.
    b = bill(account_id, f"F-{number()}", [("MOBILE", "standard", "1.00")])
    await gateway.deliver("billing", bill_issued(b))
    jobs = await servicer.ListSyncJobs(pb.ListSyncJobsRequest(entity_id=b.bill_id), NO_CONTEXT)
    assert [j.connection_id for j in jobs.jobs] == [str(lost.connection_id)]


# --- payments as billing allocated them --------------------------------------------------------------
async def invoice_state(client: TrytonClient, b: bill_pb2.Bill) -> tuple[str, Decimal, int]:
    """(state, amount to pay, number of payment lines) of the bill's invoice, read from Tryton."""
    (invoice,) = await client.search("account.invoice", [("reference", "=", b.bill_number)])
    (row,) = await client.read("account.invoice", [invoice], ["state", "amount_to_pay", "payment_lines"])
    return row["state"], row["amount_to_pay"], len(row["payment_lines"])


async def test_a_payment_follows_billings_allocation_and_its_credit_moves_to_later_invoices(gateway: Gateway) -> None:
    account_id, acct_number = str(uuid.uuid4()), f"A-{number()}"
    older = bill(account_id, f"F-{number()}", [("MOBILE", "standard", "10.00")])  # 12.10
    paid = bill(account_id, f"F-{number()}", [("MOBILE", "standard", "20.00")])  # 24.20
    third = bill(account_id, f"F-{number()}", [("TV", "standard", "4.00")])  # 4.84
    payment, pay_msg = payment_recorded(account_id, "30.00")
    first_allocation = payment_allocated(payment, 1, [(paid, "24.20")], "5.80")
    await gateway.deliver("customer", account_created(account_id, acct_number))
    await gateway.deliver("billing", bill_issued(older))
    await gateway.run_jobs()
    # The payment reaches the gateway before the bill billing gave it to: it waits for that invoice
    # (Tryton has another one open, which the payment must not settle).
    await gateway.deliver("balance", pay_msg)
    await gateway.run_jobs()
    waiting = await gateway.job(EntityType.PAYMENT, payment.payment_id)
    assert (waiting.state, waiting.attempts, waiting.last_error) == (
        JobState.PENDING,
        0,
        f"waiting for billing's allocation of payment {payment.payment_id}",
    )
    await gateway.deliver("billing", first_allocation)
    gateway.db.clock.advance(dt.timedelta(seconds=5))
    await gateway.run_jobs()
    waiting = await gateway.job(EntityType.PAYMENT, payment.payment_id)
    assert (waiting.state, waiting.last_error) == (
        JobState.PENDING,
        f"waiting for bill {paid.bill_id} (billing allocated to it; its BillIssued has not come)",
    )
    await gateway.deliver("billing", bill_issued(paid))
    await gateway.run_jobs()  # the invoice; the payment looks again in a moment
    gateway.db.clock.advance(dt.timedelta(seconds=5))

    made: list[str] = []

    def crash_after_payment(job: SyncJob, erp_id: str) -> None:
        if job.entity_type is EntityType.PAYMENT and not made:
            made.append(erp_id)
            raise Crash()  # Tryton has the payment; the gateway dies before recording it

    with pytest.raises(Crash):
        await gateway.run_jobs(crash_after_payment)
    await gateway.run_jobs()
    booked = await gateway.job(EntityType.PAYMENT, payment.payment_id)
    assert (booked.state, booked.erp_id) == (JobState.SUCCEEDED, made[0])

    client = await tryton_client(gateway.tryton)
    try:
        accounts = gateway.tryton.accounts
        moves = await client.search("account.move", [("description", "=", f"evolutivo:payment:{payment.payment_id}")])
        assert [str(m) for m in moves] == made
        lines = await client.read(
            "account.move.line",
            await client.search("account.move.line", [("move", "=", moves[0])]),
            ["account", "debit", "credit", "description"],
        )
        (paid_invoice,) = await client.search("account.invoice", [("reference", "=", paid.bill_number)])
        assert sorted((x["account"], x["debit"], x["credit"], x["description"]) for x in lines) == sorted(
            [
                (accounts["cash"], Decimal("30.00"), Decimal(0), None),
                (
                    accounts["receivable"],
                    Decimal(0),
                    Decimal("24.20"),
                    f"evolutivo:payment:{payment.payment_id}:invoice:{paid_invoice}",
                ),
                (accounts["receivable"], Decimal(0), Decimal("5.80"), f"evolutivo:payment:{payment.payment_id}"),
            ]
        )
        # Exactly billing's bill is paid, by billing's amount; the older invoice is untouched.
        assert await invoice_state(client, paid) == ("paid", Decimal(0), 1)
        assert await invoice_state(client, older) == ("posted", Decimal("12.10"), 0)

        # Billing's next bill takes 4.84 of the credit: billing's allocation 2 may arrive before the bill.
        second_allocation = payment_allocated(payment, 2, [(third, "4.84")], "0.96")
        await gateway.deliver("billing", second_allocation)
        await gateway.run_jobs()
        allocation_id = allocation_entity_id(uuid.UUID(payment.payment_id), 2)
        waiting = await gateway.job(EntityType.PAYMENT_ALLOCATION, str(allocation_id))
        assert (waiting.state, waiting.last_error) == (
            JobState.PENDING,
            f"waiting for bill {third.bill_id} (billing allocated to it; its BillIssued has not come)",
        )
        await gateway.deliver("billing", bill_issued(third))
        await gateway.run_jobs()
        gateway.db.clock.advance(dt.timedelta(seconds=5))
        moved: list[str] = []

        def crash_after_allocation(job: SyncJob, erp_id: str) -> None:
            if job.entity_type is EntityType.PAYMENT_ALLOCATION and not moved:
                moved.append(erp_id)
                raise Crash()

        with pytest.raises(Crash):
            await gateway.run_jobs(crash_after_allocation)
        await gateway.run_jobs()
        allocated = await gateway.job(EntityType.PAYMENT_ALLOCATION, str(allocation_id))
        assert (allocated.state, allocated.erp_id) == (JobState.SUCCEEDED, moved[0])
        marker = f"evolutivo:payment_allocation:{payment.payment_id}:2"
        transfers = await client.search("account.move", [("description", "=", marker)])
        assert [str(m) for m in transfers] == moved
        (transfer,) = await client.read("account.move", transfers, ["state", "journal", "lines"])
        assert (transfer["state"], transfer["journal"]) == ("posted", gateway.tryton.journals["cash"])
        (third_invoice,) = await client.search("account.invoice", [("reference", "=", third.bill_number)])
        transfer_lines = await client.read(
            "account.move.line", transfer["lines"], ["account", "debit", "credit", "description"]
        )
        assert sorted((x["account"], x["debit"], x["credit"], x["description"]) for x in transfer_lines) == sorted(
            [
                (accounts["receivable"], Decimal("4.84"), Decimal(0), f"{marker}:credit"),
                (accounts["receivable"], Decimal(0), Decimal("4.84"), f"{marker}:invoice:{third_invoice}"),
            ]
        )
        assert await invoice_state(client, third) == ("paid", Decimal(0), 1)
        assert await invoice_state(client, older) == ("posted", Decimal("12.10"), 0)

        # Redelivered events and another pass create nothing more.
        await gateway.deliver("billing", first_allocation.again(), second_allocation.again())
        await gateway.deliver("balance", pay_msg.again())
        assert await gateway.run_jobs() == []

        # The payment bounces: its invoices, the later one too, owe again; nothing else changes.
        reversal = payment_reversed(payment, NOW + dt.timedelta(minutes=5))
        await gateway.deliver("balance", reversal)

        def crash_after_reversal(job: SyncJob, erp_id: str) -> None:
            raise Crash()

        with pytest.raises(Crash):
            await handlers.run_next_job(gateway.db.uow(), gateway.adapters, FAST, crash_after_reversal)
        (rerun,) = await gateway.run_jobs()
        assert (rerun.entity_type, rerun.state) == (EntityType.PAYMENT_REVERSAL, JobState.SUCCEEDED)
        await gateway.deliver("balance", reversal.again())
        assert await gateway.run_jobs() == []
        assert await invoice_state(client, paid) == ("posted", Decimal("24.20"), 0)
        assert await invoice_state(client, third) == ("posted", Decimal("4.84"), 0)
        assert await invoice_state(client, older) == ("posted", Decimal("12.10"), 0)
        reversals = await client.search(
            "account.move", [("description", "=", f"evolutivo:payment_reversal:{payment.payment_id}")]
        )
        assert [str(m) for m in reversals] == [rerun.erp_id]
        # Every receivable line the payment and its transfer made is closed again; the party owes its invoices.
        (party,) = await client.search("party.party", [("code", "=", acct_number)])
        receivable = await client.read(
            "account.move.line",
            await client.search(
                "account.move.line",
                [("party", "=", party), ("account", "=", accounts["receivable"]), ("move", "in", [*moves, *transfers])],
            ),
            ["reconciliation"],
        )
        assert len(receivable) == 4 and all(x["reconciliation"] for x in receivable)
        everything = await client.read(
            "account.move.line",
            await client.search("account.move.line", [("party", "=", party), ("account", "=", accounts["receivable"])]),
            ["debit", "credit"],
        )
        assert sum((x["debit"] - x["credit"] for x in everything), Decimal(0)) == Decimal(
            "41.14"
        )  # 12.10 + 24.20 + 4.84
    finally:
        await client.aclose()


async def test_a_later_allocation_of_a_reversed_payment_sends_nothing(gateway: Gateway) -> None:
    account_id, acct_number = str(uuid.uuid4()), f"A-{number()}"
    later = bill(account_id, f"F-{number()}", [("MOBILE", "standard", "5.00")])  # 6.05
    payment, pay_msg = payment_recorded(account_id, "20.00")
    await gateway.deliver("customer", account_created(account_id, acct_number))
    await gateway.deliver("balance", pay_msg)
    await gateway.deliver("billing", payment_allocated(payment, 1, [], "20.00"))
    await gateway.run_jobs()
    assert (await gateway.job(EntityType.PAYMENT, payment.payment_id)).state is JobState.SUCCEEDED
    # Billing applied the credit to a new bill, then the payment bounced; the gateway hears the
    # reversal before the allocation.
    await gateway.deliver("balance", payment_reversed(payment, NOW + dt.timedelta(minutes=5)))
    await gateway.deliver("billing", bill_issued(later), payment_allocated(payment, 2, [(later, "6.05")], "13.95"))
    await gateway.run_jobs()  # the reversal waits for the allocation, which sees it and sends nothing
    gateway.db.clock.advance(dt.timedelta(seconds=5))
    await gateway.run_jobs()
    allocation = await gateway.job(
        EntityType.PAYMENT_ALLOCATION, str(allocation_entity_id(uuid.UUID(payment.payment_id), 2))
    )
    assert (allocation.state, allocation.erp_id) == (JobState.SUCCEEDED, handlers.NOT_SENT_REVERSED)
    assert (await gateway.job(EntityType.PAYMENT_REVERSAL, payment.payment_id)).state is JobState.SUCCEEDED
    client = await tryton_client(gateway.tryton)
    try:
        assert (
            await client.search(
                "account.move", [("description", "like", f"evolutivo:payment_allocation:{payment.payment_id}:%")]
            )
            == []
        )
        assert await invoice_state(client, later) == ("posted", Decimal("6.05"), 0)
    finally:
        await client.aclose()


# --- payments whose prerequisites are missing, dead or out of order ----------------------------------
async def test_a_payment_billing_never_allocated_ends_dead_and_replays_once_it_is(gateway: Gateway) -> None:
    """A payment waits for billing's PaymentAllocated without spending attempts; one that has not
    come after MISSING_PREREQUISITE_WAIT spends them and ends in the dead-letter list, where a
    replay sends it once the allocation is there."""
    account_id = str(uuid.uuid4())
    await gateway.deliver("customer", account_created(account_id, f"A-{number()}"))
    payment, recorded = payment_recorded(account_id, "10.00")
    await gateway.deliver("balance", recorded)
    await gateway.run_jobs()
    waiting = await gateway.job(EntityType.PAYMENT, payment.payment_id)
    assert (waiting.state, waiting.attempts) == (JobState.PENDING, 0)
    assert waiting.last_error == f"waiting for billing's allocation of payment {payment.payment_id}"

    gateway.db.clock.advance(handlers.MISSING_PREREQUISITE_WAIT + dt.timedelta(minutes=1))
    for _ in range(FAST.max_attempts):
        await gateway.run_jobs()
        gateway.db.clock.advance(FAST.cap)
    dead = await gateway.job(EntityType.PAYMENT, payment.payment_id)
    assert (dead.state, dead.attempts) == (JobState.DEAD, FAST.max_attempts)
    assert "waiting for billing's allocation" in dead.last_error and "for over 1:00:00" in dead.last_error

    await gateway.deliver("billing", payment_allocated(payment, 1, [], "10.00"))
    async with gateway.db.uow() as uow:
        await handlers.retry_job(uow, dead.job_id)
    await gateway.run_jobs()
    assert (await gateway.job(EntityType.PAYMENT, payment.payment_id)).state is JobState.SUCCEEDED


async def test_a_payment_on_a_bill_whose_invoice_is_dead_fails_naming_it(gateway: Gateway) -> None:
    account_id = str(uuid.uuid4())
    b = bill(account_id, f"F-{number()}", [("FIBER", "standard", "10.00")])
    await gateway.deliver("customer", account_created(account_id, f"A-{number()}"))
    await gateway.run_jobs()
    await gateway.deliver("billing", bill_issued(b))
    invoice = await gateway.job(EntityType.INVOICE, b.bill_id)
    async with gateway.db.uow() as uow:  # as if the ERP had refused it until its attempts ran out
        await uow.jobs.save(replace(invoice, state=JobState.DEAD, attempts=FAST.max_attempts, last_error="refused"))
        await uow.commit()
    payment, recorded = payment_recorded(account_id, "12.10")
    await gateway.deliver("balance", recorded)
    await gateway.deliver("billing", payment_allocated(payment, 1, [(b, "12.10")], "0"))
    await gateway.run_jobs()
    failed = await gateway.job(EntityType.PAYMENT, payment.payment_id)
    assert (failed.state, failed.attempts) == (JobState.RETRYING, 1)
    assert f"the invoice job of bill {b.bill_id} is dead: replay it ({invoice.job_id})" in failed.last_error


async def test_a_payments_later_allocations_reach_the_erp_in_billings_order(gateway: Gateway) -> None:
    """Allocation 3 waits for allocation 2 (which waits for its bill): each takes the credit the
    ones before it left, as billing did."""
    account_id = str(uuid.uuid4())
    first = bill(account_id, f"F-{number()}", [("FIBER", "standard", "100.00")])
    second = bill(account_id, f"F-{number()}", [("FIBER", "standard", "100.00")])
    await gateway.deliver("customer", account_created(account_id, f"A-{number()}"))
    payment, recorded = payment_recorded(account_id, "100.00")
    await gateway.deliver("balance", recorded)
    await gateway.deliver(
        "billing",
        payment_allocated(payment, 1, [], "100.00"),
        bill_issued(second),  # the first bill's BillIssued is late
        payment_allocated(payment, 2, [(first, "60.00")], "40.00"),
        payment_allocated(payment, 3, [(second, "40.00")], "0"),
    )
    await gateway.run_jobs()
    pid = uuid.UUID(payment.payment_id)
    two = await gateway.job(EntityType.PAYMENT_ALLOCATION, str(allocation_entity_id(pid, 2)))
    three = await gateway.job(EntityType.PAYMENT_ALLOCATION, str(allocation_entity_id(pid, 3)))
    assert two.state is JobState.PENDING and two.last_error.startswith(f"waiting for bill {first.bill_id}")
    assert (three.state, three.last_error) == (JobState.PENDING, f"waiting for allocation 2 of payment {pid}")

    await gateway.deliver("billing", bill_issued(first))
    gateway.db.clock.advance(handlers.PREREQUISITE_WAIT)
    await gateway.run_jobs()
    for entity_id in (allocation_entity_id(pid, 2), allocation_entity_id(pid, 3)):
        assert (await gateway.job(EntityType.PAYMENT_ALLOCATION, str(entity_id))).state is JobState.SUCCEEDED
    client = await tryton_client(gateway.tryton)
    try:
        rows = await client.read(
            "account.invoice",
            await client.search("account.invoice", [("reference", "in", [first.bill_number, second.bill_number])]),
            ["reference", "amount_to_pay"],
        )
    finally:
        await client.aclose()
    assert {r["reference"]: r["amount_to_pay"] for r in rows} == {
        first.bill_number: Decimal("61.00"),
        second.bill_number: Decimal("81.00"),
    }


def credit_note_allocated(
    note: credit_note_pb2.CreditNote, sequence: int, parts: list[tuple[bill_pb2.Bill, str]], unallocated: str
) -> FakeMsg:
    """Billing's CreditNoteAllocated: allocation number `sequence` of the note's credit, (bill, amount) each."""
    event = billing_events.CreditNoteAllocated(
        credit_note_id=note.credit_note_id,
        account_id=note.account_id,
        sequence=sequence,
        allocations=[billing_events.BillAllocation(bill_id=b.bill_id, amount=money(amount)) for b, amount in parts],
        credit_note_amount=note.total,
        unallocated_amount=money(unallocated),
    )
    return message("evolutivo.billing.v1.credit_note.allocated", event, NOW)


async def test_a_credit_notes_credit_goes_to_its_bill_and_then_to_later_invoices_as_billing_gave_it(
    gateway: Gateway,
) -> None:
    """Allocation 1 (at issue) moves what the note's bill still owed onto its invoice, allocation 2
    (a later bill took the rest) moves the rest onto that bill's invoice, in billing's order, once
    each whatever the crashes and redeliveries; the note is then used up and reconciled in Tryton."""
    account_id, acct_number = str(uuid.uuid4()), f"A-{number()}"
    first = bill(account_id, f"F-{number()}", [("MOBILE", "standard", "10.00")])  # 12.10
    later = bill(account_id, f"F-{number()}", [("MOBILE", "standard", "5.00")])  # 6.05
    payment, pay_msg = payment_recorded(account_id, "5.00")
    note, note_msg = credit_note_issued(first, f"CN-{number()}", "10.00", "2.10")  # all of the first bill: 12.10
    at_issue = credit_note_allocated(note, 1, [(first, "7.10")], "5.00")  # the bill owed 7.10 after the payment
    taken_later = credit_note_allocated(note, 2, [(later, "5.00")], "0")
    await gateway.deliver("customer", account_created(account_id, acct_number))
    await gateway.deliver("billing", bill_issued(first), payment_allocated(payment, 1, [(first, "5.00")], "0"))
    await gateway.deliver("balance", pay_msg)
    # The allocations reach the gateway before the note (another replica) and before the later bill.
    await gateway.deliver("billing", at_issue, taken_later)
    await gateway.run_jobs()
    nid = uuid.UUID(note.credit_note_id)
    one, two = (allocation_entity_id(nid, s, EntityType.CREDIT_NOTE_ALLOCATION) for s in (1, 2))
    async with gateway.db.uow() as uow:
        assert await uow.jobs.of_entity(EntityType.CREDIT_NOTE_ALLOCATION, one) == []  # no note: nowhere to go
    await gateway.deliver("billing", note_msg)
    await gateway.run_jobs()
    waiting = await gateway.job(EntityType.CREDIT_NOTE_ALLOCATION, str(two))
    assert (waiting.state, waiting.attempts) == (JobState.PENDING, 0)
    assert (
        waiting.last_error == f"waiting for bill {later.bill_id} (billing allocated to it; its BillIssued has not come)"
    )
    assert (await gateway.job(EntityType.CREDIT_NOTE_ALLOCATION, str(one))).state is JobState.SUCCEEDED
    await gateway.deliver("billing", bill_issued(later))
    await gateway.run_jobs()  # the invoice; the allocation looks again in a moment
    gateway.db.clock.advance(handlers.PREREQUISITE_WAIT)
    moved: list[str] = []

    def crash_after_allocation(job: SyncJob, erp_id: str) -> None:
        if job.entity_type is EntityType.CREDIT_NOTE_ALLOCATION and not moved:
            moved.append(erp_id)
            raise Crash()  # Tryton has the transfer; the gateway dies before recording it

    with pytest.raises(Crash):
        await gateway.run_jobs(crash_after_allocation)
    await gateway.run_jobs()
    done = await gateway.job(EntityType.CREDIT_NOTE_ALLOCATION, str(two))
    assert (done.state, done.erp_id) == (JobState.SUCCEEDED, moved[0])
    # Redelivered events and another pass create nothing more.
    await gateway.deliver("billing", note_msg.again(), at_issue.again(), taken_later.again())
    assert await gateway.run_jobs() == []

    client = await tryton_client(gateway.tryton)
    try:
        accounts = gateway.tryton.accounts
        (later_invoice,) = await client.search("account.invoice", [("reference", "=", later.bill_number)])
        marker = f"evolutivo:credit_note_allocation:{note.credit_note_id}:2"
        transfers = await client.search("account.move", [("description", "=", marker)])
        assert [str(m) for m in transfers] == moved
        (transfer,) = await client.read("account.move", transfers, ["state", "journal", "lines"])
        assert (transfer["state"], transfer["journal"]) == ("posted", gateway.tryton.journals["cash"])
        transfer_lines = await client.read(
            "account.move.line", transfer["lines"], ["account", "debit", "credit", "description"]
        )
        assert sorted((x["account"], x["debit"], x["credit"], x["description"]) for x in transfer_lines) == sorted(
            [
                (accounts["receivable"], Decimal("5.00"), Decimal(0), f"{marker}:credit"),
                (accounts["receivable"], Decimal(0), Decimal("5.00"), f"{marker}:invoice:{later_invoice}"),
            ]
        )
        # The note's bill is paid (5.00 by the payment, 7.10 by the note), the later one owes 1.05.
        assert await invoice_state(client, first) == ("paid", Decimal(0), 2)
        assert await invoice_state(client, later) == ("posted", Decimal("1.05"), 1)
        # The note's credit is used up: its receivable line is reconciled with the transfers' debits.
        (cn,) = await client.search("account.invoice", [("reference", "=", note.credit_note_number)])
        (row,) = await client.read("account.invoice", [cn], ["state", "amount_to_pay"])
        assert (row["state"], row["amount_to_pay"]) == ("paid", Decimal(0))
        # The party owes what billing says it does: 12.10 + 6.05 - 5.00 paid - 12.10 credited.
        (party,) = await client.search("party.party", [("code", "=", acct_number)])
        everything = await client.read(
            "account.move.line",
            await client.search("account.move.line", [("party", "=", party), ("account", "=", accounts["receivable"])]),
            ["debit", "credit"],
        )
        assert sum((x["debit"] - x["credit"] for x in everything), Decimal(0)) == Decimal("1.05")
    finally:
        await client.aclose()
