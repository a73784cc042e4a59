"""Accounts, their billing profile and status, and the services under them.

Plain Python: no protobuf, no SQL. Every change an operator can make is a method that checks the
rules, changes the state and records the event it causes.
"""

from __future__ import annotations

import enum
import re
import uuid
import zoneinfo
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal

from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument

from evolutivo_customer.domain import validation


class AccountType(enum.Enum):
    INDIVIDUAL = "individual"
    BUSINESS = "business"


class AccountStatus(enum.Enum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    CLOSED = "closed"


class StatusActor(enum.Enum):
    MANUAL = "manual"
    COLLECTIONS = "collections"
    FRAUD = "fraud"


class BillingFrequency(enum.Enum):
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    SEMI_ANNUAL = "semi_annual"
    ANNUAL = "annual"


class DeliveryMethod(enum.Enum):
    EMAIL = "email"
    POSTAL = "postal"
    PORTAL = "portal"


class ServiceStatus(enum.Enum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    CLOSED = "closed"


DEFAULT_PAYMENT_TERMS_DAYS = 30
MAX_PAYMENT_TERMS_DAYS = 365
MAX_NAME_LENGTH = 200
MAX_TEXT_LENGTH = 500
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
# Erased personal data is replaced by this, so documents still render.
ERASED = "[erased]"


@dataclass(frozen=True)
class DeliveryPreferences:
    method: DeliveryMethod = DeliveryMethod.EMAIL
    attach_pdf: bool = True


@dataclass(frozen=True)
class BillingProfile:
    bill_cycle_day: int
    frequency: BillingFrequency = BillingFrequency.MONTHLY
    payment_terms_days: int = DEFAULT_PAYMENT_TERMS_DAYS
    # A bill is issued as soon as unbilled charges reach it (account currency); None: never.
    threshold_amount: Decimal | None = None
    delivery: DeliveryPreferences = field(default_factory=DeliveryPreferences)
    collections_exempt: bool = False
    # Empty: the default collections scenario.
    collections_scenario_id: str = ""

    def check(self, currency_code: str, prefix: str = "account.billing_profile") -> None:
        if not 1 <= self.bill_cycle_day <= 31:
            raise InvalidArgument(
                f"{prefix}.bill_cycle_day", "must be between 1 and 31 (short months clamp to their last day)"
            )
        if not 0 <= self.payment_terms_days <= MAX_PAYMENT_TERMS_DAYS:
            raise InvalidArgument(f"{prefix}.payment_terms_days", f"must be between 0 and {MAX_PAYMENT_TERMS_DAYS}")
        if self.threshold_amount is not None:
            validation.validate_amount(self.threshold_amount, currency_code, f"{prefix}.threshold_amount.units")
        if len(self.collections_scenario_id) > 100:
            raise InvalidArgument(f"{prefix}.collections_scenario_id", "must be at most 100 characters")
        if self.collections_scenario_id:
            # Billing matches it against its scenarios' UUIDs: anything else would silently never match.
            try:
                uuid.UUID(self.collections_scenario_id)
            except ValueError:
                raise InvalidArgument(
                    f"{prefix}.collections_scenario_id", "must be a collections scenario id (a UUID) or empty"
                ) from None


@dataclass(frozen=True)
class StatusChange:
    status: AccountStatus
    reason: str
    actor: StatusActor
    actor_id: str
    change_time: datetime


@dataclass(frozen=True)
class AccountDetails:
    """The fields a caller sets on an account, at creation or by update."""

    display_name: str
    currency_code: str
    time_zone: str
    locale: str = ""
    country_code: str = ""
    tax_id: str = ""
    date_of_birth: date | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def checked(self, account_type: AccountType, today: date) -> AccountDetails:
        """Validates every field; returns the details normalised (trimmed, upper-cased codes)."""
        name = self.display_name.strip()
        # Zero-width and other invisible characters alone are no name either.
        if not any(c.isprintable() and not c.isspace() for c in name):
            raise InvalidArgument("account.display_name", "is required")
        if len(name) > MAX_NAME_LENGTH:
            raise InvalidArgument("account.display_name", f"must be at most {MAX_NAME_LENGTH} characters")
        validation.validate_currency(self.currency_code, "account.currency_code")
        validation.validate_time_zone(self.time_zone, "account.time_zone")
        validation.validate_locale(self.locale, "account.locale")
        country = self.country_code.strip().upper()
        validation.validate_country(country, "account.country_code")
        tax_id = validation.normalise_tax_id(self.tax_id, country, "account.tax_id")
        if self.date_of_birth is not None:
            if account_type is not AccountType.INDIVIDUAL:
                raise InvalidArgument("account.date_of_birth", "is only for individual accounts")
            if not date(1900, 1, 1) <= self.date_of_birth <= today:
                raise InvalidArgument("account.date_of_birth", "must be a past date after 1900-01-01")
        for key, value in self.labels.items():
            if not _LABEL_KEY.match(key):
                raise InvalidArgument(
                    f"account.labels[{key!r}]", "keys are lower-case, start with a letter, at most 63 characters"
                )
            if len(value) > MAX_TEXT_LENGTH:
                raise InvalidArgument(f"account.labels[{key!r}]", f"values are at most {MAX_TEXT_LENGTH} characters")
        return replace(self, display_name=name, country_code=country, tax_id=tax_id)


@dataclass
class ProvisionedService:
    service_id: uuid.UUID
    account_id: uuid.UUID
    kind: str
    identifier: str
    description: str
    status: ServiceStatus
    suspended_with_account: bool
    status_reason: str
    status_actor: StatusActor | None
    labels: dict[str, str]
    create_time: datetime
    update_time: datetime
    events: list[object] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def provision(
        cls,
        account: Account,
        kind: str,
        identifier: str,
        description: str,
        labels: dict[str, str],
        now: datetime,
    ) -> ProvisionedService:
        if account.status is AccountStatus.CLOSED:
            raise FailedPrecondition("ACCOUNT_CLOSED", "a closed account cannot get new services")
        kind, identifier = kind.strip(), identifier.strip()
        if not kind:
            raise InvalidArgument("service.kind", "is required, e.g. mobile_line or site")
        if not identifier:
            raise InvalidArgument("service.identifier", "is required, e.g. a phone number or a host name")
        for name, value in (("kind", kind), ("identifier", identifier), ("description", description)):
            if len(value) > MAX_TEXT_LENGTH:
                raise InvalidArgument(f"service.{name}", f"must be at most {MAX_TEXT_LENGTH} characters")
        # A service of a suspended account starts suspended with it.
        suspended = account.status is AccountStatus.SUSPENDED
        service = cls(
            service_id=uuid.uuid4(),
            account_id=account.account_id,
            kind=kind,
            identifier=identifier,
            description=description.strip(),
            status=ServiceStatus.SUSPENDED if suspended else ServiceStatus.ACTIVE,
            suspended_with_account=suspended,
            status_reason=account.status_reason if suspended else "",
            status_actor=account.status_actor if suspended else None,
            labels=dict(labels),
            create_time=now,
            update_time=now,
        )
        service.events.append(ServiceChanged(service, previous_status=None))
        return service

    def set_status(
        self, account: Account, status: ServiceStatus, reason: str, actor: StatusActor, now: datetime
    ) -> None:
        """A status change of this service alone (not through its account)."""
        if self.status is ServiceStatus.CLOSED:
            raise FailedPrecondition("SERVICE_CLOSED", "a closed service cannot change status")
        if status is ServiceStatus.ACTIVE and account.status is not AccountStatus.ACTIVE:
            raise FailedPrecondition(
                "ACCOUNT_NOT_ACTIVE", "a service can only be active under an active account; reinstate the account"
            )
        if status is self.status:
            return
        previous = self.status
        self._move(status, reason, actor, now, with_account=False)
        self.events.append(ServiceChanged(self, previous_status=previous))

    def _move(self, status: ServiceStatus, reason: str, actor: StatusActor, now: datetime, with_account: bool) -> None:
        self.status = status
        self.suspended_with_account = with_account and status is ServiceStatus.SUSPENDED
        self.status_reason = reason
        self.status_actor = actor
        self.update_time = now


@dataclass
class Account:
    account_id: uuid.UUID
    account_number: str
    type: AccountType
    details: AccountDetails
    status: AccountStatus
    billing_profile: BillingProfile
    create_time: datetime
    update_time: datetime
    version: int = 1
    status_reason: str = ""
    status_actor: StatusActor | None = None
    status_actor_id: str = ""
    status_change_time: datetime | None = None
    has_charges: bool = False
    personal_data_erased_at: datetime | None = None
    events: list[object] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def open(
        cls,
        account_type: AccountType,
        details: AccountDetails,
        profile: BillingProfile | None,
        account_number: str,
        now: datetime,
    ) -> Account:
        """A new active account. Without a billing day, it is the day of opening in the account's zone."""
        details = details.checked(account_type, now.date())
        if profile is None:
            local_today = now.astimezone(zoneinfo.ZoneInfo(details.time_zone)).day
            profile = BillingProfile(bill_cycle_day=local_today)
        profile.check(details.currency_code)
        account = cls(
            account_id=uuid.uuid4(),
            account_number=account_number,
            type=account_type,
            details=details,
            status=AccountStatus.ACTIVE,
            billing_profile=profile,
            create_time=now,
            update_time=now,
        )
        account.events.append(AccountCreated(account))
        return account

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'

    def _require_open(self) -> None:
        if self.status is AccountStatus.CLOSED:
            raise FailedPrecondition("ACCOUNT_CLOSED", "a closed account cannot be changed")

    def update(self, details: AccountDetails, profile: BillingProfile, now: datetime) -> list[str]:
        """Applies new details and profile; records AccountUpdated and/or BillingProfileChanged.
        Returns the changed field names."""
        self._require_open()
        details = details.checked(self.type, now.date())
        if details.currency_code != self.details.currency_code and self.has_charges:
            raise FailedPrecondition(
                "CURRENCY_FIXED", "account.currency_code cannot change once the account has charges"
            )
        profile.check(details.currency_code)
        changed = [name for name in _DETAIL_FIELDS if getattr(details, name) != getattr(self.details, name)]
        profile_changed = profile != self.billing_profile
        if not changed and not profile_changed:
            return []
        previous_profile = self.billing_profile
        self.details = details
        self.billing_profile = profile
        self.version += 1
        self.update_time = now
        if changed:
            self.events.append(AccountUpdated(self, changed))
        if profile_changed:
            self.events.append(BillingProfileChanged(self, previous_profile, now))
            changed.append("billing_profile")
        return changed

    def suspend(
        self, reason: str, actor: StatusActor, actor_id: str, services: list[ProvisionedService], now: datetime
    ) -> list[ProvisionedService]:
        """Suspends the account and its active services; returns the services it suspended."""
        if self.status is not AccountStatus.ACTIVE:
            raise FailedPrecondition(
                "ACCOUNT_NOT_ACTIVE", f"only an active account can be suspended; it is {self.status.value}"
            )
        affected = [s for s in services if s.status is ServiceStatus.ACTIVE]
        for service in affected:
            service._move(ServiceStatus.SUSPENDED, reason, actor, now, with_account=True)
        self._change_status(AccountStatus.SUSPENDED, reason, actor, actor_id, affected, now)
        return affected

    def reinstate(
        self, reason: str, actor: StatusActor, actor_id: str, services: list[ProvisionedService], now: datetime
    ) -> list[ProvisionedService]:
        """Reinstates the account and the services its suspension suspended (not those suspended on their own)."""
        if self.status is not AccountStatus.SUSPENDED:
            raise FailedPrecondition(
                "ACCOUNT_NOT_SUSPENDED", f"only a suspended account can be reinstated; it is {self.status.value}"
            )
        affected = [s for s in services if s.status is ServiceStatus.SUSPENDED and s.suspended_with_account]
        for service in affected:
            service._move(ServiceStatus.ACTIVE, reason, actor, now, with_account=False)
        self._change_status(AccountStatus.ACTIVE, reason, actor, actor_id, affected, now)
        return affected

    def close(
        self,
        reason: str,
        actor: StatusActor,
        actor_id: str,
        owed: Decimal,
        force: bool,
        services: list[ProvisionedService],
        now: datetime,
    ) -> list[ProvisionedService]:
        """Closes the account and its services. Refused while it owes money unless forced with a reason."""
        self._require_open()
        if owed > 0 and not force:
            raise FailedPrecondition(
                "ACCOUNT_OWES_MONEY",
                f"the account owes {owed} {self.details.currency_code}; "
                "collect it first, or close with force and a reason",
                {"owed": str(owed), "currency_code": self.details.currency_code},
            )
        affected = [s for s in services if s.status is not ServiceStatus.CLOSED]
        for service in affected:
            service._move(ServiceStatus.CLOSED, reason, actor, now, with_account=False)
        self._change_status(AccountStatus.CLOSED, reason, actor, actor_id, affected, now)
        return affected

    def _change_status(
        self,
        status: AccountStatus,
        reason: str,
        actor: StatusActor,
        actor_id: str,
        services: list[ProvisionedService],
        now: datetime,
    ) -> None:
        previous = self.status
        self.status = status
        self.status_reason = reason
        self.status_actor = actor
        self.status_actor_id = actor_id
        self.status_change_time = now
        self.update_time = now
        self.version += 1
        self.events.append(AccountStatusChanged(self, previous, list(services)))

    def erase_personal_data(self, now: datetime) -> None:
        """Anonymises the account's personal details. Only for closed accounts; financial records
        (charges, ledger, bills, payments) live in other services and are kept."""
        if self.status is not AccountStatus.CLOSED:
            raise FailedPrecondition("ACCOUNT_NOT_CLOSED", "personal data is erased only from closed accounts")
        if self.personal_data_erased_at is not None:
            return
        self.details = replace(self.details, display_name=ERASED, tax_id="", date_of_birth=None, labels={})
        self.personal_data_erased_at = now
        self.update_time = now
        self.version += 1
        self.events.append(PersonalDataErased(self, now))


_DETAIL_FIELDS = (
    "display_name",
    "currency_code",
    "time_zone",
    "locale",
    "country_code",
    "tax_id",
    "date_of_birth",
    "labels",
)


def validate_status_change(reason: str, actor: StatusActor | None, field_prefix: str = "") -> StatusActor:
    """Every status change says why and who."""
    if not reason.strip():
        raise InvalidArgument(f"{field_prefix}reason", "is required for a status change")
    if len(reason) > MAX_TEXT_LENGTH:
        raise InvalidArgument(f"{field_prefix}reason", f"must be at most {MAX_TEXT_LENGTH} characters")
    if actor is None:
        raise InvalidArgument(f"{field_prefix}actor", "is required: manual, collections or fraud")
    return actor


def format_account_number(sequence_value: int) -> str:
    return f"A-{sequence_value:08d}"


@dataclass(frozen=True)
class AccountCreated:
    account: Account


@dataclass(frozen=True)
class AccountUpdated:
    account: Account
    changed_fields: list[str]


@dataclass(frozen=True)
class BillingProfileChanged:
    account: Account
    previous: BillingProfile
    change_time: datetime


@dataclass(frozen=True)
class AccountStatusChanged:
    account: Account
    previous_status: AccountStatus
    services: list[ProvisionedService]


@dataclass(frozen=True)
class PersonalDataErased:
    account: Account
    erase_time: datetime


@dataclass(frozen=True)
class ServiceChanged:
    service: ProvisionedService
    previous_status: ServiceStatus | None
