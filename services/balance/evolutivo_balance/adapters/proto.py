"""Translation between the domain model and the evolutivo.balance.v1 messages."""

from __future__ import annotations

from decimal import Decimal

from evolutivo.balance.v1 import balance_pb2, ledger_pb2, payment_pb2
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.money import from_money, to_money
from evolutivo_runtime.timestamps import to_timestamp
from google.type import money_pb2

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


def group_to_pb(group: BalanceGroup) -> balance_pb2.BalanceGroup:
    return balance_pb2.BalanceGroup(
        balance_group_id=str(group.balance_group_id),
        account_id=str(group.account_id),
        name=group.name,
        is_default=group.is_default,
        balance=_amount(group.balance, group.currency_code),
        create_time=to_timestamp(group.create_time),
        close_time=to_timestamp(group.close_time),
    )


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
