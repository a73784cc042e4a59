from __future__ import annotations

from typing import Self

from evolutivo_runtime.uow import UnitOfWork

from evolutivo_billing.adapters.bills_credit_notes import CreditNoteRepository
from evolutivo_billing.adapters.bills_repository import (
    BillItemRepository,
    BillNumberSeriesRepository,
    BillRepository,
    PaymentRepository,
    ThresholdRepository,
)
from evolutivo_billing.adapters.orm import credit_note_number_series
from evolutivo_billing.adapters.repository import BillCycleRepository, BillUnitRepository


class BillingUnitOfWork(UnitOfWork):
    bill_units: BillUnitRepository
    bill_cycles: BillCycleRepository
    bill_items: BillItemRepository
    bills: BillRepository
    bill_numbers: BillNumberSeriesRepository
    payments: PaymentRepository
    thresholds: ThresholdRepository
    credit_notes: CreditNoteRepository
    credit_note_numbers: BillNumberSeriesRepository

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.bill_units = BillUnitRepository(self.session)
        self.bill_cycles = BillCycleRepository(self.session)
        self.bill_items = BillItemRepository(self.session)
        self.bills = BillRepository(self.session)
        self.bill_numbers = BillNumberSeriesRepository(self.session)
        self.payments = PaymentRepository(self.session)
        self.thresholds = ThresholdRepository(self.session)
        self.credit_notes = CreditNoteRepository(self.session)
        self.credit_note_numbers = BillNumberSeriesRepository(self.session, credit_note_number_series)
        return self
