"""The charge-offer catalog: offers, their versions, charges and price models.

Plain Python: no protobuf, no SQL. Prices are exact decimals in the offer's currency; unit prices
may be finer than the currency's minor unit (rounding happens on the charge, see pricing.py).
"""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation

from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument

_CODE = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
_EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
MAX_CHARGES = 100
MAX_TIERS = 50
# Catalog numbers: below 10^18, at most 12 decimals (unit prices finer than a cent are common).
MAX_DECIMALS = 12


class OfferStatus(enum.Enum):
    DRAFT = "draft"
    ACTIVE = "active"
    RETIRED = "retired"


class RecurringTiming(enum.Enum):
    IN_ADVANCE = "in_advance"
    IN_ARREARS = "in_arrears"


def decimal_field(value: str, field: str, *, allow_empty: bool = False, positive: bool = False) -> Decimal | None:
    """Parses a decimal string from the API: finite, not negative (or > 0 when `positive`)."""
    if value.strip() == "":
        if allow_empty:
            return None
        raise InvalidArgument(field, "is required: a decimal number such as 0.05")
    try:
        number = Decimal(value.strip())
    except InvalidOperation:
        raise InvalidArgument(field, "must be a decimal number such as 0.05") from None
    if not number.is_finite():
        raise InvalidArgument(field, "must be a finite decimal number")
    # adjusted() and the exponent are read without arithmetic, which could overflow the context.
    if number != 0 and number.adjusted() >= 18:
        raise InvalidArgument(field, "must be below 10^18")
    if int(number.as_tuple().exponent) < -MAX_DECIMALS and number != number.quantize(Decimal(1).scaleb(-MAX_DECIMALS)):
        raise InvalidArgument(field, f"must have at most {MAX_DECIMALS} decimals")
    if number < 0 or (positive and number == 0):
        raise InvalidArgument(field, "must be greater than zero" if positive else "must not be negative")
    return number


@dataclass(frozen=True)
class Flat:
    amount: Decimal


@dataclass(frozen=True)
class PerUnit:
    unit_price: Decimal


@dataclass(frozen=True)
class Tier:
    # Inclusive upper bound in cumulative cycle units; None on the last tier only.
    up_to: Decimal | None
    unit_price: Decimal
    flat_fee: Decimal = Decimal(0)


@dataclass(frozen=True)
class Graduated:
    tiers: tuple[Tier, ...]


@dataclass(frozen=True)
class Volume:
    tiers: tuple[Tier, ...]


@dataclass(frozen=True)
class Package:
    size: Decimal
    price: Decimal
    free_units: Decimal = Decimal(0)


@dataclass(frozen=True)
class Percentage:
    amount_property: str
    rate: Decimal
    min_per_event: Decimal | None = None
    max_per_event: Decimal | None = None
    fixed_per_event: Decimal = Decimal(0)


@dataclass(frozen=True)
class Recurring:
    amount: Decimal
    timing: RecurringTiming
    prorate: bool = True


@dataclass(frozen=True)
class OneTime:
    amount: Decimal


PriceModel = Flat | PerUnit | Graduated | Volume | Package | Percentage | Recurring | OneTime
USAGE_MODELS = (Flat, PerUnit, Graduated, Volume, Package, Percentage)


@dataclass(frozen=True)
class PropertyFilter:
    property: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Charge:
    code: str
    name: str
    price: PriceModel
    event_type: str = ""
    filters: tuple[PropertyFilter, ...] = ()
    quantity_property: str = ""
    balance_group: str = ""
    tax_code: str = ""
    # Rates usage even while its balance group is over its credit limit (docs/charging.md).
    allow_overage: bool = False

    @property
    def is_usage(self) -> bool:
        return isinstance(self.price, USAGE_MODELS)

    def check(self, prefix: str) -> None:
        if not _CODE.match(self.code):
            raise InvalidArgument(f"{prefix}.code", "lower-case, starts with a letter, at most 63 characters")
        if self.is_usage:
            if not _EVENT_TYPE.match(self.event_type):
                raise InvalidArgument(f"{prefix}.event_type", "is required for usage prices, e.g. api.call")
        elif self.event_type or self.filters or self.quantity_property:
            raise InvalidArgument(f"{prefix}.event_type", "recurring and one-time fees match no events")
        for i, f in enumerate(self.filters):
            if not f.property or not f.values:
                raise InvalidArgument(f"{prefix}.filters[{i}]", "needs a property and at least one value")
        _check_price(self.price, prefix)

    def matches(self, event_type: str, properties: dict[str, str]) -> bool:
        return (
            self.is_usage
            and self.event_type == event_type
            and all(properties.get(f.property) in f.values for f in self.filters)
        )


def _check_price(price: PriceModel, prefix: str) -> None:
    if isinstance(price, Graduated | Volume):
        kind = "graduated" if isinstance(price, Graduated) else "volume"
        tiers = price.tiers
        if not tiers or len(tiers) > MAX_TIERS:
            raise InvalidArgument(f"{prefix}.{kind}.tiers", f"needs 1 to {MAX_TIERS} tiers")
        previous = Decimal(0)
        for i, tier in enumerate(tiers):
            last = i == len(tiers) - 1
            if tier.up_to is None and not last:
                raise InvalidArgument(f"{prefix}.{kind}.tiers[{i}].up_to", "only the last tier may be unbounded")
            if tier.up_to is not None:
                if last:
                    raise InvalidArgument(f"{prefix}.{kind}.tiers[{i}].up_to", "the last tier must be unbounded")
                if tier.up_to <= previous:
                    raise InvalidArgument(f"{prefix}.{kind}.tiers[{i}].up_to", "bounds must increase")
                previous = tier.up_to
    elif isinstance(price, Percentage):
        if not 0 <= price.rate <= 1:
            raise InvalidArgument(f"{prefix}.percentage.rate", "must be a fraction between 0 and 1, e.g. 0.029")
        if not price.amount_property:
            raise InvalidArgument(f"{prefix}.percentage.amount_property", "is required, e.g. amount")
        if price.min_per_event is not None and price.max_per_event is not None:
            if price.min_per_event > price.max_per_event:
                raise InvalidArgument(f"{prefix}.percentage.max_per_event", "must not be below min_per_event")


