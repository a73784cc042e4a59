"""Reads what reconciliation needs from each service's database, read-only.

Each database is read in one ``REPEATABLE READ READ ONLY`` transaction (one snapshot per
database) over a session whose ``default_transaction_read_only`` is on, so the tool cannot write
even by mistake. The five snapshots are not taken at one instant: run it when the suite is quiet
(or poll it until it agrees, as the tests do), since events in flight between services show as
differences until they land.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]

Row = Any  # asyncpg.Record


@asynccontextmanager
async def read_only(url: str) -> AsyncIterator[Any]:
    """A connection in a read-only snapshot transaction."""
    conn = await asyncpg.connect(
        _plain(url),
        server_settings={"default_transaction_read_only": "on", "application_name": "evolutivo-reconcile"},
        timeout=10,
    )
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            yield conn
    finally:
        await conn.close()


def _plain(url: str) -> str:
    """asyncpg wants postgresql://; operators may paste SQLAlchemy's postgresql+asyncpg:// form."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.split("+", 1)[0] in ("postgresql", "postgres"):
        return f"postgresql://{rest}"
    return url


async def _outbox(conn: Any) -> int:
    return int(await conn.fetchval("select count(*) from outbox"))


async def _has_table(conn: Any, name: str) -> bool:
    return bool(await conn.fetchval("select to_regclass($1) is not null", name))


@dataclass
class Charging:
    charges: list[Row]
    usage_events: list[Row]
    fee_charge_ids: set[uuid.UUID]
    outbox: int
    latest_rate_time: datetime | None


async def load_charging(url: str) -> Charging:
    async with read_only(url) as conn:
        charges = await conn.fetch(
            "select charge_id, account_id, kind, event_id, purchase_id, charge_code, amount, currency_code,"
            " rate_time, reverses_charge_id from charges order by seq"
        )
        events = await conn.fetch(
            "select event_id, account_id, status, reason, charge_ids from usage_events order by seq"
        )
        fees = {r["charge_id"] for r in await conn.fetch("select charge_id from fee_charges")}
        latest = await conn.fetchval("select max(rate_time) from charges")
        return Charging(list(charges), list(events), fees, await _outbox(conn), latest)


@dataclass
class Balance:
    # Entries of the types reconciliation follows (not transfers, refunds, other adjustments).
    entries: list[Row]
    # Every group with its stored balance and the sum of its entries.
    groups: list[Row]
    payments: list[Row]
    outbox: int


async def load_balance(url: str) -> Balance:
    async with read_only(url) as conn:
        entries = await conn.fetch(
            "select entry_id, balance_group_id, account_id, type, amount, currency_code, source_type, source_id,"
            " reason_code from ledger_entries"
            " where type in ('charge', 'tax', 'credit_note', 'write_off', 'payment', 'payment_reversal')"
            " or (type = 'adjustment' and reason_code = 'LATE_FEE')"
            " order by seq"
        )
        groups = await conn.fetch(
            "select g.balance_group_id, g.account_id, g.currency_code, g.is_default, g.balance,"
            " coalesce((select sum(e.amount) from ledger_entries e"
            "           where e.balance_group_id = g.balance_group_id), 0) as entries_sum"
            " from balance_groups g order by g.account_id, g.balance_group_id"
        )
        payments = await conn.fetch(
            "select payment_id, reference, account_id, amount, currency_code, state, entry_id, reversal_entry_id"
            " from payments order by create_time, payment_id"
        )
        return Balance(list(entries), list(groups), list(payments), await _outbox(conn))


@dataclass
class Billing:
    items: list[Row]
    bills: list[Row]
    payments: list[Row]
    credit_notes: list[Row]
    # Collections' late fees and write-offs that called balance (empty before migration 0008).
    actions: list[Row]
    bill_unit_accounts: set[uuid.UUID]
    outbox: int
    # The bills whose lines name each charge (a charge on no bill is left out).
    item_bills: dict[uuid.UUID, list[uuid.UUID]] = field(default_factory=dict)


