"""Charging's view of accounts and its rules. Plain Python: no protobuf, no SQL."""

from __future__ import annotations

import enum
import functools
import re
import uuid
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime

_CURRENCY_CODE = re.compile(r"^[A-Z]{3}$")


class InvalidChargingAccount(ValueError):
    """A charging account that breaks its rules: the account data it was learnt from is malformed."""


class ChargingAccountStatus(enum.Enum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    CLOSED = "closed"


@dataclass
class ChargingAccount:
    """What rating needs to know of an account, learnt from customer's events."""

    account_id: uuid.UUID
    currency_code: str
    time_zone: str
    status: ChargingAccountStatus
    update_time: datetime
    # When customer changed the status (AccountStatusChanged); None: the status it was opened with.
    status_change_time: datetime | None = None
    # As of when charging knows the account's currency and time zone: the update time of the customer
    # account they were learnt from (AccountCreated, AccountUpdated...); None: not known (before 0007).
    details_change_time: datetime | None = None

    def __post_init__(self) -> None:
        if not _CURRENCY_CODE.match(self.currency_code):
            raise InvalidChargingAccount(
                f"currency_code must be an ISO 4217 code such as EUR, not {self.currency_code!r}"
            )
        if self.time_zone not in _time_zones():
            raise InvalidChargingAccount(
                f"time_zone must be an IANA time zone such as Europe/Madrid, not {self.time_zone!r}"
            )
        if self.update_time.utcoffset() is None:
            raise InvalidChargingAccount("update_time must be timezone-aware")
        if self.status_change_time is not None and self.status_change_time.utcoffset() is None:
            raise InvalidChargingAccount("status_change_time must be timezone-aware")
        if self.details_change_time is not None and self.details_change_time.utcoffset() is None:
            raise InvalidChargingAccount("details_change_time must be timezone-aware")

    @classmethod
    def learn(
        cls,
        account_id: uuid.UUID,
        currency_code: str,
        time_zone: str,
        status: ChargingAccountStatus,
        now: datetime,
        details_time: datetime | None = None,
    ) -> ChargingAccount:
        """Charging's record of an account customer has just opened. `details_time`: when customer's
        account was as learnt (its update time in the event), so older detail updates change nothing."""
        if now.utcoffset() is None:
            raise InvalidChargingAccount("update_time must be timezone-aware")
        if details_time is not None and details_time.utcoffset() is None:
            raise InvalidChargingAccount("details_change_time must be timezone-aware")
        return cls(
            account_id=account_id,
            currency_code=currency_code,
            time_zone=time_zone,
            status=status,
            update_time=now.astimezone(UTC),
            details_change_time=details_time.astimezone(UTC) if details_time is not None else None,
        )

    def change_status(self, status: ChargingAccountStatus, change_time: datetime, now: datetime) -> bool:
        """The status customer set at `change_time`, learnt at `now`.

        Events of one account can be applied out of order (replicas share a consumer), so a change
        no newer than the one recorded changes nothing; returns whether this one was recorded."""
        if change_time.utcoffset() is None or now.utcoffset() is None:
            raise InvalidChargingAccount("status change times must be timezone-aware")
        if self.status_change_time is not None and change_time <= self.status_change_time:
            return False
        self.status = status
        self.status_change_time = change_time.astimezone(UTC)
        self.update_time = now.astimezone(UTC)
        return True

    def update_details(self, currency_code: str, time_zone: str, change_time: datetime, now: datetime) -> bool:
        """The currency and time zone of customer's account as of `change_time`, learnt at `now`.

        Both come from one snapshot of the account, so applying them together stays right whatever
        the order of the updates: one no newer than the details recorded changes nothing; returns
        whether this one was recorded. Rating prices new usage in the account's currency from then."""
        if change_time.utcoffset() is None or now.utcoffset() is None:
            raise InvalidChargingAccount("detail change times must be timezone-aware")
        if self.details_change_time is not None and change_time <= self.details_change_time:
            return False
        updated = ChargingAccount(
            account_id=self.account_id,
            currency_code=currency_code,
            time_zone=time_zone,
            status=self.status,
            update_time=now.astimezone(UTC),
            status_change_time=self.status_change_time,
            details_change_time=change_time.astimezone(UTC),
        )  # checks the new details before any is applied
        self.currency_code = updated.currency_code
        self.time_zone = updated.time_zone
        self.details_change_time = updated.details_change_time
        self.update_time = updated.update_time
        return True

    @property
    def accepts_usage(self) -> bool:
        """Only active accounts are charged for new usage."""
        return self.status is ChargingAccountStatus.ACTIVE


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())
