"""How an account pays: cards (held as the payment provider's token), SEPA direct-debit mandates,
bank transfers and pay-on-invoice. Exactly one active method per account is the default.

Plain Python: no protobuf, no SQL. Details are validated and normalised before anything is
written; everything that leaves the service (responses and events) is masked.
"""

from __future__ import annotations

import enum
import re
import uuid
import zoneinfo
from dataclasses import dataclass, field, replace
from datetime import date, datetime

from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from stdnum import bic as stdnum_bic
from stdnum import iban as stdnum_iban
from stdnum.exceptions import InvalidChecksum, ValidationError

from evolutivo_customer.domain.model import ERASED, MAX_NAME_LENGTH, Account, AccountStatus


class PaymentMethodType(enum.Enum):
    CARD = "card"
    SEPA_DIRECT_DEBIT = "sepa_direct_debit"
    BANK_TRANSFER = "bank_transfer"
    PAY_ON_INVOICE = "pay_on_invoice"


MAX_MANDATE_ID_LENGTH = 35
MAX_PAYMENT_REFERENCE_LENGTH = 140
MAX_TOKEN_LENGTH = 500
MAX_PROVIDER_LENGTH = 100
MAX_BRAND_LENGTH = 50
MAX_EXPIRY_YEARS_AHEAD = 50
# The SEPA (EPC) Latin character set that identifiers such as the mandate reference are limited to.
_SEPA_CHARACTERS = re.compile(r"^[A-Za-z0-9/\-?:().,'+ ]+$")
_LAST4 = re.compile(r"^[0-9]{4}$")


def mask_iban(iban: str) -> str:
    """Country and check digits, asterisks, last four: ES9121000418450200051332 -> ES91****************1332.
    Length-preserving, so a masked IBAN still reads as one of its country."""
    if len(iban) <= 8:
        return "*" * len(iban)
    return iban[:4] + "*" * (len(iban) - 8) + iban[-4:]


def mask_token(token: str) -> str:
    """All but the last four characters replaced by asterisks (all of a token of four or fewer)."""
    if len(token) <= 4:
        return "*" * len(token)
    return "*" * (len(token) - 4) + token[-4:]


@dataclass(frozen=True)
class CardDetails:
    provider: str
    provider_token: str
    brand: str = ""
    last4: str = ""
    expiry_month: int = 0
    expiry_year: int = 0

    def checked(self, prefix: str, today: date) -> CardDetails:
        provider = self.provider.strip()
        if not provider:
            raise InvalidArgument(f"{prefix}.provider", "is required, e.g. stripe or adyen")
        if len(provider) > MAX_PROVIDER_LENGTH:
            raise InvalidArgument(f"{prefix}.provider", f"must be at most {MAX_PROVIDER_LENGTH} characters")
        token = self.provider_token.strip()
        if not token:
            raise InvalidArgument(f"{prefix}.provider_token", "is required: the payment provider's token for the card")
        if len(token) > MAX_TOKEN_LENGTH or any(c.isspace() for c in token):
            raise InvalidArgument(
                f"{prefix}.provider_token", f"must be at most {MAX_TOKEN_LENGTH} characters, without spaces"
            )
        if "*" in token:
            raise InvalidArgument(f"{prefix}.provider_token", "is masked: send the provider's token itself")
        brand = self.brand.strip().lower()
        if len(brand) > MAX_BRAND_LENGTH:
            raise InvalidArgument(f"{prefix}.brand", f"must be at most {MAX_BRAND_LENGTH} characters")
        last4 = self.last4.strip()
        if not _LAST4.match(last4):
            raise InvalidArgument(f"{prefix}.last4", "must be exactly the last 4 digits of the card number")
        if not 1 <= self.expiry_month <= 12:
            raise InvalidArgument(f"{prefix}.expiry_month", "must be between 1 and 12")
        if (self.expiry_year, self.expiry_month) < (today.year, today.month):
            raise InvalidArgument(f"{prefix}.expiry_year", "the card has expired")
        if self.expiry_year > today.year + MAX_EXPIRY_YEARS_AHEAD:
            raise InvalidArgument(f"{prefix}.expiry_year", "must be a four-digit year within the card's validity")
        return replace(self, provider=provider, provider_token=token, brand=brand, last4=last4)

    def masked(self) -> CardDetails:
        return replace(self, provider_token=mask_token(self.provider_token))

    def erased(self) -> CardDetails:
        # Brand, last four digits and expiry identify no one; they let finance recognise the card
        # on past payments. The token (which could still charge the card) is cut to its last four.
        return self.masked()


