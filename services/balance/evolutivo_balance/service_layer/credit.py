"""Use cases on credit limits: set a group's policy, and let temporary limits expire.

Crossings caused by entries are assessed by the unit of work at commit (unit_of_work.py); these
two change the policy instead of the balance and assess the group themselves, under the same
row lock, so a crossing is published once whichever way it happens.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from evolutivo_runtime.errors import NotFound

from evolutivo_balance.adapters.repository import Lock
from evolutivo_balance.domain.credit import Amount, ThresholdSpec, policy_paths, updated_policy
from evolutivo_balance.domain.model import BalanceGroup
from evolutivo_balance.service_layer.unit_of_work import BalanceUnitOfWork


@dataclass(frozen=True)
class SetCreditLimit:
    balance_group_id: uuid.UUID
    credit_limit: Amount | None
    temporary_limit: Amount | None
    temporary_limit_expire_time: datetime | None
    thresholds: Sequence[ThresholdSpec]
    # The update mask's paths; empty: all the policy.
    paths: Sequence[str]


async def set_credit_limit(uow: BalanceUnitOfWork, cmd: SetCreditLimit) -> BalanceGroup:
    """Sets the fields of the group's credit policy the mask names and publishes the crossings
    the new policy makes at the group's balance (a limit set below the balance exceeds at once).
    The group is locked FOR NO KEY UPDATE: balance moves and other policy changes wait."""
    paths = policy_paths(cmd.paths)
    group = await uow.balance_groups.get(cmd.balance_group_id, Lock.BALANCE)
    if group is None:
        raise NotFound("balance_group", str(cmd.balance_group_id))
    now = uow.clock.now()
    policy = updated_policy(
        group.credit,
        paths,
        cmd.credit_limit,
        cmd.temporary_limit,
        cmd.temporary_limit_expire_time,
        cmd.thresholds,
        group.currency_code,
        group.exponent,
        now,
    )
    # A closed group has a zero balance and takes no entries: its policy can still be cleared.
    group.set_credit_policy(policy)
    await uow.balance_groups.save_credit(group)
    await uow.assess_credit(group)
    return group


async def expire_temporary_limits(uow: BalanceUnitOfWork, batch_size: int) -> int:
    """One pass of the expiry loop: claims up to `batch_size` groups whose temporary limit has
    expired (SKIP LOCKED: replicas share them, none is done twice), drops the temporary limit and
    publishes what that crosses (usually CreditLimitExceeded, when the temporary limit was a raise
    the group used), in one transaction. Returns how many groups it claimed."""
    async with uow:
        now = uow.clock.now()
        groups = await uow.balance_groups.claim_expired_temporary_limits(now, batch_size)
        for group in groups:
            group.set_credit_policy(group.credit.without_expired_temporary(now))
            await uow.balance_groups.save_credit(group)
            await uow.assess_credit(group)
        await uow.commit()
        return len(groups)
