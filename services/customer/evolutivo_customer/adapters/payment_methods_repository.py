"""Loads and stores payment methods. Their type-specific details are one JSON document per row,
stored encrypted (Fernet, `FieldCipher` under CUSTOMER_PAYMENT_DETAILS_KEYS): IBANs, mandates and
provider tokens are never in the database, its backups or replicas in clear."""

from __future__ import annotations

import json
import uuid
from datetime import date
from typing import Any

from evolutivo_runtime.security.crypto import FieldCipher
from sqlalchemy import case, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from evolutivo_customer.adapters.orm import payment_methods
from evolutivo_customer.domain.model import Account
from evolutivo_customer.domain.payment_methods import (
    AccountPaymentMethods,
    BankTransferDetails,
    CardDetails,
    PaymentDetails,
    PaymentMethod,
    PaymentMethodType,
    PayOnInvoiceDetails,
    SepaDirectDebitDetails,
)


class PaymentMethodRepository:
    def __init__(self, session: AsyncSession, cipher: FieldCipher) -> None:
        self._session = session
        self._cipher = cipher

    async def for_account(
        self, account_id: uuid.UUID, include_removed: bool = False, for_update: bool = False
    ) -> list[PaymentMethod]:
        """The default first, then oldest first."""
        t = payment_methods
        query = (
            select(t)
            .where(t.c.account_id == account_id)
            .order_by(
                case((t.c.is_default & t.c.remove_time.is_(None), 0), else_=1), t.c.create_time, t.c.payment_method_id
            )
        )
        if not include_removed:
            query = query.where(t.c.remove_time.is_(None))
        if for_update:
            query = query.with_for_update()
        return [self._method(row._mapping) for row in await self._session.execute(query)]

    async def load(self, account: Account) -> AccountPaymentMethods:
        """The account's active methods, locked, as the aggregate that changes them."""
        return AccountPaymentMethods(account, await self.for_account(account.account_id, for_update=True))

    async def save(self, methods: AccountPaymentMethods) -> None:
        """Writes what changed. Rows losing the default are written before the row gaining it, so
        the one-default index holds after every statement."""
        t = payment_methods
        for method in methods.changed:
            if not method.is_default:
                await self._update(method)
        for method in methods.added:
            await self._session.execute(insert(t).values(**self._row(method)))
        for method in methods.changed:
            if method.is_default:
                await self._update(method)
        methods.added.clear()
        methods.changed.clear()

    async def save_details(self, method: PaymentMethod) -> None:
        """Writes anonymised details (privacy erasure)."""
        await self._update(method)

    async def _update(self, method: PaymentMethod) -> None:
        t = payment_methods
        await self._session.execute(
            update(t).where(t.c.payment_method_id == method.payment_method_id).values(**self._row(method))
        )

    async def rotate_batch(self, after: uuid.UUID | None, limit: int) -> tuple[uuid.UUID | None, int]:
        """Re-encrypts up to `limit` rows after `after` (id order) under the newest key: the last
        id done (None if none) and how many. Rows are locked so a concurrent write is not lost."""
        t = payment_methods
        query = select(t.c.payment_method_id, t.c.details).order_by(t.c.payment_method_id).limit(limit)
        if after is not None:
            query = query.where(t.c.payment_method_id > after)
        rows = (await self._session.execute(query.with_for_update())).all()
        for method_id, token in rows:
            await self._session.execute(
                update(t).where(t.c.payment_method_id == method_id).values(details=self._cipher.rotate(token))
            )
        return (rows[-1][0] if rows else None), len(rows)

    def _row(self, method: PaymentMethod) -> dict[str, Any]:
        return {
            "payment_method_id": method.payment_method_id,
            "account_id": method.account_id,
            "type": method.type.value,
            "is_default": method.is_default,
            "details": self._cipher.encrypt(json.dumps(_details_json(method)).encode()),
            "create_time": method.create_time,
            "remove_time": method.remove_time,
        }

    def _method(self, row: Any) -> PaymentMethod:
        data = json.loads(self._cipher.decrypt(row["details"]))
        return PaymentMethod(
            payment_method_id=row["payment_method_id"],
            account_id=row["account_id"],
            details=_details(PaymentMethodType(row["type"]), data),
            is_default=row["is_default"],
            create_time=row["create_time"],
            remove_time=row["remove_time"],
            erased=bool(data.get("erased", False)),
        )


def _details_json(method: PaymentMethod) -> dict[str, Any]:
    data: dict[str, Any]
    match method.details:
        case CardDetails() as c:
            data = {
                "provider": c.provider,
                "provider_token": c.provider_token,
                "brand": c.brand,
                "last4": c.last4,
                "expiry_month": c.expiry_month,
                "expiry_year": c.expiry_year,
            }
        case SepaDirectDebitDetails() as s:
            data = {
                "iban": s.iban,
                "bic": s.bic,
                "mandate_id": s.mandate_id,
                "mandate_signature_date": s.mandate_signature_date.isoformat() if s.mandate_signature_date else None,
                "account_holder": s.account_holder,
            }
        case BankTransferDetails() as b:
            data = {"payment_reference": b.payment_reference}
        case PayOnInvoiceDetails():
            data = {}
    if method.erased:
        data["erased"] = True
    return data


def _details(kind: PaymentMethodType, data: dict[str, Any]) -> PaymentDetails:
    match kind:
        case PaymentMethodType.CARD:
            return CardDetails(
                provider=data["provider"],
                provider_token=data["provider_token"],
                brand=data["brand"],
                last4=data["last4"],
                expiry_month=data["expiry_month"],
                expiry_year=data["expiry_year"],
            )
        case PaymentMethodType.SEPA_DIRECT_DEBIT:
            signed = data["mandate_signature_date"]
            return SepaDirectDebitDetails(
                iban=data["iban"],
                bic=data["bic"],
                mandate_id=data["mandate_id"],
                mandate_signature_date=date.fromisoformat(signed) if signed else None,
                account_holder=data["account_holder"],
            )
        case PaymentMethodType.BANK_TRANSFER:
            return BankTransferDetails(payment_reference=data["payment_reference"])
        case PaymentMethodType.PAY_ON_INVOICE:
            return PayOnInvoiceDetails()
