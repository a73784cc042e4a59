"""Loads and stores accounts and their provisioned services."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from evolutivo_runtime.errors import Aborted
from sqlalchemy import Select, and_, exists, func, insert, literal, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from evolutivo_customer.adapters.orm import account_number_seq, accounts, contacts, provisioned_services
from evolutivo_customer.domain.model import (
    Account,
    AccountDetails,
    AccountStatus,
    AccountType,
    BillingFrequency,
    BillingProfile,
    DeliveryMethod,
    DeliveryPreferences,
    ProvisionedService,
    ServiceStatus,
    StatusActor,
)


@dataclass(frozen=True)
class AccountFilter:
    status: AccountStatus | None = None
    type: AccountType | None = None
    # Exact account number, or part of the display name or of an email contact.
    query: str = ""


class AccountRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def next_account_number(self) -> int:
        value = await self._session.scalar(account_number_seq.next_value())
        assert value is not None
        return int(value)

    async def add(self, account: Account) -> None:
        await self._session.execute(insert(accounts).values(**_row(account)))

    async def get(self, account_id: uuid.UUID, for_update: bool = False) -> Account | None:
        query = select(accounts).where(accounts.c.account_id == account_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).first()
        return _account(row._mapping) if row else None

    async def save(self, account: Account, expected_version: int) -> None:
        """Writes a changed account; refuses when someone else changed it since it was read."""
        result = await self._session.execute(
            update(accounts)
            .where(accounts.c.account_id == account.account_id, accounts.c.version == expected_version)
            .values(**_row(account))
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise Aborted("CONCURRENT_UPDATE", "the account changed meanwhile; read it again and retry")

    async def mark_charged(self, account_ids: Iterable[uuid.UUID]) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
        """Sets has_charges on those of the accounts that did not have it. Returns them, and those
        that had it already (set by an earlier transaction, or earlier in this one). The rows
        are locked in account_id order first (every account write locks its row, so a concurrent
        UpdateAccount either sees has_charges or finishes before it is set). Unknown ids: ignored."""
        ids = sorted(set(account_ids))
        if not ids:
            return [], []
        t = accounts
        locked = await self._session.execute(
            select(t.c.account_id, t.c.has_charges)
            .where(t.c.account_id.in_(ids))
            .order_by(t.c.account_id)
            .with_for_update()
        )
        marked: list[uuid.UUID] = []
        before: list[uuid.UUID] = []
        for row in locked:
            (before if row.has_charges else marked).append(row.account_id)
        if marked:
            await self._session.execute(update(t).where(t.c.account_id.in_(marked)).values(has_charges=True))
        return marked, before

    async def list(self, where: AccountFilter, after_number: str, limit: int) -> list[Account]:
        query: Select[Any] = select(accounts).order_by(accounts.c.account_number).limit(limit)
        if after_number:
            query = query.where(accounts.c.account_number > after_number)
        if where.status is not None:
            query = query.where(accounts.c.status == where.status.value)
        if where.type is not None:
            query = query.where(accounts.c.type == where.type.value)
        if where.query:
            pattern = "%" + where.query.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            email_match = exists().where(
                and_(contacts.c.account_id == accounts.c.account_id, func.lower(contacts.c.email).like(pattern))
            )
            query = query.where(
                or_(
                    accounts.c.account_number == where.query.strip().upper(),
                    func.lower(accounts.c.display_name).like(pattern),
                    email_match,
                )
            )
        return [_account(row._mapping) for row in await self._session.execute(query)]


class ServiceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, service: ProvisionedService) -> None:
        await self._session.execute(insert(provisioned_services).values(**_service_row(service)))

    async def exists(self, account_id: uuid.UUID, kind: str, identifier: str) -> bool:
        t = provisioned_services
        found = await self._session.scalar(
            select(t.c.service_id).where(t.c.account_id == account_id, t.c.kind == kind, t.c.identifier == identifier)
        )
        return found is not None

    async def get(self, account_id: uuid.UUID, service_id: uuid.UUID) -> ProvisionedService | None:
        t = provisioned_services
        row = (
            await self._session.execute(
                select(t).where(t.c.account_id == account_id, t.c.service_id == service_id).with_for_update()
            )
        ).first()
        return _service(row._mapping) if row else None

    async def for_account(self, account_id: uuid.UUID) -> list[ProvisionedService]:
        t = provisioned_services
        rows = await self._session.execute(
            select(t).where(t.c.account_id == account_id).order_by(t.c.create_time, t.c.service_id)
        )
        return [_service(row._mapping) for row in rows]

    async def page(
        self, account_id: uuid.UUID, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[ProvisionedService]:
        """Keyset page in (create_time, service_id) order."""
        t = provisioned_services
        query = select(t).where(t.c.account_id == account_id).order_by(t.c.create_time, t.c.service_id).limit(limit)
        if after is not None:
            query = query.where(tuple_(t.c.create_time, t.c.service_id) > tuple_(literal(after[0]), literal(after[1])))
        return [_service(row._mapping) for row in await self._session.execute(query)]

    async def save(self, services: list[ProvisionedService]) -> None:
        t = provisioned_services
        for service in services:
            await self._session.execute(
                update(t).where(t.c.service_id == service.service_id).values(**_service_row(service))
            )


def _row(account: Account) -> dict[str, Any]:
    d, p = account.details, account.billing_profile
    return {
        "account_id": account.account_id,
        "account_number": account.account_number,
        "type": account.type.value,
        "display_name": d.display_name,
        "currency_code": d.currency_code,
        "time_zone": d.time_zone,
        "locale": d.locale,
        "country_code": d.country_code,
        "tax_id": d.tax_id,
        "date_of_birth": d.date_of_birth,
        "labels": d.labels,
        "status": account.status.value,
        "bill_cycle_day": p.bill_cycle_day,
        "billing_frequency": p.frequency.value,
        "payment_terms_days": p.payment_terms_days,
        "threshold_amount": p.threshold_amount,
        "delivery_method": p.delivery.method.value,
        "delivery_attach_pdf": p.delivery.attach_pdf,
        "collections_exempt": p.collections_exempt,
        "collections_scenario_id": p.collections_scenario_id,
        "status_reason": account.status_reason,
        "status_actor": account.status_actor.value if account.status_actor else "",
        "status_actor_id": account.status_actor_id,
        "status_change_time": account.status_change_time,
        "create_time": account.create_time,
        "update_time": account.update_time,
        "version": account.version,
        "has_charges": account.has_charges,
        "personal_data_erased_at": account.personal_data_erased_at,
    }


def _account(row: Any) -> Account:
    return Account(
        account_id=row["account_id"],
        account_number=row["account_number"],
        type=AccountType(row["type"]),
        details=AccountDetails(
            display_name=row["display_name"],
            currency_code=row["currency_code"],
            time_zone=row["time_zone"],
            locale=row["locale"],
            country_code=row["country_code"],
            tax_id=row["tax_id"],
            date_of_birth=row["date_of_birth"],
            labels=dict(row["labels"]),
        ),
        status=AccountStatus(row["status"]),
        billing_profile=BillingProfile(
            bill_cycle_day=row["bill_cycle_day"],
            frequency=BillingFrequency(row["billing_frequency"]),
            payment_terms_days=row["payment_terms_days"],
            threshold_amount=row["threshold_amount"],
            delivery=DeliveryPreferences(DeliveryMethod(row["delivery_method"]), row["delivery_attach_pdf"]),
            collections_exempt=row["collections_exempt"],
            collections_scenario_id=row["collections_scenario_id"],
        ),
        create_time=row["create_time"],
        update_time=row["update_time"] or row["create_time"],
        version=row["version"],
        status_reason=row["status_reason"],
        status_actor=StatusActor(row["status_actor"]) if row["status_actor"] else None,
        status_actor_id=row["status_actor_id"],
        status_change_time=row["status_change_time"],
        has_charges=row["has_charges"],
        personal_data_erased_at=row["personal_data_erased_at"],
    )


def _service_row(service: ProvisionedService) -> dict[str, Any]:
    return {
        "service_id": service.service_id,
        "account_id": service.account_id,
        "kind": service.kind,
        "identifier": service.identifier,
        "description": service.description,
        "status": service.status.value,
        "suspended_with_account": service.suspended_with_account,
        "status_reason": service.status_reason,
        "status_actor": service.status_actor.value if service.status_actor else "",
        "labels": service.labels,
        "create_time": service.create_time,
        "update_time": service.update_time,
    }


def _service(row: Any) -> ProvisionedService:
    return ProvisionedService(
        service_id=row["service_id"],
        account_id=row["account_id"],
        kind=row["kind"],
        identifier=row["identifier"],
        description=row["description"],
        status=ServiceStatus(row["status"]),
        suspended_with_account=row["suspended_with_account"],
        status_reason=row["status_reason"],
        status_actor=StatusActor(row["status_actor"]) if row["status_actor"] else None,
        labels=dict(row["labels"]),
        create_time=row["create_time"],
        update_time=row["update_time"],
    )
