"""Credit notes: corrections of issued bills. Plain Python: no protobuf, no SQL.

Rules (docs/billing.md, "Credit notes"):
- Only against an issued bill (not DRAFT, not VOID); the whole bill or chosen lines, each at most
  what the line billed less what earlier credit notes credited of it; a reason and an actor.
- Tax per the bill's rate of each tax code, rounded cumulatively: a note's tax of a code is the
  rounded tax of everything credited of that code so far, less the rounded tax of what was
  credited before it. So the notes of a bill never credit more tax than the bill charged, and
  crediting every line in full gives back the bill's total to the cent.
- A credit note for all of a bill that no payment has paid voids it.
- Each time its credit goes to bills it is announced (CreditNoteAllocated), numbered per note:
  1 at issue (to its own bill, possibly nothing), 2, 3, ... each later bill that takes its credit.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, localcontext

from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument

from evolutivo_billing.domain.bills import (
    OPEN_STATUSES,
    PRECISION,
    Bill,
    BillLine,
    BillNumber,
    BillStatus,
    currency_exponent,
    is_rounded,
    round_money,
)
from evolutivo_billing.domain.payments import Allocation, check_allocation

# BILLING_CREDIT_NOTE_NUMBER_FORMAT's default: a series of its own, like bills'.
DEFAULT_NUMBER_FORMAT = "CN-{year}-{seq:06d}"
MAX_REASON = 500
MAX_ACTOR = 200


@dataclass(frozen=True)
class CreditLineRequest:
    """A bill line to credit; `amount` None credits all that is left of it."""

    bill_line_number: int
    amount: Decimal | None = None
    # The currency the amount was given in (empty: the bill's).
    currency_code: str = ""


@dataclass(frozen=True)
class Credited:
    """What earlier credit notes of a bill credited: per bill line, and per tax code (before tax)."""

    lines: Mapping[int, Decimal] = field(default_factory=dict)
    taxable: Mapping[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class CreditNoteLine:
    line_number: int
    bill_line_number: int
    charge_offer_code: str
    charge_code: str
    tax_code: str
    amount: Decimal


@dataclass
class CreditNote:
    credit_note_id: uuid.UUID
    bill_id: uuid.UUID
    bill_unit_id: uuid.UUID
    account_id: uuid.UUID
    request_id: uuid.UUID
    currency_code: str
    reason: str
    actor: str
    lines: list[CreditNoteLine]
    subtotal: Decimal
    tax_total: Decimal
    total: Decimal
    issue_date: date
    issue_time: datetime
    # It credits all of a bill no payment touched: the bill goes VOID.
    voids_bill: bool = False
    number: BillNumber | None = None
    # What no bill took (yet): the account's credit, applied to its next bills.
    unallocated: Decimal = Decimal(0)
    events: list[object] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def for_bill(
        cls,
        bill: Bill,
        *,
        whole_bill: bool,
        requested: Sequence[CreditLineRequest],
        reason: str,
        actor: str,
        request_id: uuid.UUID,
        credited: Credited,
        today: date,
        now: datetime,
    ) -> CreditNote:
        """The credit note of `bill` for what was asked, refused (InvalidArgument naming the field,
        FailedPrecondition) when it breaks a rule; not numbered yet."""
        reason = reason.strip()
        actor = actor.strip()
        if not reason:
            raise InvalidArgument("reason", "is required")
        if len(reason) > MAX_REASON:
            raise InvalidArgument("reason", f"must be at most {MAX_REASON} characters")
        if not actor:
            raise InvalidArgument("actor", "is required")
        if len(actor) > MAX_ACTOR:
            raise InvalidArgument("actor", f"must be at most {MAX_ACTOR} characters")
        if bill.status is BillStatus.DRAFT:
            raise FailedPrecondition("BILL_NOT_ISSUED", f"bill {bill.bill_id} was never issued: nothing to credit")
        if bill.status is BillStatus.VOID:
            raise FailedPrecondition("BILL_VOID", f"bill {bill.bill_id} is void: nothing to credit")
        if whole_bill and requested:
            raise InvalidArgument("lines", "must be empty when whole_bill is set")
        if not whole_bill and not requested:
            raise InvalidArgument("lines", "name at least one line to credit, or set whole_bill")
        exponent = currency_exponent(bill.currency_code)
        by_number = {line.line_number: line for line in bill.lines}

        def left(line: BillLine) -> Decimal:
            return line.amount - credited.lines.get(line.line_number, Decimal(0))

        chosen: list[tuple[BillLine, Decimal]] = []
        if whole_bill:
            chosen = [(line, left(line)) for line in bill.lines if left(line) != 0]
        else:
            seen: set[int] = set()
            for i, ask in enumerate(requested):
                name = f"lines[{i}]"
                line = by_number.get(ask.bill_line_number)
                if line is None:
                    raise InvalidArgument(
                        f"{name}.bill_line_number", f"bill {bill.bill_id} has no line {ask.bill_line_number}"
                    )
                if ask.bill_line_number in seen:
                    raise InvalidArgument(f"{name}.bill_line_number", f"line {ask.bill_line_number} is named twice")
                seen.add(ask.bill_line_number)
                remaining = left(line)
                amount = remaining if ask.amount is None else ask.amount
                if ask.amount is not None:
                    if ask.currency_code and ask.currency_code != bill.currency_code:
                        raise InvalidArgument(
                            f"{name}.amount.currency_code", f"must be the bill's {bill.currency_code}"
                        )
                    if not ask.amount.is_finite() or ask.amount <= 0:
                        raise InvalidArgument(f"{name}.amount", "must be positive")
                    if not is_rounded(ask.amount, exponent):
                        raise InvalidArgument(f"{name}.amount", "must be rounded to the currency's minor unit")
                if amount <= 0 or amount > remaining:
                    raise InvalidArgument(
                        f"{name}.amount",
                        f"line {line.line_number} has {max(remaining, Decimal(0))} left to credit"
                        f" (billed {line.amount}, less earlier credit notes)",
                    )
                chosen.append((line, amount))
            chosen.sort(key=lambda pair: pair[0].line_number)
        lines = [
            CreditNoteLine(
                number,
                line.line_number,
                line.key.charge_offer_code,
                line.key.charge_code,
                line.key.tax_code,
                amount,
            )
            for number, (line, amount) in enumerate(chosen, start=1)
        ]
        rates = {tax.tax_code: tax.rate for tax in bill.taxes}
        base: dict[str, Decimal] = defaultdict(Decimal)
        with localcontext() as ctx:
            ctx.prec = PRECISION
            for credit_line in lines:
                base[credit_line.tax_code] += credit_line.amount
            tax_total = Decimal(0)
            for code, amount in base.items():
                rate = rates.get(code, Decimal(0))
                before = credited.taxable.get(code, Decimal(0))
                tax_total += round_money(rate * (before + amount), exponent) - round_money(rate * before, exponent)
            subtotal = sum((line.amount for line in lines), Decimal(0))
            total = subtotal + tax_total
        if total <= 0:
            raise FailedPrecondition("NOTHING_TO_CREDIT", f"bill {bill.bill_id} has nothing left to credit")
        crediting = {c.bill_line_number: c.amount for c in lines}
        fully_credited = all(left(line) == crediting.get(line.line_number, Decimal(0)) for line in bill.lines)
        voids = fully_credited and bill.paid_amount == 0 and bill.status in OPEN_STATUSES and bill.open_amount > 0
        return cls(
            credit_note_id=uuid.uuid4(),
            bill_id=bill.bill_id,
            bill_unit_id=bill.bill_unit_id,
            account_id=bill.account_id,
            request_id=request_id,
            currency_code=bill.currency_code,
            reason=reason,
            actor=actor,
            lines=lines,
            subtotal=subtotal,
            tax_total=tax_total,
            total=total,
            issue_date=today,
            issue_time=now.astimezone(UTC),
            voids_bill=voids,
        )

    def issue(self, number: BillNumber) -> None:
        """Numbered (gapless, in its own series) and issued: records CreditNoteIssued."""
        if self.number is not None:
            raise ValueError(f"credit note {self.credit_note_id} is numbered already")
        self.number = number
        self.events.append(CreditNoteIssued(self))

    def allocate_to(self, bill: Bill) -> Decimal:
        """Takes what it can off the bill it corrects (voiding it when it should) and keeps the
        rest as the account's credit; returns what the bill took."""
        take = min(self.total, bill.open_amount) if bill.is_open else Decimal(0)
        if self.voids_bill:
            bill.void(take, self.credit_note_id)
        elif take > 0:
            bill.take_credit(take)
        self.unallocated = self.total - take
        # Announced as its allocation number 1, also when its bill took nothing.
        given = (Allocation(bill.bill_id, take),) if take > 0 else ()
        self.events.append(self.announcer().allocated(FIRST_ALLOCATION, given, self.unallocated))
        return take

    def announcer(self) -> CreditNoteAllocations:
        return CreditNoteAllocations(self.credit_note_id, self.account_id, self.currency_code, self.total)


