"""Loads and stores charge-offer versions (the charge_offers table).

One row per version; UNIQUE(code, version). The charges are kept in the `charges` JSONB column as
a JSON array of evolutivo.charging.v1.Charge in protobuf JSON form (google.protobuf.json_format,
proto field names, decimals as strings): the wire contract is already versioned, so the stored
form evolves with it (new fields are additive; unknown ones are ignored when read).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, insert, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from evolutivo_charging.adapters.catalog_proto import charges_from_json, charges_to_json
from evolutivo_charging.adapters.orm import charge_offers
from evolutivo_charging.domain.catalog import ChargeOffer, OfferStatus

# Namespaces the advisory locks this repository takes (pg_advisory_xact_lock on a 64-bit hash).
_CODE_LOCK = "evolutivo_charging.charge_offer_code:"


@dataclass(frozen=True)
class OfferFilter:
    status: OfferStatus | None = None
    code: str = ""


class ChargeOfferRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, offer: ChargeOffer) -> None:
        await self._session.execute(insert(charge_offers).values(**_row(offer)))

    async def save(self, offer: ChargeOffer) -> None:
        """Writes what changes on a version: its fields while a draft, then status, validity and times."""
        row = _row(offer)
        for key in ("charge_offer_id", "code", "version", "create_time"):
            del row[key]
        await self._session.execute(
            update(charge_offers).where(charge_offers.c.charge_offer_id == offer.charge_offer_id).values(**row)
        )

    async def get(self, charge_offer_id: uuid.UUID, for_update: bool = False) -> ChargeOffer | None:
        """The version; with `for_update`, locked until the transaction ends."""
        query = select(charge_offers).where(charge_offers.c.charge_offer_id == charge_offer_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).first()
        return _offer(row._mapping) if row else None

    async def lock_code(self, code: str) -> None:
        """Serialises, until the transaction ends, the transactions that number or activate the
        versions of `code` (also one that does not exist yet, which has no rows to lock)."""
        await self._session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(_CODE_LOCK + code, 0))))

    async def next_version(self, code: str) -> int:
        """1 for a new code, else the latest version + 1 (call under `lock_code`)."""
        latest = await self._session.scalar(
            select(func.max(charge_offers.c.version)).where(charge_offers.c.code == code)
        )
        return int(latest or 0) + 1

    async def versions_for_update(self, code: str) -> list[ChargeOffer]:
        """Every version of the code, oldest first, each row locked until the transaction ends.

        Rows are locked in version order, so concurrent callers cannot deadlock; a caller that
        waited reads the rows as the transaction it waited for left them."""
        t = charge_offers
        rows = await self._session.execute(select(t).where(t.c.code == code).order_by(t.c.version).with_for_update())
        return [_offer(row._mapping) for row in rows]

    async def latest(self, code: str) -> ChargeOffer | None:
        """The highest version of the code, whatever its status."""
        t = charge_offers
        row = (
            await self._session.execute(select(t).where(t.c.code == code).order_by(t.c.version.desc()).limit(1))
        ).first()
        return _offer(row._mapping) if row else None

    async def in_force(self, code: str, instant: datetime) -> ChargeOffer | None:
        """The activated (active or retired) version of the code whose validity holds `instant`."""
        t = charge_offers
        query = (
            select(t)
            .where(
                t.c.code == code,
                t.c.status != OfferStatus.DRAFT.value,
                t.c.valid_from <= instant,
                or_(t.c.valid_to.is_(None), t.c.valid_to > instant),
            )
            # At most one by construction; the newest should two ever overlap.
            .order_by(t.c.version.desc())
            .limit(1)
        )
        row = (await self._session.execute(query)).first()
        return _offer(row._mapping) if row else None

    async def activated(self, codes: Iterable[str]) -> dict[str, list[ChargeOffer]]:
        """The activated (active or retired) versions of each code, oldest first: rating picks
        the one in force at each event's time."""
        wanted = sorted(set(codes))
        found: dict[str, list[ChargeOffer]] = {code: [] for code in wanted}
        if not wanted:
            return found
        t = charge_offers
        rows = await self._session.execute(
            select(t).where(t.c.code.in_(wanted), t.c.status != OfferStatus.DRAFT.value).order_by(t.c.code, t.c.version)
        )
        for row in rows:
            found[row.code].append(_offer(row._mapping))
        return found

    async def activated_all(self) -> dict[str, list[ChargeOffer]]:
        """Every activated (active or retired) version, by code, oldest first: the replicas' cache."""
        t = charge_offers
        rows = await self._session.execute(
            select(t).where(t.c.status != OfferStatus.DRAFT.value).order_by(t.c.code, t.c.version)
        )
        found: dict[str, list[ChargeOffer]] = {}
        for row in rows:
            found.setdefault(row.code, []).append(_offer(row._mapping))
        return found

    async def rated_event_types(self, event_types: Iterable[str]) -> set[str]:
        """Those of `event_types` a charge of some activated (active or retired) version rates."""
        wanted = sorted(set(event_types))
        if not wanted:
            return set()
        element = func.jsonb_array_elements(charge_offers.c.charges).table_valued("value").alias("charge")
        event_type = element.c.value.op("->>")("event_type")
        rows = await self._session.execute(
            select(event_type.label("event_type"))
            .distinct()
            .select_from(charge_offers)
            .join(element, true())
            .where(charge_offers.c.status != OfferStatus.DRAFT.value, event_type.in_(wanted))
        )
        return {row.event_type for row in rows}

    async def list(self, where: OfferFilter, after: tuple[str, int] | None, limit: int) -> list[ChargeOffer]:
        """Keyset page in (code, version descending) order, after the (code, version) of the last
        row of the previous page."""
        t = charge_offers
        query: Select[Any] = select(t).order_by(t.c.code, t.c.version.desc()).limit(limit)
        if where.status is not None:
            query = query.where(t.c.status == where.status.value)
        if where.code:
            query = query.where(t.c.code == where.code)
        if after is not None:
            code, version = after
            query = query.where(or_(t.c.code > code, and_(t.c.code == code, t.c.version < version)))
        return [_offer(row._mapping) for row in await self._session.execute(query)]


def _row(offer: ChargeOffer) -> dict[str, Any]:
    return {
        "charge_offer_id": offer.charge_offer_id,
        "code": offer.code,
        "version": offer.version,
        "name": offer.name,
        "description": offer.description,
        "currency_code": offer.currency_code,
        "valid_from": offer.valid_from,
        "valid_to": offer.valid_to,
        "status": offer.status.value,
        "charges": charges_to_json(offer.charges),
        "create_time": offer.create_time,
        "activate_time": offer.activate_time,
        "retire_time": offer.retire_time,
    }


def _offer(row: Any) -> ChargeOffer:
    return ChargeOffer(
        charge_offer_id=row["charge_offer_id"],
        code=row["code"],
        version=row["version"],
        name=row["name"],
        description=row["description"],
        currency_code=row["currency_code"],
        valid_from=row["valid_from"],
        valid_to=row["valid_to"],
        status=OfferStatus(row["status"]),
        charges=charges_from_json(row["charges"]),
        create_time=row["create_time"],
        activate_time=row["activate_time"],
        retire_time=row["retire_time"],
    )
