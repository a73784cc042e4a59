"""Balance groups, their ledgers and payments. Plain Python: no protobuf, no SQL.

Sign convention: an amount is positive when the account owes more (a debit: a charge, a payment
reversal, a debit adjustment, a bill's tax, a refund) and negative when it owes less (a credit: a
payment, a credit adjustment, a write-off, a credit note). A group's balance is the sum of its
entries: positive is debt, negative is credit.
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
from evolutivo_runtime.ids import new_uuid

from evolutivo_balance.domain import credit
from evolutivo_balance.domain.credit import CreditPolicy, CreditState

DEFAULT_GROUP_NAME = "default"
# Amounts are below 10^18 in absolute value (google.type.Money units are an int64).
MAX_AMOUNT = Decimal(10) ** 18
MAX_GROUP_NAME = 64
MAX_REFERENCE = 200
MAX_ACTOR = 200
MAX_REASON = 1000
_REASON_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
# Who books charges, and the entries of bills and credit notes.
CHARGING_ACTOR = "charging"
BILLING_ACTOR = "billing"
MAX_SOURCE_ID = 200


class EntryType(enum.StrEnum):
    CHARGE = "charge"
    PAYMENT = "payment"
    ADJUSTMENT = "adjustment"
    WRITE_OFF = "write_off"
    REFUND = "refund"
    PAYMENT_REVERSAL = "payment_reversal"
    TRANSFER = "transfer"
    TAX = "tax"
    CREDIT_NOTE = "credit_note"


class SourceType(enum.StrEnum):
    """What an entry references; (entry type, source type, source id) is booked at most once."""

    CHARGE = "charge"
    PAYMENT = "payment"
    ADJUSTMENT = "adjustment"
    TRANSFER_OUT = "transfer_out"
    TRANSFER_IN = "transfer_in"
    # A bill: its tax, or a write-off of it.
    BILL = "bill"
    # A collections case written off.
    COLLECTIONS_CASE = "collections_case"
    CREDIT_NOTE = "credit_note"
    # A refund's reference.
    REFUND = "refund"


# What a write-off may name as its source.
WRITE_OFF_SOURCES = (SourceType.BILL, SourceType.COLLECTIONS_CASE)


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


class AccountStatus(enum.StrEnum):
    """The account's status as customer publishes it (AccountCreated, AccountUpdated,
    AccountStatusChanged). Customer never reopens a closed account: CLOSED is final."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    CLOSED = "closed"


def check_account_takes_groups(account_id: uuid.UUID, status: AccountStatus | None) -> None:
    """A closed account takes no new balance group: it can have no new charges to put in one. What
    settles its last debt or credit (payments, reversals, adjustments, transfers, write-offs,
    refunds, closing its groups) is not refused (docs/balance.md). An account whose status balance
    has not learnt yet (None) is taken as open."""
    if status is AccountStatus.CLOSED:
        raise FailedPrecondition(
            "ACCOUNT_CLOSED",
            f"account {account_id} is closed: it takes no new balance group",
            {"account_id": str(account_id)},
        )


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


