"""Loads and stores bill items, bills (with their lines and taxes) and bill number series."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from evolutivo_runtime.bulk import insert_rows
from evolutivo_runtime.db import driver_connection
from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    Table,
    Text,
    Uuid,
    any_,
    bindparam,
    func,
    or_,
    select,
    text,
    tuple_,
    union,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from evolutivo_billing.adapters.orm import (
    bill_cycles,
    bill_items,
    bill_lines,
    bill_number_series,
    bill_taxes,
    bill_units,
    bills,
    credit_notes,
    payment_allocations,
    payments,
)
from evolutivo_billing.domain.bills import (
    OPEN_STATUSES,
    Bill,
    BillItem,
    BillLine,
    BillListPosition,
    BillNumber,
    BillStatus,
    BillTax,
    BillTrigger,
    Charge,
    ItemListPosition,
    LineKey,
    Period,
    Statement,
    Tier,
)
from evolutivo_billing.domain.cycles import BillCycle, BillCycleStatus
from evolutivo_billing.domain.model import OpenBill


def _any_of(ids: Collection[uuid.UUID]) -> Any:
    """`= ANY($1)` with the ids as one array parameter: any number of ids (an IN list would take
    a parameter each, and PostgreSQL takes at most 32767)."""
    return any_(bindparam(None, list(ids), type_=ARRAY(Uuid)))


# The columns a BillItem is read from (not the pre-0016 bill_id, bill_line_number).
_ITEM_COLUMNS = ", ".join(f"i.{c.name}" for c in bill_items.columns if c.name not in ("bill_id", "bill_line_number"))
# `unbilled_in_cycles`: $1 the cycles, $2 the limit (NULL: none).
_UNBILLED_IN_CYCLES = (
    f"SELECT {_ITEM_COLUMNS} FROM bill_items i JOIN bill_cycles c ON c.bill_cycle_id = i.bill_cycle_id"
    " WHERE c.bill_cycle_id = ANY($1::uuid[]) AND i.seq > c.billed_through_seq"
    " ORDER BY i.bill_cycle_id, i.event_time, i.charge_id LIMIT $2"
)


class BillItemRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def known(self, charge_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these charges billing has received already."""
        if not charge_ids:
            return set()
        t = bill_items
        rows = await self._session.execute(select(t.c.charge_id).where(t.c.charge_id == _any_of(charge_ids)))
        return {row.charge_id for row in rows}

    async def add_all(self, items: Sequence[BillItem]) -> set[uuid.UUID]:
        """Inserts the items whose charge billing has not received (the others are left as they
        are, also when a concurrent transaction inserts them first); returns the charges inserted."""
        if not items:
            return set()
        statement, params = insert_rows(
            bill_items, [_item_row(item) for item in items], on_conflict_columns=["charge_id"], returning=["charge_id"]
        )
        return {row.charge_id for row in await self._session.execute(statement, params)}

    async def unbilled_in_cycle(self, cycle: BillCycle) -> list[BillItem]:
        """The cycle's items no bill has taken (those above its `billed_through_seq`), oldest
        event first. The caller holds the cycle, locked against the ChargesCreated consumer's
        share lock, when it bills them (BillCycleRepository.open_for_unit)."""
        t = bill_items
        query = (
            select(t)
            .where(t.c.bill_cycle_id == cycle.bill_cycle_id, t.c.seq > cycle.billed_through_seq)
            .order_by(t.c.event_time, t.c.charge_id)
        )
        return [_item(row._mapping) for row in await self._session.execute(query)]

    async def unbilled_counts(self, bill_cycle_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, int]:
        """How many items no bill has taken each of these cycles has (a cycle without any is left out)."""
        if not bill_cycle_ids:
            return {}
        t, c = bill_items, bill_cycles
        query = (
            select(t.c.bill_cycle_id, func.count())
            .join(c, c.c.bill_cycle_id == t.c.bill_cycle_id)
            .where(c.c.bill_cycle_id == _any_of(bill_cycle_ids), t.c.seq > c.c.billed_through_seq)
            .group_by(t.c.bill_cycle_id)
        )
        return {row[0]: int(row[1]) for row in await self._session.execute(query)}

    async def unbilled_in_cycles(
        self, bill_cycle_ids: Collection[uuid.UUID], limit: int | None = None
    ) -> dict[uuid.UUID, list[BillItem]]:
        """Each of these cycles' items no bill has taken, oldest event first, in one query (the
        set-based bill run); a cycle without any is left out. With `limit`, at most that many
        items in all (the last cycle read may then be cut short: for a caller that only uses
        a read that came in under the limit)."""
        if not bill_cycle_ids:
            return {}
        # Straight on asyncpg: SQLAlchemy's execution and row layers cost about a third as much
        # as the rows themselves here (~10 per bill), the bill run's largest read.
        connection = await driver_connection(self._session)
        found: dict[uuid.UUID, list[BillItem]] = {}
        for row in await connection.fetch(_UNBILLED_IN_CYCLES, list(bill_cycle_ids), limit):
            item = _item(row)
            found.setdefault(item.bill_cycle_id, []).append(item)
        return found

    async def unbilled_amount(self, bill_unit_id: uuid.UUID) -> Decimal:
        """The sum of the unit's unbilled items (before tax), all in its open cycle: what its
        threshold is compared to."""
        t, c = bill_items, bill_cycles
        total = await self._session.scalar(
            select(func.coalesce(func.sum(t.c.amount), 0))
            .join(c, c.c.bill_cycle_id == t.c.bill_cycle_id)
            .where(*_open_cycle_of(bill_unit_id), t.c.seq > c.c.billed_through_seq)
        )
        return _plain(Decimal(total or 0))

    async def list_unbilled(
        self, bill_unit_id: uuid.UUID, after: ItemListPosition | None, limit: int | None
    ) -> list[BillItem]:
        """Up to `limit` (None: all) of the unit's unbilled items (all in its open cycle), oldest
        event time first, after `after`; the cycle's billed_through_seq read in the same statement."""
        t, c = bill_items, bill_cycles
        query = (
            select(t)
            .join(c, c.c.bill_cycle_id == t.c.bill_cycle_id)
            .where(*_open_cycle_of(bill_unit_id), t.c.seq > c.c.billed_through_seq)
            .order_by(t.c.event_time, t.c.charge_id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(tuple_(t.c.event_time, t.c.charge_id) > tuple_(after.event_time, after.charge_id))
        return [_item(row._mapping) for row in await self._session.execute(query)]


def _open_cycle_of(bill_unit_id: uuid.UUID) -> tuple[Any, ...]:
    """The conditions on `bill_cycles` that pick the unit's open cycle (`bill_cycles_one_open`)."""
    c = bill_cycles
    return (c.c.bill_unit_id == bill_unit_id, c.c.status == BillCycleStatus.OPEN.value)


def _item_row(item: BillItem) -> dict[str, Any]:
    c = item.charge
    return {
        "charge_id": c.charge_id,
        "account_id": c.account_id,
        "bill_unit_id": item.bill_unit_id,
        "bill_cycle_id": item.bill_cycle_id,
        "rated_bill_cycle_id": c.bill_cycle_id,
        "kind": c.kind,
        "event_id": c.event_id,
        "charge_offer_code": c.charge_offer_code,
        "charge_offer_version": c.charge_offer_version,
        "charge_code": c.charge_code,
        "tax_code": c.tax_code,
        "quantity": c.quantity,
        "amount": c.amount,
        "currency_code": c.currency_code,
        "event_time": c.event_time,
        "late": item.late,
        "period_start_date": item.period.start,
        "period_end_date": item.period.end,
        "receive_time": item.receive_time,
        "unrounded_amount": c.unrounded_amount,
        "tiers": tiers_to_json(c.tiers) if c.tiers else None,
    }


def tiers_to_json(tiers: Iterable[Tier]) -> list[dict[str, Any]]:
    """Tier bands as JSONB: decimals as strings, so no digit is lost."""
    return [
        {
            "tier": t.tier,
            "units": format(t.units, "f"),
            "unit_price": format(t.unit_price, "f"),
            "flat_fee": format(t.flat_fee, "f"),
            "amount": format(t.amount, "f"),
        }
        for t in tiers
    ]


def tiers_from_json(value: Any) -> tuple[Tier, ...]:
    if not value:  # most charges and lines have none (JSON null, or SQL NULL)
        return ()
    return tuple(
        Tier(
            int(t["tier"]), Decimal(t["units"]), Decimal(t["unit_price"]), Decimal(t["flat_fee"]), Decimal(t["amount"])
        )
        for t in value
    )


def _item(row: Any) -> BillItem:
    charge = Charge(
        charge_id=row["charge_id"],
        account_id=row["account_id"],
        kind=row["kind"],
        event_id=row["event_id"],
        charge_offer_code=row["charge_offer_code"],
        charge_offer_version=row["charge_offer_version"],
        charge_code=row["charge_code"],
        tax_code=row["tax_code"],
        quantity=row["quantity"],
        amount=_plain(row["amount"]),
        currency_code=row["currency_code"],
        event_time=row["event_time"],
        bill_cycle_id=row["rated_bill_cycle_id"],
        late=row["late"],
        unrounded_amount=row["unrounded_amount"],
        tiers=tiers_from_json(row["tiers"]),
    )
    return BillItem(
        charge=charge,
        bill_unit_id=row["bill_unit_id"],
        bill_cycle_id=row["bill_cycle_id"],
        period=Period(row["period_start_date"], row["period_end_date"]),
        late=row["late"],
        receive_time=row["receive_time"],
        seq=row["seq"],
    )


def _plain(value: Decimal) -> Decimal:
    """A NUMERIC(38, 9) amount read back without the trailing zeros of its scale (0.750000000 ->
    0.75). Unconstrained NUMERIC columns (quantities, rates) keep the digits they were written
    with and are read as they are."""
    normal = value.normalize()
    # normalize() writes integers in exponent form (1E+3); quantize them back to units.
    return normal.quantize(Decimal(1)) if normal == normal.to_integral_value() else normal


class BillRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, bill: Bill) -> None:
        """Inserts the bill with its lines (each naming its charges) and taxes. A second bill for
        a cycle violates `bills_one_per_cycle` (IntegrityError) and the whole bill rolls back. The
        items stay as they are: the caller closes the cycle or moves its `billed_through_seq`."""
        await self._session.execute(insert(bills).values(**_bill_row(bill)))
        if bill.lines:
            await self._session.execute(insert(bill_lines), [_line_row(bill, line) for line in bill.lines])
        if bill.taxes:
            await self._session.execute(insert(bill_taxes), [_tax_row(bill, tax) for tax in bill.taxes])

    async def add_many(self, bills_: Sequence[Bill]) -> None:
        """`add` for many bills at once (the set-based bill run): one statement each for the bills,
        their lines and their taxes. The same guard holds (`bills_one_per_cycle`), failing the
        whole set."""
        if not bills_:
            return
        await self._session.execute(*insert_rows(bills, [_bill_row(bill) for bill in bills_]))
        lines = [_line_row(bill, line) for bill in bills_ for line in bill.lines]
        if lines:
            await self._session.execute(*insert_rows(bill_lines, lines))
        taxes = [_tax_row(bill, tax) for bill in bills_ for tax in bill.taxes]
        if taxes:
            await self._session.execute(*insert_rows(bill_taxes, taxes))

    async def statements(self, units: Sequence[tuple[uuid.UUID, uuid.UUID]]) -> dict[uuid.UUID, Statement]:
        """`statement` of many (bill unit, account) pairs in one query (the set-based bill run),
        by bill unit id."""
        if not units:
            return {}
        rows = await self._session.execute(
            text(_STATEMENTS).bindparams(
                bindparam("units", [u for u, _ in units], type_=ARRAY(Uuid)),
                bindparam("accounts", [a for _, a in units], type_=ARRAY(Uuid)),
            )
        )
        return {
            row.bill_unit_id: Statement(
                _plain(Decimal(row.owed or 0)), _plain(Decimal(row.paid or 0)), _plain(Decimal(row.credited or 0))
            )
            for row in rows
        }

    async def accounts_with_credit(self, account_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
        """Of these accounts, those with credit to apply to a new bill: a payment or a credit note
        with something unallocated (the set-based bill run calls `apply_credit` for those only)."""
        if not account_ids:
            return set()
        p, c = payments, credit_notes
        query = union(
            select(p.c.account_id).where(p.c.account_id == _any_of(account_ids), p.c.unallocated > 0),
            select(c.c.account_id).where(c.c.account_id == _any_of(account_ids), c.c.unallocated > 0),
        )
        return {row.account_id for row in await self._session.execute(query)}

    async def get(self, bill_id: uuid.UUID, with_charge_ids: bool = True) -> Bill | None:
        row = (await self._session.execute(select(bills).where(bills.c.bill_id == bill_id))).first()
        if row is None:
            return None
        (bill,) = await self._complete([row._mapping], with_charge_ids)
        return bill

    async def by_request(self, bill_unit_id: uuid.UUID, request_id: uuid.UUID) -> Bill | None:
        """The bill BillNow issued for this request id, if any."""
        t = bills
        row = (
            await self._session.execute(select(t).where(t.c.bill_unit_id == bill_unit_id, t.c.request_id == request_id))
        ).first()
        if row is None:
            return None
        (bill,) = await self._complete([row._mapping], with_charge_ids=True)
        return bill

    async def statement(self, bill_unit_id: uuid.UUID, account_id: uuid.UUID) -> Statement:
        """Where the account stands for a bill being built: what its open bills still owe, and the
        payments (by when billing recorded them, not reversed) and credit notes billing received
        since its last bill was issued (ever, before its first)."""
        t = bills
        owed = select(func.coalesce(func.sum(t.c.total - t.c.paid_amount - t.c.credited_amount), 0)).where(
            t.c.bill_unit_id == bill_unit_id,
            t.c.status.in_([s.value for s in OPEN_STATUSES]),
            t.c.total > t.c.paid_amount + t.c.credited_amount,
        )
        since = (
            select(func.max(t.c.issue_time))
            .where(t.c.bill_unit_id == bill_unit_id, t.c.issue_time.is_not(None))
            .scalar_subquery()
        )
        p = payments
        paid = select(func.coalesce(func.sum(p.c.amount), 0)).where(
            p.c.account_id == account_id, p.c.reversed.is_(False), or_(since.is_(None), p.c.record_time > since)
        )
        c = credit_notes
        credited = select(func.coalesce(func.sum(c.c.total), 0)).where(
            c.c.bill_unit_id == bill_unit_id, or_(since.is_(None), c.c.issue_time > since)
        )
        # One statement, not four: it runs for every bill of a bill run.
        row = (
            await self._session.execute(
                select(owed.scalar_subquery(), paid.scalar_subquery(), credited.scalar_subquery())
            )
        ).one()
        return Statement(_plain(Decimal(row[0] or 0)), _plain(Decimal(row[1] or 0)), _plain(Decimal(row[2] or 0)))

    async def list_for_account(self, account_id: uuid.UUID, before: BillListPosition | None, limit: int) -> list[Bill]:
        """Up to `limit` of the account's bills, newest issue date first (then newest created),
        strictly before `before`; lines without their charge ids."""
        t = bills
        key = tuple_(t.c.issue_date, t.c.create_time, t.c.bill_id)
        query = (
            select(t)
            .where(t.c.account_id == account_id)
            .order_by(t.c.issue_date.desc(), t.c.create_time.desc(), t.c.bill_id.desc())
            .limit(limit)
        )
        if before is not None:
            query = query.where(key < tuple_(before.issue_date, before.create_time, before.bill_id))
        rows = [row._mapping for row in await self._session.execute(query)]
        return await self._complete(rows, with_charge_ids=False)

    async def open_for_unit(self, bill_unit_id: uuid.UUID) -> list[OpenBill]:
        """The unit's bills with something to pay: ISSUED, PARTIALLY_PAID or OVERDUE, each owing
        total - paid_amount (a bill owing nothing, e.g. totalling zero, is left out)."""
        t = bills
        query = select(
            t.c.bill_id, t.c.bill_number, t.c.total, t.c.paid_amount, t.c.credited_amount, t.c.due_date
        ).where(
            t.c.bill_unit_id == bill_unit_id,
            t.c.status.in_([s.value for s in OPEN_STATUSES]),
            t.c.total > t.c.paid_amount + t.c.credited_amount,
        )
        return [
            OpenBill(
                row.bill_id,
                row.bill_number,
                _plain(row.total),
                _plain(row.total - row.paid_amount - row.credited_amount),
                row.due_date,
            )
            for row in await self._session.execute(query)
        ]

    async def open_for_update(self, bill_unit_id: uuid.UUID) -> list[Bill]:
        """The unit's open bills (ISSUED, PARTIALLY_PAID, OVERDUE, owing something), locked
        (FOR UPDATE) in bill_id order, the one order every payment locks bills in; no charge ids."""
        t = bills
        query = (
            select(t)
            .where(
                t.c.bill_unit_id == bill_unit_id,
                t.c.status.in_([s.value for s in OPEN_STATUSES]),
                t.c.total > t.c.paid_amount + t.c.credited_amount,
            )
            .order_by(t.c.bill_id)
            .with_for_update()
        )
        rows = [row._mapping for row in await self._session.execute(query)]
        return await self._complete(rows, with_charge_ids=False)

    async def many_for_update(self, bill_ids: Collection[uuid.UUID]) -> list[Bill]:
        """These bills, locked (FOR UPDATE) in bill_id order; no charge ids."""
        if not bill_ids:
            return []
        t = bills
        query = select(t).where(t.c.bill_id == _any_of(bill_ids)).order_by(t.c.bill_id).with_for_update()
        rows = [row._mapping for row in await self._session.execute(query)]
        return await self._complete(rows, with_charge_ids=False)

    async def claim_overdue(self, now: datetime, limit: int) -> list[tuple[Bill, str]]:
        """Up to `limit` ISSUED / PARTIALLY_PAID bills owing something whose due date is before
        today in their account's time zone, locked FOR UPDATE SKIP LOCKED (replicas claim
        different bills), with the time zone; oldest due first."""
        t = bills
        u = bill_units
        today = func.timezone(u.c.time_zone, bindparam("now", now, type_=DateTime(timezone=True))).cast(Date)
        query = (
            select(t, u.c.time_zone.label("unit_time_zone"))
            .join(u, u.c.bill_unit_id == t.c.bill_unit_id)
            .where(
                t.c.status.in_([BillStatus.ISSUED.value, BillStatus.PARTIALLY_PAID.value]),
                t.c.total > t.c.paid_amount + t.c.credited_amount,
                t.c.due_date < today,
            )
            .order_by(t.c.due_date, t.c.bill_id)
            .limit(limit)
            .with_for_update(of=t, skip_locked=True)
        )
        rows = [row._mapping for row in await self._session.execute(query)]
        found = await self._complete(rows, with_charge_ids=False)
        return [(bill, row["unit_time_zone"]) for bill, row in zip(found, rows, strict=True)]

    async def save_payment_state(self, bill: Bill) -> None:
        """Stores what payments, credits and the overdue marker change: status, paid_amount,
        credited_amount, overdue_time, and the credit applied at issue (with the amount due)."""
        await self._session.execute(
            update(bills)
            .where(bills.c.bill_id == bill.bill_id)
            .values(
                status=bill.status.value,
                paid_amount=bill.paid_amount,
                credited_amount=bill.credited_amount,
                overdue_time=bill.overdue_time,
                credit_applied=bill.credit_applied,
                amount_due=bill.amount_due,
            )
        )

    async def _complete(self, rows: Sequence[Any], with_charge_ids: bool) -> list[Bill]:
        """Bills from their rows, with their lines and taxes (and the lines' charge ids)."""
        ids = [row["bill_id"] for row in rows]
        if not ids:
            return []
        lines: dict[uuid.UUID, list[Any]] = {i: [] for i in ids}
        line_columns = [c for c in bill_lines.c if with_charge_ids or c.name != "charge_ids"]
        for line in await self._session.execute(
            select(*line_columns).where(bill_lines.c.bill_id.in_(ids)).order_by(bill_lines.c.line_number)
        ):
            lines[line.bill_id].append(line)
        taxes: dict[uuid.UUID, list[BillTax]] = {i: [] for i in ids}
        for tax in await self._session.execute(
            select(bill_taxes).where(bill_taxes.c.bill_id.in_(ids)).order_by(bill_taxes.c.tax_code)
        ):
            taxes[tax.bill_id].append(
                BillTax(tax.tax_code, tax.rate, _plain(tax.taxable_amount), _plain(tax.tax_amount))
            )
        return [_bill(row, lines[row["bill_id"]], taxes[row["bill_id"]], with_charge_ids) for row in rows]


# `BillRepository.statement` for many units at once: the same three sums per (unit, account). The
# open statuses are written out (not a parameter) so the planner can use the partial `bills_open`.
_STATEMENTS = f"""
SELECT v.bill_unit_id,
       (SELECT sum(b.total - b.paid_amount - b.credited_amount) FROM bills AS b
         WHERE b.bill_unit_id = v.bill_unit_id
           AND b.status IN ({", ".join(f"'{s.value}'" for s in OPEN_STATUSES)})
           AND b.total > b.paid_amount + b.credited_amount) AS owed,
       (SELECT sum(p.amount) FROM payments AS p
         WHERE p.account_id = v.account_id AND p.reversed IS false
           AND (s.since IS NULL OR p.record_time > s.since)) AS paid,
       (SELECT sum(c.total) FROM credit_notes AS c
         WHERE c.bill_unit_id = v.bill_unit_id AND (s.since IS NULL OR c.issue_time > s.since)) AS credited
FROM unnest(CAST(:units AS uuid[]), CAST(:accounts AS uuid[])) AS v(bill_unit_id, account_id)
CROSS JOIN LATERAL (
    SELECT max(b.issue_time) AS since FROM bills AS b
     WHERE b.bill_unit_id = v.bill_unit_id AND b.issue_time IS NOT NULL
) AS s
"""


def _line_row(bill: Bill, line: BillLine) -> dict[str, Any]:
    return {
        "bill_id": bill.bill_id,
        "line_number": line.line_number,
        "period_start_date": line.key.period_start,
        "period_end_date": line.key.period_end,
        "charge_offer_code": line.key.charge_offer_code,
        "charge_code": line.key.charge_code,
        "tax_code": line.key.tax_code,
        "quantity": line.quantity,
        "amount": line.amount,
        "charge_count": len(line.charge_ids),
        "charge_ids": list(line.charge_ids),
        "unit_price": line.unit_price,
        "tiers": tiers_to_json(line.tiers) if line.tiers else None,
    }


def _tax_row(bill: Bill, tax: BillTax) -> dict[str, Any]:
    return {
        "bill_id": bill.bill_id,
        "tax_code": tax.tax_code,
        "rate": tax.rate,
        "taxable_amount": tax.taxable_amount,
        "tax_amount": tax.tax_amount,
    }


def _bill_row(bill: Bill) -> dict[str, Any]:
    number = bill.number
    return {
        "bill_id": bill.bill_id,
        "bill_unit_id": bill.bill_unit_id,
        "account_id": bill.account_id,
        "bill_cycle_id": bill.bill_cycle_id,
        "status": bill.status.value,
        "bill_number": number.number if number else None,
        "number_series": number.series if number else None,
        "number_sequence": number.sequence if number else None,
        "currency_code": bill.currency_code,
        "period_start_date": bill.period.start,
        "period_end_date": bill.period.end,
        "issue_date": bill.issue_date,
        "due_date": bill.due_date,
        "subtotal": bill.subtotal,
        "tax_total": bill.tax_total,
        "total": bill.total,
        "create_time": bill.create_time,
        "issue_time": bill.issue_time,
        "suppressed": bill.suppressed,
        "paid_amount": bill.paid_amount,
        "overdue_time": bill.overdue_time,
        "trigger": bill.trigger.value,
        "request_id": bill.request_id,
        "previous_balance": bill.statement.previous_balance,
        "payments_received": bill.statement.payments_received,
        "credits": bill.statement.credits,
        "credit_applied": bill.credit_applied,
        "amount_due": bill.amount_due,
        "credited_amount": bill.credited_amount,
    }


def _bill(row: Any, lines: Iterable[Any], taxes: list[BillTax], with_charge_ids: bool) -> Bill:
    bill_id = row["bill_id"]
    number = None
    if row["bill_number"] is not None:
        number = BillNumber(row["bill_number"], row["number_series"], row["number_sequence"])
    return Bill(
        bill_id=bill_id,
        bill_unit_id=row["bill_unit_id"],
        account_id=row["account_id"],
        bill_cycle_id=row["bill_cycle_id"],
        currency_code=row["currency_code"],
        period=Period(row["period_start_date"], row["period_end_date"]),
        issue_date=row["issue_date"],
        due_date=row["due_date"],
        lines=[
            BillLine(
                line.line_number,
                LineKey(
                    line.period_start_date,
                    line.period_end_date,
                    line.charge_offer_code,
                    line.charge_code,
                    line.tax_code,
                ),
                line.quantity,
                _plain(line.amount),
                tuple(line.charge_ids) if with_charge_ids else (),
                line.charge_count,
                line.unit_price,
                tiers_from_json(line.tiers),
            )
            for line in lines
        ],
        taxes=taxes,
        subtotal=_plain(row["subtotal"]),
        tax_total=_plain(row["tax_total"]),
        total=_plain(row["total"]),
        create_time=row["create_time"],
        status=BillStatus(row["status"]),
        number=number,
        issue_time=row["issue_time"],
        suppressed=row["suppressed"],
        paid_amount=_plain(row["paid_amount"]),
        overdue_time=row["overdue_time"],
        trigger=BillTrigger(row["trigger"]),
        request_id=row["request_id"],
        statement=Statement(_plain(row["previous_balance"]), _plain(row["payments_received"]), _plain(row["credits"])),
        credit_applied=_plain(row["credit_applied"]),
        credited_amount=_plain(row["credited_amount"]),
    )


class BillNumberSeriesRepository:
    """Gapless counters: taken inside the issuing transaction, so a rollback gives the number back.
    Bills number from `bill_number_series`, credit notes from `credit_note_number_series`."""

    def __init__(self, session: AsyncSession, table: Table = bill_number_series) -> None:
        self._session = session
        self._table = table

    async def lock(self, series_keys: Iterable[str]) -> None:
        """Creates the series that do not exist yet and locks them all, in key order, until the
        transaction ends. A closer pass locks every series it may number from before numbering, so
        passes running at once wait for each other in one order instead of deadlocking."""
        t = self._table
        for key in sorted(set(series_keys)):
            statement = insert(t).values(series_key=key, last_number=0)
            await self._session.execute(
                statement.on_conflict_do_update(index_elements=[t.c.series_key], set_={"last_number": t.c.last_number})
            )

    async def next(self, series_key: str) -> int:
        """The series' next number (UPDATE ... RETURNING; the row is created at 0 if missing)."""
        t = self._table
        result = await self._session.execute(
            insert(t)
            .values(series_key=series_key, last_number=1)
            .on_conflict_do_update(index_elements=[t.c.series_key], set_={"last_number": t.c.last_number + 1})
            .returning(t.c.last_number)
        )
        return int(result.scalar_one())

    async def take(self, counts: Mapping[str, int]) -> dict[str, int]:
        """A block of `counts[series]` numbers from each series, in one statement (`next` for
        many numbers: one UPDATE ... RETURNING per series row, created at 0 if missing); returns
        the first number of each block (the block runs from it, without a gap)."""
        wanted = {key: n for key, n in sorted(counts.items()) if n > 0}
        if not wanted:
            return {}
        t = self._table.name
        result = await self._session.execute(
            text(
                f"INSERT INTO {t} (series_key, last_number) "
                "SELECT v.series_key, v.n FROM unnest(CAST(:keys AS text[]), CAST(:counts AS bigint[])) "
                "WITH ORDINALITY AS v(series_key, n, ordinal) ORDER BY v.ordinal "
                f"ON CONFLICT (series_key) DO UPDATE SET last_number = {t}.last_number + excluded.last_number "
                "RETURNING series_key, last_number"
            ).bindparams(
                bindparam("keys", list(wanted), type_=ARRAY(Text)),
                bindparam("counts", list(wanted.values()), type_=ARRAY(BigInteger)),
            )
        )
        return {row.series_key: int(row.last_number) - wanted[row.series_key] + 1 for row in result}


@dataclass(frozen=True)
class ReceivedPayment:
    payment_id: uuid.UUID
    account_id: uuid.UUID
    currency_code: str
    amount: Decimal
    unallocated: Decimal
    reversed: bool
    received_time: datetime


def _payment(row: Any) -> ReceivedPayment:
    return ReceivedPayment(
        row.payment_id,
        row.account_id,
        row.currency_code,
        _plain(row.amount),
        _plain(row.unallocated),
        row.reversed,
        row.received_time,
    )


class PaymentRepository:
    """The payments billing received from balance, their unallocated remainders (the account's
    credit) and their allocations to bills."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, payment: ReceivedPayment, now: datetime) -> bool:
        """Inserts the payment unless billing has it already (False then: nothing to do)."""
        t = payments
        result = await self._session.execute(
            insert(t)
            .values(
                payment_id=payment.payment_id,
                account_id=payment.account_id,
                currency_code=payment.currency_code,
                amount=payment.amount,
                unallocated=payment.unallocated,
                reversed=payment.reversed,
                received_time=payment.received_time,
                record_time=now,
            )
            .on_conflict_do_nothing(index_elements=[t.c.payment_id])
            .returning(t.c.payment_id)
        )
        return result.first() is not None

    async def get(self, payment_id: uuid.UUID, for_update: bool = False) -> ReceivedPayment | None:
        query = select(payments).where(payments.c.payment_id == payment_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).first()
        return _payment(row) if row is not None else None

    async def set_unallocated(self, payment_id: uuid.UUID, unallocated: Decimal, reversed_: bool = False) -> None:
        await self._session.execute(
            update(payments)
            .where(payments.c.payment_id == payment_id)
            .values(unallocated=unallocated, reversed=reversed_)
        )

    async def next_allocation_sequence(self, payment_id: uuid.UUID, first_only: bool = False) -> int | None:
        """Counts one more PaymentAllocated of the payment and returns its sequence (1, 2, ...);
        with `first_only`, only when none was announced yet (None otherwise). The payment's row is
        updated, so its allocations are numbered one at a time whatever the replicas."""
        t = payments
        query = update(t).where(t.c.payment_id == payment_id)
        if first_only:
            query = query.where(t.c.allocation_sequence == 0)
        result = await self._session.execute(
            query.values(allocation_sequence=t.c.allocation_sequence + 1).returning(t.c.allocation_sequence)
        )
        sequence = result.scalar_one_or_none()
        if sequence is None and not first_only:
            raise LookupError(f"billing has no payment {payment_id}")
        return None if sequence is None else int(sequence)

    async def credits_for_update(self, account_id: uuid.UUID) -> list[ReceivedPayment]:
        """The account's payments with something unallocated, oldest received first, locked."""
        t = payments
        query = (
            select(t)
            .where(t.c.account_id == account_id, t.c.unallocated > 0)
            .order_by(t.c.received_time, t.c.payment_id)
            .with_for_update()
        )
        return [_payment(row) for row in await self._session.execute(query)]

    async def credit_total(self, account_id: uuid.UUID) -> Decimal:
        """The account's credit from payments: their unallocated remainders (not locked)."""
        t = payments
        total = await self._session.scalar(
            select(func.coalesce(func.sum(t.c.unallocated), 0)).where(t.c.account_id == account_id)
        )
        return _plain(Decimal(total or 0))

    async def allocate(self, payment_id: uuid.UUID, bill_id: uuid.UUID, amount: Decimal, now: datetime) -> bool:
        """Records what the payment pays on the bill; False if it has paid on that bill already."""
        t = payment_allocations
        result = await self._session.execute(
            insert(t)
            .values(payment_id=payment_id, bill_id=bill_id, amount=amount, create_time=now)
            .on_conflict_do_nothing(index_elements=[t.c.payment_id, t.c.bill_id])
            .returning(t.c.bill_id)
        )
        return result.first() is not None

    async def allocations_of(self, payment_id: uuid.UUID) -> dict[uuid.UUID, Decimal]:
        t = payment_allocations
        rows = await self._session.execute(select(t.c.bill_id, t.c.amount).where(t.c.payment_id == payment_id))
        return {row.bill_id: _plain(row.amount) for row in rows}

    async def remove_allocations(self, payment_id: uuid.UUID) -> None:
        t = payment_allocations
        await self._session.execute(t.delete().where(t.c.payment_id == payment_id))


class ThresholdRepository:
    """The threshold mark on bill units: set by the ChargesCreated consumer when the unbilled amount
    reaches the unit's threshold, cleared by the threshold bill (docs/billing.md, "Other triggers")."""

    CHANNEL = "evolutivo_billing_threshold"

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def mark_reached(self, bill_unit_id: uuid.UUID, now: datetime) -> bool:
        """Marks the unit's threshold reached (once: an unbilled mark is left as it is) and
        notifies the threshold billers when the transaction commits; False if it was marked."""
        t = bill_units
        result = await self._session.execute(
            update(t)
            .where(t.c.bill_unit_id == bill_unit_id, t.c.threshold_reached_time.is_(None))
            .values(threshold_reached_time=now)
            .returning(t.c.bill_unit_id)
        )
        if result.first() is None:
            return False
        await self._session.execute(text(f"NOTIFY {self.CHANNEL}"))
        return True

    async def due(self, limit: int) -> list[tuple[uuid.UUID, str]]:
        """Up to `limit` marked units (not locked), earliest mark first, with their time zones."""
        t = bill_units
        query = (
            select(t.c.bill_unit_id, t.c.time_zone)
            .where(t.c.threshold_reached_time.is_not(None))
            .order_by(t.c.threshold_reached_time, t.c.bill_unit_id)
            .limit(limit)
        )
        return [(row.bill_unit_id, row.time_zone) for row in await self._session.execute(query)]

    async def claim(self, bill_unit_ids: Collection[uuid.UUID]) -> list[uuid.UUID]:
        """Of these units, the ones still marked, locked FOR UPDATE SKIP LOCKED (replicas, and
        anything else holding a unit, are skipped: a later pass finds them)."""
        if not bill_unit_ids:
            return []
        t = bill_units
        query = (
            select(t.c.bill_unit_id)
            .where(t.c.bill_unit_id == _any_of(bill_unit_ids), t.c.threshold_reached_time.is_not(None))
            .order_by(t.c.bill_unit_id)
            .with_for_update(skip_locked=True)
        )
        return [row.bill_unit_id for row in await self._session.execute(query)]

    async def clear(self, bill_unit_id: uuid.UUID) -> None:
        t = bill_units
        await self._session.execute(
            update(t).where(t.c.bill_unit_id == bill_unit_id).values(threshold_reached_time=None)
        )
