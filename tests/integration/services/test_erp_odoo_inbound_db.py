"""Payments booked in Odoo imported into balance, with the gateway's real PostgreSQL: Odoo itself
cannot run here (it is not on PyPI), so a local HTTP server answers its JSON-RPC with recorded
Odoo 17 answers (support/odoo.py) and checks what the gateway asks. Balance is a stand-in that is
idempotent on the reference, as balance is (the e2e suite drives the real one against Tryton).
The same recorded Odoo also takes billing's credit notes and the allocations of their credit, run
as sync jobs by the function the background loop calls."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from evolutivo.balance.v1 import events_pb2 as balance_events
from evolutivo.balance.v1 import payment_pb2
from evolutivo.billing.v1 import bill_pb2, credit_note_pb2
from evolutivo.billing.v1 import events_pb2 as billing_events
from evolutivo_erp_gateway.adapters import events
from evolutivo_erp_gateway.adapters.crypto import SecretCipher, generate_key
from evolutivo_erp_gateway.adapters.factory import Adapters
from evolutivo_erp_gateway.adapters.orm import connections, inbound_payments, inbox, outbox
from evolutivo_erp_gateway.domain.connections import Connection, ConnectionType, Mapping
from evolutivo_erp_gateway.domain.jobs import JobState, RetryPolicy
from evolutivo_erp_gateway.domain.model import EntityType, allocation_entity_id
from evolutivo_erp_gateway.entrypoints.app import MIGRATIONS
from evolutivo_erp_gateway.entrypoints.consumers import subscriptions
from evolutivo_erp_gateway.service_layer import handlers
from evolutivo_erp_gateway.service_layer.unit_of_work import ErpGatewayUnitOfWork
from evolutivo_runtime.errors import ServiceError, Unavailable
from evolutivo_runtime.messaging.streams import stream_name
from evolutivo_runtime.money import to_money
from evolutivo_runtime.timestamps import to_timestamp
from sqlalchemy import select, update
from support.databases import MigratedDatabase, ServiceDb
from support.jetstream import consumer_for, message, process
from support.odoo import DATABASE, KEY, LOGIN, FakeOdoo, served

NOW = dt.datetime(2031, 5, 17, 10, 30, tzinfo=dt.UTC)
ACCOUNT = uuid.UUID("0b7e3a52-5d7c-4c1e-9a55-2b0f1f0b6a01")
PARTNER = 42  # the customer's partner in Odoo (mapping.customers)
STRANGER = 77  # a partner that is no suite customer


class ErpDb(ServiceDb):
    def uow(self) -> ErpGatewayUnitOfWork:
        return ErpGatewayUnitOfWork(self.sessions, outbox, self.clock, events.encode)


@dataclass
class Balance:
    """balance's RecordPayment, idempotent on the reference; fails `failures` calls first."""

    failures: int = 0
    calls: list[str] = field(default_factory=list)
    payments: dict[str, tuple[uuid.UUID, Decimal, str]] = field(default_factory=dict)

    async def record_payment(self, account_id: uuid.UUID, amount: Decimal, currency_code: str, reference: str) -> str:
        self.calls.append(reference)
        if self.failures:
            self.failures -= 1
            raise Unavailable("BALANCE_UNAVAILABLE", "balance did not answer")
        self.payments.setdefault(reference, (account_id, amount, currency_code))
        return f"payment-of-{reference}"


@dataclass
class Setup:
    db: ErpDb
    adapters: Adapters
    connection: Connection
    odoo: FakeOdoo

    async def poll(self, balance: Balance) -> int:
        return await handlers.import_payments(self.db.uow, self.adapters, balance)

    async def cursor(self) -> tuple[str, int] | None:
        async with self.db.uow() as uow:
            return await uow.connections.cursor(self.connection.connection_id)

    async def imported(self) -> dict[str, tuple[str, str, str, str]]:
        """erp_id -> (reference, status, amount, reason) of the gateway's record of imported payments."""
        async with self.db.uow() as uow:
            rows = await uow.session.execute(select(inbound_payments))
        return {r.erp_id: (r.reference, r.status, f"{Decimal(r.amount):.2f}", r.reason) for r in rows}