@dataclass(frozen=True)
class SepaDirectDebitDetails:
    iban: str
    mandate_id: str
    mandate_signature_date: date | None
    bic: str = ""
    account_holder: str = ""

    def checked(self, prefix: str, today: date) -> SepaDirectDebitDetails:
        if not self.iban.strip():
            raise InvalidArgument(f"{prefix}.iban", "is required")
        try:
            iban = stdnum_iban.validate(self.iban)
        except InvalidChecksum:
            raise InvalidArgument(f"{prefix}.iban", "fails the ISO 13616 mod-97 check: check for a typo") from None
        except ValidationError:
            raise InvalidArgument(f"{prefix}.iban", "is not a valid IBAN (ISO 13616) for its country") from None
        bic = ""
        if self.bic.strip():
            try:
                bic = stdnum_bic.validate(self.bic)
            except ValidationError:
                raise InvalidArgument(f"{prefix}.bic", "is not a valid BIC (ISO 9362), e.g. CAIXESBBXXX") from None
        mandate_id = self.mandate_id.strip()
        if not mandate_id:
            raise InvalidArgument(f"{prefix}.mandate_id", "is required: the creditor's unique mandate reference")
        if len(mandate_id) > MAX_MANDATE_ID_LENGTH or not _SEPA_CHARACTERS.match(mandate_id):
            raise InvalidArgument(
                f"{prefix}.mandate_id",
                f"must be at most {MAX_MANDATE_ID_LENGTH} characters of the SEPA set "
                "(letters, digits, space and / - ? : ( ) . , ' +)",
            )
        if self.mandate_signature_date is None:
            raise InvalidArgument(f"{prefix}.mandate_signature_date", "is required")
        if self.mandate_signature_date > today:
            raise InvalidArgument(f"{prefix}.mandate_signature_date", "must not be in the future")
        holder = self.account_holder.strip()
        if len(holder) > MAX_NAME_LENGTH:
            raise InvalidArgument(f"{prefix}.account_holder", f"must be at most {MAX_NAME_LENGTH} characters")
        return replace(self, iban=iban, bic=bic, mandate_id=mandate_id, account_holder=holder)

    def masked(self) -> SepaDirectDebitDetails:
        return replace(self, iban=mask_iban(self.iban))

    def erased(self) -> SepaDirectDebitDetails:
        # The masked IBAN (country, check digits, last four), BIC, mandate id and signature date
        # are what finance needs to trace past direct debits and chargebacks; the full IBAN and the
        # holder's name are personal and go.
        return replace(self.masked(), account_holder=ERASED if self.account_holder else "")


@dataclass(frozen=True)
class BankTransferDetails:
    payment_reference: str = ""

    def checked(self, prefix: str, account: Account) -> BankTransferDetails:
        reference = self.payment_reference.strip() or account.account_number
        if len(reference) > MAX_PAYMENT_REFERENCE_LENGTH:
            raise InvalidArgument(
                f"{prefix}.payment_reference", f"must be at most {MAX_PAYMENT_REFERENCE_LENGTH} characters"
            )
        return BankTransferDetails(reference)

    def masked(self) -> BankTransferDetails:
        return self

    def erased(self) -> BankTransferDetails:
        # The reference is what incoming transfers quote: kept to match payments.
        return self


@dataclass(frozen=True)
class PayOnInvoiceDetails:
    def masked(self) -> PayOnInvoiceDetails:
        return self

    def erased(self) -> PayOnInvoiceDetails:
        return self


PaymentDetails = CardDetails | SepaDirectDebitDetails | BankTransferDetails | PayOnInvoiceDetails

_TYPES: dict[type[object], PaymentMethodType] = {
    CardDetails: PaymentMethodType.CARD,
    SepaDirectDebitDetails: PaymentMethodType.SEPA_DIRECT_DEBIT,
    BankTransferDetails: PaymentMethodType.BANK_TRANSFER,
    PayOnInvoiceDetails: PaymentMethodType.PAY_ON_INVOICE,
}


def check_details(details: PaymentDetails | None, account: Account, now: datetime) -> PaymentDetails:
    """Validates and normalises; dates (card expiry, mandate signature) are judged in the account's zone."""
    prefix = "payment_method"
    today = now.astimezone(zoneinfo.ZoneInfo(account.details.time_zone)).date()
    match details:
        case CardDetails():
            return details.checked(f"{prefix}.card", today)
        case SepaDirectDebitDetails():
            return details.checked(f"{prefix}.sepa_direct_debit", today)
        case BankTransferDetails():
            return details.checked(f"{prefix}.bank_transfer", account)
        case PayOnInvoiceDetails():
            return details
        case None:
            raise InvalidArgument(
                f"{prefix}.details", "one of card, sepa_direct_debit, bank_transfer or pay_on_invoice is required"
            )


