"""The account overview: everything an operator needs to decide about an account, in one answer.

The account, its contacts, services, payment methods and purchases come from customer's own
database; its balance groups come from balance and its open bills and collections state from
billing. The two downstream reads run concurrently with the local one, each bounded by a deadline:
a section whose service is slow, down or failing is left empty and named in `unavailable` with the
reason, so the overview always answers, and within about one deadline.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

from evolutivo.balance.v1 import balance_service_pb2
from evolutivo.billing.v1 import billing_service_pb2
from evolutivo_runtime.errors import Unavailable

from evolutivo_customer.domain.contacts import Contact
from evolutivo_customer.domain.model import Account, ProvisionedService
from evolutivo_customer.domain.payment_methods import PaymentMethod
from evolutivo_customer.domain.purchases import Purchase
from evolutivo_customer.service_layer.accounts import load
from evolutivo_customer.service_layer.ports import BalanceReader
from evolutivo_customer.service_layer.unit_of_work import CustomerUnitOfWork

log = logging.getLogger(__name__)

T = TypeVar("T")

# The sections the downstream services fill (overview.proto's UnavailableSection.section).
BALANCE = "balance"
BILLS = "bills"
COLLECTIONS = "collections"
# The local guard waits this much longer than the downstream deadline, so the call's own
# DEADLINE_EXCEEDED (the more telling reason) normally comes first.
_GUARD_MARGIN_SECONDS = 0.1


class BalanceGroupsReader(Protocol):
    async def get_balance(self, account_id: uuid.UUID) -> balance_service_pb2.GetBalanceResponse | None:
        """The account's balance groups and total; None when balance does not know the account.
        Raises Unavailable when balance does not answer within its deadline."""
        ...


class Balance(BalanceReader, BalanceGroupsReader, Protocol):
    """The balance service as customer reads it: what an account owes, and its groups."""


class BillingSummaryReader(Protocol):
    async def get_billing_summary(self, account_id: uuid.UUID) -> billing_service_pb2.GetBillingSummaryResponse | None:
        """The account's bill unit, open bills and collections state; None when billing has no bill
        unit for the account. Raises Unavailable when billing does not answer within its deadline."""
        ...


@dataclass(frozen=True)
class MissingSection:
    """A part of the overview that could not be filled, and why."""

    section: str
    reason: str


@dataclass
class AccountOverview:
    account: Account
    contacts: list[Contact]
    services: list[ProvisionedService]
    # Unmasked in memory; masked by the translation to protobuf.
    payment_methods: list[PaymentMethod]
    # Not cancelled and not ended now (pending ones included).
    purchases: list[Purchase]
    # None when the section is missing (see `unavailable`).
    balance: balance_service_pb2.GetBalanceResponse | None
    billing: billing_service_pb2.GetBillingSummaryResponse | None
    # The instant the overview describes (purchase states are computed at it).
    as_of: datetime
    unavailable: list[MissingSection] = field(default_factory=list)


async def get_overview(
    uow: CustomerUnitOfWork,
    balance: BalanceGroupsReader,
    billing: BillingSummaryReader | None,
    account_id: uuid.UUID,
    deadline: float,
) -> AccountOverview:
    """Raises NotFound for an unknown account; never fails nor waits much past `deadline` (seconds)
    because of balance or billing."""
    balance_read = asyncio.ensure_future(_downstream("balance", lambda: balance.get_balance(account_id), deadline))
    billing_read = asyncio.ensure_future(
        _downstream("billing", lambda: billing.get_billing_summary(account_id), deadline)
        if billing is not None
        else _not_wired("billing")
    )
    try:
        async with uow:
            account = await load(uow, account_id, for_update=False)
            contacts = list(await uow.contacts.for_account(account_id))
            services = await uow.services.for_account(account_id)
            payment_methods = list(await uow.payment_methods.for_account(account_id))
            as_of = uow.clock.now()
            purchases = await uow.purchases.open_for_account(account_id, as_of)
        (balance_found, balance_missing), (billing_found, billing_missing) = await asyncio.gather(
            balance_read, billing_read
        )
    finally:
        # On an unknown account (or any local failure) the downstream reads are not waited for.
        balance_read.cancel()
        billing_read.cancel()
    unavailable = []
    if balance_missing is not None:
        unavailable.append(MissingSection(BALANCE, balance_missing))
    if billing_missing is not None:
        unavailable += [MissingSection(BILLS, billing_missing), MissingSection(COLLECTIONS, billing_missing)]
    return AccountOverview(
        account=account,
        contacts=contacts,
        services=services,
        payment_methods=payment_methods,
        purchases=purchases,
        balance=balance_found,
        billing=billing_found,
        as_of=as_of,
        unavailable=unavailable,
    )


async def _downstream(
    service: str, read: Callable[[], Awaitable[T | None]], deadline: float
) -> tuple[T | None, str | None]:
    """The read's result, or None and the reason it is missing. Never raises (but on cancellation)."""
    try:
        found = await asyncio.wait_for(read(), deadline + _GUARD_MARGIN_SECONDS)
    except Unavailable as error:
        reason = error.message
    except TimeoutError:
        reason = f"the {service} service did not answer within {deadline:g} s"
    except Exception as error:
        log.warning("overview: reading %s failed", service, exc_info=error)
        reason = f"reading from the {service} service failed ({type(error).__name__})"
    else:
        if found is not None:
            return found, None
        reason = f"the {service} service has no record of the account yet"
    log.info("overview section unavailable", extra={"downstream": service, "reason": reason})
    return None, reason


async def _not_wired(service: str) -> tuple[None, str]:
    return None, f"the {service} service is not configured"