@pytest.fixture
async def setup(migrated_database: MigratedDatabase) -> AsyncIterator[Setup]:
    odoo = FakeOdoo({})
    with served(odoo) as url:
        async with ErpDb.open(await migrated_database("erp_gateway", MIGRATIONS), NOW) as db:
            adapters = Adapters(SecretCipher([generate_key()]), 10.0, db.clock.now)
            connection = Connection(
                connection_id=uuid.uuid4(),
                display_name="Odoo",
                type=ConnectionType.ODOO,
                endpoint_url=url,
                database=DATABASE,
                username=LOGIN,
                mapping=Mapping(
                    customers={str(ACCOUNT): str(PARTNER)},
                    journals={"revenue": "1", "cash": "7"},
                    accounts={"receivable": "6", "revenue": "21", "cash": "5"},
                ),
                enabled=True,
                import_payments=True,
                has_credentials=False,
                create_time=NOW,
                update_time=NOW,
            )
            connection = await handlers.create_connection(db.uow(), adapters, connection, KEY, uuid.uuid4())
            yield Setup(db, adapters, connection, odoo)


# Recorded Odoo 17 rows: the payments' journal entries (account.move search_read) and the payments.
def entry(move: int, payment: int, stamp: str, partner: int = PARTNER) -> dict[str, Any]:
    return {
        "id": move,
        "write_date": stamp,
        "payment_id": [payment, f"PBNK1/2031/{payment:05d}"],
        "commercial_partner_id": [partner, "Acme Distribuciones SL" if partner == PARTNER else "Someone else"],
    }


def payment(payment_id: int, amount: float, ref: str | bool = False, partner: int = PARTNER) -> dict[str, Any]:
    return {
        "id": payment_id,
        "ref": ref,
        "partner_id": [partner, "Acme Distribuciones SL"],
        "amount": amount,
        "currency_id": [1, "EUR"],
    }


EUR = [{"id": 1, "name": "EUR", "decimal_places": 2}]
OWN = "evolutivo:payment:5f0c1c4e-0000-4000-8000-000000000001"
# What Odoo holds: a customer's bank transfer, the gateway's own payment, a stranger's payment.
ENTRIES = [
    entry(90, 55, "2031-05-17 09:00:00"),
    entry(91, 56, "2031-05-17 09:00:00"),
    entry(92, 57, "2031-05-17 09:05:10", STRANGER),
]
PAYMENTS = [payment(55, 25.1, "BANK/0042"), payment(56, 10.0, OWN), payment(57, 9.99, partner=STRANGER)]


async def test_payments_booked_in_odoo_are_recorded_in_balance_once_whatever_is_read_again(setup: Setup) -> None:
    balance = Balance()
    setup.odoo.script(
        {
            ("account.move", "search_read"): [ENTRIES],
            ("account.payment", "read"): [PAYMENTS],
            ("res.currency", "read"): [EUR],
        }
    )
    assert await setup.poll(balance) == 1
    assert balance.payments == {"odoo:55": (ACCOUNT, Decimal("25.10"), "EUR")}
    assert await setup.imported() == {
        "55": ("odoo:55", "recorded", "25.10", ""),
        "57": ("odoo:57", "ignored", "9.99", "party 77 is no suite customer"),
    }
    assert await setup.cursor() == ("2031-05-17 09:05:10", 92)

    # The next poll: the look-back behind the cursor replays the whole page, nothing is after it.
    setup.odoo.script(
        {
            ("account.move", "search_read"): [ENTRIES, []],
            ("account.payment", "read"): [PAYMENTS],
            ("res.currency", "read"): [EUR],
        }
    )
    assert await setup.poll(balance) == 0
    assert balance.calls == ["odoo:55"]
    (back, _), (after, _) = setup.odoo.calls_of("account.move", "search_read")[1:]
    assert back[0][-2:] == [["write_date", ">=", "2031-05-17 09:03:10"], ["write_date", "<=", "2031-05-17 09:05:10"]]
    assert after[0][-3:] == ["&", ["write_date", "=", "2031-05-17 09:05:10"], ["id", ">", 92]]
    assert await setup.cursor() == ("2031-05-17 09:05:10", 92)

    # Even with its cursor forgotten, the gateway records nothing twice.
    async with setup.db.uow() as uow:
        await uow.session.execute(update(connections).values(import_cursor_time=None, import_cursor_id=None))
        await uow.commit()
    setup.odoo.script(
        {
            ("account.move", "search_read"): [ENTRIES],
            ("account.payment", "read"): [PAYMENTS],
            ("res.currency", "read"): [EUR],
        }
    )
    assert await setup.poll(balance) == 0
    assert balance.calls == ["odoo:55"]
    assert setup.odoo.left() == []

    # Balance announces the imported payment: it is not sent back to Odoo.
    recorded = payment_pb2.Payment(
        payment_id=str(uuid.uuid4()),
        account_id=str(ACCOUNT),
        amount=to_money(Decimal("25.10"), "EUR"),
        method=payment_pb2.PAYMENT_METHOD_TYPE_BANK_TRANSFER,
        reference="odoo:55",
        received_time=to_timestamp(NOW),
        state=payment_pb2.PAYMENT_STATE_RECORDED,
    )
    msg = message("evolutivo.balance.v1.payment.recorded", balance_events.PaymentRecorded(payment=recorded), NOW)
    await process(consumer_for(subscriptions(), stream_name("balance"), setup.db.uow, inbox), msg)
    assert msg.acked
    async with setup.db.uow() as uow:
        job = await uow.jobs.find(setup.connection.connection_id, EntityType.PAYMENT, uuid.UUID(recorded.payment_id))
        assert job is None
        assert (await uow.sync_states.get(EntityType.PAYMENT, uuid.UUID(recorded.payment_id))) is not None


