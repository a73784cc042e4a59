"""Balance groups, their ledgers and payments. Plain Python: no protobuf, no SQL.

Sign convention: an amount is positive when the account owes more (a debit: a charge, a payment
reversal, a debit adjustment) and negative when it owes less (a credit: a payment, a credit
adjustment). A group's balance is the sum of its entries: positive is debt, negative is credit.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import iso4217
from evolutivo_runtime.errors import FailedPrecondition, InvalidArgument

DEFAULT_GROUP_NAME = "default"
# Amounts are below 10^18 in absolute value (google.type.Money units are an int64).
MAX_AMOUNT = Decimal(10) ** 18
MAX_GROUP_NAME = 64
MAX_REFERENCE = 200
MAX_ACTOR = 200
MAX_REASON = 1000
_REASON_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
# Who books charges.
CHARGING_ACTOR = "charging"


class EntryType(enum.StrEnum):
    CHARGE = "charge"
    PAYMENT = "payment"
    ADJUSTMENT = "adjustment"
    WRITE_OFF = "write_off"
    REFUND = "refund"
    PAYMENT_REVERSAL = "payment_reversal"
    TRANSFER = "transfer"


class SourceType(enum.StrEnum):
    """What an entry references; (entry type, source type, source id) is booked at most once."""

    CHARGE = "charge"
    PAYMENT = "payment"
    ADJUSTMENT = "adjustment"
    TRANSFER_OUT = "transfer_out"
    TRANSFER_IN = "transfer_in"


class PaymentMethod(enum.StrEnum):
    CARD = "card"
    SEPA_DIRECT_DEBIT = "sepa_direct_debit"
    BANK_TRANSFER = "bank_transfer"
    CASH = "cash"
    CHECK = "check"
    OTHER = "other"


class PaymentState(enum.StrEnum):
    RECORDED = "recorded"
    REVERSED = "reversed"


# Validation of what callers send. Each names the request field it checks.


def currency_exponent(code: str) -> int:
    """Digits of the currency's minor unit (EUR 2, JPY 0, BHD 3); 0 for a code without one."""
    try:
        exponent = iso4217.Currency(code).exponent
    except ValueError:
        return 0
    return int(exponent) if exponent is not None else 0


def check_amount(field_name: str, amount: Decimal, currency_code: str, account_currency: str, sign: int) -> None:
    """An amount in the account's currency, to its minor unit at most, below 10^18.
    `sign` 1: greater than zero; 0: not zero (debit or credit)."""
    if currency_code != account_currency:
        raise InvalidArgument(
            f"{field_name}.currency_code",
            f"must be the account's currency {account_currency}, not {currency_code or 'empty'}",
            "CURRENCY_MISMATCH",
        )
    if sign > 0 and amount <= 0:
        raise InvalidArgument(field_name, "must be greater than zero")
    if amount == 0:
        raise InvalidArgument(field_name, "must not be zero")
    if abs(amount) >= MAX_AMOUNT:
        raise InvalidArgument(field_name, "must be below 10^18 in absolute value")
    exponent = currency_exponent(currency_code)
    if amount != amount.quantize(Decimal(1).scaleb(-exponent)):
        raise InvalidArgument(field_name, f"must have at most {exponent} decimals in {currency_code}")


def check_text(field_name: str, value: str, max_length: int, required: bool) -> str:
    """Printable text of at most `max_length` characters, without surrounding spaces."""
    value = value.strip()
    if required and not value:
        raise InvalidArgument(field_name, "is required")
    if len(value) > max_length or not value.isprintable():
        raise InvalidArgument(field_name, f"must be at most {max_length} printable characters")
    return value


def check_reason_code(value: str) -> str:
    if not value:
        raise InvalidArgument("reason_code", "is required, e.g. GOODWILL or BILLING_ERROR")
    if not _REASON_CODE.fullmatch(value):
        raise InvalidArgument("reason_code", 'must be 1 to 64 letters, digits, "_", "-" or "." (e.g. GOODWILL)')
    return value


def check_reference(reference: str) -> str:
    if not reference:
        raise InvalidArgument("reference", "is required: the provider's or the bank's payment reference")
    if reference != reference.strip() or len(reference) > MAX_REFERENCE or not reference.isprintable():
        raise InvalidArgument(
            "reference", f"must be 1 to {MAX_REFERENCE} printable characters without surrounding spaces"
        )
    return reference


def check_group_name(name: str) -> str:
    if not name:
        raise InvalidArgument("name", "is required")
    if name != name.strip() or len(name) > MAX_GROUP_NAME or not name.isprintable():
        raise InvalidArgument("name", f"must be 1 to {MAX_GROUP_NAME} printable characters without surrounding spaces")
    return name


