"""Use cases of credit notes (docs/billing.md, "Credit notes"): issuing one against a bill, with
its gapless number, its credit allocated to the bill (or kept as account credit for the next
bills) and the void of a bill it fully credits; reading them."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from evolutivo_runtime.errors import InvalidArgument, NotFound

from evolutivo_billing.domain.credit_notes import (
    DEFAULT_NUMBER_FORMAT,
    CreditLineRequest,
    CreditNote,
    CreditNoteListPosition,
)
from evolutivo_billing.domain.numbering import NumberFormat
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CreditNoteRequest:
    bill_id: uuid.UUID
    whole_bill: bool
    lines: Sequence[CreditLineRequest]
    reason: str
    actor: str
    request_id: uuid.UUID


async def create_credit_note(
    uow: BillingUnitOfWork, request: CreditNoteRequest, numbering: NumberFormat | None = None
) -> CreditNote:
    """Issues the credit note, or returns the one issued for the same request id (the same bill's;
    another bill's is refused). Validated before anything is written: a refused note changes
    nothing and takes no number. Its credit goes to the bill while it owes something (a note for
    all of an unpaid bill voids it), the rest is account credit that the next bills take.

    Locks: the bill's unit, then the bill, then the credit note series (last, held to commit)."""
    numbering = numbering or NumberFormat(DEFAULT_NUMBER_FORMAT)
    async with uow:
        bill = await uow.bills.get(request.bill_id, with_charge_ids=False)
        if bill is None:
            raise NotFound("bill", str(request.bill_id))
        unit = await uow.bill_units.get(bill.bill_unit_id, for_update=True)
        assert unit is not None, "a bill's unit is never deleted"
        done = await uow.credit_notes.by_request(unit.bill_unit_id, request.request_id)
        if done is not None:
            if done.bill_id != request.bill_id:
                raise InvalidArgument("request_id", "was used for a credit note of another bill; use a new id")
            return done
        (bill,) = await uow.bills.many_for_update([request.bill_id])
        now = uow.clock.now()
        today = now.astimezone(ZoneInfo(unit.time_zone)).date()
        note = CreditNote.for_bill(
            bill,
            whole_bill=request.whole_bill,
            requested=request.lines,
            reason=request.reason,
            actor=request.actor,
            request_id=request.request_id,
            credited=await uow.credit_notes.credited(bill.bill_id),
            today=today,
            now=now,
        )
        series = numbering.series(today)
        note.issue(numbering.number(today, await uow.credit_note_numbers.next(series)))
        taken = note.allocate_to(bill)
        await uow.credit_notes.add(note)
        if taken > 0:
            await uow.credit_notes.allocate(note.credit_note_id, bill.bill_id, taken, now)
            await uow.bills.save_payment_state(bill)
        uow.track(note)
        uow.track(bill)
        await uow.commit()
    log.info(
        "credit note issued",
        extra={
            "credit_note_id": str(note.credit_note_id),
            "bill_id": str(bill.bill_id),
            "voids_bill": note.voids_bill,
            "account_credit": str(note.unallocated),
        },
    )
    return note


async def get_credit_note(uow: BillingUnitOfWork, credit_note_id: uuid.UUID) -> CreditNote:
    async with uow:
        note = await uow.credit_notes.get(credit_note_id)
        if note is None:
            raise NotFound("credit_note", str(credit_note_id))
        return note


async def list_credit_notes(
    uow: BillingUnitOfWork,
    account_id: uuid.UUID,
    bill_id: uuid.UUID | None,
    page_size: int,
    before: CreditNoteListPosition | None,
) -> tuple[list[CreditNote], CreditNoteListPosition | None]:
    """One page of the account's credit notes (of one bill when given), newest first. NotFound when
    billing has no bill unit for the account."""
    async with uow:
        if await uow.bill_units.for_account(account_id) is None:
            raise NotFound("account", str(account_id))
        found = await uow.credit_notes.list_for_account(account_id, bill_id, before, page_size + 1)
    if len(found) > page_size:
        page = found[:page_size]
        last = page[-1]
        return page, CreditNoteListPosition(last.issue_time, last.credit_note_id)
    return found, None
