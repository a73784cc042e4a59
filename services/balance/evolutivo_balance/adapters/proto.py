"""Translation between the domain model and the evolutivo.balance.v1 messages."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from evolutivo.balance.v1 import balance_pb2, ledger_pb2, payment_pb2
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.money import from_money, to_money
from evolutivo_runtime.timestamps import from_timestamp, to_timestamp
from google.type import money_pb2

from evolutivo_balance.domain.credit import Amount, CreditPolicy, Threshold, ThresholdSpec
from evolutivo_balance.domain.model import (
    BalanceGroup,
    EntryType,
    LedgerEntry,
    Payment,
    PaymentMethod,
    PaymentState,
    currency_exponent,
)

ENTRY_TYPES_PB: dict[EntryType, ledger_pb2.LedgerEntryType.ValueType] = {
    EntryType.CHARGE: ledger_pb2.LEDGER_ENTRY_TYPE_CHARGE,
    EntryType.PAYMENT: ledger_pb2.LEDGER_ENTRY_TYPE_PAYMENT,
    EntryType.ADJUSTMENT: ledger_pb2.LEDGER_ENTRY_TYPE_ADJUSTMENT,
    EntryType.WRITE_OFF: ledger_pb2.LEDGER_ENTRY_TYPE_WRITE_OFF,
    EntryType.REFUND: ledger_pb2.LEDGER_ENTRY_TYPE_REFUND,
    EntryType.PAYMENT_REVERSAL: ledger_pb2.LEDGER_ENTRY_TYPE_PAYMENT_REVERSAL,
    EntryType.TRANSFER: ledger_pb2.LEDGER_ENTRY_TYPE_TRANSFER,
    EntryType.TAX: ledger_pb2.LEDGER_ENTRY_TYPE_TAX,
    EntryType.CREDIT_NOTE: ledger_pb2.LEDGER_ENTRY_TYPE_CREDIT_NOTE,
}
_ENTRY_TYPES: dict[int, EntryType] = {v: k for k, v in ENTRY_TYPES_PB.items()}

METHODS_PB: dict[PaymentMethod, payment_pb2.PaymentMethodType.ValueType] = {
    PaymentMethod.CARD: payment_pb2.PAYMENT_METHOD_TYPE_CARD,
    PaymentMethod.SEPA_DIRECT_DEBIT: payment_pb2.PAYMENT_METHOD_TYPE_SEPA_DIRECT_DEBIT,
    PaymentMethod.BANK_TRANSFER: payment_pb2.PAYMENT_METHOD_TYPE_BANK_TRANSFER,
    PaymentMethod.CASH: payment_pb2.PAYMENT_METHOD_TYPE_CASH,
    PaymentMethod.CHECK: payment_pb2.PAYMENT_METHOD_TYPE_CHECK,
    PaymentMethod.OTHER: payment_pb2.PAYMENT_METHOD_TYPE_OTHER,
}
_METHODS: dict[int, PaymentMethod] = {v: k for k, v in METHODS_PB.items()}

_STATES_PB: dict[PaymentState, payment_pb2.PaymentState.ValueType] = {
    PaymentState.RECORDED: payment_pb2.PAYMENT_STATE_RECORDED,
    PaymentState.REVERSED: payment_pb2.PAYMENT_STATE_REVERSED,
}


def _amount(amount: Decimal, currency_code: str) -> money_pb2.Money:
    """NUMERIC(38, 9) pads to 9 decimals: back to the currency's minor unit when exact."""
    quantum = Decimal(1).scaleb(-currency_exponent(currency_code))
    rounded = amount.quantize(quantum)
    return to_money(rounded if rounded == amount else amount, currency_code)


def optional_amount(amount: Decimal | None, currency_code: str) -> money_pb2.Money | None:
    return None if amount is None else _amount(amount, currency_code)


def threshold_to_pb(threshold: Threshold, currency_code: str) -> balance_pb2.CreditThreshold:
    if threshold.amount is not None:
        return balance_pb2.CreditThreshold(amount=_amount(threshold.amount, currency_code))
    return balance_pb2.CreditThreshold(percent=threshold.to_json()["percent"])


def policy_to_pb(policy: CreditPolicy, currency_code: str) -> balance_pb2.CreditPolicy:
    return balance_pb2.CreditPolicy(
        credit_limit=optional_amount(policy.credit_limit, currency_code),
        temporary_credit_limit=optional_amount(policy.temporary_limit, currency_code),
        temporary_limit_expire_time=to_timestamp(policy.temporary_limit_expire_time),
        thresholds=[threshold_to_pb(t, currency_code) for t in policy.thresholds],
    )