@dataclass(frozen=True)
class CreditNoteIssued:
    credit_note: CreditNote


# The allocation made when a note is issued; later bills taking its credit are 2, 3, ...
FIRST_ALLOCATION = 1


@dataclass(frozen=True)
class CreditNoteAllocated:
    """One allocation of a credit note's credit, announced so that others (the ERP gateway) apply
    the note as billing did: `sequence` 1 is what its own bill took when it was issued (possibly
    nothing), 2, 3, ... each later bill that took part of its remaining credit. `unallocated` is
    what of the note is left as account credit after it."""

    credit_note_id: uuid.UUID
    account_id: uuid.UUID
    currency_code: str
    sequence: int
    allocations: tuple[Allocation, ...]
    credit_note_total: Decimal
    unallocated: Decimal


@dataclass
class CreditNoteAllocations:
    """A credit note as allocation sees it: the aggregate whose allocations are announced, in
    order (as PaymentAllocations is for a payment)."""

    credit_note_id: uuid.UUID
    account_id: uuid.UUID
    currency_code: str
    total: Decimal
    events: list[object] = field(default_factory=list)

    def allocated(self, sequence: int, allocations: Sequence[Allocation], unallocated: Decimal) -> CreditNoteAllocated:
        """Records allocation number `sequence` (what it gave each bill, what is left after it)."""
        check_allocation(self.credit_note_id, self.total, sequence, allocations, unallocated)
        event = CreditNoteAllocated(
            self.credit_note_id,
            self.account_id,
            self.currency_code,
            sequence,
            tuple(allocations),
            self.total,
            unallocated,
        )
        self.events.append(event)
        return event


@dataclass(frozen=True, order=True)
class CreditNoteListPosition:
    """Where a listing of credit notes stands (newest first): the last one's sort key."""

    issue_time: datetime
    credit_note_id: uuid.UUID
