"""An account's contacts: the email addresses, phone numbers and postal addresses bills and reminders
go to, each with a role.

Plain Python: no protobuf, no SQL. A contact has exactly one channel; its values are validated and
normalised (email domain lower-cased, phone stored in E.164) before anything is written.
"""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime

import phonenumbers
from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument

from evolutivo_customer.domain import validation
from evolutivo_customer.domain.model import ERASED, MAX_NAME_LENGTH, MAX_TEXT_LENGTH, Account, AccountStatus


class ContactRole(enum.Enum):
    PRIMARY = "primary"
    BILLING = "billing"
    TECHNICAL = "technical"
    COLLECTIONS = "collections"


class Channel(enum.Enum):
    EMAIL = "email"
    PHONE = "phone"
    POSTAL = "postal"


class ChangeKind(enum.Enum):
    ADDED = "added"
    UPDATED = "updated"
    REMOVED = "removed"


MAX_ADDRESS_LINES = 10
# RFC 5321: 64 for the local part, 254 for the whole address (a 256-octet path less the brackets).
_MAX_EMAIL_LENGTH = 254
_MAX_LOCAL_PART_LENGTH = 64
# RFC 5322 dot-atom: printable ASCII letters, digits and !#$%&'*+/=?^_`{|}~- in dot-separated atoms.
# Quoted local parts and address literals are valid but never seen from real customers: refused.
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_DOMAIN_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class PostalAddress:
    """google.type.PostalAddress, as plain Python."""

    region_code: str
    address_lines: tuple[str, ...] = ()
    locality: str = ""
    postal_code: str = ""
    administrative_area: str = ""
    sublocality: str = ""
    sorting_code: str = ""
    language_code: str = ""
    recipients: tuple[str, ...] = ()
    organization: str = ""
    revision: int = 0

    def checked(self, prefix: str) -> PostalAddress:
        """Validates and trims; blank address lines and recipients are dropped."""
        region = self.region_code.strip().upper()
        if not region:
            raise InvalidArgument(f"{prefix}.region_code", "is required: an ISO 3166-1 alpha-2 country code such as ES")
        validation.validate_country(region, f"{prefix}.region_code")
        if self.revision != 0:
            raise InvalidArgument(f"{prefix}.revision", "must be 0 (the only google.type.PostalAddress revision)")
        lines = tuple(line.strip() for line in self.address_lines if line.strip())
        recipients = tuple(r.strip() for r in self.recipients if r.strip())
        if len(lines) > MAX_ADDRESS_LINES:
            raise InvalidArgument(f"{prefix}.address_lines", f"must be at most {MAX_ADDRESS_LINES} lines")
        if len(recipients) > MAX_ADDRESS_LINES:
            raise InvalidArgument(f"{prefix}.recipients", f"must be at most {MAX_ADDRESS_LINES} names")
        for name, values in (("address_lines", lines), ("recipients", recipients)):
            for i, value in enumerate(values):
                if len(value) > MAX_TEXT_LENGTH:
                    raise InvalidArgument(f"{prefix}.{name}[{i}]", f"must be at most {MAX_TEXT_LENGTH} characters")
        texts: dict[str, str] = {
            "locality": self.locality.strip(),
            "postal_code": self.postal_code.strip(),
            "administrative_area": self.administrative_area.strip(),
            "sublocality": self.sublocality.strip(),
            "sorting_code": self.sorting_code.strip(),
            "organization": self.organization.strip(),
        }
        for name, value in texts.items():
            if len(value) > MAX_TEXT_LENGTH:
                raise InvalidArgument(f"{prefix}.{name}", f"must be at most {MAX_TEXT_LENGTH} characters")
        if not lines and not texts["locality"]:
            raise InvalidArgument(f"{prefix}.address_lines", "an address needs at least one address line or a locality")
        language = self.language_code.strip()
        validation.validate_locale(language, f"{prefix}.language_code")
        return replace(
            self,
            region_code=region,
            address_lines=lines,
            language_code=language,
            recipients=recipients,
            locality=texts["locality"],
            postal_code=texts["postal_code"],
            administrative_area=texts["administrative_area"],
            sublocality=texts["sublocality"],
            sorting_code=texts["sorting_code"],
            organization=texts["organization"],
        )


def normalise_email(value: str, field_name: str) -> str:
    """Syntax check (RFC 5322 dot-atom local part, DNS host name with a top-level domain; an
    internationalised domain is accepted in Unicode and stored as such); returns the address
    trimmed with its domain lower-cased. The local part keeps its case (RFC 5321 says it may matter)."""
    address = value.strip()
    if not address:
        raise InvalidArgument(field_name, "is required")
    if len(address) > _MAX_EMAIL_LENGTH:
        raise InvalidArgument(field_name, f"must be at most {_MAX_EMAIL_LENGTH} characters")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise InvalidArgument(field_name, "must be an email address such as billing@example.com")
    if len(local) > _MAX_LOCAL_PART_LENGTH or not _LOCAL_PART.match(local):
        raise InvalidArgument(field_name, "has an invalid part before the @")
    domain = domain.lower()
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidArgument(field_name, "has an invalid domain after the @") from None
    labels = ascii_domain.split(".")
    if (
        len(labels) < 2
        or len(ascii_domain) > 253
        or not all(_DOMAIN_LABEL.match(label) for label in labels)
        # A top-level domain is letters (or an IDN "xn--" label), never all digits.
        or not (labels[-1].isalpha() or labels[-1].startswith("xn--"))
    ):
        raise InvalidArgument(field_name, "has an invalid domain after the @")
    return f"{local}@{domain}"


