"""Usage events, and what charging knows to rate them: purchases, billing cycles, charges.

Plain Python: no protobuf, no SQL. The rules that turn an event into charges are in rating.py.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from evolutivo_runtime.errors import InvalidArgument, ServiceError

from evolutivo_charging.domain.catalog import decimal_field
from evolutivo_charging.domain.pricing import TierLine

# The event types charges match (catalog.py uses the same syntax), e.g. api.call, storage.gb_hour.
EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
MAX_EVENT_ID = 200
MAX_EVENT_TYPE = 200
MAX_PROPERTIES = 64
MAX_PROPERTY_NAME = 100
MAX_PROPERTY_VALUE = 1000
# Events per RecordUsageBatch, StreamUsage slice and ResubmitUsage call.
MAX_BATCH = 1000


class UsageStatus(enum.Enum):
    RATED = "rated"
    UNRATED = "unrated"
    REJECTED = "rejected"


class Reason:
    """Why an event was kept without charges (UsageResult.reason)."""

    UNKNOWN_ACCOUNT = "UNKNOWN_ACCOUNT"
    ACCOUNT_SUSPENDED = "ACCOUNT_SUSPENDED"
    ACCOUNT_CLOSED = "ACCOUNT_CLOSED"
    NO_MATCHING_PURCHASE = "NO_MATCHING_PURCHASE"
    NO_OPEN_CYCLE = "NO_OPEN_CYCLE"
    # A matching charge reads its quantity from a property the event lacks, or that is not a
    # positive decimal.
    QUANTITY_PROPERTY_INVALID = "QUANTITY_PROPERTY_INVALID"
    # A percentage charge's amount property is missing or not a non-negative decimal.
    AMOUNT_PROPERTY_INVALID = "AMOUNT_PROPERTY_INVALID"
    # A purchase overrides the price of a percentage charge: a Money price cannot replace a rate.
    PRICE_OVERRIDE_UNSUPPORTED = "PRICE_OVERRIDE_UNSUPPORTED"
    # The offer version is priced in another currency than the account's.
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    # A charge of the event lands in a balance group over its credit limit and does not allow
    # overage (balance's CreditLimitExceeded); kept as REJECTED, re-submittable once restored.
    CREDIT_LIMIT_EXCEEDED = "CREDIT_LIMIT_EXCEEDED"


def _no_control_characters(value: str) -> bool:
    return value.isprintable()


def event_quantity(value: str, field: str) -> Decimal:
    """A usage quantity: a finite decimal greater than zero, below 10^18, at most 12 decimals.
    Empty means 1."""
    if value.strip() == "":
        return Decimal(1)
    quantity = decimal_field(value, field, positive=True)
    assert quantity is not None
    return quantity


# One encoder for every canonical payload: json.dumps with options builds a new one per call.
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class UsageEvent:
    """A usage event that passed validation (`UsageEvent.validated`)."""

    event_id: str
    account_id: uuid.UUID
    event_type: str
    event_time: datetime
    quantity: Decimal
    properties: tuple[tuple[str, str], ...] = ()
    service_id: uuid.UUID | None = None

    @classmethod
    def validated(
        cls,
        prefix: str,
        event_id: str,
        account_id: str,
        event_type: str,
        event_time: datetime | None,
        quantity: str,
        properties: dict[str, str],
        service_id: str,
    ) -> UsageEvent:
        """Checks every field, naming the first bad one under `prefix` (e.g. `events[3]`)."""
        if not event_id:
            raise InvalidArgument(f"{prefix}.event_id", "is required")
        if len(event_id) > MAX_EVENT_ID or not _no_control_characters(event_id):
            raise InvalidArgument(
                f"{prefix}.event_id", f"at most {MAX_EVENT_ID} printable characters, unique per platform"
            )
        if not account_id:
            raise InvalidArgument(f"{prefix}.account_id", "is required")
        try:
            account = uuid.UUID(account_id)
        except ValueError:
            raise InvalidArgument(f"{prefix}.account_id", "must be a UUID") from None
        if not event_type:
            raise InvalidArgument(f"{prefix}.event_type", "is required, e.g. api.call")
        if len(event_type) > MAX_EVENT_TYPE or not EVENT_TYPE.match(event_type):
            raise InvalidArgument(
                f"{prefix}.event_type", "lower-case words separated by dots, e.g. api.call or storage.gb_hour"
            )
        if event_time is None:
            raise InvalidArgument(f"{prefix}.event_time", "is required: when the action happened")
        amount = event_quantity(quantity, f"{prefix}.quantity")
        if len(properties) > MAX_PROPERTIES:
            raise InvalidArgument(f"{prefix}.properties", f"at most {MAX_PROPERTIES} properties")
        for name, value in properties.items():
            if not name or len(name) > MAX_PROPERTY_NAME or not _no_control_characters(name):
                raise InvalidArgument(
                    f"{prefix}.properties", f"names are 1 to {MAX_PROPERTY_NAME} printable characters"
                )
            if len(value) > MAX_PROPERTY_VALUE:
                raise InvalidArgument(f"{prefix}.properties[{name}]", f"at most {MAX_PROPERTY_VALUE} characters")
        service = None
        if service_id:
            try:
                service = uuid.UUID(service_id)
            except ValueError:
                raise InvalidArgument(f"{prefix}.service_id", "must be a UUID when set") from None
        return cls(
            event_id=event_id,
            account_id=account,
            event_type=event_type,
            event_time=event_time.astimezone(UTC),
            quantity=amount,
            properties=tuple(sorted(properties.items())),
            service_id=service,
        )

    @property
    def property_map(self) -> dict[str, str]:
        return dict(self.properties)

    def payload(self) -> dict[str, object]:
        """The canonical payload, without the id: what must match when an id comes back. JSON-able;
        charging also keeps it to rate the event again (ResubmitUsage).

        Canonical: the account and service as lower-case UUIDs, the time in UTC to the
        microsecond, the quantity as its plain decimal value ("", "1" and "1.0" are one payload),
        the properties sorted."""
        return {
            "account_id": str(self.account_id),
            "event_type": self.event_type,
            "event_time": self.event_time.isoformat(),
            "quantity": format(self.quantity.normalize(), "f"),
            "properties": dict(self.properties),
            "service_id": str(self.service_id) if self.service_id else "",
        }

    def payload_text(self) -> str:
        """The canonical payload as JSON text (keys sorted, no spaces): what the fingerprint hashes
        and what charging stores."""
        return self._payload_text

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the canonical payload: the id's payload, for idempotency."""
        return self._fingerprint

    # Each computed once per event: a call compares and stores them more than once.
    @functools.cached_property
    def _payload_text(self) -> str:
        return _CANONICAL_JSON.encode(self.payload())

    @functools.cached_property
    def _fingerprint(self) -> str:
        return hashlib.sha256(self._payload_text.encode()).hexdigest()

    @classmethod
    def from_payload(cls, event_id: str, payload: dict[str, object]) -> UsageEvent:
        """The event `payload()` stored (already validated when it was received)."""
        properties = payload["properties"]
        assert isinstance(properties, dict)
        service_id = str(payload["service_id"])
        return cls(
            event_id=event_id,
            account_id=uuid.UUID(str(payload["account_id"])),
            event_type=str(payload["event_type"]),
            event_time=datetime.fromisoformat(str(payload["event_time"])),
            quantity=Decimal(str(payload["quantity"])),
            properties=tuple(sorted((str(k), str(v)) for k, v in properties.items())),
            service_id=uuid.UUID(service_id) if service_id else None,
        )