async def test_a_payment_balance_could_not_take_is_recorded_by_the_next_poll_once(setup: Setup) -> None:
    balance = Balance(failures=1)
    one = {("account.move", "search_read"): [ENTRIES[:1]], ("account.payment", "read"): [PAYMENTS[:1]]}
    setup.odoo.script({**one, ("res.currency", "read"): [EUR]})
    with pytest.raises(ServiceError):
        await setup.poll(balance)
    # Committed as pending before balance was called; the cursor did not move past it.
    assert await setup.imported() == {"55": ("odoo:55", "pending", "25.10", "")}
    assert await setup.cursor() is None
    setup.odoo.script({**one, ("res.currency", "read"): [EUR]})
    assert await setup.poll(balance) == 1
    assert balance.calls == ["odoo:55", "odoo:55"]
    assert balance.payments == {"odoo:55": (ACCOUNT, Decimal("25.10"), "EUR")}
    assert (await setup.imported())["55"][1] == "recorded"
    assert await setup.cursor() == ("2031-05-17 09:00:00", 90)


def eur(text: str) -> Any:
    return to_money(Decimal(text), "EUR")


async def test_a_credit_notes_allocations_assign_its_credit_to_billings_invoices_in_sequence(setup: Setup) -> None:
    """Billing's allocation 1 (at issue, to the note's own bill) and 2 (a later bill) each assign
    the out_refund's receivable line to that bill's invoice (Odoo's js_assign_outstanding_line), in
    sequence; redelivered events send nothing more."""
    bills = [
        bill_pb2.Bill(
            bill_id=str(uuid.uuid4()),
            account_id=str(ACCOUNT),
            bill_number=f"F-2031-00000{i}",
            lines=[bill_pb2.BillLine(line_number=1, charge_offer_code="MOBILE", amount=eur(base))],
            subtotal=eur(base),
            tax_total=eur(tax),
            total=eur(total),
        )
        for i, base, tax, total in ((8, "10.00", "2.10", "12.10"), (9, "5.00", "1.05", "6.05"))
    ]
    note = credit_note_pb2.CreditNote(
        credit_note_id=str(uuid.uuid4()),
        bill_id=bills[0].bill_id,
        account_id=str(ACCOUNT),
        credit_note_number="CN-2031-000001",
        currency_code="EUR",
        lines=[credit_note_pb2.CreditNoteLine(line_number=1, charge_offer_code="MOBILE", amount=eur("10.00"))],
        subtotal=eur("10.00"),
        tax_total=eur("2.10"),
        total=eur("12.10"),
        issue_time=to_timestamp(NOW),
    )

    def allocated(sequence: int, given: bill_pb2.Bill, amount: str, left: str) -> Any:
        event = billing_events.CreditNoteAllocated(
            credit_note_id=note.credit_note_id,
            account_id=str(ACCOUNT),
            sequence=sequence,
            allocations=[billing_events.BillAllocation(bill_id=given.bill_id, amount=eur(amount))],
            credit_note_amount=note.total,
            unallocated_amount=eur(left),
        )
        return message("evolutivo.billing.v1.credit_note.allocated", event, NOW)

    events_in = [
        *(message("evolutivo.billing.v1.bill.issued", billing_events.BillIssued(bill=b), NOW) for b in bills),
        message("evolutivo.billing.v1.credit_note.issued", billing_events.CreditNoteIssued(credit_note=note), NOW),
        allocated(1, bills[0], "7.10", "5.00"),  # the bill owed 7.10 (a payment had paid 5.00)
        allocated(2, bills[1], "5.00", "0"),
    ]
    # Recorded answers: the invoices (8, 9) and the out_refund (70) are in Odoo, posted; the
    # refund's receivable line (701) is open by 12.10, then 5.00 once 7.10 of it reconciles with 8.
    setup.odoo.script(
        {
            ("account.move", "search"): [[8], [9], [70]],
            ("account.move", "read"): [
                [{"id": 8, "state": "posted", "amount_total": 12.1}],
                [{"id": 9, "state": "posted", "amount_total": 6.05}],
                [{"id": 70, "state": "posted", "amount_total": 12.1}],
                [{"id": 70, "state": "posted"}],
                [{"id": 8, "amount_residual": 7.1, "state": "posted"}],
                [{"id": 70, "state": "posted"}],
                [{"id": 9, "amount_residual": 6.05, "state": "posted"}],
            ],
            ("account.move.line", "search"): [[701], [701]],
            ("account.move.line", "read"): [
                [{"id": 701, "amount_residual": -12.1, "matched_debit_ids": []}],
                [{"id": 701, "amount_residual": -5.0}],
                [{"id": 701, "amount_residual": -5.0, "matched_debit_ids": [3002]}],
                [{"id": 802, "move_id": [8, "INV/2031/00008"]}],
                [{"id": 701, "amount_residual": 0.0}],
            ],
            ("account.partial.reconcile", "read"): [[{"id": 3002, "debit_move_id": [802, "INV/2031/00008"]}]],
            ("account.move", "js_assign_outstanding_line"): [True, True],
        }
    )
    consumer = consumer_for(subscriptions(), stream_name("billing"), setup.db.uow, inbox)
    await process(consumer, *events_in)
    policy = RetryPolicy(max_attempts=1)
    ran = []
    while (job := await handlers.run_next_job(setup.db.uow(), setup.adapters, policy)) is not None:
        ran.append((job.entity_type, job.state, job.erp_id))
    nid = uuid.UUID(note.credit_note_id)
    assert ran == [
        (EntityType.INVOICE, JobState.SUCCEEDED, "8"),
        (EntityType.INVOICE, JobState.SUCCEEDED, "9"),
        (EntityType.CREDIT_NOTE, JobState.SUCCEEDED, "70"),
        (EntityType.CREDIT_NOTE_ALLOCATION, JobState.SUCCEEDED, "70"),
        (EntityType.CREDIT_NOTE_ALLOCATION, JobState.SUCCEEDED, "70"),
    ]
    async with setup.db.uow() as uow:
        jobs = [
            await uow.jobs.find(
                setup.connection.connection_id,
                EntityType.CREDIT_NOTE_ALLOCATION,
                allocation_entity_id(nid, sequence, EntityType.CREDIT_NOTE_ALLOCATION),
            )
            for sequence in (1, 2)
        ]
    assert [j.state if j else None for j in jobs] == [JobState.SUCCEEDED, JobState.SUCCEEDED]
    assigned = [args for args, _ in setup.odoo.calls_of("account.move", "js_assign_outstanding_line")]
    assert assigned == [[[8], 701], [[9], 701]]  # billing's invoices, in billing's order
    assert setup.odoo.left() == []

    calls = len(setup.odoo.calls)
    await process(consumer, *(m.again() for m in events_in))
    assert await handlers.run_next_job(setup.db.uow(), setup.adapters, policy) is None
    assert len(setup.odoo.calls) == calls