def group_to_pb(group: BalanceGroup, now: datetime | None = None) -> balance_pb2.BalanceGroup:
    """The group with its credit as of `now`: the limit in force then and the credit available
    (without `now`, only its policy)."""
    currency_code = group.currency_code
    found = balance_pb2.BalanceGroup(
        balance_group_id=str(group.balance_group_id),
        account_id=str(group.account_id),
        name=group.name,
        is_default=group.is_default,
        balance=_amount(group.balance, currency_code),
        create_time=to_timestamp(group.create_time),
        close_time=to_timestamp(group.close_time),
        credit_policy=policy_to_pb(group.credit, currency_code),
        credit_state_version=group.credit_state.version,
    )
    if now is not None:
        limit = group.credit_limit(now)
        if limit is not None:
            found.credit_limit.CopyFrom(_amount(limit, currency_code))
            found.available_credit.CopyFrom(_amount(group.available_credit(now) or Decimal(0), currency_code))
            found.credit_limit_exceeded = group.is_over_limit(now)
    return found


def entry_to_pb(entry: LedgerEntry) -> ledger_pb2.LedgerEntry:
    return ledger_pb2.LedgerEntry(
        entry_id=str(entry.entry_id),
        balance_group_id=str(entry.balance_group_id),
        account_id=str(entry.account_id),
        type=ENTRY_TYPES_PB[entry.type],
        amount=_amount(entry.amount, entry.currency_code),
        source_type=entry.source_type.value,
        source_id=entry.source_id,
        reason_code=entry.reason_code,
        reason=entry.reason,
        actor=entry.actor,
        effective_time=to_timestamp(entry.effective_time),
        create_time=to_timestamp(entry.create_time),
    )


def payment_to_pb(payment: Payment) -> payment_pb2.Payment:
    return payment_pb2.Payment(
        payment_id=str(payment.payment_id),
        account_id=str(payment.account_id),
        balance_group_id=str(payment.balance_group_id),
        amount=_amount(payment.amount, payment.currency_code),
        method=METHODS_PB[payment.method],
        reference=payment.reference,
        received_time=to_timestamp(payment.received_time),
        state=_STATES_PB[payment.state],
        entry_id=str(payment.entry_id),
        reversal_entry_id=str(payment.reversal_entry_id) if payment.reversal_entry_id else "",
        reversal_reason=payment.reversal_reason,
        reverse_time=to_timestamp(payment.reverse_time),
        create_time=to_timestamp(payment.create_time),
    )


def amount_from_pb(field_name: str, has_amount: bool, money: money_pb2.Money) -> tuple[Decimal, str]:
    """The amount and currency a request carries; a missing or malformed Money names the field."""
    if not has_amount:
        raise InvalidArgument(field_name, "is required")
    try:
        return from_money(money), money.currency_code
    except ValueError as exc:
        raise InvalidArgument(field_name, str(exc)) from None


def optional_amount_from_pb(field_name: str, has_amount: bool, money: money_pb2.Money) -> Amount | None:
    if not has_amount:
        return None
    amount, currency_code = amount_from_pb(field_name, True, money)
    return Amount(amount, currency_code)


def policy_from_pb(
    policy: balance_pb2.CreditPolicy,
) -> tuple[Amount | None, Amount | None, datetime | None, list[ThresholdSpec]]:
    """The credit limit, temporary limit, its expire time and the thresholds a request carries,
    not yet checked against the group (domain/credit.py updated_policy does)."""
    field = "credit_policy"
    thresholds = []
    for i, threshold in enumerate(policy.thresholds):
        which = threshold.WhichOneof("level")
        if which == "amount":
            found = optional_amount_from_pb(f"{field}.thresholds[{i}].amount", True, threshold.amount)
            thresholds.append(ThresholdSpec(amount=found))
        elif which == "percent":
            thresholds.append(ThresholdSpec(percent=threshold.percent))
        else:
            thresholds.append(ThresholdSpec())
    return (
        optional_amount_from_pb(f"{field}.credit_limit", policy.HasField("credit_limit"), policy.credit_limit),
        optional_amount_from_pb(
            f"{field}.temporary_credit_limit",
            policy.HasField("temporary_credit_limit"),
            policy.temporary_credit_limit,
        ),
        from_timestamp(policy.temporary_limit_expire_time) if policy.HasField("temporary_limit_expire_time") else None,
        thresholds,
    )


def method_from_pb(value: int) -> PaymentMethod:
    method = _METHODS.get(value)
    if method is None:
        raise InvalidArgument("method", "is required: how the payment was made, e.g. PAYMENT_METHOD_TYPE_BANK_TRANSFER")
    return method


def entry_type_from_pb(value: int, field_name: str) -> EntryType:
    found = _ENTRY_TYPES.get(value)
    if found is None:
        raise InvalidArgument(field_name, "must be a ledger entry type other than LEDGER_ENTRY_TYPE_UNSPECIFIED")
    return found