@dataclass(frozen=True)
class Purchase:
    """Charging's view of an offer an account bought, learnt from customer's purchase events."""

    purchase_id: uuid.UUID
    account_id: uuid.UUID
    service_id: uuid.UUID | None
    charge_offer_code: str
    # The version current when it was bought; rating uses the version in force at each event.
    charge_offer_version: int
    quantity: Decimal
    start_time: datetime
    end_time: datetime | None
    cancel_time: datetime | None
    # Charge code -> the price replacing the offer's for this purchase (see rating.effective_price).
    price_overrides: tuple[tuple[str, Decimal], ...] = ()

    def active_at(self, instant: datetime) -> bool:
        """Bought and not cancelled, started, not ended: [start_time, end_time)."""
        return (
            self.cancel_time is None
            and self.start_time <= instant
            and (self.end_time is None or instant < self.end_time)
        )

    def override(self, charge_code: str) -> Decimal | None:
        return dict(self.price_overrides).get(charge_code)


class BillCycleStatus(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True)
class BillCycle:
    """A billing period of an account, [start_time, end_time), as billing publishes it."""

    bill_cycle_id: uuid.UUID
    account_id: uuid.UUID
    start_time: datetime
    end_time: datetime
    status: BillCycleStatus
    bill_unit_id: uuid.UUID | None = None
    sequence: int = 0
    close_time: datetime | None = None
    time_zone: str = ""

    def holds(self, instant: datetime) -> bool:
        return self.start_time <= instant < self.end_time


