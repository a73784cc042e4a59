"""Use cases of the charge-offer catalog. Plain functions over a unit of work.

Writes run inside a unit of work the caller opened and commits (the entrypoint, through
evolutivo_runtime.idempotency.run_idempotent, so a retried request id creates nothing twice);
reads open their own.

Concurrency: creating a version numbers it under a transaction-scoped advisory lock on its code,
so two creations of one code get consecutive versions; activating one locks every row of its code
(FOR UPDATE, in version order), so two activations of one code run one after the other and the
second sees the validity the first left.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import iso4217
from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument, NotFound

from evolutivo_charging.adapters.catalog_proto import OfferInput
from evolutivo_charging.adapters.catalog_repository import OfferFilter
from evolutivo_charging.domain.catalog import ChargeOffer, OfferStatus
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork

# Events the catalog's use cases record on the offer (published through the outbox on commit).


def check_currency(code: str, field: str = "charge_offer.currency_code") -> None:
    """An ISO 4217 currency with a minor unit (prices are rounded to it): EUR, JPY, BHD; not XXX or XAU."""
    try:
        currency = iso4217.Currency(code)
    except ValueError:
        raise InvalidArgument(field, "must be an ISO 4217 currency code such as EUR") from None
    if currency.exponent is None:
        raise InvalidArgument(field, "must be a currency with a minor unit, such as EUR (not a metal or fund code)")


async def create_charge_offer(uow: ChargingUnitOfWork, given: OfferInput) -> ChargeOffer:
    """Version 1 of a new code, or the next version of an existing one, as a DRAFT. The
    existing versions are untouched."""
    check_currency(given.currency_code)
    now = uow.clock.now()

    def draft(version: int) -> ChargeOffer:
        return ChargeOffer.draft(
            given.code,
            version,
            given.name,
            given.description,
            given.currency_code,
            given.valid_from,
            given.valid_to,
            given.charges,
            now,
        )

    draft(1)  # the rules, checked before the code is locked and numbered
    await uow.catalog.lock_code(given.code)
    offer = draft(await uow.catalog.next_version(given.code))
    await uow.catalog.add(offer)
    return offer


async def load(uow: ChargingUnitOfWork, charge_offer_id: uuid.UUID, for_update: bool = False) -> ChargeOffer:
    offer = await uow.catalog.get(charge_offer_id, for_update=for_update)
    if offer is None:
        raise NotFound("charge_offer", str(charge_offer_id))
    return offer


async def update_charge_offer(
    uow: ChargingUnitOfWork, charge_offer_id: uuid.UUID, changes: dict[str, Any]
) -> ChargeOffer:
    """Changes a DRAFT; `changes` maps the masked fields to their new values."""
    if "currency_code" in changes:
        check_currency(changes["currency_code"])
    offer = await load(uow, charge_offer_id, for_update=True)
    offer.revise(changes)
    await uow.catalog.save(offer)
    return offer


async def activate_charge_offer(uow: ChargingUnitOfWork, charge_offer_id: uuid.UUID) -> ChargeOffer:
    """Makes a DRAFT the version in force from its valid_from (now when unset). The version it
    replaces (the activated version of the code that starts latest) ends there; the new version
    may not start before it."""
    code = (await load(uow, charge_offer_id)).code
    versions = await uow.catalog.versions_for_update(code)
    (offer,) = (v for v in versions if v.charge_offer_id == charge_offer_id)
    now = uow.clock.now()
    starts = offer.valid_from or now
    if offer.status is OfferStatus.DRAFT and offer.valid_to is not None and offer.valid_to <= starts:
        raise FailedPrecondition(
            "CHARGE_OFFER_ENDED", "valid_to is not after the version's start: change valid_to or valid_from first"
        )
    previous = _latest_started(v for v in versions if v.charge_offer_id != charge_offer_id)
    previous_end = previous.valid_to if previous else None
    offer.activate(previous, now)
    if previous is not None and previous.valid_to != previous_end:
        # First: the database holds at most one open-ended activated version of a code.
        await uow.catalog.save(previous)
    await uow.catalog.save(offer)
    uow.track(offer)
    uow.catalog_changed()
    return offer


def _latest_started(versions: Iterable[ChargeOffer]) -> ChargeOffer | None:
    """The activated (active or retired) version that starts last: the one a new version follows."""
    activated = [v for v in versions if v.status is not OfferStatus.DRAFT and v.valid_from is not None]
    return max(activated, key=lambda v: (v.valid_from, v.version), default=None)


async def retire_charge_offer(uow: ChargingUnitOfWork, charge_offer_id: uuid.UUID) -> ChargeOffer:
    """No new purchases of the version; existing ones keep rating within its validity."""
    offer = await load(uow, charge_offer_id, for_update=True)
    offer.retire(uow.clock.now())
    await uow.catalog.save(offer)
    uow.track(offer)
    uow.catalog_changed()
    return offer


async def get_charge_offer(uow: ChargingUnitOfWork, charge_offer_id: uuid.UUID) -> ChargeOffer:
    async with uow:
        return await load(uow, charge_offer_id)


async def find_charge_offer(uow: ChargingUnitOfWork, code: str, at_time: datetime | None) -> ChargeOffer:
    """The version of `code` in force at `at_time`. Without `at_time`: the one in force now, or,
    when none is, the latest version (e.g. a draft, or one that starts later)."""
    async with uow:
        if at_time is not None:
            found = await uow.catalog.in_force(code, at_time)
            if found is None:
                raise NotFound("charge_offer", f"{code} at {at_time.isoformat()}")
            return found
        found = await uow.catalog.in_force(code, uow.clock.now()) or await uow.catalog.latest(code)
        if found is None:
            raise NotFound("charge_offer", code)
        return found


async def list_charge_offers(
    uow: ChargingUnitOfWork, where: OfferFilter, after: tuple[str, int] | None, limit: int
) -> list[ChargeOffer]:
    async with uow:
        return await uow.catalog.list(where, after, limit)
