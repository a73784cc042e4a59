from __future__ import annotations

from typing import Self

from evolutivo_runtime.clock import Clock
from evolutivo_runtime.uow import EventEncoder, UnitOfWork
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from evolutivo_erp_gateway.adapters.orm import request_log
from evolutivo_erp_gateway.adapters.repository import (
    AllocationRepository,
    ConnectionRepository,
    ContactRepository,
    InboundPaymentRepository,
    PostingRepository,
    SyncJobRepository,
    SyncStateRepository,
)
from evolutivo_erp_gateway.domain.model import CREDIT_NOTE_CREDIT, PAYMENT_CREDIT, AllocatedCredit


class ErpGatewayUnitOfWork(UnitOfWork):
    sync_states: SyncStateRepository
    connections: ConnectionRepository
    jobs: SyncJobRepository
    postings: PostingRepository
    inbound: InboundPaymentRepository
    contacts: ContactRepository
    # Billing's allocations of payments' credit (PaymentAllocated) and of credit notes' (CreditNoteAllocated).
    allocations: AllocationRepository
    credit_note_allocations: AllocationRepository

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Table,
        clock: Clock,
        encode: EventEncoder,
        request_log_table: Table | None = request_log,
    ) -> None:
        super().__init__(sessions, outbox, clock, encode, request_log_table)

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.sync_states = SyncStateRepository(self.session)
        self.connections = ConnectionRepository(self.session)
        self.jobs = SyncJobRepository(self.session)
        self.postings = PostingRepository(self.session)
        self.inbound = InboundPaymentRepository(self.session)
        self.contacts = ContactRepository(self.session)
        self.allocations = AllocationRepository(self.session, PAYMENT_CREDIT)
        self.credit_note_allocations = AllocationRepository(self.session, CREDIT_NOTE_CREDIT)
        return self

    def allocations_of(self, credit: AllocatedCredit) -> AllocationRepository:
        return self.credit_note_allocations if credit is CREDIT_NOTE_CREDIT else self.allocations
