"""The balance unit of work: books ledger entries and moves the groups' balances with them.

Entries are appended with `book` as a use case (or a consumer's message) goes; their amounts are
summed per group in memory and the balances move once, at commit, in the same transaction: the
groups are locked in balance_group_id order (FOR NO KEY UPDATE) and each gets one UPDATE. A
consumer's batch of ChargesCreated therefore costs one balance update per group, whatever the
number of charges, and concurrent batches, payments and adjustments cannot deadlock. A group's
stored balance is always the sum of its entries.

Credit limits and thresholds are assessed right there, in the same transaction: each moved group,
read under its lock with its new balance, is compared with the credit state last published, and a
crossing (threshold crossed, limit exceeded or restored) is recorded as an event and the new state
stored. Whatever moves a balance (charges, payments, reversals, adjustments, transfers, write-offs,
refunds, tax, credit notes) goes through here, so a crossing is published once, and a batch that
goes over and back within itself publishes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Self

from evolutivo_runtime.uow import Checkpoint, UnitOfWork

from evolutivo_balance.adapters.account_statuses import AccountStatusRepository
from evolutivo_balance.adapters.repository import BalanceGroupRepository, LedgerRepository, PaymentRepository
from evolutivo_balance.domain.model import BalanceGroup, LedgerEntry


@dataclass(frozen=True)
class BalanceCheckpoint(Checkpoint):
    # The balance moves pending when the checkpoint was taken.
    deltas: dict[uuid.UUID, Decimal]


class BalanceUnitOfWork(UnitOfWork):
    balance_groups: BalanceGroupRepository
    ledger: LedgerRepository
    payments: PaymentRepository
    account_statuses: AccountStatusRepository
    _deltas: dict[uuid.UUID, Decimal]

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.balance_groups = BalanceGroupRepository(self.session)
        self.ledger = LedgerRepository(self.session)
        self.payments = PaymentRepository(self.session)
        self.account_statuses = AccountStatusRepository(self.session)
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

    def record(self, event: object) -> None:
        """A domain event no tracked aggregate carries (e.g. WriteOffMade): to the outbox at commit."""
        self.publish(*self._encode(event))

    @property
    def pending_deltas(self) -> dict[uuid.UUID, Decimal]:
        """What commit will add to each group's balance."""
        return dict(self._deltas)

    def checkpoint(self) -> Checkpoint:
        base = super().checkpoint()
        return BalanceCheckpoint(base.events, base.tracked, base.aggregate_events, base.writes, dict(self._deltas))

    def discard_since(self, checkpoint: Checkpoint) -> None:
        """Also forgets the balance moves of entries whose savepoint rolled back."""
        super().discard_since(checkpoint)
        if isinstance(checkpoint, BalanceCheckpoint):
            self._deltas = dict(checkpoint.deltas)

    async def assess_credit(self, group: BalanceGroup) -> None:
        """Publishes the group's credit crossings and stores its new credit state, if it changed.
        The group was read under its FOR NO KEY UPDATE lock in this transaction."""
        if group.assess_credit(self.clock.now()):
            await self.balance_groups.save_credit(group)
            self.track(group)

    async def commit(self) -> None:
        if self._deltas:
            moved = await self.balance_groups.move(self._deltas, self.write_at_commit)
            self._deltas = {}
            # (`or ()`: a repository that reads nothing back, as the pure unit tests' fake, assesses nothing.)
            for group in moved or ():
                await self.assess_credit(group)
        await super().commit()

    async def rollback(self) -> None:
        self._deltas = {}
        await super().rollback()
