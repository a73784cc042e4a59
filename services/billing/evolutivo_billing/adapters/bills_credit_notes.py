"""Loads and stores credit notes, what earlier notes credited of a bill, and their allocations."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from evolutivo_billing.adapters.bills_repository import _plain
from evolutivo_billing.adapters.orm import credit_note_allocations, credit_note_lines, credit_notes
from evolutivo_billing.domain.bills import BillNumber
from evolutivo_billing.domain.credit_notes import Credited, CreditNote, CreditNoteLine, CreditNoteListPosition


@dataclass(frozen=True)
class CreditNoteCredit:
    """A credit note's unallocated remainder: account credit for the next bills."""

    credit_note_id: uuid.UUID
    currency_code: str
    unallocated: Decimal
    total: Decimal


class CreditNoteRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, note: CreditNote) -> None:
        if note.number is None:
            raise ValueError(f"credit note {note.credit_note_id} is stored once numbered")
        await self._session.execute(
            insert(credit_notes).values(
                credit_note_id=note.credit_note_id,
                bill_id=note.bill_id,
                bill_unit_id=note.bill_unit_id,
                account_id=note.account_id,
                request_id=note.request_id,
                credit_note_number=note.number.number,
                number_series=note.number.series,
                number_sequence=note.number.sequence,
                currency_code=note.currency_code,
                reason=note.reason,
                actor=note.actor,
                subtotal=note.subtotal,
                tax_total=note.tax_total,
                total=note.total,
                issue_date=note.issue_date,
                issue_time=note.issue_time,
                voids_bill=note.voids_bill,
                unallocated=note.unallocated,
                # Its allocation at issue (allocate_to) is announced as number 1.
                allocation_sequence=1,
            )
        )
        await self._session.execute(
            insert(credit_note_lines),
            [
                {
                    "credit_note_id": note.credit_note_id,
                    "line_number": line.line_number,
                    "bill_line_number": line.bill_line_number,
                    "charge_offer_code": line.charge_offer_code,
                    "charge_code": line.charge_code,
                    "tax_code": line.tax_code,
                    "amount": line.amount,
                }
                for line in note.lines
            ],
        )

    async def get(self, credit_note_id: uuid.UUID) -> CreditNote | None:
        row = (
            await self._session.execute(select(credit_notes).where(credit_notes.c.credit_note_id == credit_note_id))
        ).first()
        if row is None:
            return None
        (note,) = await self._complete([row._mapping])
        return note

    async def by_request(self, bill_unit_id: uuid.UUID, request_id: uuid.UUID) -> CreditNote | None:
        t = credit_notes
        row = (
            await self._session.execute(select(t).where(t.c.bill_unit_id == bill_unit_id, t.c.request_id == request_id))
        ).first()
        if row is None:
            return None
        (note,) = await self._complete([row._mapping])
        return note

    async def credited(self, bill_id: uuid.UUID) -> Credited:
        """What the bill's credit notes credited so far: per bill line and per tax code."""
        lines: dict[int, Decimal] = defaultdict(Decimal)
        taxable: dict[str, Decimal] = defaultdict(Decimal)
        c, n = credit_note_lines, credit_notes
        query = (
            select(c.c.bill_line_number, c.c.tax_code, c.c.amount)
            .join(n, n.c.credit_note_id == c.c.credit_note_id)
            .where(n.c.bill_id == bill_id)
        )
        for row in await self._session.execute(query):
            lines[row.bill_line_number] += _plain(row.amount)
            taxable[row.tax_code] += _plain(row.amount)
        return Credited(dict(lines), dict(taxable))

    async def list_for_account(
        self, account_id: uuid.UUID, bill_id: uuid.UUID | None, before: CreditNoteListPosition | None, limit: int
    ) -> list[CreditNote]:
        """Up to `limit` of the account's credit notes (of one bill when given), newest first."""
        t = credit_notes
        query = (
            select(t)
            .where(t.c.account_id == account_id)
            .order_by(t.c.issue_time.desc(), t.c.credit_note_id.desc())
            .limit(limit)
        )
        if bill_id is not None:
            query = query.where(t.c.bill_id == bill_id)
        if before is not None:
            query = query.where(
                tuple_(t.c.issue_time, t.c.credit_note_id) < tuple_(before.issue_time, before.credit_note_id)
            )
        return await self._complete([row._mapping for row in await self._session.execute(query)])

    async def set_unallocated(self, credit_note_id: uuid.UUID, unallocated: Decimal) -> None:
        await self._session.execute(
            update(credit_notes).where(credit_notes.c.credit_note_id == credit_note_id).values(unallocated=unallocated)
        )

    async def allocate(self, credit_note_id: uuid.UUID, bill_id: uuid.UUID, amount: Decimal, now: datetime) -> None:
        """Records what the credit note took off the bill (once per bill: a second raises)."""
        await self._session.execute(
            insert(credit_note_allocations).values(
                credit_note_id=credit_note_id, bill_id=bill_id, amount=amount, create_time=now
            )
        )

    async def next_allocation_sequence(self, credit_note_id: uuid.UUID) -> int:
        """Counts one more CreditNoteAllocated of the note and returns its sequence (2, 3, ... after
        the one at issue). The note's row is updated, so its allocations are numbered one at a time
        whatever the replicas."""
        t = credit_notes
        result = await self._session.execute(
            update(t)
            .where(t.c.credit_note_id == credit_note_id)
            .values(allocation_sequence=t.c.allocation_sequence + 1)
            .returning(t.c.allocation_sequence)
        )
        sequence = result.scalar_one_or_none()
        if sequence is None:
            raise LookupError(f"billing has no credit note {credit_note_id}")
        return int(sequence)

    async def credits_for_update(self, account_id: uuid.UUID) -> list[CreditNoteCredit]:
        """The account's credit notes with something unallocated, oldest issued first, locked."""
        t = credit_notes
        query = (
            select(t.c.credit_note_id, t.c.currency_code, t.c.unallocated, t.c.total)
            .where(t.c.account_id == account_id, t.c.unallocated > 0)
            .order_by(t.c.issue_time, t.c.credit_note_id)
            .with_for_update()
        )
        return [
            CreditNoteCredit(row.credit_note_id, row.currency_code, _plain(row.unallocated), _plain(row.total))
            for row in await self._session.execute(query)
        ]

    async def credit_total(self, account_id: uuid.UUID) -> Decimal:
        """The account's credit from credit notes (not locked)."""
        t = credit_notes
        total = await self._session.scalar(
            select(func.coalesce(func.sum(t.c.unallocated), 0)).where(t.c.account_id == account_id)
        )
        return _plain(Decimal(total or 0))

    async def _complete(self, rows: Sequence[Any]) -> list[CreditNote]:
        ids = [row["credit_note_id"] for row in rows]
        if not ids:
            return []
        lines: dict[uuid.UUID, list[CreditNoteLine]] = {i: [] for i in ids}
        c = credit_note_lines
        for line in await self._session.execute(
            select(c).where(c.c.credit_note_id.in_(ids)).order_by(c.c.credit_note_id, c.c.line_number)
        ):
            lines[line.credit_note_id].append(
                CreditNoteLine(
                    line.line_number,
                    line.bill_line_number,
                    line.charge_offer_code,
                    line.charge_code,
                    line.tax_code,
                    _plain(line.amount),
                )
            )
        return [
            CreditNote(
                credit_note_id=row["credit_note_id"],
                bill_id=row["bill_id"],
                bill_unit_id=row["bill_unit_id"],
                account_id=row["account_id"],
                request_id=row["request_id"],
                currency_code=row["currency_code"],
                reason=row["reason"],
                actor=row["actor"],
                lines=lines[row["credit_note_id"]],
                subtotal=_plain(row["subtotal"]),
                tax_total=_plain(row["tax_total"]),
                total=_plain(row["total"]),
                issue_date=row["issue_date"],
                issue_time=row["issue_time"],
                voids_bill=row["voids_bill"],
                number=BillNumber(row["credit_note_number"], row["number_series"], row["number_sequence"]),
                unallocated=_plain(row["unallocated"]),
            )
            for row in rows
        ]
