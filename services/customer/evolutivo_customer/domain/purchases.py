"""Charge offers bought by an account. Plain Python: no protobuf, no SQL."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument

from evolutivo_customer.domain.model import Account, AccountStatus, ProvisionedService, ServiceStatus
from evolutivo_customer.domain.validation import currency_exponent

MAX_QUANTITY_DECIMALS = 9
# The stored quantity is NUMERIC(38, 9): at most 29 digits before the point.
MAX_QUANTITY = Decimal(10) ** 29


class PurchaseState(enum.Enum):
    PENDING = "pending"
    ACTIVE = "active"
    ENDED = "ended"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class OfferView:
    """What customer needs to know of a charging catalog offer version to sell it."""

    code: str
    version: int
    currency_code: str
    charge_codes: frozenset[str]
    # Active (not draft, not retired) and in force at the purchase's start.
    purchasable: bool


@dataclass(frozen=True)
class PriceOverride:
    charge_code: str
    price: Decimal


@dataclass
class Purchase:
    purchase_id: uuid.UUID
    account_id: uuid.UUID
    service_id: uuid.UUID | None
    charge_offer_code: str
    charge_offer_version: int
    quantity: Decimal
    start_time: datetime
    end_time: datetime | None
    price_overrides: tuple[PriceOverride, ...]
    create_time: datetime
    # The account's (and the offer's) currency: every price override is in it.
    currency_code: str
    cancel_time: datetime | None = None
    events: list[object] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def buy(
        cls,
        account: Account,
        service: ProvisionedService | None,
        offer: OfferView | None,
        code: str,
        quantity: Decimal,
        start: datetime,
        end: datetime | None,
        overrides: tuple[PriceOverride, ...],
        now: datetime,
    ) -> Purchase:
        if account.status is not AccountStatus.ACTIVE:
            raise FailedPrecondition(
                "ACCOUNT_NOT_ACTIVE", f"only an active account can buy; it is {account.status.value}"
            )
        if service is not None and service.status is ServiceStatus.CLOSED:
            raise FailedPrecondition("SERVICE_CLOSED", "a closed service cannot get new purchases")
        if not quantity.is_finite() or quantity <= 0:
            raise InvalidArgument("purchase.quantity", "must be a number greater than zero")
        if quantity >= MAX_QUANTITY:
            raise InvalidArgument("purchase.quantity", "must be less than 10^29")
        if quantity != quantity.quantize(Decimal(1).scaleb(-MAX_QUANTITY_DECIMALS)):
            raise InvalidArgument("purchase.quantity", f"must have at most {MAX_QUANTITY_DECIMALS} decimals")
        if start < account.create_time:
            raise InvalidArgument("purchase.start_time", "must not be before the account was created")
        if end is not None and end <= start:
            raise InvalidArgument("purchase.end_time", "must be after start_time")
        if offer is None or not offer.purchasable:
            raise FailedPrecondition(
                "CHARGE_OFFER_NOT_PURCHASABLE",
                f"charge offer {code!r} has no active version in force at the purchase's start",
                {"charge_offer_code": code},
            )
        if offer.currency_code != account.details.currency_code:
            raise FailedPrecondition(
                "CURRENCY_MISMATCH",
                f"charge offer {code!r} is priced in {offer.currency_code}; the account is in "
                f"{account.details.currency_code}",
            )
        seen: set[str] = set()
        exponent = currency_exponent(offer.currency_code)
        for i, override in enumerate(overrides):
            path = f"purchase.price_overrides[{i}]"
            if override.charge_code not in offer.charge_codes:
                raise InvalidArgument(f"{path}.charge_code", f"the offer has no charge {override.charge_code!r}")
            if override.charge_code in seen:
                raise InvalidArgument(f"{path}.charge_code", "is overridden twice")
            seen.add(override.charge_code)
            if not override.price.is_finite() or override.price < 0:
                raise InvalidArgument(f"{path}.price", "must not be negative")
            # Unit prices may be finer than the minor unit (rounding happens on the charge), but
            # not finer than google.type.Money carries.
            if override.price != override.price.quantize(Decimal(1).scaleb(-max(exponent, 9))):
                raise InvalidArgument(f"{path}.price", "must have at most 9 decimals")
        purchase = cls(
            purchase_id=uuid.uuid4(),
            account_id=account.account_id,
            service_id=service.service_id if service else None,
            charge_offer_code=offer.code,
            charge_offer_version=offer.version,
            quantity=quantity,
            start_time=start,
            end_time=end,
            price_overrides=overrides,
            create_time=now,
            currency_code=account.details.currency_code,
        )
        purchase.events.append(PurchaseCreated(purchase, account.details.time_zone))
        return purchase

    def state_at(self, instant: datetime) -> PurchaseState:
        if self.cancel_time is not None:
            return PurchaseState.CANCELLED
        if instant < self.start_time:
            return PurchaseState.PENDING
        if self.end_time is not None and instant >= self.end_time:
            return PurchaseState.ENDED
        return PurchaseState.ACTIVE

    def end(self, end_time: datetime, now: datetime) -> None:
        """Ends the purchase at `end_time`: not in the past (charges already rated stay right),
        not before its start."""
        state = self.state_at(now)
        if state in (PurchaseState.CANCELLED, PurchaseState.ENDED):
            raise FailedPrecondition("PURCHASE_OVER", f"the purchase is already {state.value}")
        if end_time < now:
            raise InvalidArgument("end_time", "must not be in the past")
        if end_time <= self.start_time:
            raise InvalidArgument(
                "end_time", "must be after the purchase's start; cancel a purchase that has not started"
            )
        self.end_time = end_time
        self.events.append(PurchaseEnded(self))

    def cancel(self, now: datetime) -> None:
        """Cancels a purchase that has not started: it is never charged."""
        if self.state_at(now) is not PurchaseState.PENDING:
            raise FailedPrecondition(
                "PURCHASE_STARTED", "only a purchase that has not started can be cancelled; end it instead"
            )
        self.cancel_time = now
        self.events.append(PurchaseEnded(self))


@dataclass(frozen=True)
class PurchaseCreated:
    purchase: Purchase
    time_zone: str


@dataclass(frozen=True)
class PurchaseEnded:
    purchase: Purchase