@dataclass
class ChargeOffer:
    """One version of an offer. Only a DRAFT changes; ACTIVE and RETIRED versions are immutable."""

    charge_offer_id: uuid.UUID
    code: str
    version: int
    name: str
    description: str
    currency_code: str
    valid_from: datetime | None
    valid_to: datetime | None
    status: OfferStatus
    charges: tuple[Charge, ...]
    create_time: datetime
    activate_time: datetime | None = None
    retire_time: datetime | None = None
    events: list[object] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def draft(
        cls,
        code: str,
        version: int,
        name: str,
        description: str,
        currency_code: str,
        valid_from: datetime | None,
        valid_to: datetime | None,
        charges: tuple[Charge, ...],
        now: datetime,
    ) -> ChargeOffer:
        offer = cls(
            charge_offer_id=uuid.uuid4(),
            code=code,
            version=version,
            name=name.strip(),
            description=description.strip(),
            currency_code=currency_code,
            valid_from=valid_from,
            valid_to=valid_to,
            status=OfferStatus.DRAFT,
            charges=charges,
            create_time=now,
        )
        offer.check()
        return offer

    def check(self) -> None:
        if not _CODE.match(self.code):
            raise InvalidArgument("charge_offer.code", "lower-case, starts with a letter, at most 63 characters")
        if not self.name or len(self.name) > 200:
            raise InvalidArgument("charge_offer.name", "is required, at most 200 characters")
        if len(self.charges) > MAX_CHARGES:
            raise InvalidArgument("charge_offer.charges", f"at most {MAX_CHARGES} charges")
        seen: set[str] = set()
        for i, charge in enumerate(self.charges):
            charge.check(f"charge_offer.charges[{i}]")
            if charge.code in seen:
                raise InvalidArgument(f"charge_offer.charges[{i}].code", f"{charge.code!r} appears twice")
            seen.add(charge.code)
        if self.valid_from and self.valid_to and self.valid_to <= self.valid_from:
            raise InvalidArgument("charge_offer.valid_to", "must be after valid_from")

    def revise(self, changes: dict[str, object]) -> None:
        """Changes a draft; `changes` maps field names to new values."""
        if self.status is not OfferStatus.DRAFT:
            raise FailedPrecondition(
                "CHARGE_OFFER_IMMUTABLE", "only a draft changes: create a new version of an active offer"
            )
        revised = replace(self, **changes)  # type: ignore[arg-type]
        revised.check()
        for name in changes:
            setattr(self, name, getattr(revised, name))

    def activate(self, previous: ChargeOffer | None, now: datetime) -> None:
        """Makes this draft the version in force from its valid_from (now when unset); the previous
        active version of the code ends there."""
        if self.status is not OfferStatus.DRAFT:
            raise FailedPrecondition(
                "CHARGE_OFFER_NOT_DRAFT", f"only a draft can be activated; it is {self.status.value}"
            )
        if not self.charges:
            raise FailedPrecondition("CHARGE_OFFER_EMPTY", "an offer needs at least one charge to be activated")
        self.valid_from = self.valid_from or now
        replaced = None
        if previous is not None:
            if previous.valid_from is not None and self.valid_from <= previous.valid_from:
                raise FailedPrecondition(
                    "CHARGE_OFFER_OVERLAP",
                    f"valid_from must be after version {previous.version}'s valid_from",
                )
            if previous.valid_to is None or previous.valid_to > self.valid_from:
                previous.valid_to = self.valid_from
                replaced = previous
        self.status = OfferStatus.ACTIVE
        self.activate_time = now
        self.events.append(ChargeOfferActivated(self, replaced))

    def retire(self, now: datetime) -> None:
        if self.status is not OfferStatus.ACTIVE:
            raise FailedPrecondition(
                "CHARGE_OFFER_NOT_ACTIVE", f"only an active offer can be retired; it is {self.status.value}"
            )
        self.status = OfferStatus.RETIRED
        self.retire_time = now
        self.events.append(ChargeOfferRetired(self))

    def in_force(self, instant: datetime) -> bool:
        """Rates events at this instant (active or retired: existing purchases keep rating)."""
        return (
            self.status is not OfferStatus.DRAFT
            and self.valid_from is not None
            and self.valid_from <= instant
            and (self.valid_to is None or instant < self.valid_to)
        )

    def purchasable(self, instant: datetime) -> bool:
        return self.status is OfferStatus.ACTIVE and self.in_force(instant)


@dataclass(frozen=True)
class ChargeOfferActivated:
    offer: ChargeOffer
    # The version whose validity the activation ended (its valid_to is now the offer's valid_from).
    replaced: ChargeOffer | None = None


@dataclass(frozen=True)
class ChargeOfferRetired:
    offer: ChargeOffer
