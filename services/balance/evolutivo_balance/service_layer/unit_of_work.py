"""The balance unit of work: books ledger entries and moves the groups' balances with them.

Entries are appended with `book` as a use case (or a consumer's message) goes; their amounts are
summed per group in memory and the balances move once, at commit, in the same transaction: the
groups are locked in balance_group_id order (FOR NO KEY UPDATE) and each gets one UPDATE. A
consumer's batch of ChargesCreated therefore costs one balance update per group, whatever the
number of charges, and concurrent batches, payments and adjustments cannot deadlock. A group's
stored balance is always the sum of its entries.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Self

from evolutivo_runtime.uow import Checkpoint, UnitOfWork

from evolutivo_balance.adapters.repository import BalanceGroupRepository, LedgerRepository, PaymentRepository
from evolutivo_balance.domain.model import LedgerEntry


@dataclass(frozen=True)
class BalanceCheckpoint(Checkpoint):
    # The balance moves pending when the checkpoint was taken.
    deltas: dict[uuid.UUID, Decimal]


class BalanceUnitOfWork(UnitOfWork):
    balance_groups: BalanceGroupRepository
    ledger: LedgerRepository
    payments: PaymentRepository
    _deltas: dict[uuid.UUID, Decimal]

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.balance_groups = BalanceGroupRepository(self.session)
        self.ledger = LedgerRepository(self.session)
        self.payments = PaymentRepository(self.session)
        self._deltas = {}
        return self

    async def book(self, entries: Sequence[LedgerEntry]) -> list[LedgerEntry]:
        """Appends the entries whose source was not booked before and returns them; their groups'
        balances move by their amounts at commit. The caller holds a share lock on each group
        (BalanceGroupRepository, Lock.SHARE or open_for_accounts) so none closes meanwhile."""
        added = await self.ledger.add(entries)
        booked = [e for e in entries if e.entry_id in added]
        for entry in booked:
            self._deltas[entry.balance_group_id] = self._deltas.get(entry.balance_group_id, Decimal(0)) + entry.amount
        return booked

    @property
    def pending_deltas(self) -> dict[uuid.UUID, Decimal]:
        """What commit will add to each group's balance."""
        return dict(self._deltas)

    def checkpoint(self) -> Checkpoint:
        base = super().checkpoint()
        return BalanceCheckpoint(base.events, base.tracked, base.aggregate_events, dict(self._deltas))

    def discard_since(self, checkpoint: Checkpoint) -> None:
        """Also forgets the balance moves of entries whose savepoint rolled back."""
        super().discard_since(checkpoint)
        if isinstance(checkpoint, BalanceCheckpoint):
            self._deltas = dict(checkpoint.deltas)

    async def commit(self) -> None:
        if self._deltas:
            await self.balance_groups.move(self._deltas)
            self._deltas = {}
        await super().commit()

    async def rollback(self) -> None:
        self._deltas = {}
        await super().rollback()
