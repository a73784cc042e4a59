"""Translation between purchases and the evolutivo.customer.v1 messages."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation

from evolutivo.customer.v1 import purchase_pb2
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.money import from_money, to_money
from evolutivo_runtime.timestamps import to_timestamp

from evolutivo_customer.domain.purchases import PriceOverride, Purchase, PurchaseState

_STATES = {
    PurchaseState.PENDING: purchase_pb2.PURCHASE_STATE_PENDING,
    PurchaseState.ACTIVE: purchase_pb2.PURCHASE_STATE_ACTIVE,
    PurchaseState.ENDED: purchase_pb2.PURCHASE_STATE_ENDED,
    PurchaseState.CANCELLED: purchase_pb2.PURCHASE_STATE_CANCELLED,
}


def quantity_from_pb(text: str) -> Decimal:
    """Quantities travel as decimal strings; empty means 1."""
    if not text.strip():
        return Decimal(1)
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise InvalidArgument("purchase.quantity", "must be a decimal number such as 1 or 2.5") from None
    if not value.is_finite():
        raise InvalidArgument("purchase.quantity", "must be a finite number")
    return value


def overrides_from_pb(pb: purchase_pb2.Purchase, currency_code: str) -> tuple[PriceOverride, ...]:
    overrides = []
    for i, o in enumerate(pb.price_overrides):
        if o.price.currency_code not in ("", currency_code):
            raise InvalidArgument(
                f"purchase.price_overrides[{i}].price.currency_code", f"must be the account's currency, {currency_code}"
            )
        try:
            price = from_money(o.price)
        except ValueError as exc:
            raise InvalidArgument(f"purchase.price_overrides[{i}].price", str(exc)) from None
        overrides.append(PriceOverride(o.charge_code.strip(), price))
    return tuple(overrides)


def purchase_to_pb(purchase: Purchase, at: datetime) -> purchase_pb2.Purchase:
    return purchase_pb2.Purchase(
        purchase_id=str(purchase.purchase_id),
        account_id=str(purchase.account_id),
        service_id=str(purchase.service_id) if purchase.service_id else "",
        charge_offer_code=purchase.charge_offer_code,
        charge_offer_version=purchase.charge_offer_version,
        quantity=format(purchase.quantity.normalize(), "f"),
        start_time=to_timestamp(purchase.start_time),
        end_time=to_timestamp(purchase.end_time),
        price_overrides=[
            purchase_pb2.PriceOverride(charge_code=o.charge_code, price=to_money(o.price, purchase.currency_code))
            for o in purchase.price_overrides
        ],
        state=_STATES[purchase.state_at(at)],
        create_time=to_timestamp(purchase.create_time),
        cancel_time=to_timestamp(purchase.cancel_time),
    )
