"""What a rating transaction reads of the catalog and the accounts: from the replica's cache when
it is in step with the database (adapters/cache.py), else from the database (and kept for the next
call when nothing changed meanwhile)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from evolutivo_charging.adapters.cache import AccountView, CatalogView, current_generation
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork


class RatingReads:
    """The reads of one rating transaction. `begin` decides once whether the cache may serve it."""

    def __init__(self, uow: ChargingUnitOfWork) -> None:
        self._uow = uow
        self._generation: int | None = None

    async def begin(self, generation: int | None = None) -> None:
        """`generation`: the cache's generation as another statement of this transaction read it
        (UsageRepository.received), else it is read here."""
        cache = self._uow.cache
        if cache is None or cache.generation is None:
            return
        if generation is None:
            generation = await current_generation(self._uow.session)
        self._generation = generation if cache.usable_at(generation) else None

    @property
    def cached(self) -> bool:
        return self._generation is not None

    async def catalog(self) -> CatalogView:
        cache = self._uow.cache
        if self._generation is not None and cache is not None and cache.catalog is not None:
            return cache.catalog
        view = CatalogView.of(await self._uow.catalog.activated_all())
        if self._generation is not None and cache is not None:
            cache.keep_catalog(view, self._generation)
        return view

    async def rated_event_types(self, event_types: Iterable[str]) -> set[str]:
        wanted = set(event_types)
        if self._generation is None:
            return await self._uow.catalog.rated_event_types(wanted)
        return wanted & (await self.catalog()).rated_event_types

    async def accounts(self, account_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, AccountView]:
        ids = set(account_ids)
        cache = self._uow.cache
        found: dict[uuid.UUID, AccountView] = {}
        missing = ids
        if self._generation is not None and cache is not None:
            found, missing = cache.accounts(ids)
        if missing:
            loaded = await load_accounts(self._uow, missing)
            if self._generation is not None and cache is not None:
                cache.keep(loaded, self._generation)
            found.update(loaded)
        return found


async def load_accounts(uow: ChargingUnitOfWork, account_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, AccountView]:
    ids = set(account_ids)
    accounts = await uow.charging_accounts.get_many(ids)
    purchases = await uow.purchases.for_accounts(ids)
    cycles = await uow.bill_cycles.for_accounts(ids)
    credit = await uow.credit.for_accounts(ids)
    return {a: AccountView(accounts.get(a), tuple(purchases[a]), tuple(cycles[a]), tuple(credit[a])) for a in ids}


async def load_catalog(uow: ChargingUnitOfWork, generation: int) -> None:
    """Loads the activated catalog into the replica's cache (at start, and when the listener
    reconnects), as of `generation`."""
    cache = uow.cache
    if cache is None:
        return
    async with uow:
        cache.keep_catalog(CatalogView.of(await uow.catalog.activated_all()), generation)
