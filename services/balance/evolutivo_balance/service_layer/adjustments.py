"""Use cases on manual movements: adjustments and transfers between groups of one account.

Writes run inside a unit of work the entrypoint opened and commits (run_idempotent).
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from evolutivo_runtime.errors import NotFound

from evolutivo_balance.adapters.repository import Lock
from evolutivo_balance.domain.model import Adjustment, BalanceGroup, Transfer, transfer
from evolutivo_balance.service_layer.handlers import group_of
from evolutivo_balance.service_layer.unit_of_work import BalanceUnitOfWork


async def create_adjustment(
    uow: BalanceUnitOfWork,
    account_id: uuid.UUID,
    balance_group_id: uuid.UUID | None,
    amount: Decimal,
    currency_code: str,
    reason_code: str,
    reason: str,
    actor: str,
) -> Adjustment:
    """An adjustment entry (a debit when positive, a credit when negative) and AdjustmentMade.
    A reason code and an actor are required."""
    group = await group_of(uow, account_id, balance_group_id)
    made = Adjustment.make(group, amount, currency_code, reason_code, reason, actor, uow.clock.now())
    await uow.book([made.entry])
    uow.track(made)
    return made


async def _group(uow: BalanceUnitOfWork, balance_group_id: uuid.UUID) -> BalanceGroup:
    group = await uow.balance_groups.get(balance_group_id, Lock.SHARE)
    if group is None:
        raise NotFound("balance_group", str(balance_group_id))
    return group


async def transfer_balance(
    uow: BalanceUnitOfWork,
    account_id: uuid.UUID,
    from_group_id: uuid.UUID,
    to_group_id: uuid.UUID,
    amount: Decimal,
    currency_code: str,
    reason: str,
    actor: str,
) -> Transfer:
    """Moves `amount` from one group of the account to another: a credit entry on the first, a
    debit entry on the second. Groups of another account are refused (TRANSFER_ACROSS_ACCOUNTS)."""
    await group_of(uow, account_id, None, lock=Lock.NONE)  # the account must be known
    # Locked in balance_group_id order, as every transaction locking several groups does.
    locked = {g: await _group(uow, g) for g in sorted({from_group_id, to_group_id})}
    source, target = locked[from_group_id], locked[to_group_id]
    moved = transfer(source, target, account_id, amount, currency_code, reason, actor, uow.clock.now())
    await uow.book([moved.from_entry, moved.to_entry])
    return moved
