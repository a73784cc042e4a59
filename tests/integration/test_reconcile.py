"""The reconciliation against the five services' real, migrated databases: books that agree give no
difference (and say what they counted), each kind of disagreement is reported with its account,
its ids and the expected and found figures, the command exits 1 on differences with a JSON report,
and the tool's connections cannot write."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import evolutivo_balance.adapters.orm as balance_orm
import evolutivo_billing.adapters.collections_tables as collections_orm
import evolutivo_billing.adapters.orm as billing_orm
import evolutivo_charging.adapters.orm as charging_orm
import evolutivo_customer.adapters.orm as customer_orm
import evolutivo_erp_gateway.adapters.orm as erp_orm
import pytest
from evolutivo_balance.entrypoints.app import MIGRATIONS as BALANCE
from evolutivo_billing.entrypoints.app import MIGRATIONS as BILLING
from evolutivo_charging.entrypoints.app import MIGRATIONS as CHARGING
from evolutivo_customer.entrypoints.app import MIGRATIONS as CUSTOMER
from evolutivo_erp_gateway.entrypoints.app import MIGRATIONS as ERP_GATEWAY
from evolutivo_reconcile import DatabaseUrls, Report, reconcile
from evolutivo_reconcile.books import read_only
from evolutivo_reconcile.cli import main
from evolutivo_runtime.db import create_engine
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Integer,
    LargeBinary,
    Numeric,
    Table,
    Text,
    Uuid,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from support.databases import MigratedDatabase

NOW = datetime(2031, 3, 10, 12, tzinfo=UTC)
EUR = "EUR"


def filled(table: Table, **values: Any) -> dict[str, Any]:
    """`values` plus a plain value for every other required column, so the rows below name only
    what reconciliation reads (and keep working when a service adds a column with a default)."""
    row = dict(values)
    for column in table.columns:
        if column.name in row or column.nullable or column.server_default is not None or column.identity is not None:
            continue
        kind = column.type
        if isinstance(kind, Uuid):
            row[column.name] = uuid.uuid4()
        elif isinstance(kind, JSONB):
            row[column.name] = {}
        elif isinstance(kind, ARRAY):
            row[column.name] = []
        elif isinstance(kind, DateTime):
            row[column.name] = NOW
        elif isinstance(kind, Date):
            row[column.name] = NOW.date()
        elif isinstance(kind, Numeric):
            row[column.name] = Decimal(0)
        elif isinstance(kind, (Integer, BigInteger)):
            row[column.name] = 0
        elif isinstance(kind, Boolean):
            row[column.name] = False
        elif isinstance(kind, LargeBinary):
            row[column.name] = b""
        elif isinstance(kind, Text):
            row[column.name] = ""
        else:  # a new column type: name it in the row
            raise TypeError(f"no filler for {table.name}.{column.name} ({kind!r})")
    return row


@dataclass
class Books:
    urls: DatabaseUrls

    async def insert(self, service: str, table: Table, *rows: dict[str, Any]) -> None:
        engine = create_engine(self.urls.get(service) or "", pool_size=1)
        try:
            async with engine.begin() as conn:
                for row in rows:
                    await conn.execute(table.insert().values(**filled(table, **row)))
        finally:
            await engine.dispose()

    async def execute(self, service: str, statement: Any) -> None:
        engine = create_engine(self.urls.get(service) or "", pool_size=1)
        try:
            async with engine.begin() as conn:
                await conn.execute(statement)
        finally:
            await engine.dispose()


@pytest.fixture
async def books(migrated_database: MigratedDatabase) -> AsyncIterator[Books]:
    # One at a time: each service's Alembic env runs its own event loop.
    made = [
        await migrated_database(prefix, migrations)
        for prefix, migrations in (
            ("rec_customer", CUSTOMER),
            ("rec_charging", CHARGING),
            ("rec_balance", BALANCE),
            ("rec_billing", BILLING),
            ("rec_erp", ERP_GATEWAY),
        )
    ]
    yield Books(DatabaseUrls(*made))


@dataclass
class Ids:
    account: uuid.UUID
    group: uuid.UUID
    unit: uuid.UUID
    cycle: uuid.UUID
    purchase: uuid.UUID


def charge(
    ids: Ids, charge_id: uuid.UUID, amount: str, kind: str = "usage", event_id: str = "", **more: Any
) -> dict[str, Any]:
    return {
        "charge_id": charge_id,
        "account_id": ids.account,
        "kind": kind,
        "event_id": event_id,
        "purchase_id": ids.purchase,
        "charge_code": "calls",
        "amount": Decimal(amount),
        "currency_code": EUR,
        "bill_cycle_id": ids.cycle,
        "rate_time": NOW,
        **more,
    }


def entry(ids: Ids, type_: str, amount: str, source_type: str, source_id: object, **more: Any) -> dict[str, Any]:
    return {
        "entry_id": more.pop("entry_id", uuid.uuid4()),
        "balance_group_id": ids.group,
        "account_id": ids.account,
        "type": type_,
        "amount": Decimal(amount),
        "currency_code": EUR,
        "source_type": source_type,
        "source_id": str(source_id),
        **more,
    }


def item(ids: Ids, charge_id: uuid.UUID, amount: str, **more: Any) -> dict[str, Any]:
    """An item of the account's cycle; which are billed is the bill lines' and the cycle's
    billed_through_seq's to say."""
    return {
        "charge_id": charge_id,
        "account_id": ids.account,
        "bill_unit_id": ids.unit,
        "bill_cycle_id": ids.cycle,
        "kind": more.pop("kind", "usage"),
        "amount": Decimal(amount),
        "currency_code": EUR,
        **more,
    }


