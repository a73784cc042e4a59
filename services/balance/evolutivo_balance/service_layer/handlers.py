"""Use cases of the balance service: balance groups, charges, and the reads. Plain functions over a
unit of work (payments and adjustments live in their own modules).

Writes called from gRPC run inside a unit of work the entrypoint opened and commits (through
evolutivo_runtime.idempotency.run_idempotent, so a retried request id changes nothing twice);
the consumer's handlers run inside the consumer's transaction; reads open their own.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from evolutivo_runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

from evolutivo_balance.adapters.repository import CurrentBalances, EntryFilter, Lock
from evolutivo_balance.domain.credit import CreditPolicy, CreditState
from evolutivo_balance.domain.model import (
    AccountStatus,
    BalanceGroup,
    BillingEntry,
    Charge,
    LedgerEntry,
    SourceType,
    billing_entry,
    charge_entry,
    check_account_takes_groups,
    check_group_name,
    target_group,
)
from evolutivo_balance.service_layer.unit_of_work import BalanceUnitOfWork


async def open_default_group(uow: BalanceUnitOfWork, account_id: uuid.UUID, currency_code: str, now: datetime) -> None:
    """On a new account: its default balance group in the account's currency, exactly once.

    Runs inside the consumer's transaction (the caller commits)."""
    group = BalanceGroup.open_default(account_id, currency_code, now)
    if await uow.balance_groups.add_default(group):
        uow.track(group)


async def change_currency(uow: BalanceUnitOfWork, account_id: uuid.UUID, currency_code: str, now: datetime) -> bool:
    """On AccountUpdated with a new currency: customer allows it until the account's first charge;
    balance follows while the account's ledger is empty (its groups are locked meanwhile). Once it
    has entries (a payment or an adjustment can come before any charge), the event is refused and
    dead-lettered after its retries: the account needs a person. An account balance has not heard
    of yet gets its default group in the new currency. False when nothing changed.

    Runs inside the consumer's transaction (the caller commits)."""
    groups = await uow.balance_groups.lock_account(account_id)
    if not groups:
        await open_default_group(uow, account_id, currency_code, now)
        return True
    if all(g.currency_code == currency_code for g in groups):
        return False
    if await uow.ledger.has_entries(account_id):
        raise FailedPrecondition(
            "CURRENCY_FIXED",
            f"account {account_id} changed its currency to {currency_code} but its ledger has entries in "
            f"{groups[0].currency_code}",
            {"account_id": str(account_id), "currency_code": currency_code},
        )
    await uow.balance_groups.set_currency(account_id, currency_code)
    return True


async def learn_account_status(
    uow: BalanceUnitOfWork, account_id: uuid.UUID, status: AccountStatus, status_time: datetime
) -> bool:
    """On AccountCreated, AccountUpdated and AccountStatusChanged: the account's status as of
    `status_time` (an older event changes nothing; closed is final). False when not taken.

    Runs inside the consumer's transaction (the caller commits)."""
    return await uow.account_statuses.learn(account_id, status, status_time)


# Loading what a call books on.


async def default_group(uow: BalanceUnitOfWork, account_id: uuid.UUID, lock: Lock = Lock.SHARE) -> BalanceGroup:
    group = await uow.balance_groups.default_for(account_id, lock)
    if group is None:
        raise NotFound("account", str(account_id))
    return group


async def group_of(
    uow: BalanceUnitOfWork,
    account_id: uuid.UUID,
    balance_group_id: uuid.UUID | None,
    field_name: str = "balance_group_id",
    lock: Lock = Lock.SHARE,
) -> BalanceGroup:
    """The account's group named by the request, its default group when none is named. A group
    of another account is refused naming the field."""
    if balance_group_id is None:
        return await default_group(uow, account_id, lock)
    group = await uow.balance_groups.get(balance_group_id, lock)
    if group is None:
        raise NotFound("balance_group", str(balance_group_id))
    if group.account_id != account_id:
        raise InvalidArgument(field_name, f"is not a balance group of account {account_id}")
    return group


# Balance groups.


async def create_group(uow: BalanceUnitOfWork, account_id: uuid.UUID, name: str) -> BalanceGroup:
    """Another group of the account: the name is checked first, then the account must be known to
    balance (NOT_FOUND) and not closed (FAILED_PRECONDITION, ACCOUNT_CLOSED)."""
    check_group_name(name)
    default = await default_group(uow, account_id, Lock.NONE)
    check_account_takes_groups(account_id, await uow.account_statuses.status_of(account_id))
    group = BalanceGroup.open(default, name, uow.clock.now())
    if not await uow.balance_groups.add(group):
        raise AlreadyExists(
            "BALANCE_GROUP_NAME_TAKEN",
            f"account {account_id} has an open balance group named {name!r}",
            {"account_id": str(account_id), "name": name},
        )
    uow.track(group)
    return group


async def close_group(uow: BalanceUnitOfWork, balance_group_id: uuid.UUID) -> BalanceGroup:
    """Closes an empty, non-default group. The lock waits for transactions booking on the group,
    so the balance read is final. Closing a closed group returns it unchanged."""
    group = await uow.balance_groups.get(balance_group_id, Lock.UPDATE)
    if group is None:
        raise NotFound("balance_group", str(balance_group_id))
    if group.close(uow.clock.now()):
        await uow.balance_groups.close(group)
        uow.track(group)
    return group


# Charges.