def check_reference(reference: str, field_name: str = "reference", what: str = "payment") -> str:
    if not reference:
        raise InvalidArgument(field_name, f"is required: the provider's or the bank's {what} reference")
    if reference != reference.strip() or len(reference) > MAX_REFERENCE or not reference.isprintable():
        raise InvalidArgument(
            field_name, f"must be 1 to {MAX_REFERENCE} printable characters without surrounding spaces"
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
    # The credit limit, temporary limit and thresholds set on the group.
    credit: CreditPolicy = field(default_factory=CreditPolicy)
    # What was last published about them (crossings are published once: see domain/credit.py).
    credit_state: CreditState = field(default_factory=CreditState)
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

    @property
    def exponent(self) -> int:
        return currency_exponent(self.currency_code)

    def credit_limit(self, now: datetime) -> Decimal | None:
        """The limit in force now (the temporary one until it expires); None without one."""
        return self.credit.limit_at(now)

    def available_credit(self, now: datetime) -> Decimal | None:
        return credit.available_credit(self.balance, self.credit_limit(now))

    def is_over_limit(self, now: datetime) -> bool:
        return credit.is_exceeded(self.balance, self.credit_limit(now))

    def set_credit_policy(self, policy: CreditPolicy) -> None:
        self.credit = policy

    def assess_credit(self, now: datetime) -> bool:
        """Compares the group's credit state now (its balance against its limit and thresholds)
        with the state last published, records an event per crossing and keeps the new state.
        True when the state changed (it must be stored). Call it with the balance read under the
        group's row lock, so two transactions never publish the same crossing."""
        state, crossings = credit.assess(self.credit, self.credit_state, self.balance, self.exponent, now)
        if state == self.credit_state:
            return False
        self.credit_state = state
        for crossing in crossings:
            if isinstance(crossing, credit.LimitCrossing):
                if crossing.exceeded:
                    assert crossing.limit is not None
                    self.events.append(CreditLimitExceeded(self, crossing.limit, crossing.version, now))
                else:
                    self.events.append(CreditLimitRestored(self, crossing.limit, crossing.version, now))
            else:
                self.events.append(CreditThresholdCrossed(self, crossing, now))
        return True

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
            entry_id=entry_id or new_uuid(),
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


@dataclass(frozen=True)
class BillingEntry:
    """What billing issued that moves the balance: a bill's tax (a debit; charges are booked net
    of tax, the customer owes them with it) or a credit note (a credit of its total, tax
    included). Booked once per bill or credit note, on the account's default group."""

    account_id: uuid.UUID
    type: EntryType
    source_type: SourceType
    source_id: str
    # Signed as booked: the tax as billed, minus the credit note's total.
    amount: Decimal
    currency_code: str
    # When it was issued: the entry takes effect then.
    effective_time: datetime | None
    reason: str = ""


def billing_entry(group: BalanceGroup, item: BillingEntry, now: datetime) -> LedgerEntry:
    if item.currency_code != group.currency_code:
        # Billing bills in the account's currency; another one is a broken upstream: the event
        # is retried, then dead-lettered, never booked.
        raise FailedPrecondition(
            "CURRENCY_MISMATCH",
            f"{item.source_type.value} {item.source_id} is in {item.currency_code}, "
            f"account {item.account_id} in {group.currency_code}",
            {"source_id": item.source_id, "account_id": str(item.account_id)},
        )
    exponent = currency_exponent(item.currency_code)
    if item.amount != item.amount.quantize(Decimal(1).scaleb(-exponent)) or abs(item.amount) >= MAX_AMOUNT:
        raise FailedPrecondition(
            "AMOUNT_INVALID",
            f"{item.source_type.value} {item.source_id}: {item.amount} is not an amount in "
            f"{item.currency_code}'s minor unit",
            {"source_id": item.source_id, "account_id": str(item.account_id)},
        )
    return group.entry(
        item.type,
        item.amount,
        item.source_type,
        item.source_id,
        item.effective_time or now,
        now,
        reason=item.reason,
        actor=BILLING_ACTOR,
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


# Write-offs and refunds.


def check_source_id(source_id: str) -> str:
    if not source_id:
        raise InvalidArgument("source_id", "is required: the id of the bill or collections case written off")
    if source_id != source_id.strip() or len(source_id) > MAX_SOURCE_ID or not source_id.isprintable():
        raise InvalidArgument(
            "source_id", f"must be 1 to {MAX_SOURCE_ID} printable characters without surrounding spaces"
        )
    return source_id


def write_off_entry(
    group: BalanceGroup,
    amount: Decimal,
    currency_code: str,
    source_type: str,
    source_id: str,
    reason_code: str,
    reason: str,
    actor: str,
    now: datetime,
) -> LedgerEntry:
    """A write-off: the debt given up, a credit of `amount` on the group, referencing what was
    written off (a bill or a collections case). The caller books it once per source."""
    if source_type not in WRITE_OFF_SOURCES:
        raise InvalidArgument("source_type", f"is required: one of {', '.join(s.value for s in WRITE_OFF_SOURCES)}")
    source_id = check_source_id(source_id)
    reason_code = check_reason_code(reason_code)
    actor = check_text("actor", actor, MAX_ACTOR, required=True)
    reason = check_text("reason", reason, MAX_REASON, required=False)
    check_amount("amount", amount, currency_code, group.currency_code, sign=1)
    return group.entry(
        EntryType.WRITE_OFF,
        -amount,
        SourceType(source_type),
        source_id,
        now,
        now,
        reason_code=reason_code,
        reason=reason,
        actor=actor,
    )


def refund_entry(
    group: BalanceGroup, amount: Decimal, currency_code: str, reference: str, reason: str, actor: str, now: datetime
) -> LedgerEntry:
    """A refund: money paid back out of the group's credit, a debit of `amount`. Whether the group
    has that much credit is checked when it is booked (`check_refund`), under the group's lock."""
    check_amount("amount", amount, currency_code, group.currency_code, sign=1)
    reference = check_reference(reference, what="refund")
    actor = check_text("actor", actor, MAX_ACTOR, required=True)
    reason = check_text("reason", reason, MAX_REASON, required=False)
    return group.entry(EntryType.REFUND, amount, SourceType.REFUND, reference, now, now, reason=reason, actor=actor)


def check_refund(group: BalanceGroup, entry: LedgerEntry) -> None:
    """A refund pays back at most the group's credit (minus its balance): it never leaves the
    group owing what it paid out."""
    if entry.amount > -group.balance:
        credit_left = max(-group.balance, Decimal(0)).quantize(Decimal(1).scaleb(-group.exponent))
        raise FailedPrecondition(
            "REFUND_EXCEEDS_CREDIT",
            f"amount: a refund of {entry.amount} {group.currency_code} is more than the credit of "
            f"balance group {group.balance_group_id} ({credit_left} {group.currency_code})",
            {
                "field": "amount",
                "balance_group_id": str(group.balance_group_id),
                "credit": format(credit_left, "f"),
            },
        )


def same_entry(first: LedgerEntry, again: LedgerEntry, key_field: str, reason: str) -> None:
    """`again` came with `first`'s source: a retry of it (same account, group and amount), or
    refused naming the key field."""
    differs = [
        name
        for name, mine, theirs in (
            ("account_id", first.account_id, again.account_id),
            ("balance_group_id", first.balance_group_id, again.balance_group_id),
            ("amount", first.amount, again.amount),
        )
        if mine != theirs
    ]
    if differs:
        raise InvalidArgument(
            key_field,
            f"was booked before as entry {first.entry_id} with another {', '.join(differs)}",
            reason,
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


@dataclass(frozen=True)
class WriteOffMade:
    entry: LedgerEntry


@dataclass(frozen=True)
class RefundMade:
    entry: LedgerEntry


@dataclass(frozen=True)
class CreditLimitExceeded:
    group: BalanceGroup
    limit: Decimal
    version: int
    # When it was assessed: the limit in force and the available credit are as of then.
    at: datetime


@dataclass(frozen=True)
class CreditLimitRestored:
    group: BalanceGroup
    # None when the group no longer has a limit.
    limit: Decimal | None
    version: int
    at: datetime


@dataclass(frozen=True)
class CreditThresholdCrossed:
    group: BalanceGroup
    crossing: credit.ThresholdCrossing
    at: datetime