async def load_billing(url: str) -> Billing:
    async with read_only(url) as conn:
        # An item's bill is the bill whose line names it (`bill_id`: every such bill, since
        # migration 0016 items are not written when billed); `billed` is what its cycle says: closed
        # (billed in full), or billed through its `seq`. check_bills holds the two against each other.
        items = await conn.fetch(
            "select i.charge_id, i.account_id, i.kind, i.event_id, i.amount, i.currency_code,"
            " (c.status <> 'open' or i.seq <= c.billed_through_seq) as billed"
            " from bill_items i join bill_cycles c using (bill_cycle_id)"
            " order by i.account_id, i.charge_id"
        )
        on_lines: defaultdict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
        for row in await conn.fetch("select l.bill_id, unnest(l.charge_ids) as charge_id from bill_lines l"):
            on_lines[row["charge_id"]].append(row["bill_id"])
        bills = await conn.fetch(
            "select b.bill_id, b.account_id, b.status, b.bill_number, b.currency_code, b.subtotal, b.tax_total,"
            " b.total, b.paid_amount, b.credited_amount, b.suppressed,"
            " coalesce((select sum(l.amount) from bill_lines l where l.bill_id = b.bill_id), 0) as lines_sum,"
            " coalesce(n.items_sum, 0) as items_sum, n.charges_named, n.charges_found,"
            " coalesce((select sum(a.amount) from payment_allocations a where a.bill_id = b.bill_id), 0)"
            "   as allocated,"
            " coalesce((select sum(c.amount) from credit_note_allocations c where c.bill_id = b.bill_id), 0)"
            "   as credit_allocated"
            # The charges its lines name, and of them the items billing has (one pass over them).
            " from bills b cross join lateral ("
            "   select sum(i.amount) as items_sum, count(c.charge_id) as charges_named, count(i.charge_id)"
            "     as charges_found"
            "   from bill_lines l cross join unnest(l.charge_ids) as c(charge_id)"
            "   left join bill_items i on i.charge_id = c.charge_id where l.bill_id = b.bill_id) as n"
            " order by b.account_id, b.create_time, b.bill_id"
        )
        payments = await conn.fetch(
            "select p.payment_id, p.account_id, p.amount, p.currency_code, p.unallocated, p.reversed,"
            " coalesce((select sum(a.amount) from payment_allocations a where a.payment_id = p.payment_id), 0)"
            "   as allocated"
            " from payments p order by p.record_time, p.payment_id"
        )
        notes = await conn.fetch(
            "select n.credit_note_id, n.account_id, n.bill_id, n.credit_note_number, n.currency_code, n.total,"
            " n.unallocated,"
            " coalesce((select sum(a.amount) from credit_note_allocations a"
            "           where a.credit_note_id = n.credit_note_id), 0) as allocated"
            " from credit_notes n order by n.issue_time, n.credit_note_id"
        )
        actions: Sequence[Row] = []
        if await _has_table(conn, "collections_actions"):
            actions = await conn.fetch(
                "select a.case_id, a.sequence, a.action_type, a.state, a.amount, c.account_id, c.currency_code,"
                " coalesce(a.details->>'reference', '') as reference"
                " from collections_actions a join collections_cases c using (case_id)"
                " where a.action_type in ('late_fee', 'write_off') order by a.case_id, a.sequence"
            )
        units = {r["account_id"] for r in await conn.fetch("select account_id from bill_units")}
        outbox = await _outbox(conn)
        return Billing(list(items), list(bills), list(payments), list(notes), list(actions), units, outbox, on_lines)


@dataclass
class Customer:
    accounts: list[Row]
    outbox: int


async def load_customer(url: str) -> Customer:
    async with read_only(url) as conn:
        accounts = await conn.fetch("select account_id, currency_code from accounts order by create_time")
        return Customer(list(accounts), await _outbox(conn))


@dataclass
class ErpGateway:
    # (entity_type, entity_id) the gateway received.
    states: set[tuple[str, uuid.UUID]]
    # Enabled connections that are sent records (Tryton, webhook).
    connections: list[Row]
    # (connection_id, entity_type, entity_id) -> (state, last_error)
    jobs: dict[tuple[uuid.UUID, str, uuid.UUID], tuple[str, str]] = field(default_factory=dict)
    outbox: int = 0


# The connection types the gateway sends records to (docs/erp_gateway.md); ODOO and GL file
# exports receive none, so nothing is expected there.
SENDING_TYPES = ("tryton", "webhook")


async def load_erp_gateway(url: str) -> ErpGateway:
    async with read_only(url) as conn:
        states = {
            (r["entity_type"], r["entity_id"])
            for r in await conn.fetch(
                "select entity_type, entity_id from sync_states where entity_type in ('invoice', 'credit_note')"
            )
        }
        connections = await conn.fetch(
            "select connection_id, display_name, type from connections"
            " where enabled and type = any($1::text[]) order by create_time",
            list(SENDING_TYPES),
        )
        jobs = {
            (r["connection_id"], r["entity_type"], r["entity_id"]): (r["state"], r["last_error"])
            for r in await conn.fetch(
                "select connection_id, entity_type, entity_id, state, last_error from sync_jobs"
                " where entity_type in ('invoice', 'credit_note')"
            )
        }
        return ErpGateway(states, list(connections), jobs, await _outbox(conn))


def zero() -> Decimal:
    return Decimal(0)