def normalise_phone(value: str, default_region: str, field_name: str) -> str:
    """A valid phone number, returned in E.164. Numbers in national format are read in the
    account's country (default_region) when it has one."""
    number = value.strip()
    if not number:
        raise InvalidArgument(field_name, "is required")
    if len(number) > 64:
        raise InvalidArgument(field_name, "must be at most 64 characters")
    try:
        parsed = phonenumbers.parse(number, default_region or None)
    except phonenumbers.NumberParseException:
        raise InvalidArgument(field_name, "must be a phone number in E.164 format such as +34912345678") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidArgument(field_name, "is not a valid phone number for its country")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@dataclass(frozen=True)
class ContactDetails:
    """What a caller sets on a contact. Exactly one of email, phone and postal_address is set
    (None: not set; "" when set is refused as empty)."""

    role: ContactRole | None
    name: str = ""
    email: str | None = None
    phone: str | None = None
    postal_address: PostalAddress | None = None

    @property
    def channel(self) -> Channel | None:
        if self.email is not None:
            return Channel.EMAIL
        if self.phone is not None:
            return Channel.PHONE
        if self.postal_address is not None:
            return Channel.POSTAL
        return None

    def checked(self, account: Account, prefix: str = "contact") -> ContactDetails:
        """Validates every field; returns the details normalised."""
        if self.role is None:
            raise InvalidArgument(
                f"{prefix}.role",
                "is required: CONTACT_ROLE_PRIMARY, CONTACT_ROLE_BILLING, CONTACT_ROLE_TECHNICAL "
                "or CONTACT_ROLE_COLLECTIONS",
            )
        name = self.name.strip()
        if len(name) > MAX_NAME_LENGTH:
            raise InvalidArgument(f"{prefix}.name", f"must be at most {MAX_NAME_LENGTH} characters")
        channels = [v for v in (self.email, self.phone, self.postal_address) if v is not None]
        if len(channels) != 1:
            raise InvalidArgument(f"{prefix}.channel", "exactly one of email, phone or postal_address is required")
        email = normalise_email(self.email, f"{prefix}.email") if self.email is not None else None
        phone = (
            normalise_phone(self.phone, account.details.country_code, f"{prefix}.phone")
            if self.phone is not None
            else None
        )
        postal = self.postal_address.checked(f"{prefix}.postal_address") if self.postal_address is not None else None
        return ContactDetails(role=self.role, name=name, email=email, phone=phone, postal_address=postal)


def _require_open(account: Account) -> None:
    if account.status is AccountStatus.CLOSED:
        raise FailedPrecondition("ACCOUNT_CLOSED", "the contacts of a closed account cannot be changed")


@dataclass
class Contact:
    contact_id: uuid.UUID
    account_id: uuid.UUID
    details: ContactDetails
    create_time: datetime
    update_time: datetime
    events: list[object] = field(default_factory=list, compare=False, repr=False)

    @property
    def role(self) -> ContactRole:
        assert self.details.role is not None
        return self.details.role

    @property
    def channel(self) -> Channel:
        channel = self.details.channel
        assert channel is not None
        return channel

    @property
    def erased(self) -> bool:
        return self.details.name == ERASED and self._value_erased()

    def _value_erased(self) -> bool:
        d = self.details
        if d.postal_address is not None:
            return d.postal_address.address_lines == (ERASED,)
        return ERASED in (d.email, d.phone)

    @classmethod
    def add(cls, account: Account, details: ContactDetails, now: datetime) -> Contact:
        _require_open(account)
        contact = cls(
            contact_id=uuid.uuid4(),
            account_id=account.account_id,
            details=details.checked(account),
            create_time=now,
            update_time=now,
        )
        contact._record(ChangeKind.ADDED)
        return contact

    def update(self, account: Account, details: ContactDetails, now: datetime) -> list[str]:
        """Applies the new details; returns the changed field names (none: nothing recorded)."""
        _require_open(account)
        details = details.checked(account)
        changed = [name for name in _FIELDS if getattr(details, name) != getattr(self.details, name)]
        if not changed:
            return []
        self.details = details
        self.update_time = now
        self._record(ChangeKind.UPDATED)
        return changed

    def remove(self, account: Account) -> None:
        _require_open(account)
        self._record(ChangeKind.REMOVED)

    def erase(self, now: datetime) -> bool:
        """Anonymises the contact in place (privacy erasure of its closed account): the name and
        the channel's value become the ERASED marker; a postal address keeps only its country.
        The role and channel type are kept so the account's history still reads. Returns whether
        anything changed."""
        if self.erased:
            return False
        d = self.details
        self.details = ContactDetails(
            role=d.role,
            name=ERASED,
            email=ERASED if d.email is not None else None,
            phone=ERASED if d.phone is not None else None,
            postal_address=(
                PostalAddress(region_code=d.postal_address.region_code, address_lines=(ERASED,))
                if d.postal_address is not None
                else None
            ),
        )
        self.update_time = now
        self._record(ChangeKind.UPDATED)
        return True

    def _record(self, kind: ChangeKind) -> None:
        # A snapshot: the event says what the contact was at this change.
        self.events.append(ContactChanged(kind, replace(self, events=[])))


_FIELDS = ("role", "name", "email", "phone", "postal_address")


def recipients(contacts: list[Contact], role: ContactRole) -> list[Contact]:
    """Who a document for `role` goes to: the contacts with that role, else the PRIMARY ones.
    Erased contacts never receive anything."""
    usable = [c for c in contacts if not c.erased]
    chosen = [c for c in usable if c.role is role]
    if chosen or role is ContactRole.PRIMARY:
        return chosen
    return [c for c in usable if c.role is ContactRole.PRIMARY]


@dataclass(frozen=True)
class ContactChanged:
    kind: ChangeKind
    contact: Contact