@dataclass
class PaymentMethod:
    payment_method_id: uuid.UUID
    account_id: uuid.UUID
    details: PaymentDetails
    is_default: bool
    create_time: datetime
    remove_time: datetime | None = None
    # Anonymised by a privacy erasure of its account.
    erased: bool = False

    @property
    def type(self) -> PaymentMethodType:
        return _TYPES[type(self.details)]

    def masked(self) -> PaymentMethod:
        """The form every read and event shows."""
        return replace(self, details=self.details.masked())

    def erase(self) -> bool:
        """Anonymises the details in place; returns whether anything changed."""
        if self.erased:
            return False
        self.details = self.details.erased()
        self.erased = True
        return True


def _require_open(account: Account) -> None:
    if account.status is AccountStatus.CLOSED:
        raise FailedPrecondition("ACCOUNT_CLOSED", "the payment methods of a closed account cannot be changed")


@dataclass
class AccountPaymentMethods:
    """The active (not removed) payment methods of one account: the aggregate that keeps exactly
    one of them the default. The caller holds the account's row lock while it changes them."""

    account: Account
    methods: list[PaymentMethod]
    events: list[object] = field(default_factory=list, compare=False, repr=False)
    # What the repository must write: new rows, and existing rows whose default or removal changed.
    added: list[PaymentMethod] = field(default_factory=list, repr=False)
    changed: list[PaymentMethod] = field(default_factory=list, repr=False)

    @property
    def default(self) -> PaymentMethod | None:
        return next((m for m in self.methods if m.is_default), None)

    def _find(self, payment_method_id: uuid.UUID) -> PaymentMethod:
        for method in self.methods:
            if method.payment_method_id == payment_method_id:
                return method
        raise NotFound("payment_method", str(payment_method_id))

    def _touch(self, method: PaymentMethod) -> None:
        if not any(m is method for m in (*self.added, *self.changed)):
            self.changed.append(method)

    def add(self, details: PaymentDetails | None, make_default: bool, now: datetime) -> PaymentMethod:
        """Validates and adds a method; the account's first one is always the default."""
        _require_open(self.account)
        checked = check_details(details, self.account, now)
        method = PaymentMethod(
            payment_method_id=uuid.uuid4(),
            account_id=self.account.account_id,
            details=checked,
            is_default=False,
            create_time=now,
        )
        self.methods.append(method)
        self.added.append(method)
        previous = self._move_default(method) if make_default or self.default is None else None
        self.events.append(PaymentMethodAdded(method.masked()))
        if method.is_default:
            self.events.append(DefaultPaymentMethodChanged(method.masked(), previous))
        return method

    def set_default(self, payment_method_id: uuid.UUID) -> PaymentMethod:
        _require_open(self.account)
        method = self._find(payment_method_id)
        if not method.is_default:
            previous = self._move_default(method)
            self.events.append(DefaultPaymentMethodChanged(method.masked(), previous))
        return method

    def remove(self, payment_method_id: uuid.UUID, now: datetime) -> PaymentMethod:
        """Soft removal (payments keep referring to it). The default goes only when it is the last:
        otherwise another must be made the default first, so the account is never left without one."""
        _require_open(self.account)
        method = self._find(payment_method_id)
        if method.is_default and len(self.methods) > 1:
            raise FailedPrecondition(
                "DEFAULT_PAYMENT_METHOD",
                "this is the account's default payment method; set another default first, then remove it",
                {"payment_method_id": str(payment_method_id)},
            )
        method.remove_time = now
        self.methods.remove(method)
        self._touch(method)
        self.events.append(PaymentMethodRemoved(method.account_id, method.payment_method_id))
        return method

    def _move_default(self, method: PaymentMethod) -> uuid.UUID | None:
        """Makes `method` the default; returns the id of the previous default, if any."""
        previous = self.default
        if previous is not None:
            previous.is_default = False
            self._touch(previous)
        method.is_default = True
        self._touch(method)
        return previous.payment_method_id if previous is not None else None


@dataclass(frozen=True)
class PaymentMethodAdded:
    # Masked.
    payment_method: PaymentMethod


@dataclass(frozen=True)
class PaymentMethodRemoved:
    account_id: uuid.UUID
    payment_method_id: uuid.UUID


@dataclass(frozen=True)
class DefaultPaymentMethodChanged:
    # Masked; the new default.
    payment_method: PaymentMethod
    previous_payment_method_id: uuid.UUID | None