# The ledger.


@dataclass(frozen=True)
class LedgerEntry:
    entry_id: uuid.UUID
    balance_group_id: uuid.UUID
    account_id: uuid.UUID
    type: EntryType
    # Signed: positive is a debit (owes more), negative a credit (owes less). Exact decimal.
    amount: Decimal
    currency_code: str
    source_type: SourceType
    source_id: str
    reason_code: str
    reason: str
    actor: str
    effective_time: datetime
    create_time: datetime

    @property
    def source(self) -> tuple[EntryType, SourceType, str]:
        """What makes an entry unique: a source is booked at most once per entry type."""
        return self.type, self.source_type, self.source_id


def balance_of(entries: Iterable[LedgerEntry], as_of: datetime | None = None) -> Decimal:
    """The balance the entries make: their sum, only those effective at or before `as_of` when given."""
    return sum((e.amount for e in entries if as_of is None or e.effective_time <= as_of), Decimal(0))


@dataclass
class BalanceGroup:
    balance_group_id: uuid.UUID
    account_id: uuid.UUID
    name: str
    is_default: bool
    currency_code: str
    # Positive: the account owes it; negative: the account is in credit. Exact decimal, always the
    # sum of the group's ledger entries (the unit of work keeps it so).
    balance: Decimal
    create_time: datetime
    close_time: datetime | None = None
    events: list[object] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def open_default(cls, account_id: uuid.UUID, currency_code: str, now: datetime) -> BalanceGroup:
        group = cls(
            balance_group_id=uuid.uuid4(),
            account_id=account_id,
            name=DEFAULT_GROUP_NAME,
            is_default=True,
            currency_code=currency_code,
            balance=Decimal(0),
            create_time=now,
        )
        group.events.append(BalanceGroupCreated(group))
        return group

    @classmethod
    def open(cls, default: BalanceGroup, name: str, now: datetime) -> BalanceGroup:
        """Another group of the account the default group belongs to, in its currency."""
        group = cls(
            balance_group_id=uuid.uuid4(),
            account_id=default.account_id,
            name=check_group_name(name),
            is_default=False,
            currency_code=default.currency_code,
            balance=Decimal(0),
            create_time=now,
        )
        group.events.append(BalanceGroupCreated(group))
        return group

    @property
    def is_open(self) -> bool:
        return self.close_time is None

    def require_open(self, field_name: str) -> None:
        if not self.is_open:
            raise FailedPrecondition(
                "BALANCE_GROUP_CLOSED",
                f"{field_name}: balance group {self.balance_group_id} is closed and takes no entries",
                {"field": field_name, "balance_group_id": str(self.balance_group_id)},
            )

    def close(self, now: datetime) -> bool:
        """Closes an empty group; False when it was closed already (nothing changes)."""
        if not self.is_open:
            return False
        if self.is_default:
            raise FailedPrecondition(
                "DEFAULT_BALANCE_GROUP",
                "the default balance group never closes",
                {"balance_group_id": str(self.balance_group_id)},
            )
        if self.balance != 0:
            raise FailedPrecondition(
                "BALANCE_NOT_ZERO",
                f"balance group {self.balance_group_id} has a balance of {self.balance} {self.currency_code}: "
                "only a group with a zero balance closes (transfer or adjust it first)",
                {"balance_group_id": str(self.balance_group_id), "balance": format(self.balance, "f")},
            )
        self.close_time = now
        self.events.append(BalanceGroupClosed(self))
        return True

    def entry(
        self,
        type_: EntryType,
        amount: Decimal,
        source_type: SourceType,
        source_id: str,
        effective_time: datetime,
        now: datetime,
        *,
        reason_code: str = "",
        reason: str = "",
        actor: str = "",
        entry_id: uuid.UUID | None = None,
    ) -> LedgerEntry:
        """A new entry on this group (booked by the unit of work, which moves the balance)."""
        return LedgerEntry(
            entry_id=entry_id or uuid.uuid4(),
            balance_group_id=self.balance_group_id,
            account_id=self.account_id,
            type=type_,
            amount=amount,
            currency_code=self.currency_code,
            source_type=source_type,
            source_id=source_id,
            reason_code=reason_code,
            reason=reason,
            actor=actor,
            effective_time=effective_time,
            create_time=now,
        )


def total(groups: list[BalanceGroup]) -> Decimal:
    return sum((g.balance for g in groups), Decimal(0))


# Charges.