def bill(ids: Ids, bill_id: uuid.UUID, number: int, subtotal: str, tax: str, paid: str = "0") -> dict[str, Any]:
    total = Decimal(subtotal) + Decimal(tax)
    return {
        "bill_id": bill_id,
        "bill_unit_id": ids.unit,
        "account_id": ids.account,
        "bill_cycle_id": None,
        "trigger": "on_demand",
        "status": "paid" if Decimal(paid) == total else "issued",
        "bill_number": f"F-2031-{number:06d}",
        "number_series": "F-2031",
        "number_sequence": number,
        "currency_code": EUR,
        "subtotal": Decimal(subtotal),
        "tax_total": Decimal(tax),
        "total": total,
        "amount_due": total,
        "paid_amount": Decimal(paid),
        "issue_time": NOW,
    }


async def agreeing_books(books: Books) -> Ids:
    """One EUR account whose five books agree: usage rated and rerated (a reversal and its
    replacement), a recurring fee, an unrated event kept with its reason, a bill with tax paid by a
    payment whose rest is credit, a late fee posted by collections and the bill in the ERP gateway."""
    ids = Ids(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
    c_usage, c_fee, c_old, c_reversal, c_new = (uuid.uuid4() for _ in range(5))
    b1, p1, case, fee_entry = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    await books.insert(
        "customer", customer_orm.accounts, {"account_id": ids.account, "currency_code": EUR, "account_number": "A-1"}
    )

    await books.insert(
        "charging",
        charging_orm.charges,
        charge(ids, c_usage, "10.00", event_id="e1"),
        charge(ids, c_fee, "5.00", kind="recurring"),
        charge(ids, c_old, "2.00", event_id="e2"),
        charge(ids, c_reversal, "-2.00", kind="reversal", event_id="e2", reverses_charge_id=c_old),
        charge(ids, c_new, "3.00", event_id="e2", replaces_charge_id=c_old),
    )
    await books.insert(
        "charging",
        charging_orm.usage_events,
        {"event_id": "e1", "account_id": ids.account, "status": "rated", "charge_ids": [c_usage]},
        {"event_id": "e2", "account_id": ids.account, "status": "rated", "charge_ids": [c_old]},
        {"event_id": "e3", "account_id": ids.account, "status": "unrated", "reason": "NO_MATCHING_PURCHASE"},
    )
    await books.insert(
        "charging",
        charging_orm.fee_charges,
        {
            "purchase_id": ids.purchase,
            "charge_code": "monthly",
            "kind": "recurring",
            "charge_id": c_fee,
            "account_id": ids.account,
        },
    )

    # Charges 18.00, tax 3.15, late fee 1.00, payment -20.00: the group stands at 2.15.
    await books.insert(
        "balance",
        balance_orm.balance_groups,
        {"balance_group_id": ids.group, "account_id": ids.account, "name": "default", "is_default": True,
         "currency_code": EUR, "balance": Decimal("2.15")},
    )  # fmt: skip
    payment_entry = uuid.uuid4()
    await books.insert(
        "balance",
        balance_orm.ledger_entries,
        *(
            entry(ids, "charge", amount, "charge", cid)
            for cid, amount in (
                (c_usage, "10.00"),
                (c_fee, "5.00"),
                (c_old, "2.00"),
                (c_reversal, "-2.00"),
                (c_new, "3.00"),
            )
        ),
        entry(ids, "tax", "3.15", "bill", b1),
        entry(ids, "adjustment", "1.00", "adjustment", fee_entry, entry_id=fee_entry, reason_code="LATE_FEE"),
        entry(ids, "payment", "-20.00", "payment", "ref-1", entry_id=payment_entry),
    )
    await books.insert(
        "balance",
        balance_orm.payments,
        {"payment_id": p1, "reference": "ref-1", "account_id": ids.account, "balance_group_id": ids.group,
         "amount": Decimal("20.00"), "currency_code": EUR, "state": "recorded", "entry_id": payment_entry},
    )  # fmt: skip

    await books.insert(
        "billing",
        billing_orm.bill_units,
        {
            "bill_unit_id": ids.unit,
            "account_id": ids.account,
            "currency_code": EUR,
            "time_zone": "UTC",
            "bill_cycle_day": 1,
        },
    )
    await books.insert(
        "billing",
        billing_orm.bill_cycles,
        {"bill_cycle_id": ids.cycle, "bill_unit_id": ids.unit, "account_id": ids.account, "sequence": 1,
         "start_time": NOW - timedelta(days=9), "end_time": NOW + timedelta(days=22), "status": "open"},
    )  # fmt: skip
    await books.insert("billing", billing_orm.bills, bill(ids, b1, 1, "15.00", "3.15", paid="18.15"))
    await books.insert(
        "billing",
        billing_orm.bill_lines,
        {"bill_id": b1, "line_number": 1, "amount": Decimal("15.00"), "charge_ids": sorted([c_usage, c_fee]),
         "charge_count": 2},
    )  # fmt: skip
    await books.insert(
        "billing",
        billing_orm.bill_items,
        item(ids, c_usage, "10.00"),
        item(ids, c_fee, "5.00", kind="recurring"),
    )
    # The bill (a bill now) took the cycle's items so far: the cycle is billed through them.
    await books.execute(
        "billing",
        text(
            "UPDATE bill_cycles SET billed_through_seq = (SELECT max(seq) FROM bill_items)"
            f" WHERE bill_cycle_id = '{ids.cycle}'"
        ),
    )
    await books.insert(
        "billing",
        billing_orm.bill_items,
        item(ids, c_old, "2.00"),
        item(ids, c_reversal, "-2.00", kind="reversal"),
        item(ids, c_new, "3.00"),
        item(ids, uuid.uuid4(), "1.00", kind="late_fee", event_id=f"collections:{case}:1"),
    )
    await books.insert(
        "billing",
        billing_orm.payments,
        {"payment_id": p1, "account_id": ids.account, "currency_code": EUR, "amount": Decimal("20.00"),
         "unallocated": Decimal("1.85"), "reversed": False},
    )  # fmt: skip
    await books.insert(
        "billing", billing_orm.payment_allocations, {"payment_id": p1, "bill_id": b1, "amount": Decimal("18.15")}
    )
    await books.insert(
        "billing",
        collections_orm.collections_cases,
        {"case_id": case, "bill_unit_id": ids.unit, "account_id": ids.account, "currency_code": EUR,
         "status": "open", "past_due_since": date(2031, 3, 1)},
    )  # fmt: skip
    await books.insert(
        "billing",
        collections_orm.collections_actions,
        {"case_id": case, "sequence": 1, "action_type": "late_fee", "state": "done", "amount": Decimal("1.00"),
         "due_time": NOW, "details": {"reference": str(fee_entry)}},
    )  # fmt: skip

    await books.insert(
        "erp_gateway",
        erp_orm.sync_states,
        {"entity_type": "invoice", "entity_id": b1, "status": "pending", "account_id": ids.account},
    )
    return ids


def checks(report: Report) -> set[str]:
    return {d.check for d in report.differences}


async def test_books_that_agree_reconcile_with_no_difference(books: Books) -> None:
    await agreeing_books(books)

    report = await reconcile(books.urls, expected_usage_event_ids=["e1", "e2", "e3"])

    assert report.differences == [], report.text()
    assert report.checked["charges in charging"] == report.checked["charges in balance"] == 5
    assert report.checked["charges in billing"] == 5
    assert (report.checked["usage events"], report.checked["issued bills"], report.checked["late fees"]) == (3, 1, 1)
    assert report.checked["payments"] == 1
    assert any("no enabled ERP connection" in n for n in report.notices), report.notices
    assert report.outbox_backlog == dict.fromkeys(("customer", "charging", "balance", "billing", "erp_gateway"), 0)


async def test_every_kind_of_disagreement_is_reported_with_its_ids_and_figures(books: Books) -> None:
    ids = await agreeing_books(books)
    lost, doubled, b2, p2, case = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    # Charging rated e4 but neither balance nor billing received the charge.
    await books.insert("charging", charging_orm.charges, charge(ids, lost, "7.00", event_id="e4"))
    await books.insert(
        "charging",
        charging_orm.usage_events,
        {"event_id": "e4", "account_id": ids.account, "status": "rated", "charge_ids": [lost]},
    )
    # e1 charged a second time for the same purchase's charge (and booked and billed so).
    await books.insert("charging", charging_orm.charges, charge(ids, doubled, "10.00", event_id="e1"))
    await books.insert("balance", balance_orm.ledger_entries, entry(ids, "charge", "10.00", "charge", doubled))
    await books.insert("billing", billing_orm.bill_items, item(ids, doubled, "10.00"))
    # A kept event without its reason.
    await books.insert(
        "charging", charging_orm.usage_events, {"event_id": "e5", "account_id": ids.account, "status": "rejected"}
    )
    # A group whose balance is not its entries (the doubled charge moved none).
    # A payment billing never heard of.
    p2_entry = uuid.uuid4()
    await books.insert(
        "balance", balance_orm.ledger_entries, entry(ids, "payment", "-4.00", "payment", "ref-2", entry_id=p2_entry)
    )
    await books.insert(
        "balance",
        balance_orm.payments,
        {"payment_id": p2, "reference": "ref-2", "account_id": ids.account, "balance_group_id": ids.group,
         "amount": Decimal("4.00"), "currency_code": EUR, "state": "recorded", "entry_id": p2_entry},
    )  # fmt: skip
    # A bill issued with tax balance never booked, never received by the ERP gateway, whose line
    # names a charge billing has no item for.
    await books.insert("billing", billing_orm.bills, bill(ids, b2, 2, "0", "1.00"))
    await books.insert(
        "billing", billing_orm.bill_lines, {"bill_id": b2, "line_number": 1, "charge_ids": [lost], "charge_count": 1}
    )
    # The cycle billed through items no bill's line names: the five after the bill's two.
    await books.execute(
        "billing",
        text(
            "UPDATE bill_cycles SET billed_through_seq = (SELECT seq FROM bill_items"
            f" WHERE charge_id = '{doubled}') WHERE bill_cycle_id = '{ids.cycle}'"
        ),
    )
    # A late fee collections recorded as posted that balance does not have, nor billing's items.
    await books.insert(
        "billing",
        collections_orm.collections_cases,
        {"case_id": case, "bill_unit_id": ids.unit, "account_id": ids.account, "currency_code": EUR,
         "status": "closed", "close_time": NOW, "past_due_since": date(2031, 3, 1)},
    )  # fmt: skip
    await books.insert(
        "billing",
        collections_orm.collections_actions,
        {"case_id": case, "sequence": 1, "action_type": "late_fee", "state": "done", "amount": Decimal("2.50"),
         "due_time": NOW, "details": {"reference": str(uuid.uuid4())}},
    )  # fmt: skip
    await books.execute(
        "balance",
        update(balance_orm.balance_groups)
        .where(balance_orm.balance_groups.c.balance_group_id == ids.group)
        .values(balance=balance_orm.balance_groups.c.balance + Decimal("1.00")),
    )

    report = await reconcile(books.urls, expected_usage_event_ids=["e1", "lost-on-the-way"])

    assert checks(report) == {
        "balance.charge_missing",
        "billing.charge_missing",
        "totals.charges",
        "usage.charged_twice",
        "usage.kept_without_reason",
        "usage.accepted_event_missing",
        "balance.group_balance",
        "payments.unknown_to_billing",
        "tax.missing",
        "erp.not_received",
        "late_fees.adjustment_missing",
        "late_fees.item_missing",
        "bills.charges",
        "items.billed",
    }, report.text()
    by_check = {d.check: d for d in report.differences}
    assert by_check["bills.charges"].ids == {"bill_id": str(b2), "bill_number": "F-2031-000002"}
    assert (by_check["bills.charges"].expected, by_check["bills.charges"].found) == ("1", "0")
    unnamed = [d for d in report.differences if d.check == "items.billed"]
    assert len(unnamed) == 5 and {"charge_id": str(doubled)} in [d.ids for d in unnamed]
    assert {(d.expected, d.found) for d in unnamed} == {("1", "0")}
    missing = by_check["balance.charge_missing"]
    assert (missing.account_id, missing.ids, missing.expected, missing.found) == (
        str(ids.account),
        {"charge_id": str(lost)},
        "7 EUR",
        "-",
    )
    totals = by_check["totals.charges"]
    assert (totals.expected, totals.found) == ("35 EUR (charging)", "28 EUR (balance), 28 EUR (billing)")
    assert by_check["usage.charged_twice"].ids["event_id"] == "e1"
    assert by_check["tax.missing"].ids == {"bill_id": str(b2), "bill_number": "F-2031-000002"}
    assert (by_check["tax.missing"].expected, by_check["tax.missing"].found) == ("1 EUR", "-")
    assert (by_check["balance.group_balance"].expected, by_check["balance.group_balance"].found) == ("8.15", "3.15")
    assert by_check["usage.accepted_event_missing"].ids == {"event_id": "lost-on-the-way"}
    assert by_check["payments.unknown_to_billing"].ids == {"payment_id": str(p2), "reference": "ref-2"}
    assert "[tax.missing]" in report.text()


async def test_the_erp_check_names_each_bill_an_enabled_connection_did_not_take(books: Books) -> None:
    await agreeing_books(books)
    connection = uuid.uuid4()
    await books.insert(
        "erp_gateway",
        erp_orm.connections,
        {"connection_id": connection, "display_name": "Tryton", "type": "tryton", "enabled": True, "mapping": {}},
    )

    report = await reconcile(books.urls)

    (difference,) = report.differences
    assert (difference.check, difference.expected, difference.found, difference.ids["connection"]) == (
        "erp.not_synced",
        "succeeded",
        "-",
        "Tryton",
    )
    # Without the gateway's database the check is skipped, and says so.
    without = await reconcile(DatabaseUrls(**{**books.urls.__dict__, "erp_gateway": None}))
    assert without.ok
    assert any("no erp_gateway database" in n for n in without.notices)


async def test_the_command_exits_1_with_a_json_report_and_0_when_the_books_agree(
    books: Books, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = await agreeing_books(books)
    argv = [f"--{s.replace('_', '-')}-url={url}" for s, url in books.urls.__dict__.items()]

    assert await asyncio.to_thread(main, [*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True

    await books.insert("billing", billing_orm.bill_items, item(ids, uuid.uuid4(), "1.00"))
    assert await asyncio.to_thread(main, [*argv, "--json"]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert [d["check"] for d in printed["differences"]] == ["billing.charge_unknown", "totals.charges"]
    assert await asyncio.to_thread(main, argv) == 1
    assert "[billing.charge_unknown]" in capsys.readouterr().out


async def test_the_tool_cannot_write_to_the_books(books: Books) -> None:
    async with read_only(books.urls.billing or "") as conn:
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await conn.execute("delete from bills")
