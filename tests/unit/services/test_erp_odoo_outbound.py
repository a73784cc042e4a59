"""The Odoo adapter's outbound against recorded shapes of Odoo 17's external API (POST /jsonrpc,
service "object", method "execute_kw"): no Odoo server can run here, so these tests replay the
answers Odoo gives (ids, read rows with many2one as [id, name], false for an empty value) and
check what the adapter asks, in order, including that a retry finds what the first attempt made."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from evolutivo.balance.v1 import ledger_pb2, payment_pb2
from evolutivo.billing.v1 import bill_pb2, credit_note_pb2
from evolutivo.customer.v1 import account_pb2, contact_pb2
from evolutivo_erp_gateway.adapters.erp import AuthFailed, InvoiceAllocation, Rejected
from evolutivo_erp_gateway.adapters.odoo import OdooAdapter
from evolutivo_erp_gateway.domain.connections import Connection, ConnectionType, Mapping
from evolutivo_runtime.money import to_money
from evolutivo_runtime.timestamps import to_timestamp
from google.type import date_pb2, postal_address_pb2

NOW = dt.datetime(2031, 5, 17, 10, 30, tzinfo=dt.UTC)
UID = 2
KEY = "api-key"
MAPPING = Mapping(
    taxes={"standard": "11"},
    journals={"revenue": "1", "cash": "7", "general": "3"},
    accounts={"receivable": "6", "revenue": "21", "cash": "5", "write_off": "33"},
)
ACCESS_DENIED = {
    "code": 200,
    "message": "Odoo Server Error",
    "data": {"name": "odoo.exceptions.AccessDenied", "message": "Access Denied"},
}


class FakeOdoo:
    """Answers execute_kw calls from a script of recorded results per (model, method), in order,
    and keeps every call it was asked; an unscripted call fails the test."""

    def __init__(self, answers: dict[tuple[str, str], list[Any]]) -> None:
        self.answers = {key: list(values) for key, values in answers.items()}
        self.calls: list[tuple[str, str, list[Any], dict[str, Any]]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert request.url == "https://odoo.example/jsonrpc"
        body = json.loads(request.content)
        params = body["params"]
        if (params["service"], params["method"]) == ("common", "authenticate"):
            assert params["args"] == ["prod", "gateway@example.com", KEY, {}]
            return self.answer(body, {"result": UID})
        assert (params["service"], params["method"]) == ("object", "execute_kw")
        database, uid, key, model, method, args, kwargs = params["args"]
        assert (database, uid, key) == ("prod", UID, KEY)
        self.calls.append((model, method, args, kwargs))
        result = self.answers[(model, method)].pop(0)
        if isinstance(result, dict) and "code" in result and "data" in result:
            return self.answer(body, {"error": result})
        return self.answer(body, {"result": result})

    @staticmethod
    def answer(body: dict[str, Any], content: dict[str, Any]) -> httpx.Response:
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], **content})

    def methods(self) -> list[tuple[str, str]]:
        return [(model, method) for model, method, _, _ in self.calls]

    def call(self, model: str, method: str) -> tuple[list[Any], dict[str, Any]]:
        ((args, kwargs),) = [(a, k) for m, meth, a, k in self.calls if (m, meth) == (model, method)]
        return args, kwargs

    def left(self) -> list[tuple[str, str]]:
        return [key for key, values in self.answers.items() if values]


def adapter(odoo: FakeOdoo) -> OdooAdapter:
    connection = Connection(
        connection_id=uuid.uuid4(),
        display_name="Odoo",
        type=ConnectionType.ODOO,
        endpoint_url="https://odoo.example",
        database="prod",
        username="gateway@example.com",
        mapping=MAPPING,
        enabled=True,
        import_payments=False,
        has_credentials=True,
        create_time=NOW,
        update_time=NOW,
    )
    return OdooAdapter(connection, KEY, 5.0, httpx.MockTransport(odoo.handle))


def money(text: str) -> Any:
    return to_money(Decimal(text), "EUR")


def today() -> date_pb2.Date:
    return date_pb2.Date(year=2031, month=5, day=17)


def a_bill() -> bill_pb2.Bill:
    return bill_pb2.Bill(
        bill_id=str(uuid.uuid4()),
        account_id=str(uuid.uuid4()),
        bill_number="F-2031-0001",
        currency_code="EUR",
        issue_date=today(),
        due_date=date_pb2.Date(year=2031, month=6, day=16),
        lines=[
            bill_pb2.BillLine(
                line_number=1, charge_offer_code="MOBILE", charge_code="monthly", tax_code="standard", quantity="1",
                amount=money("15.00"),
            ),
            bill_pb2.BillLine(
                line_number=2, charge_offer_code="collections", charge_code="late_fee", tax_code="exempt",
                quantity="1", amount=money("5.00"),
            ),
        ],
        taxes=[
            bill_pb2.BillTax(tax_code="standard", rate="0.21", taxable_amount=money("15.00"), tax_amount=money("3.15")),
            bill_pb2.BillTax(tax_code="exempt", rate="0", taxable_amount=money("5.00"), tax_amount=money("0")),
        ],
        tax_total=money("3.15"),
        total=money("23.15"),
    )  # fmt: skip


async def run(odoo: FakeOdoo, calls: Iterable[Any]) -> list[Any]:
    results = []
    odoo_adapter = adapter(odoo)
    try:
        for call in calls:
            results.append(await call(odoo_adapter))
    finally:
        await odoo_adapter.aclose()
    return results


async def test_a_customer_becomes_a_partner_with_its_contacts_then_is_found_again_by_its_ref() -> None:
    account = account_pb2.Account(
        account_id=str(uuid.uuid4()),
        account_number="A-00001042",
        display_name="Acme Distribuciones SL",
        type=account_pb2.ACCOUNT_TYPE_BUSINESS,
        tax_id="ESB12345678",
    )
    contacts = [
        contact_pb2.Contact(contact_id="c", role=contact_pb2.CONTACT_ROLE_TECHNICAL, email="it@acme.example"),
        contact_pb2.Contact(contact_id="b", role=contact_pb2.CONTACT_ROLE_BILLING, email="ap@acme.example"),
        contact_pb2.Contact(contact_id="a", role=contact_pb2.CONTACT_ROLE_PRIMARY, phone="+34911111111"),
        contact_pb2.Contact(
            contact_id="d",
            role=contact_pb2.CONTACT_ROLE_BILLING,
            postal_address=postal_address_pb2.PostalAddress(
                region_code="ES", postal_code="28013", locality="Madrid", address_lines=["Calle Mayor 1", "2º B"]
            ),
        ),
    ]
    odoo = FakeOdoo(
        {
            ("res.country", "search"): [[68], [68]],
            ("res.partner", "search"): [[], [42]],
            ("res.partner", "create"): [42],
            ("res.partner", "write"): [True],
        }
    )
    first, again = await run(
        odoo,
        [lambda a: a.upsert_customer(account, "", contacts), lambda a: a.upsert_customer(account, "", contacts)],
    )
    assert (first, again) == ("42", "42")
    (values,), _ = odoo.call("res.partner", "create")
    assert values == {
        "name": "Acme Distribuciones SL",
        "ref": "A-00001042",
        "is_company": True,
        "vat": "ESB12345678",
        "customer_rank": 1,
        "email": "ap@acme.example",  # the billing contact's, before the technical one's
        "phone": "+34911111111",
        "street": "Calle Mayor 1",
        "street2": "2º B",
        "zip": "28013",
        "city": "Madrid",
        "country_id": 68,
    }
    ([partner_ids, written], _) = odoo.call("res.partner", "write")
    assert (partner_ids, written) == ([42], values)
    assert odoo.calls[1][2] == [[["ref", "=", "A-00001042"]]]
    assert odoo.left() == []


async def test_an_invoice_is_created_with_its_taxes_posted_once_its_total_is_the_bills_and_never_twice() -> None:
    bill = a_bill()
    odoo = FakeOdoo(
        {
            ("account.move", "search"): [[], [7]],
            ("res.currency", "search"): [[1]],
            ("account.move", "create"): [7],
            ("account.move", "read"): [
                [{"id": 7, "state": "draft", "amount_total": 23.15}],
                [{"id": 7, "state": "posted", "amount_total": 23.15}],
            ],
            ("account.move", "action_post"): [False],
        }
    )
    first, retry = await run(odoo, [lambda a: a.post_invoice(bill, "42"), lambda a: a.post_invoice(bill, "42")])
    assert (first, retry) == ("7", "7")
    assert odoo.methods() == [
        ("account.move", "search"),
        ("res.currency", "search"),
        ("account.move", "create"),
        ("account.move", "read"),
        ("account.move", "action_post"),
        # The retry finds the posted invoice: nothing is created or posted again.
        ("account.move", "search"),
        ("account.move", "read"),
    ]
    assert odoo.calls[0][2] == [
        [["move_type", "=", "out_invoice"], ["ref", "=", "F-2031-0001"], ["partner_id", "=", 42]]
    ]
    (values,), _ = odoo.call("account.move", "create")
    assert {k: values[k] for k in ("move_type", "partner_id", "ref", "invoice_date", "journal_id", "currency_id")} == {
        "move_type": "out_invoice",
        "partner_id": 42,
        "ref": "F-2031-0001",
        "invoice_date": "2031-05-17",
        "journal_id": 1,
        "currency_id": 1,
    }
    lines = [line[2] for line in values["invoice_line_ids"]]
    assert [(x["price_unit"], x["quantity"], x["account_id"], x["tax_ids"]) for x in lines] == [
        (15.0, 1, 21, [[6, 0, [11]]]),
        (5.0, 1, 21, [[6, 0, []]]),  # exempt: no tax charged, none mapped
    ]
    args, _ = odoo.call("account.move", "action_post")
    assert args == [[7]]


async def test_an_invoice_odoo_totals_differently_stays_in_draft() -> None:
    odoo = FakeOdoo(
        {
            ("account.move", "search"): [[7]],
            ("account.move", "read"): [[{"id": 7, "state": "draft", "amount_total": 23.14}]],
        }
    )
    with pytest.raises(Rejected, match=re.escape("Odoo computes 23.14 for bill F-2031-0001, the suite 23.15")):
        await run(odoo, [lambda a: a.post_invoice(a_bill(), "42")])
    assert ("account.move", "action_post") not in odoo.methods()


async def test_a_credit_note_is_an_out_refund_linked_to_its_invoice() -> None:
    bill = a_bill()
    note = credit_note_pb2.CreditNote(
        credit_note_id=str(uuid.uuid4()),
        bill_id=bill.bill_id,
        credit_note_number="CN-2031-0001",
        currency_code="EUR",
        lines=[
            credit_note_pb2.CreditNoteLine(
                line_number=1, bill_line_number=1, charge_offer_code="MOBILE", charge_code="monthly",
                tax_code="standard", amount=money("2.00"),
            )
        ],
        tax_total=money("0.42"),
        total=money("2.42"),
        issue_date=today(),
    )  # fmt: skip
    odoo = FakeOdoo(
        {
            ("account.move", "search"): [[], [7]],
            ("res.currency", "search"): [[1]],
            ("account.move", "create"): [9],
            ("account.move", "read"): [[{"id": 9, "state": "draft", "amount_total": 2.42}]],
            ("account.move", "action_post"): [False],
        }
    )
    (made,) = await run(odoo, [lambda a: a.post_credit_note(note, "42", bill)])
    assert made == "9"
    (values,), _ = odoo.call("account.move", "create")
    assert (values["move_type"], values["ref"], values["reversed_entry_id"]) == ("out_refund", "CN-2031-0001", 7)
    assert [(x[2]["price_unit"], x[2]["tax_ids"]) for x in values["invoice_line_ids"]] == [(2.0, [[6, 0, [11]]])]


def a_payment() -> payment_pb2.Payment:
    return payment_pb2.Payment(
        payment_id="5f0c1c4e-0000-4000-8000-000000000001",
        account_id=str(uuid.uuid4()),
        amount=money("10.00"),
        reference="bank-1",
        received_time=to_timestamp(NOW),
    )


async def test_a_payment_is_posted_and_assigned_as_billing_allocated_it_once() -> None:
    payment = a_payment()
    payment.amount.CopyFrom(money("30.00"))
    marker = f"evolutivo:payment:{payment.payment_id}"
    # Billing gave 23.15 to the bill of invoice 8 (not the oldest open one, 7); 6.85 stays credit.
    allocations = [InvoiceAllocation("8", "bill-8", Decimal("23.15"))]
    odoo = FakeOdoo(
        {
            ("account.payment", "search"): [[], [55]],
            ("res.currency", "search"): [[1]],
            ("account.payment", "create"): [55],
            ("account.payment", "read"): [
                [{"id": 55, "state": "draft", "move_id": [90, "PBNK1/2031/00001"]}],
                [{"id": 55, "state": "posted", "move_id": [90, "PBNK1/2031/00001"]}],
            ],
            ("account.payment", "action_post"): [False],
            # The payment entry's receivable line (then, on the retry, once more).
            ("account.move.line", "search"): [[901], [901]],
            ("account.move.line", "read"): [
                [{"id": 901, "amount_residual": -30.0, "matched_debit_ids": []}],
                [{"id": 901, "amount_residual": -6.85}],
                # The retry: reconciled with invoice 8's receivable line (801) already.
                [{"id": 901, "amount_residual": -6.85, "matched_debit_ids": [3001]}],
                [{"id": 801, "move_id": [8, "INV/2031/00008"]}],
            ],
            ("account.move", "read"): [[{"id": 8, "amount_residual": 23.15, "state": "posted"}]],
            ("account.move", "js_assign_outstanding_line"): [True],
            ("account.partial.reconcile", "read"): [[{"id": 3001, "debit_move_id": [801, "INV/2031/00008"]}]],
        }
    )
    first, retry = await run(
        odoo,
        [
            lambda a: a.record_payment(payment, "42", allocations),
            lambda a: a.record_payment(payment, "42", allocations),
        ],
    )
    assert (first, retry) == ("55", "55")
    (values,), _ = odoo.call("account.payment", "create")
    assert values == {
        "payment_type": "inbound",
        "partner_type": "customer",
        "partner_id": 42,
        "amount": 30.0,
        "currency_id": 1,
        "date": "2031-05-17",
        "journal_id": 7,
        "ref": marker,
    }
    assert odoo.calls[0][2] == [[["ref", "=", marker]]]
    search = [c for c in odoo.calls if c[:2] == ("account.move.line", "search")]
    assert search[0][2] == [[["move_id", "=", 90], ["account_type", "=", "asset_receivable"]]]
    args, _ = odoo.call("account.move", "js_assign_outstanding_line")
    assert args == [[8], 901]  # billing's invoice, once: the retry finds the reconciliation
    args, kwargs = odoo.call("account.move", "read")
    assert (args, kwargs) == ([[8]], {"fields": ["amount_residual", "state"]})
    assert odoo.left() == []


async def test_a_later_allocation_assigns_the_payments_credit_to_the_new_invoice() -> None:
    odoo = FakeOdoo(
        {
            ("account.payment", "read"): [[{"id": 55, "state": "posted", "move_id": [90, "PBNK1/2031/00001"]}]],
            ("account.move.line", "search"): [[901]],
            ("account.move.line", "read"): [
                [{"id": 901, "amount_residual": -6.85, "matched_debit_ids": [3001]}],
                [{"id": 801, "move_id": [8, "INV/2031/00008"]}],
                [{"id": 901, "amount_residual": -1.85}],
            ],
            ("account.partial.reconcile", "read"): [[{"id": 3001, "debit_move_id": [801, "INV/2031/00008"]}]],
            ("account.move", "read"): [[{"id": 9, "amount_residual": 5.0, "state": "posted"}]],
            ("account.move", "js_assign_outstanding_line"): [True],
        }
    )
    payment = a_payment()
    (made,) = await run(
        odoo, [lambda a: a.allocate_credit(payment, "42", "55", 2, [InvoiceAllocation("9", "bill-9", Decimal("5.00"))])]
    )
    assert made == "55"
    args, _ = odoo.call("account.move", "js_assign_outstanding_line")
    assert args == [[9], 901]
    assert odoo.left() == []


async def test_a_credit_notes_credit_is_assigned_to_the_invoices_billing_gave_it_to_once() -> None:
    # The out_refund (70) credits 12.10; billing gave 7.10 of it to its own bill's invoice (8), which
    # owed that much after a payment; a retry finds the reconciliation and assigns nothing more.
    odoo = FakeOdoo(
        {
            ("account.move", "read"): [
                [{"id": 70, "state": "posted"}],
                [{"id": 8, "amount_residual": 7.1, "state": "posted"}],
                [{"id": 70, "state": "posted"}],
            ],
            ("account.move.line", "search"): [[701], [701]],
            ("account.move.line", "read"): [
                [{"id": 701, "amount_residual": -12.1, "matched_debit_ids": []}],
                [{"id": 701, "amount_residual": -5.0}],
                [{"id": 701, "amount_residual": -5.0, "matched_debit_ids": [3002]}],
                [{"id": 802, "move_id": [8, "INV/2031/00008"]}],
            ],
            ("account.partial.reconcile", "read"): [[{"id": 3002, "debit_move_id": [802, "INV/2031/00008"]}]],
            ("account.move", "js_assign_outstanding_line"): [True],
        }
    )
    note = credit_note_pb2.CreditNote(
        credit_note_id=str(uuid.uuid4()), credit_note_number="CN-2031-0002", currency_code="EUR", total=money("12.10")
    )
    given = [InvoiceAllocation("8", "bill-8", Decimal("7.10"))]
    first, retry = await run(
        odoo,
        [lambda a: a.allocate_credit_note(note, "42", "70", 1, given) for _ in range(2)],
    )
    assert (first, retry) == ("70", "70")
    search = [c for c in odoo.calls if c[:2] == ("account.move.line", "search")]
    assert search[0][2] == [[["move_id", "=", 70], ["account_type", "=", "asset_receivable"]]]
    args, _ = odoo.call("account.move", "js_assign_outstanding_line")
    assert args == [[8], 701]  # the refund's receivable line on billing's invoice, once
    assert odoo.left() == []


async def test_a_credit_note_odoo_has_not_posted_is_not_allocated() -> None:
    odoo = FakeOdoo({("account.move", "read"): [[{"id": 70, "state": "draft"}]]})
    note = credit_note_pb2.CreditNote(credit_note_id=str(uuid.uuid4()), credit_note_number="CN-2031-0003")
    with pytest.raises(Rejected, match="Odoo has no posted credit note CN-2031-0003"):
        await run(
            odoo,
            [lambda a: a.allocate_credit_note(note, "42", "70", 2, [InvoiceAllocation("9", "b", Decimal("1.00"))])],
        )
    assert odoo.methods() == [("account.move", "read")]


async def test_a_credit_note_without_its_odoo_id_is_looked_up_for_its_partner_only() -> None:
    # No Odoo id kept for the note: its out_refund is searched by reference and partner (another
    # customer's note may carry the same number); Odoo has it only as a draft here.
    odoo = FakeOdoo({("account.move", "search"): [[70]], ("account.move", "read"): [[{"id": 70, "state": "draft"}]]})
    note = credit_note_pb2.CreditNote(credit_note_id=str(uuid.uuid4()), credit_note_number="CN-2031-0005")
    with pytest.raises(Rejected, match="Odoo has no posted credit note CN-2031-0005"):
        await run(
            odoo,
            [lambda a: a.allocate_credit_note(note, "42", "", 1, [InvoiceAllocation("9", "b", Decimal("1.00"))])],
        )
    args, _ = odoo.call("account.move", "search")
    assert args[0] == [["move_type", "=", "out_refund"], ["ref", "=", "CN-2031-0005"], ["partner_id", "=", 42]]


async def test_a_later_allocation_of_a_note_whose_share_at_issue_odoo_never_got_says_what_to_do() -> None:
    # A note issued before billing's migration 0013: its 7.10 to its own bill was never allocated in
    # Odoo, so the out_refund (70) is open by all of its 12.10; billing's allocation 2 gives 3.63 of
    # the rest to an invoice (9) owing 4.84, Odoo would apply 4.84: refused, saying what to do.
    odoo = FakeOdoo(
        {
            ("account.move", "read"): [
                [{"id": 70, "state": "posted"}],
                [{"id": 9, "amount_residual": 4.84, "state": "posted"}],
            ],
            ("account.move.line", "search"): [[701]],
            ("account.move.line", "read"): [[{"id": 701, "amount_residual": -12.1, "matched_debit_ids": []}]],
        }
    )
    note = credit_note_pb2.CreditNote(
        credit_note_id=str(uuid.uuid4()), credit_note_number="CN-2031-0004", currency_code="EUR", total=money("12.10")
    )
    given = [InvoiceAllocation("9", "bill-9", Decimal("3.63"))]
    with pytest.raises(Rejected) as refused:
        await run(odoo, [lambda a: a.allocate_credit_note(note, "42", "70", 2, given)])
    message = str(refused.value)
    assert "Odoo would apply 4.84, billing allocated 3.63 (bill bill-9)" in message
    assert "credit note CN-2031-0004" in message and "before billing's migration 0013" in message
    assert message.endswith(
        "a bookkeeper must reconcile that share of the credit note by hand in Odoo, then retry this job (RetrySyncJob)"
    )
    assert ("account.move", "js_assign_outstanding_line") not in odoo.methods()


async def test_an_allocation_odoo_cannot_apply_exactly_is_refused() -> None:
    # Odoo's invoice owes more than billing's bill (and more of the payment is open): Odoo's "Add"
    # would apply more than billing allocated, so nothing is applied.
    odoo = FakeOdoo(
        {
            ("account.payment", "read"): [[{"id": 55, "state": "posted", "move_id": [90, "PBNK1/2031/00001"]}]],
            ("account.move.line", "search"): [[901]],
            ("account.move.line", "read"): [[{"id": 901, "amount_residual": -6.85, "matched_debit_ids": []}]],
            ("account.move", "read"): [[{"id": 9, "amount_residual": 23.15, "state": "posted"}]],
        }
    )
    payment = a_payment()
    with pytest.raises(Rejected, match=re.escape("Odoo would apply 6.85, billing allocated 5.00")):
        await run(
            odoo,
            [lambda a: a.allocate_credit(payment, "42", "55", 2, [InvoiceAllocation("9", "bill-9", Decimal("5.00"))])],
        )
    assert ("account.move", "js_assign_outstanding_line") not in odoo.methods()


async def test_a_reversed_payment_goes_back_to_draft_and_is_cancelled_once() -> None:
    odoo = FakeOdoo(
        {
            ("account.payment", "read"): [[{"id": 55, "state": "posted"}], [{"id": 55, "state": "cancel"}]],
            ("account.payment", "action_draft"): [True],
            ("account.payment", "action_cancel"): [True],
        }
    )
    payment = a_payment()
    first, retry = await run(
        odoo, [lambda a: a.reverse_payment(payment, "42", "55"), lambda a: a.reverse_payment(payment, "42", "55")]
    )
    assert (first, retry) == ("55", "55")
    assert odoo.methods() == [
        ("account.payment", "read"),
        ("account.payment", "action_draft"),  # undoes its reconciliations: the invoices are open again
        ("account.payment", "action_cancel"),
        ("account.payment", "read"),
    ]


async def test_a_write_off_is_an_entry_assigned_to_the_written_off_bill_first() -> None:
    entry = ledger_pb2.LedgerEntry(
        entry_id=str(uuid.uuid4()),
        amount=money("-5.50"),
        source_type="bill",
        source_id=str(uuid.uuid4()),
        reason_code="UNCOLLECTIBLE",
        effective_time=to_timestamp(NOW),
    )
    odoo = FakeOdoo(
        {
            ("account.move", "search"): [[], [7, 8]],
            ("account.move", "create"): [70],
            ("account.move", "read"): [[{"id": 70, "state": "draft"}]],
            ("account.move", "action_post"): [False],
            ("account.move.line", "search"): [[701]],
            ("account.move.line", "read"): [
                [{"id": 701, "amount_residual": -5.5}],
                [{"id": 701, "amount_residual": 0}],
            ],
            ("account.move", "js_assign_outstanding_line"): [True],
        }
    )
    (made,) = await run(odoo, [lambda a: a.write_off(entry, "42", ["8"])])
    assert made == "70"
    (values,), _ = odoo.call("account.move", "create")
    assert (values["move_type"], values["ref"], values["journal_id"]) == (
        "entry",
        f"evolutivo:write_off:{entry.entry_id}",
        3,  # no write_off journal mapped: the general one
    )
    assert [(x[2]["account_id"], x[2]["debit"], x[2]["credit"]) for x in values["line_ids"]] == [
        (33, 5.5, 0),
        (6, 0, 5.5),
    ]
    args, _ = odoo.call("account.move", "js_assign_outstanding_line")
    assert args == [[8], 701]


async def test_a_refused_key_is_an_auth_failure() -> None:
    odoo = FakeOdoo({("res.partner", "search"): [ACCESS_DENIED]})
    account = account_pb2.Account(account_id=str(uuid.uuid4()), account_number="A-1", display_name="Acme")
    with pytest.raises(AuthFailed):
        await run(odoo, [lambda a: a.upsert_customer(account, "")])