@dataclass(frozen=True)
class Charge:
    """A charge charging rated (ChargesCreated), as balance books it."""

    charge_id: uuid.UUID
    account_id: uuid.UUID
    # The group it names; "" is the default group.
    balance_group: str
    amount: Decimal
    currency_code: str
    # When it was rated: the entry takes effect then.
    rate_time: datetime | None
    reverses_charge_id: uuid.UUID | None = None


def target_group(groups: list[BalanceGroup], name: str) -> tuple[BalanceGroup, str]:
    """The open group a charge naming `name` lands in, and the entry's reason: a name the account
    has no open group for lands in the default group, and the reason says so."""
    default = next(g for g in groups if g.is_default)
    if not name:
        return default, ""
    for group in groups:
        if group.name == name and group.is_open:
            return group, ""
    return default, f"balance group {name!r} is not an open group of the account: booked to the default group"


def charge_entry(group: BalanceGroup, charge: Charge, reason: str, now: datetime) -> LedgerEntry:
    if charge.currency_code != group.currency_code:
        # Customer fixes an account's currency once it has charges; a charge in another currency
        # is a broken upstream and must not be booked: the event is retried, then dead-lettered.
        raise FailedPrecondition(
            "CURRENCY_MISMATCH",
            f"charge {charge.charge_id} is in {charge.currency_code}, "
            f"account {charge.account_id} in {group.currency_code}",
            {"charge_id": str(charge.charge_id), "account_id": str(charge.account_id)},
        )
    exponent = currency_exponent(charge.currency_code)
    if charge.amount != charge.amount.quantize(Decimal(1).scaleb(-exponent)) or abs(charge.amount) >= MAX_AMOUNT:
        # Charging rounds every charge to the minor unit (docs/charging.md); billing refuses the
        # same charge, so balance does too rather than book what will never be billed.
        raise FailedPrecondition(
            "CHARGE_AMOUNT_INVALID",
            f"charge {charge.charge_id} of {charge.amount} is not an amount in {charge.currency_code}'s minor unit",
            {"charge_id": str(charge.charge_id), "account_id": str(charge.account_id)},
        )
    if charge.reverses_charge_id is not None and not reason:
        reason = f"reverses charge {charge.reverses_charge_id}"
    return group.entry(
        EntryType.CHARGE,
        charge.amount,
        SourceType.CHARGE,
        str(charge.charge_id),
        charge.rate_time or now,
        now,
        reason=reason,
        actor=CHARGING_ACTOR,
    )


# Adjustments and transfers.


@dataclass
class Adjustment:
    """A manual debit (positive) or credit (negative) on a group, with a reason code and an actor.
    Its entry is its own source (source id = the entry's id)."""

    entry: LedgerEntry
    events: list[object] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def make(
        cls,
        group: BalanceGroup,
        amount: Decimal,
        currency_code: str,
        reason_code: str,
        reason: str,
        actor: str,
        now: datetime,
    ) -> Adjustment:
        reason_code = check_reason_code(reason_code)
        actor = check_text("actor", actor, MAX_ACTOR, required=True)
        reason = check_text("reason", reason, MAX_REASON, required=False)
        check_amount("amount", amount, currency_code, group.currency_code, sign=0)
        group.require_open("balance_group_id")
        entry_id = uuid.uuid4()
        entry = group.entry(
            EntryType.ADJUSTMENT,
            amount,
            SourceType.ADJUSTMENT,
            str(entry_id),
            now,
            now,
            reason_code=reason_code,
            reason=reason,
            actor=actor,
            entry_id=entry_id,
        )
        made = cls(entry)
        made.events.append(AdjustmentMade(entry))
        return made


@dataclass(frozen=True)
class Transfer:
    transfer_id: uuid.UUID
    from_entry: LedgerEntry
    to_entry: LedgerEntry


def transfer(
    source: BalanceGroup,
    target: BalanceGroup,
    account_id: uuid.UUID,
    amount: Decimal,
    currency_code: str,
    reason: str,
    actor: str,
    now: datetime,
) -> Transfer:
    """Moves `amount` of balance from `source` to `target`, two groups of `account_id`: a credit on
    the one, a debit on the other, so the account's total does not change."""
    if source.account_id != account_id:
        raise InvalidArgument(
            "from_balance_group_id", f"is not a balance group of account {account_id}", "TRANSFER_ACROSS_ACCOUNTS"
        )
    if target.account_id != account_id:
        raise InvalidArgument(
            "to_balance_group_id",
            f"is not a balance group of account {account_id}: transfers stay within one account",
            "TRANSFER_ACROSS_ACCOUNTS",
        )
    if source.balance_group_id == target.balance_group_id:
        raise InvalidArgument("to_balance_group_id", "must be another group than from_balance_group_id")
    actor = check_text("actor", actor, MAX_ACTOR, required=True)
    reason = check_text("reason", reason, MAX_REASON, required=False)
    check_amount("amount", amount, currency_code, source.currency_code, sign=1)
    source.require_open("from_balance_group_id")
    target.require_open("to_balance_group_id")
    transfer_id = uuid.uuid4()
    return Transfer(
        transfer_id,
        source.entry(
            EntryType.TRANSFER, -amount, SourceType.TRANSFER_OUT, str(transfer_id), now, now, reason=reason, actor=actor
        ),
        target.entry(
            EntryType.TRANSFER, amount, SourceType.TRANSFER_IN, str(transfer_id), now, now, reason=reason, actor=actor
        ),
    )


