"""Use cases on accounts and their provisioned services. Plain functions over a unit of work.

Writes run inside a unit of work the caller opened and commits (the entrypoint, through
evolutivo_runtime.idempotency.run_idempotent, so a retried request id changes nothing twice);
reads open their own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import datetime

from evolutivo_runtime.errors import Aborted, AlreadyExists, FailedPrecondition, NotFound

from evolutivo_customer.adapters.repository import AccountFilter
from evolutivo_customer.domain.model import (
    Account,
    AccountDetails,
    AccountType,
    BillingProfile,
    ProvisionedService,
    ServiceStatus,
    StatusActor,
    format_account_number,
    validate_status_change,
)
from evolutivo_customer.service_layer.ports import BalanceReader
from evolutivo_customer.service_layer.unit_of_work import CustomerUnitOfWork


async def create_account(
    uow: CustomerUnitOfWork, account_type: AccountType, details: AccountDetails, profile: BillingProfile | None
) -> Account:
    number = format_account_number(await uow.accounts.next_account_number())
    account = Account.open(account_type, details, profile, number, uow.clock.now())
    await uow.accounts.add(account)
    uow.track(account)
    return account


async def load(uow: CustomerUnitOfWork, account_id: uuid.UUID, for_update: bool = True) -> Account:
    account = await uow.accounts.get(account_id, for_update=for_update)
    if account is None:
        raise NotFound("account", str(account_id))
    return account


async def get_account(uow: CustomerUnitOfWork, account_id: uuid.UUID) -> Account:
    async with uow:
        return await load(uow, account_id, for_update=False)


async def list_accounts(uow: CustomerUnitOfWork, where: AccountFilter, after_number: str, limit: int) -> list[Account]:
    async with uow:
        return await uow.accounts.list(where, after_number, limit)


async def update_account(
    uow: CustomerUnitOfWork,
    account_id: uuid.UUID,
    merge: Callable[[Account], tuple[AccountDetails, BillingProfile]],
    etag: str,
) -> Account:
    """`merge` builds the new details and profile from the current account (the update mask)."""
    account = await load(uow, account_id)
    if etag and etag != account.etag:
        raise Aborted("ETAG_MISMATCH", "the account changed since it was read; read it again and retry")
    version = account.version
    details, profile = merge(account)
    now = uow.clock.now()
    if details.currency_code != account.details.currency_code and await uow.purchases.open_for_account(account_id, now):
        # Its purchases' offers are priced in the current currency: changing it would leave their
        # usage unrated and their fees in the old currency.
        raise FailedPrecondition(
            "CURRENCY_FIXED", "account.currency_code cannot change while the account has purchases; end them first"
        )
    if account.update(details, profile, now):
        await uow.accounts.save(account, version)
        uow.track(account)
    return account


class ChargedAccounts:
    """The accounts a replica saw charged in committed state (has_charges, which is never unset;
    learnt after the commit of the transaction that found them so):
    a ChargesCreated naming only these changes nothing, and the consumer acknowledges it without a
    transaction (entrypoints/consumers.py). At most `limit` ids; past that it starts over."""

    def __init__(self, limit: int = 100_000) -> None:
        self._ids: set[str] = set()
        self._limit = limit

    def add(self, account_ids: Iterable[uuid.UUID]) -> None:
        new = {str(a) for a in account_ids} - self._ids
        if len(self._ids) + len(new) > self._limit:
            self._ids.clear()  # simpler than least-recently-used, and a set refills in one pass
        self._ids |= new

    def knows(self, account_id: uuid.UUID) -> bool:
        return str(account_id) in self._ids

    def all_of(self, account_ids: Iterable[str]) -> bool:
        """Whether every id (as charging's events spell it: lower-case) is known charged."""
        return all(a in self._ids for a in account_ids)


async def note_charges(
    uow: CustomerUnitOfWork, account_ids: Iterable[uuid.UUID], charged: ChargedAccounts | None = None
) -> list[uuid.UUID]:
    """On charging's ChargesCreated: the accounts it names have charges from now on, which fixes
    their currency (Account.update refuses to change it). Idempotent; accounts customer does not
    know are ignored. Returns the accounts marked now. Runs inside the consumer's transaction
    (the caller commits). `charged`: the replica's accounts known charged; those are left alone,
    and those found charged already join them once the transaction commits (the mark found may be
    this transaction's own, from an earlier message of its batch)."""
    ids = set(account_ids)
    if charged is not None:
        ids = {a for a in ids if not charged.knows(a)}
    marked, before = await uow.accounts.mark_charged(ids)
    if charged is not None and before:
        uow.after_commit(lambda: charged.add(before))
    return marked


async def suspend_account(
    uow: CustomerUnitOfWork, account_id: uuid.UUID, reason: str, actor: StatusActor | None, actor_id: str
) -> tuple[Account, list[ProvisionedService]]:
    actor = validate_status_change(reason, actor)
    account = await load(uow, account_id)
    version = account.version
    services = await uow.services.for_account(account_id)
    affected = account.suspend(reason.strip(), actor, actor_id, services, uow.clock.now())
    await _save_status(uow, account, version, affected)
    return account, affected


async def reinstate_account(
    uow: CustomerUnitOfWork, account_id: uuid.UUID, reason: str, actor: StatusActor | None, actor_id: str
) -> tuple[Account, list[ProvisionedService]]:
    actor = validate_status_change(reason, actor)
    account = await load(uow, account_id)
    version = account.version
    services = await uow.services.for_account(account_id)
    affected = account.reinstate(reason.strip(), actor, actor_id, services, uow.clock.now())
    await _save_status(uow, account, version, affected)
    return account, affected


async def close_account(
    uow: CustomerUnitOfWork,
    balance: BalanceReader,
    account_id: uuid.UUID,
    reason: str,
    actor: StatusActor | None,
    actor_id: str,
    force: bool,
) -> Account:
    actor = validate_status_change(reason, actor)
    account = await load(uow, account_id)
    version = account.version
    # Asked of balance, the book of record; if it does not answer, nothing is closed.
    owed = await balance.amount_owed(account_id)
    services = await uow.services.for_account(account_id)
    affected = account.close(reason.strip(), actor, actor_id, owed, force, services, uow.clock.now())
    await _save_status(uow, account, version, affected)
    return account


async def _save_status(
    uow: CustomerUnitOfWork, account: Account, version: int, services: list[ProvisionedService]
) -> None:
    await uow.accounts.save(account, version)
    await uow.services.save(services)
    uow.track(account)


async def create_service(
    uow: CustomerUnitOfWork,
    account_id: uuid.UUID,
    kind: str,
    identifier: str,
    description: str,
    labels: dict[str, str],
) -> ProvisionedService:
    account = await load(uow, account_id)
    service = ProvisionedService.provision(account, kind, identifier, description, labels, uow.clock.now())
    if await uow.services.exists(account_id, service.kind, service.identifier):
        raise AlreadyExists(
            "SERVICE_EXISTS",
            f"the account already has a {service.kind} service {service.identifier!r}",
            {"kind": service.kind, "identifier": service.identifier},
        )
    await uow.services.add(service)
    uow.track(service)
    return service


async def list_services(
    uow: CustomerUnitOfWork, account_id: uuid.UUID, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[ProvisionedService]:
    async with uow:
        await load(uow, account_id, for_update=False)
        return await uow.services.page(account_id, after, limit)


async def set_service_status(
    uow: CustomerUnitOfWork,
    account_id: uuid.UUID,
    service_id: uuid.UUID,
    status: ServiceStatus,
    reason: str,
    actor: StatusActor | None,
) -> ProvisionedService:
    actor = validate_status_change(reason, actor)
    account = await load(uow, account_id)
    service = await uow.services.get(account_id, service_id)
    if service is None:
        raise NotFound("provisioned_service", str(service_id))
    service.set_status(account, status, reason.strip(), actor, uow.clock.now())
    await uow.services.save([service])
    uow.track(service)
    return service
