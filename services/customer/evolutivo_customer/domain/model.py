"""Accounts and their rules. Plain Python: no protobuf, no SQL."""

from __future__ import annotations

import enum
import functools
import re
import uuid
import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime

import iso4217
import langcodes
from evolutivo_runtime.errors import InvalidArgument


class AccountType(enum.Enum):
    INDIVIDUAL = "individual"
    BUSINESS = "business"


class AccountStatus(enum.Enum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    CLOSED = "closed"


class BillingFrequency(enum.Enum):
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    SEMI_ANNUAL = "semi_annual"
    ANNUAL = "annual"


DEFAULT_PAYMENT_TERMS_DAYS = 30
MAX_PAYMENT_TERMS_DAYS = 365
MAX_NAME_LENGTH = 200
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class BillingProfile:
    bill_cycle_day: int
    frequency: BillingFrequency = BillingFrequency.MONTHLY
    payment_terms_days: int = DEFAULT_PAYMENT_TERMS_DAYS

    def __post_init__(self) -> None:
        if not 1 <= self.bill_cycle_day <= 31:
            raise InvalidArgument(
                "account.billing_profile.bill_cycle_day",
                "must be between 1 and 31 (short months clamp to their last day)",
            )
        if not 0 <= self.payment_terms_days <= MAX_PAYMENT_TERMS_DAYS:
            raise InvalidArgument(
                "account.billing_profile.payment_terms_days", f"must be between 0 and {MAX_PAYMENT_TERMS_DAYS}"
            )


@dataclass(frozen=True)
class NewAccount:
    """What a caller asks for; validated on construction."""

    type: AccountType
    display_name: str
    currency_code: str
    time_zone: str
    locale: str
    billing_profile: BillingProfile | None
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.display_name.strip():
            raise InvalidArgument("account.display_name", "is required")
        if len(self.display_name) > MAX_NAME_LENGTH:
            raise InvalidArgument("account.display_name", f"must be at most {MAX_NAME_LENGTH} characters")
        validate_currency(self.currency_code, "account.currency_code")
        validate_time_zone(self.time_zone, "account.time_zone")
        if self.locale and not langcodes.tag_is_valid(self.locale):
            raise InvalidArgument("account.locale", "must be a BCP 47 language tag such as es-ES")
        for key in self.labels:
            if not _LABEL_KEY.match(key):
                raise InvalidArgument(
                    f"account.labels[{key!r}]", "keys are lower-case, start with a letter, at most 63 chars"
                )


@dataclass
class Account:
    account_id: uuid.UUID
    account_number: str
    type: AccountType
    display_name: str
    currency_code: str
    time_zone: str
    locale: str
    status: AccountStatus
    billing_profile: BillingProfile
    labels: dict[str, str]
    create_time: datetime
    events: list[object] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def open(cls, new: NewAccount, account_number: str, now: datetime) -> Account:
        """A new active account. Without a billing day, it is the day of opening in the account's zone."""
        profile = new.billing_profile or BillingProfile(
            bill_cycle_day=now.astimezone(zoneinfo.ZoneInfo(new.time_zone)).day
        )
        account = cls(
            account_id=uuid.uuid4(),
            account_number=account_number,
            type=new.type,
            display_name=new.display_name.strip(),
            currency_code=new.currency_code,
            time_zone=new.time_zone,
            locale=new.locale,
            status=AccountStatus.ACTIVE,
            billing_profile=profile,
            labels=dict(new.labels),
            create_time=now,
        )
        account.events.append(AccountCreated(account))
        return account


@dataclass(frozen=True)
class AccountCreated:
    account: Account


def validate_currency(code: str, field_name: str) -> None:
    try:
        iso4217.Currency(code)
    except ValueError:
        raise InvalidArgument(field_name, "must be an ISO 4217 currency code such as EUR") from None


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def validate_time_zone(name: str, field_name: str) -> None:
    if name not in _time_zones():
        raise InvalidArgument(field_name, "must be an IANA time zone such as Europe/Madrid")


def format_account_number(sequence_value: int) -> str:
    return f"A-{sequence_value:08d}"