# Payments.


@dataclass
class Payment:
    payment_id: uuid.UUID
    account_id: uuid.UUID
    balance_group_id: uuid.UUID
    amount: Decimal
    currency_code: str
    method: PaymentMethod
    reference: str
    received_time: datetime
    state: PaymentState
    entry_id: uuid.UUID
    create_time: datetime
    reversal_entry_id: uuid.UUID | None = None
    reversal_reason: str = ""
    reverse_time: datetime | None = None
    events: list[object] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def record(
        cls,
        group: BalanceGroup,
        amount: Decimal,
        currency_code: str,
        method: PaymentMethod,
        reference: str,
        received_time: datetime | None,
        now: datetime,
    ) -> tuple[Payment, LedgerEntry]:
        """A payment credited to `group`, and its credit entry, effective when the money was
        received (now when not said). Nothing is stored: the caller books them once it knows the
        reference is new, and checks then that the group is open (a retry of a payment whose group
        closed since still gets its first result)."""
        check_amount("amount", amount, currency_code, group.currency_code, sign=1)
        reference = check_reference(reference)
        if received_time is None:
            received_time = now
        if received_time > now:
            raise InvalidArgument("received_time", "must not be in the future")
        entry = group.entry(EntryType.PAYMENT, -amount, SourceType.PAYMENT, reference, received_time, now)
        payment = cls(
            payment_id=uuid.uuid4(),
            account_id=group.account_id,
            balance_group_id=group.balance_group_id,
            amount=amount,
            currency_code=group.currency_code,
            method=method,
            reference=reference,
            received_time=received_time,
            state=PaymentState.RECORDED,
            entry_id=entry.entry_id,
            create_time=now,
        )
        payment.events.append(PaymentRecorded(payment, entry))
        return payment, entry

    def check_retry(self, other: Payment) -> None:
        """`other` came with this payment's reference: a retry of it, or refused. A retry names the
        same account, group, amount, currency and method (the received time may differ)."""
        differs = [
            name
            for name, mine, theirs in (
                ("account_id", self.account_id, other.account_id),
                ("balance_group_id", self.balance_group_id, other.balance_group_id),
                ("amount", self.amount, other.amount),
                ("amount.currency_code", self.currency_code, other.currency_code),
                ("method", self.method, other.method),
            )
            if mine != theirs
        ]
        if differs:
            raise InvalidArgument(
                "reference",
                f"was recorded before for payment {self.payment_id} with another {', '.join(differs)}: "
                "a payment reference identifies one payment",
                "PAYMENT_REFERENCE_REUSED",
            )

    def reverse(self, group: BalanceGroup, reason: str, actor: str, now: datetime) -> LedgerEntry:
        """The payment_reversal entry restoring what the payment paid, on `group` (its own group, or
        the default one when its own closed since). Checked not reversed before."""
        assert self.state is PaymentState.RECORDED
        note = reason
        if group.balance_group_id != self.balance_group_id:
            note = f"{reason} (balance group {self.balance_group_id} is closed: booked to the default group)"
        entry = group.entry(
            EntryType.PAYMENT_REVERSAL,
            self.amount,
            SourceType.PAYMENT,
            self.reference,
            now,
            now,
            reason=note,
            actor=actor,
        )
        self.state = PaymentState.REVERSED
        self.reversal_entry_id = entry.entry_id
        self.reversal_reason = reason
        self.reverse_time = now
        self.events.append(PaymentReversed(self, entry))
        return entry


# Domain events.


@dataclass(frozen=True)
class BalanceGroupCreated:
    group: BalanceGroup


@dataclass(frozen=True)
class BalanceGroupClosed:
    group: BalanceGroup


@dataclass(frozen=True)
class PaymentRecorded:
    payment: Payment
    entry: LedgerEntry


@dataclass(frozen=True)
class PaymentReversed:
    payment: Payment
    entry: LedgerEntry


@dataclass(frozen=True)
class AdjustmentMade:
    entry: LedgerEntry