@dataclass(frozen=True)
class CreditState:
    """Whether a balance group of an account is over its credit limit, as balance last said
    (CreditLimitExceeded / CreditLimitRestored); the highest `credit_state_version` wins."""

    account_id: uuid.UUID
    balance_group_name: str
    is_default: bool
    exceeded: bool
    credit_state_version: int


def exceeded_group(states: Iterable[CreditState], balance_group: str) -> str | None:
    """The name of the group a charge naming `balance_group` lands in (empty: the account's
    default group), when that group is over its credit limit; None otherwise."""
    for state in states:
        lands_here = state.is_default if not balance_group else state.balance_group_name == balance_group
        if lands_here and state.exceeded:
            return state.balance_group_name
    return None


class ChargeKind(enum.Enum):
    USAGE = "usage"
    RECURRING = "recurring"
    ONE_TIME = "one_time"
    REVERSAL = "reversal"


@dataclass(frozen=True)
class RatedCharge:
    """An immutable amount an account owes, with what priced it (RatedCharge on the wire)."""

    charge_id: uuid.UUID
    account_id: uuid.UUID
    kind: ChargeKind
    event_id: str
    purchase_id: uuid.UUID
    charge_offer_code: str
    charge_offer_version: int
    charge_code: str
    balance_group: str
    tax_code: str
    quantity: Decimal
    # Rounded to the currency's minor unit.
    amount: Decimal
    currency_code: str
    # Exact, before rounding.
    unrounded_amount: Decimal
    tiers: tuple[TierLine, ...]
    event_time: datetime
    rate_time: datetime
    bill_cycle_id: uuid.UUID
    late: bool = False
    reverses_charge_id: uuid.UUID | None = None
    # Set on the charges a rerating run made: the run, and for a new charge the one it replaces.
    rerate_run_id: uuid.UUID | None = None
    replaces_charge_id: uuid.UUID | None = None


@dataclass(frozen=True)
class ChargesCreated:
    """The charges of one rating transaction in one currency (published as ChargesCreated)."""

    charges: tuple[RatedCharge, ...]
    currency_code: str


@dataclass(frozen=True)
class Received:
    """One event of a call: validated, or refused with the error naming its field."""

    # As sent (echoed in the result, also when invalid).
    event_id: str
    # Its path in the request: "event", or "events[3]" in a batch.
    field: str
    event: UsageEvent | None
    error: ServiceError | None = None


@dataclass(frozen=True)
class UsageResult:
    event_id: str
    # None when the event was refused (`error` says why) and nothing was kept.
    status: UsageStatus | None
    reason: str = ""
    charges: tuple[RatedCharge, ...] = ()
    # Refused, or REJECTED: the error the event gets alone (FAILED_PRECONDITION for REJECTED).
    error: ServiceError | None = None
