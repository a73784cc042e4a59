"""Bill units and their rules. Plain Python: no protobuf, no SQL."""

from __future__ import annotations

import enum
import functools
import re
import uuid
import zoneinfo
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal

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


class AccountStatus(enum.Enum):
    """The account's status as customer announces it (AccountStatusChanged)."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    CLOSED = "closed"


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
    # The profile in force: the current cycle's.
    profile: BillingProfile
    create_time: datetime
    # Customer's account status, for bill runs and collections (a later issue reads it), and when it
    # last changed (None: the status the account was opened with).
    account_status: AccountStatus = AccountStatus.ACTIVE
    account_status_change_time: datetime | None = None
    # A profile change customer announced, waiting for the unit's next cycle; None when there is none.
    pending_profile: BillingProfile | None = None
    # When customer last changed the account's billing profile (None: never).
    profile_change_time: datetime | None = None
    # The profile's threshold (docs/billing.md, "Other triggers"): a bill is issued as soon as the
    # unbilled amount reaches it. It applies at once (it moves no cycle boundary). None: none.
    threshold_amount: Decimal | None = None
    # When the unbilled amount reached it; set until the threshold bill is issued.
    threshold_reached_time: datetime | None = None
    events: list[object] = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        validate_currency(self.currency_code)
        validate_time_zone(self.time_zone)
        _require_aware(self.create_time, "create_time")
        if self.account_status_change_time is not None:
            _require_aware(self.account_status_change_time, "account_status_change_time")
        if self.profile_change_time is not None:
            _require_aware(self.profile_change_time, "profile_change_time")

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

    def record_account_status(self, status: AccountStatus, change_time: datetime) -> bool:
        """The account's status as customer changed it at `change_time`.

        Events of one account can be applied out of order (replicas share a consumer), so a change
        no newer than the one recorded changes nothing; returns whether this one was recorded."""
        _require_aware(change_time, "change_time")
        if self.account_status_change_time is not None and change_time <= self.account_status_change_time:
            return False
        self.account_status = status
        self.account_status_change_time = change_time.astimezone(UTC)
        return True

    def schedule_profile_change(self, profile: BillingProfile, change_time: datetime) -> bool:
        """A billing profile customer set at `change_time`. It takes effect from the unit's next
        cycle, so it waits as pending (a later change replaces it; a change back to the profile in
        force cancels it). A change no newer than the last one recorded changes nothing; returns
        whether this one was recorded."""
        _require_aware(change_time, "change_time")
        if self.profile_change_time is not None and change_time <= self.profile_change_time:
            return False
        self.pending_profile = None if profile == self.profile else profile
        self.profile_change_time = change_time.astimezone(UTC)
        return True

    def set_threshold(self, amount: Decimal | None) -> None:
        """The profile's threshold, in force at once (None or zero: no threshold)."""
        if amount is not None and (not amount.is_finite() or amount < 0):
            raise InvalidBillUnit(f"threshold_amount must not be negative, not {amount}")
        self.threshold_amount = amount if amount else None

    def apply_pending_profile(self) -> bool:
        """Brings the pending profile into force, whenever it was changed; returns whether there
        was one. Cycles use `start_cycle_at`, which applies it only from the right cycle."""
        if self.pending_profile is None:
            return False
        self.profile, self.pending_profile = self.pending_profile, None
        return True

    def start_cycle_at(self, boundary: datetime) -> bool:
        """The unit's next cycle starts at `boundary` (the end of the cycle closing). A pending
        profile changed before the boundary comes into force from that cycle (a change takes
        effect from the cycle after the one it was made in); one changed at or after the boundary
        was made during the new cycle and waits for the one after it. Returns whether a pending
        profile came into force."""
        _require_aware(boundary, "boundary")
        if self.pending_profile is None:
            return False
        if self.profile_change_time is not None and self.profile_change_time >= boundary:
            return False
        return self.apply_pending_profile()


@dataclass(frozen=True)
class OpenBill:
    """A bill with something still to pay (bills arrive with the bill-run issue)."""

    bill_id: uuid.UUID
    bill_number: str
    total: Decimal
    open_amount: Decimal
    due_date: date

    def is_overdue(self, today: date) -> bool:
        """Past its due date (`today` in the bill unit's time zone) and not fully paid."""
        return self.open_amount > 0 and self.due_date < today


@dataclass(frozen=True)
class CollectionsState:
    """Where the account stands in collections (dunning arrives with a later issue)."""

    in_collections: bool = False
    case_id: str = ""
    stage: str = ""
    overdue_amount: Decimal = Decimal(0)
    days_past_due: int = 0


@dataclass(frozen=True)
class BillingSummary:
    """An account's bill unit, open bills and collections state, as of `today` in the unit's zone."""

    bill_unit: BillUnit
    open_bills: list[OpenBill]
    collections: CollectionsState
    today: date

    @classmethod
    def of(
        cls, unit: BillUnit, open_bills: list[OpenBill], collections: CollectionsState, now: datetime
    ) -> BillingSummary:
        today = now.astimezone(zoneinfo.ZoneInfo(unit.time_zone)).date()
        bills = sorted(open_bills, key=lambda b: (b.due_date, b.bill_number))
        return cls(unit, bills, collections, today)

    @property
    def overdue_total(self) -> Decimal:
        """Sum of the overdue bills' open amounts, in the unit's currency."""
        return sum((b.open_amount for b in self.open_bills if b.is_overdue(self.today)), Decimal(0))


@dataclass(frozen=True)
class BillUnitCreated:
    bill_unit: BillUnit


@dataclass(frozen=True, order=True)
class ListPosition:
    """Where a listing of bill units stands: the sort key (oldest first) of the last unit it returned."""

    create_time: datetime
    bill_unit_id: uuid.UUID


def _require_aware(instant: datetime, name: str) -> None:
    if instant.utcoffset() is None:
        raise InvalidBillUnit(f"{name} must be timezone-aware")


def validate_currency(code: str) -> None:
    if not _CURRENCY_CODE.match(code):
        raise InvalidBillUnit(f"currency_code must be an ISO 4217 code such as EUR, not {code!r}")


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def validate_time_zone(name: str) -> None:
    if name not in _time_zones():
        raise InvalidBillUnit(f"time_zone must be an IANA time zone such as Europe/Madrid, not {name!r}")