async def book_charges(uow: BalanceUnitOfWork, charges: Sequence[Charge], now: datetime) -> list[LedgerEntry]:
    """On ChargesCreated: a debit entry per charge (its amount as rated: a reversing charge is a
    credit), idempotent on the charge id, on the group the charge names, or on the default group
    (saying so in the entry's reason) when the account has no open group of that name. The
    balances move when the consumer's batch commits (BalanceUnitOfWork).

    An account balance has not heard of yet (its AccountCreated is still on its way) gets its
    default group in the charges' currency, as AccountCreated would open it.
    Runs inside the consumer's transaction (the caller commits). Returns the entries booked now."""
    by_account: dict[uuid.UUID, list[Charge]] = defaultdict(list)
    for charge in charges:
        by_account[charge.account_id].append(charge)
    groups = await uow.balance_groups.open_for_accounts(by_account)
    unknown = [a for a, found in groups.items() if not any(g.is_default for g in found)]
    for account_id in unknown:
        await open_default_group(uow, account_id, by_account[account_id][0].currency_code, now)
    if unknown:
        groups.update(await uow.balance_groups.open_for_accounts(unknown))
    entries = []
    for charge in charges:
        group, reason = target_group(groups[charge.account_id], charge.balance_group)
        entries.append(charge_entry(group, charge, reason, now))
    return await uow.book(entries)


# Tax and credit notes from billing.


async def book_billing_entry(uow: BalanceUnitOfWork, item: BillingEntry, now: datetime) -> list[LedgerEntry]:
    """On BillIssued (its tax) and CreditNoteIssued (its total): one entry on the account's
    default group, idempotent on the bill or credit note id; a zero amount books nothing. An
    account balance has not heard of yet gets its default group in the bill's currency.
    Runs inside the consumer's transaction (the caller commits). Returns the entries booked now."""
    if item.amount == 0:
        return []
    group = await uow.balance_groups.default_for(item.account_id, Lock.SHARE)
    if group is None:
        await open_default_group(uow, item.account_id, item.currency_code, now)
        group = await default_group(uow, item.account_id, Lock.SHARE)
    return await uow.book([billing_entry(group, item, now)])


async def book_billing_entries(
    uow: BalanceUnitOfWork, items: Sequence[BillingEntry], now: datetime
) -> list[LedgerEntry]:
    """`book_billing_entry` of several items (a fetched batch's BillIssued and CreditNoteIssued):
    the accounts' open default groups in one statement and the entries in one insert; an item
    whose account has no open default group goes through `book_billing_entry` itself."""
    items = [i for i in items if i.amount != 0]
    groups = await uow.balance_groups.open_for_accounts({i.account_id for i in items})
    defaults = {g.account_id: g for found in groups.values() for g in found if g.is_default}
    entries, booked = [], []
    for item in items:
        group = defaults.get(item.account_id)
        if group is None:
            booked += await book_billing_entry(uow, item, now)
        else:
            entries.append(billing_entry(group, item, now))
    return booked + await uow.book(entries)


# Reads.


async def current_balance(reads: CurrentBalances, account_id: uuid.UUID, show_closed: bool) -> list[BalanceGroup]:
    """GetBalance without as_of (the hot read): the account's groups as they are now, the
    default first, in one statement outside a unit of work (adapters/repository.py)."""
    groups = await reads.groups_of(account_id)
    if not groups:
        raise NotFound("account", str(account_id))
    return [g for g in groups if show_closed or g.is_open or g.is_default]


async def get_balance(
    uow: BalanceUnitOfWork, account_id: uuid.UUID, as_of: datetime | None, show_closed: bool
) -> tuple[list[BalanceGroup], datetime]:
    """The account's groups with their balances now, or as of an instant (the sum of the entries
    effective at or before it; only the groups open then). The default group comes first."""
    async with uow:
        groups = await uow.balance_groups.for_account(account_id)
        if not groups:
            raise NotFound("account", str(account_id))
        if as_of is None:
            return [g for g in groups if show_closed or g.is_open or g.is_default], uow.clock.now()
        sums = await uow.ledger.balances_as_of(account_id, as_of)

        def listed(g: BalanceGroup) -> bool:
            existed = g.create_time <= as_of or g.balance_group_id in sums
            closed = g.close_time is not None and g.close_time <= as_of
            return g.is_default or (existed and (show_closed or not closed))

        # Limits have no history: a past balance is shown without them.
        return [
            replace(
                g,
                balance=sums.get(g.balance_group_id, Decimal(0)),
                credit=CreditPolicy(),
                credit_state=CreditState(),
                events=[],
            )
            for g in groups
            if listed(g)
        ], as_of


async def get_group(uow: BalanceUnitOfWork, balance_group_id: uuid.UUID) -> BalanceGroup:
    async with uow:
        group = await uow.balance_groups.get(balance_group_id)
        if group is None:
            raise NotFound("balance_group", str(balance_group_id))
        return group


async def list_entries(
    uow: BalanceUnitOfWork,
    account_id: uuid.UUID,
    where: EntryFilter,
    after: tuple[datetime, int] | None,
    limit: int,
) -> list[tuple[int, LedgerEntry]]:
    if where.source_type and where.source_type not in {s.value for s in SourceType}:
        raise InvalidArgument(
            "source_type", f"must be one of {', '.join(s.value for s in SourceType)} (or empty for any)"
        )
    async with uow:
        if await uow.balance_groups.default_for(account_id) is None:
            raise NotFound("account", str(account_id))
        if where.balance_group_id is not None:
            group = await uow.balance_groups.get(where.balance_group_id)
            if group is None or group.account_id != account_id:
                raise InvalidArgument("balance_group_id", f"is not a balance group of account {account_id}")
        return await uow.ledger.page(account_id, where, after, limit)
