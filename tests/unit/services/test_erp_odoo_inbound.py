"""The Odoo adapter's inbound payments and referrals against recorded shapes of Odoo 17's external
API (POST /jsonrpc, "object.execute_kw"): no Odoo server can run here, so these tests replay the
answers Odoo gives (search_read rows, many2one as [id, name], false for an empty value, monetary
fields as JSON numbers) and check what the adapter asks, in order."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
from evolutivo.billing.v1 import collections_events_pb2, collections_pb2
from evolutivo_erp_gateway.adapters.erp import ErpPayment, Rejected
from evolutivo_erp_gateway.adapters.odoo import OdooAdapter
from evolutivo_erp_gateway.domain.connections import Connection, ConnectionType, Mapping
from evolutivo_erp_gateway.domain.model import EntityType
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.money import to_money
from support.odoo import DATABASE, KEY, LOGIN, FakeOdoo

NOW = dt.datetime(2031, 5, 17, 10, 30, tzinfo=dt.UTC)
PAGE = 500
# What the adapter asks for: posted journal entries of inbound customer payments.
BASE = [
    ["state", "=", "posted"],
    ["payment_id.payment_type", "=", "inbound"],
    ["payment_id.partner_type", "=", "customer"],
]
ENTRY_FIELDS = ["write_date", "payment_id", "commercial_partner_id"]
ORDER = "write_date asc, id asc"


def connection(**changes: Any) -> Connection:
    values: dict[str, Any] = {
        "connection_id": uuid.uuid4(),
        "display_name": "Odoo",
        "type": ConnectionType.ODOO,
        "endpoint_url": "https://odoo.example",
        "database": DATABASE,
        "username": LOGIN,
        "mapping": Mapping(journals={"revenue": "1", "cash": "7"}, accounts={"receivable": "6", "cash": "5"}),
        "enabled": True,
        "import_payments": True,
        "has_credentials": True,
        "create_time": NOW,
        "update_time": NOW,
    }
    values.update(changes)
    return Connection(**values)


def adapter(odoo: FakeOdoo) -> OdooAdapter:
    return OdooAdapter(connection(), KEY, 5.0, httpx.MockTransport(odoo.handle))


# Recorded rows: account.move search_read (the payments' journal entries) and account.payment read.
def entry(move: int, payment: int, stamp: str, partner: int | None = 42) -> dict[str, Any]:
    return {
        "id": move,
        "write_date": stamp,
        "payment_id": [payment, f"PBNK1/2031/{payment:05d}"],
        "commercial_partner_id": [partner, "Acme Distribuciones SL"] if partner else False,
    }


def payment(payment_id: int, amount: float | int, ref: str | bool = False, currency: int = 1) -> dict[str, Any]:
    return {
        "id": payment_id,
        "ref": ref,
        "partner_id": [42, "Acme Distribuciones SL"],
        "amount": amount,
        "currency_id": [currency, {1: "EUR", 2: "JPY", 3: "KWD"}[currency]],
    }


EUR = {"id": 1, "name": "EUR", "decimal_places": 2}


async def poll(odoo: FakeOdoo, cursor: tuple[str, int] | None) -> tuple[list[ErpPayment], tuple[str, int] | None]:
    odoo_adapter = adapter(odoo)
    try:
        return await odoo_adapter.payments_since(cursor, PAGE)
    finally:
        await odoo_adapter.aclose()


async def test_the_first_poll_reads_posted_inbound_customer_payments_and_leaves_out_the_gateways_own() -> None:
    odoo = FakeOdoo(
        {
            ("account.move", "search_read"): [
                [
                    entry(90, 55, "2031-05-17 09:00:00"),
                    entry(91, 56, "2031-05-17 09:00:00"),  # the gateway's own (its ref)
                    entry(95, 57, "2031-05-17 09:10:04"),
                ]
            ],
            ("account.payment", "read"): [
                [
                    payment(55, 25.1, "bank transfer 0042"),
                    payment(56, 10.0, "evolutivo:payment:5f0c1c4e-0000-4000-8000-000000000001"),
                    payment(57, 1234567.89),
                ]
            ],
            ("res.currency", "read"): [[EUR]],
        }
    )
    payments, cursor = await poll(odoo, None)
    assert payments == [
        ErpPayment("55", "42", "25.10", "EUR", ("2031-05-17 09:00:00", 90)),
        ErpPayment("57", "42", "1234567.89", "EUR", ("2031-05-17 09:10:04", 95)),
    ]
    # The cursor goes past everything read, the gateway's own payment too.
    assert cursor == ("2031-05-17 09:10:04", 95)
    assert odoo.methods() == [("account.move", "search_read"), ("account.payment", "read"), ("res.currency", "read")]
    args, kwargs = odoo.call("account.move", "search_read")
    assert args == [BASE]
    assert kwargs == {"fields": ENTRY_FIELDS, "order": ORDER, "limit": PAGE}
    args, kwargs = odoo.call("account.payment", "read")
    assert args == [[55, 56, 57]]
    assert kwargs == {"fields": ["ref", "partner_id", "amount", "currency_id"]}
    assert odoo.left() == []


async def test_the_cursor_advances_and_each_poll_looks_two_minutes_behind_it_again() -> None:
    cursor = ("2031-05-17 09:10:04", 95)
    odoo = FakeOdoo(
        {
            ("account.move", "search_read"): [
                # Behind the cursor: 95 again, and 93, posted in a transaction that began before
                # 95's and committed after the last poll (its stamp is older than the cursor).
                [entry(93, 60, "2031-05-17 09:09:30"), entry(95, 57, "2031-05-17 09:10:04")],
                # After the cursor: a later entry in the same second, then a later second.
                [entry(96, 61, "2031-05-17 09:10:04"), entry(99, 62, "2031-05-17 09:12:00")],
            ],
            ("account.payment", "read"): [
                [payment(60, 7.5), payment(57, 1234567.89), payment(61, 3), payment(62, 0.1)]
            ],
            ("res.currency", "read"): [[EUR]],
        }
    )
    payments, after = await poll(odoo, cursor)
    assert after == ("2031-05-17 09:12:00", 99)
    assert [(p.erp_id, p.amount_text) for p in payments] == [
        ("60", "7.50"),
        ("57", "1234567.89"),  # read again: the gateway skips it (it imported it already)
        ("61", "3.00"),
        ("62", "0.10"),
    ]
    (back, _), (page, _) = odoo.calls_of("account.move", "search_read")
    assert back == [[*BASE, ["write_date", ">=", "2031-05-17 09:08:04"], ["write_date", "<=", "2031-05-17 09:10:04"]]]
    assert page == [
        [
            *BASE,
            "|",
            ["write_date", ">", "2031-05-17 09:10:04"],
            "&",
            ["write_date", "=", "2031-05-17 09:10:04"],
            ["id", ">", 95],
        ]
    ]
    (_, back_kwargs), (_, page_kwargs) = odoo.calls_of("account.move", "search_read")
    # The look-back is a bounded window (no limit); the page proper is limited and strictly after
    # the cursor, so a full page always moves it on.
    assert back_kwargs == {"fields": ENTRY_FIELDS, "order": ORDER}
    assert page_kwargs == {"fields": ENTRY_FIELDS, "order": ORDER, "limit": PAGE}


async def test_nothing_new_keeps_the_cursor_and_reads_no_payment() -> None:
    cursor = ("2031-05-17 09:10:04", 95)
    odoo = FakeOdoo({("account.move", "search_read"): [[], []]})
    assert await poll(odoo, cursor) == ([], cursor)
    assert odoo.methods() == [("account.move", "search_read"), ("account.move", "search_read")]


async def test_amounts_come_back_exact_in_each_currencys_decimal_places() -> None:
    odoo = FakeOdoo(
        {
            ("account.move", "search_read"): [
                [
                    entry(1, 11, "2031-05-17 09:00:00"),
                    entry(2, 12, "2031-05-17 09:00:01"),
                    entry(3, 13, "2031-05-17 09:00:02"),
                    entry(4, 14, "2031-05-17 09:00:03"),
                    entry(5, 15, "2031-05-17 09:00:04"),
                ]
            ],
            ("account.payment", "read"): [
                [
                    payment(11, 0.30000000000000004),  # 0.1 + 0.2 as a double: 0.30 EUR
                    payment(12, 19.99),
                    payment(13, 5000, currency=2),  # JPY: no decimals
                    payment(14, 12.345, currency=3),  # KWD: three
                    payment(15, 99999999.99),
                ]
            ],
            ("res.currency", "read"): [
                [EUR],
                [{"id": 2, "name": "JPY", "decimal_places": 0}],
                [{"id": 3, "name": "KWD", "decimal_places": 3}],
            ],
        }
    )
    payments, _ = await poll(odoo, None)
    assert [(p.amount_text, p.currency_code) for p in payments] == [
        ("0.30", "EUR"),
        ("19.99", "EUR"),
        ("5000", "JPY"),
        ("12.345", "KWD"),
        ("99999999.99", "EUR"),
    ]
    assert [Decimal(p.amount_text) for p in payments][1] == Decimal("19.99")
    # Each currency is read once per poll.
    assert len(odoo.calls_of("res.currency", "read")) == 3


async def test_a_payment_without_a_partner_is_nobodys_and_a_non_number_amount_is_refused() -> None:
    odoo = FakeOdoo(
        {
            ("account.move", "search_read"): [[entry(1, 11, "2031-05-17 09:00:00", partner=None)]],
            ("account.payment", "read"): [[{**payment(11, 5.0), "partner_id": False}]],
        }
    )
    assert await poll(odoo, None) == ([], ("2031-05-17 09:00:00", 1))
    odoo = FakeOdoo(
        {
            ("account.move", "search_read"): [[entry(1, 11, "2031-05-17 09:00:00")]],
            ("account.payment", "read"): [[payment(11, "5.00")]],  # type: ignore[arg-type]
            ("res.currency", "read"): [[EUR]],
        }
    )
    with pytest.raises(Rejected, match="where an amount was expected"):
        await poll(odoo, None)


# --- referrals -----------------------------------------------------------------------------------
def a_referral() -> collections_events_pb2.CollectionsCaseReferred:
    return collections_events_pb2.CollectionsCaseReferred(
        collections_case=collections_pb2.CollectionsCase(
            case_id="c0ffee00-0000-4000-8000-000000000001", account_id=str(uuid.uuid4()), days_past_due=45
        ),
        agency="Recobros Norte",
        overdue_amount=to_money(Decimal("123.40"), "EUR"),
        bill_ids=[str(uuid.uuid4())],
    )


async def test_a_referral_becomes_the_partners_category_and_a_chatter_note_once() -> None:
    referral_id = "7d0f5a0e-6c55-4b8e-9a55-2b0f1f0b6a01"
    marker = f"evolutivo:referral:{referral_id}"
    odoo = FakeOdoo(
        {
            # The first attempt creates the category; the retry finds it by name.
            ("res.partner.category", "search"): [[], [8]],
            ("res.partner.category", "create"): [8],
            ("res.partner", "read"): [[{"id": 42, "category_id": [3]}], [{"id": 42, "category_id": [3, 8]}]],
            ("res.partner", "write"): [True],
            # No note yet; on the retry, the note the first attempt posted.
            ("mail.message", "search"): [[], [501]],
            ("account.move", "read"): [[{"id": 7, "name": "INV/2031/00001", "ref": "F-2031-0001"}]],
            ("res.partner", "message_post"): [501],
        }
    )
    referral = a_referral()
    odoo_adapter = adapter(odoo)
    try:
        first = await odoo_adapter.refer_case(referral, referral_id, "42", ["7"])
        retry = await odoo_adapter.refer_case(referral, referral_id, "42", ["7"])
    finally:
        await odoo_adapter.aclose()
    assert (first, retry) == ("501", "501")
    assert odoo.methods() == [
        ("res.partner.category", "search"),
        ("res.partner.category", "create"),
        ("res.partner", "read"),
        ("res.partner", "write"),
        ("mail.message", "search"),
        ("account.move", "read"),
        ("res.partner", "message_post"),
        # The retry: the category is found and linked already, the note is found: nothing is made twice.
        ("res.partner.category", "search"),
        ("res.partner", "read"),
        ("mail.message", "search"),
    ]
    category_search = odoo.calls_of("res.partner.category", "search")[0][0]
    assert category_search == [[["name", "=", "Collections agency: Recobros Norte"], ["parent_id", "=", False]]]
    assert odoo.call("res.partner.category", "create")[0] == [{"name": "Collections agency: Recobros Norte"}]
    assert odoo.call("res.partner", "write")[0] == [[42], {"category_id": [[4, 8, 0]]}]
    note_search = odoo.calls_of("mail.message", "search")[0][0]
    assert note_search == [[["model", "=", "res.partner"], ["res_id", "=", 42], ["body", "like", marker]]]
    args, kwargs = odoo.call("res.partner", "message_post")
    assert args == [[42]]
    assert kwargs == {
        "body": f"{marker} Referred to collections agency Recobros Norte. "
        "Collections case c0ffee00-0000-4000-8000-000000000001, 45 days past due. "
        "Overdue: 123.40 EUR. Invoices: INV/2031/00001 (bill F-2031-0001).",
        "message_type": "comment",
        "subtype_xmlid": "mail.mt_note",
    }
    assert odoo.left() == []


def test_odoo_connections_may_import_payments_and_take_referrals_file_exports_may_not() -> None:
    marked = connection(collections_referrals=True)
    marked.validate()
    assert marked.takes(EntityType.REFERRAL)
    assert not connection(collections_referrals=False).takes(EntityType.REFERRAL)
    export = connection(type=ConnectionType.GL_FILE_EXPORT, endpoint_url="", username="", import_payments=False)
    for field, changes in (
        ("connection.collections_referrals", {"collections_referrals": True}),
        ("connection.import_payments", {"import_payments": True}),
    ):
        with pytest.raises(InvalidArgument) as refused:
            export.updated(NOW, **changes).validate()
        assert refused.value.field == field
