"""Bill units and their rules. Plain Python: no protobuf, no SQL."""

from __future__ import annotations

import enum
import functools
import re
import uuid
import zoneinfo
from dataclasses import dataclass, field
from datetime import UTC, datetime

MAX_BILL_CYCLE_DAY = 31
MAX_PAYMENT_TERMS_DAYS = 365
_CURRENCY_CODE = re.compile(r"^[A-Z]{3}$")


class InvalidBillUnit(ValueError):
    """A bill unit that breaks its rules: the account data it was built from is malformed."""


class BillingFrequency(enum.Enum):
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    SEMI_ANNUAL = "semi_annual"
    ANNUAL = "annual"

    @property
    def months(self) -> int:
        """Length of one billing cycle, in months."""
        return _MONTHS[self]


_MONTHS = {
    BillingFrequency.MONTHLY: 1,
    BillingFrequency.QUARTERLY: 3,
    BillingFrequency.SEMI_ANNUAL: 6,
    BillingFrequency.ANNUAL: 12,
}


@dataclass(frozen=True)
class BillingProfile:
    """When a bill unit's cycles close and how long its bills give to pay."""

    # Day of month the cycle closes; a shorter month clamps to its last day.
    bill_cycle_day: int
    frequency: BillingFrequency = BillingFrequency.MONTHLY
    # Days between a bill's issue date and its due date.
    payment_terms_days: int = 30

    def __post_init__(self) -> None:
        if not 1 <= self.bill_cycle_day <= MAX_BILL_CYCLE_DAY:
            raise InvalidBillUnit(
                f"bill_cycle_day must be between 1 and {MAX_BILL_CYCLE_DAY}, not {self.bill_cycle_day}"
            )
        if not 0 <= self.payment_terms_days <= MAX_PAYMENT_TERMS_DAYS:
            raise InvalidBillUnit(
                f"payment_terms_days must be between 0 and {MAX_PAYMENT_TERMS_DAYS}, not {self.payment_terms_days}"
            )


@dataclass
class BillUnit:
    """What billing bills: exactly one per account, in the account's currency and time zone."""

    bill_unit_id: uuid.UUID
    account_id: uuid.UUID
    currency_code: str
    # IANA time zone the cycles are computed in.
    time_zone: str
    profile: BillingProfile
    create_time: datetime
    events: list[object] = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        validate_currency(self.currency_code)
        validate_time_zone(self.time_zone)
        if self.create_time.utcoffset() is None:
            raise InvalidBillUnit("create_time must be timezone-aware")

    @classmethod
    def open(
        cls, account_id: uuid.UUID, currency_code: str, time_zone: str, profile: BillingProfile, now: datetime
    ) -> BillUnit:
        """The bill unit of a new account."""
        if now.utcoffset() is None:
            raise InvalidBillUnit("create_time must be timezone-aware")
        unit = cls(
            bill_unit_id=uuid.uuid4(),
            account_id=account_id,
            currency_code=currency_code,
            time_zone=time_zone,
            profile=profile,
            create_time=now.astimezone(UTC),
        )
        unit.events.append(BillUnitCreated(unit))
        return unit

    @property
    def position(self) -> ListPosition:
        return ListPosition(self.create_time, self.bill_unit_id)


@dataclass(frozen=True)
class BillUnitCreated:
    bill_unit: BillUnit


@dataclass(frozen=True, order=True)
class ListPosition:
    """Where a listing of bill units stands: the sort key (oldest first) of the last unit it returned."""

    create_time: datetime
    bill_unit_id: uuid.UUID


def validate_currency(code: str) -> None:
    if not _CURRENCY_CODE.match(code):
        raise InvalidBillUnit(f"currency_code must be an ISO 4217 code such as EUR, not {code!r}")


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def validate_time_zone(name: str) -> None:
    if name not in _time_zones():
        raise InvalidBillUnit(f"time_zone must be an IANA time zone such as Europe/Madrid, not {name!r}")
