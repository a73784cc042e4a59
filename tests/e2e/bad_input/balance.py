"""BalanceService: balance groups, payments, adjustments, transfers, write-offs, refunds, credit limits."""

from __future__ import annotations

from datetime import timedelta

from evolutivo.balance.v1 import balance_pb2, payment_pb2
from evolutivo.balance.v1 import balance_service_pb2 as pb
from evolutivo_runtime.timestamps import to_timestamp
from google.protobuf.field_mask_pb2 import FieldMask

from bad_input import EXISTS, FAILED, INVALID, NOT_FOUND, Case, case
from bad_input.values import CONTROL, HUGE_UNITS, NOT_A_TOKEN, NOT_UUID, SQL, UNKNOWN, eur, long, money
from bad_input.world import World

S = "/evolutivo.balance.v1.BalanceService/"
BANK = payment_pb2.PAYMENT_METHOD_TYPE_BANK_TRANSFER


def pay(w: World, **fields: object) -> pb.RecordPaymentRequest:
    values: dict[str, object] = {
        "account_id": w.account_id,
        "amount": eur("5.00"),
        "method": BANK,
        "reference": "BAD-NEW-PAYMENT",
    }
    values.update(fields)
    return pb.RecordPaymentRequest(**values)  # type: ignore[arg-type]


def adjust(w: World, **fields: object) -> pb.CreateAdjustmentRequest:
    values: dict[str, object] = {
        "account_id": w.account_id,
        "amount": eur("1.00"),
        "reason_code": "GOODWILL",
        "actor": "ops:bad-input",
    }
    values.update(fields)
    return pb.CreateAdjustmentRequest(**values)  # type: ignore[arg-type]


def transfer(w: World, **fields: object) -> pb.TransferBalanceRequest:
    values: dict[str, object] = {
        "account_id": w.account_id,
        "from_balance_group_id": w.balance_group_id,
        "to_balance_group_id": w.other_group_id,
        "amount": eur("1.00"),
        "actor": "ops:bad-input",
    }
    values.update(fields)
    return pb.TransferBalanceRequest(**values)  # type: ignore[arg-type]


def write_off(w: World, **fields: object) -> pb.WriteOffRequest:
    values: dict[str, object] = {
        "account_id": w.account_id,
        "amount": eur("1.00"),
        "source_type": "bill",
        "source_id": w.bill_id,
        "reason_code": "UNCOLLECTIBLE",
        "actor": "ops:bad-input",
    }
    values.update(fields)
    return pb.WriteOffRequest(**values)  # type: ignore[arg-type]


def refund(w: World, **fields: object) -> pb.RecordRefundRequest:
    values: dict[str, object] = {
        "account_id": w.account_id,
        "amount": eur("1.00"),
        "reference": "BAD-NEW-REFUND",
        "actor": "ops:bad-input",
    }
    values.update(fields)
    return pb.RecordRefundRequest(**values)  # type: ignore[arg-type]


def limit(w: World, paths: list[str] | None = None, **policy: object) -> pb.SetCreditLimitRequest:
    return pb.SetCreditLimitRequest(
        balance_group_id=w.balance_group_id,
        credit_policy=balance_pb2.CreditPolicy(**policy),  # type: ignore[arg-type]
        update_mask=FieldMask(paths=paths or []),
    )


def amounts(method: str, build: object, field: str = "amount") -> list[Case]:
    """The amount cases every money-moving call shares: (World, Money) -> request."""
    make = build
    rows = [
        ("amount missing", None),
        ("amount negative", eur("-5.00")),
        ("amount zero", eur("0")),
        ("amount huge", money(HUGE_UNITS)),
        ("amount finer than a cent", money(1, 1)),
        ("amount with units and nanos of opposite signs", money(5, -1)),
        ("amount nanos out of range", money(5, 2_000_000_000)),
        ("amount in an unknown currency", money(5, currency="ZZZ")),
        ("amount in another currency", money(5, currency="USD")),
    ]
    return [
        case(S + method, name, lambda w, m=m: make(w, m), INVALID, field)  # type: ignore[misc,operator]
        for name, m in rows
    ]


CASES: list[Case] = [
    # --- GetBalance / GetBalanceGroup
    case(
        S + "GetBalance",
        "account id not a UUID",
        lambda w: pb.GetBalanceRequest(account_id=NOT_UUID),
        INVALID,
        "account_id",
    ),
    case(
        S + "GetBalance",
        "account id SQL-looking",
        lambda w: pb.GetBalanceRequest(account_id=SQL),
        INVALID,
        "account_id",
    ),
    case(S + "GetBalance", "unknown account", lambda w: pb.GetBalanceRequest(account_id=UNKNOWN), NOT_FOUND),
    case(
        S + "GetBalanceGroup",
        "group id not a UUID",
        lambda w: pb.GetBalanceGroupRequest(balance_group_id=NOT_UUID),
        INVALID,
        "balance_group_id",
    ),
    case(
        S + "GetBalanceGroup", "unknown group", lambda w: pb.GetBalanceGroupRequest(balance_group_id=UNKNOWN), NOT_FOUND
    ),
    # --- CreateBalanceGroup / CloseBalanceGroup
    case(
        S + "CreateBalanceGroup",
        "name missing",
        lambda w: pb.CreateBalanceGroupRequest(account_id=w.account_id),
        INVALID,
        "name",
    ),
    case(
        S + "CreateBalanceGroup",
        "name over-long",
        lambda w: pb.CreateBalanceGroupRequest(account_id=w.account_id, name=long(65)),
        INVALID,
        "name",
    ),
    case(
        S + "CreateBalanceGroup",
        "name with surrounding spaces",
        lambda w: pb.CreateBalanceGroupRequest(account_id=w.account_id, name=" x "),
        INVALID,
        "name",
    ),
    case(
        S + "CreateBalanceGroup",
        "name with control characters",
        lambda w: pb.CreateBalanceGroupRequest(account_id=w.account_id, name=CONTROL),
        INVALID,
        "name",
    ),
    case(
        S + "CreateBalanceGroup",
        "name taken",
        lambda w: pb.CreateBalanceGroupRequest(account_id=w.account_id, name="project-x"),
        EXISTS,
    ),
    case(
        S + "CreateBalanceGroup",
        "account id not a UUID",
        lambda w: pb.CreateBalanceGroupRequest(account_id=SQL, name="g"),
        INVALID,
        "account_id",
    ),
    case(
        S + "CreateBalanceGroup",
        "unknown account",
        lambda w: pb.CreateBalanceGroupRequest(account_id=UNKNOWN, name="g"),
        NOT_FOUND,
    ),
    # Balance keeps the account's status from customer's events: a closed account takes no new group.
    # Payments, adjustments, write-offs and refunds on a closed account are how its last debt or
    # credit is settled, so they are no refusal case (docs/balance.md).
    case(
        S + "CreateBalanceGroup",
        "closed account",
        lambda w: pb.CreateBalanceGroupRequest(account_id=w.closed_account_id, name="after-closing"),
        FAILED,
        reason="ACCOUNT_CLOSED",
    ),
    case(
        S + "CloseBalanceGroup",
        "the default group",
        lambda w: pb.CloseBalanceGroupRequest(balance_group_id=w.balance_group_id),
        FAILED,
    ),
    case(
        S + "CloseBalanceGroup",
        "group id not a UUID",
        lambda w: pb.CloseBalanceGroupRequest(balance_group_id=NOT_UUID),
        INVALID,
        "balance_group_id",
    ),
    case(
        S + "CloseBalanceGroup",
        "unknown group",
        lambda w: pb.CloseBalanceGroupRequest(balance_group_id=UNKNOWN),
        NOT_FOUND,
    ),
    # --- RecordPayment
    *amounts("RecordPayment", lambda w, m: pay(w, amount=m)),
    case(S + "RecordPayment", "method unspecified", lambda w: pay(w, method=0), INVALID, "method"),
    case(S + "RecordPayment", "method out of the enum", lambda w: pay(w, method=42), INVALID, "method"),
    case(S + "RecordPayment", "reference missing", lambda w: pay(w, reference=""), INVALID, "reference"),
    case(S + "RecordPayment", "reference over-long", lambda w: pay(w, reference=long(201)), INVALID, "reference"),
    case(
        S + "RecordPayment",
        "reference with control characters",
        lambda w: pay(w, reference=CONTROL),
        INVALID,
        "reference",
    ),
    case(
        S + "RecordPayment",
        "received in the future",
        lambda w: pay(w, received_time=to_timestamp(w.now + timedelta(days=30))),
        INVALID,
        "received_time",
    ),
    case(S + "RecordPayment", "account id not a UUID", lambda w: pay(w, account_id=NOT_UUID), INVALID, "account_id"),
    case(
        S + "RecordPayment",
        "group of another account",
        lambda w: pay(w, balance_group_id=w.closed_account_group_id),
        INVALID,
        "balance_group_id",
    ),
    case(S + "RecordPayment", "unknown account", lambda w: pay(w, account_id=UNKNOWN), NOT_FOUND),
    case(
        S + "RecordPayment",
        "reference reused with another amount",
        lambda w: pay(w, reference=w.payment_reference, amount=eur("11.00")),
        INVALID,
        "reference",
    ),
    case(
        S + "RecordPayment",
        "request id reused with another payload",
        lambda w: pay(w, request_id=w.payment_request_id, reference="BAD-OTHER-REF"),
        INVALID,
        "request_id",
    ),
    # --- ReversePayment / GetPayment
    case(
        S + "ReversePayment",
        "neither id nor reference",
        lambda w: pb.ReversePaymentRequest(reason="bounced"),
        INVALID,
        "payment_id",
    ),
    case(
        S + "ReversePayment",
        "reason missing",
        lambda w: pb.ReversePaymentRequest(payment_id=w.payment_id),
        INVALID,
        "reason",
    ),
    case(
        S + "ReversePayment",
        "reason over-long",
        lambda w: pb.ReversePaymentRequest(payment_id=w.payment_id, reason=long(5000)),
        INVALID,
        "reason",
    ),
    case(
        S + "ReversePayment",
        "payment id not a UUID",
        lambda w: pb.ReversePaymentRequest(payment_id=SQL, reason="x"),
        INVALID,
        "payment_id",
    ),
    case(
        S + "ReversePayment",
        "unknown reference",
        lambda w: pb.ReversePaymentRequest(reference="NO-SUCH-REF", reason="x"),
        NOT_FOUND,
    ),
    case(S + "GetPayment", "neither id nor reference", lambda w: pb.GetPaymentRequest(), INVALID, "payment_id"),
    case(
        S + "GetPayment",
        "payment id not a UUID",
        lambda w: pb.GetPaymentRequest(payment_id=NOT_UUID),
        INVALID,
        "payment_id",
    ),
    case(S + "GetPayment", "unknown reference SQL-looking", lambda w: pb.GetPaymentRequest(reference=SQL), NOT_FOUND),
    # --- CreateAdjustment
    *[c for c in amounts("CreateAdjustment", lambda w, m: adjust(w, amount=m)) if c.name != "amount negative"],
    case(S + "CreateAdjustment", "reason code missing", lambda w: adjust(w, reason_code=""), INVALID, "reason_code"),
    case(
        S + "CreateAdjustment",
        "reason code with spaces",
        lambda w: adjust(w, reason_code="GOOD WILL!"),
        INVALID,
        "reason_code",
    ),
    case(
        S + "CreateAdjustment", "reason code SQL-looking", lambda w: adjust(w, reason_code=SQL), INVALID, "reason_code"
    ),
    case(S + "CreateAdjustment", "actor missing", lambda w: adjust(w, actor=""), INVALID, "actor"),
    case(S + "CreateAdjustment", "actor over-long", lambda w: adjust(w, actor=long(201)), INVALID, "actor"),
    case(
        S + "CreateAdjustment",
        "group id not a UUID",
        lambda w: adjust(w, balance_group_id=NOT_UUID),
        INVALID,
        "balance_group_id",
    ),
    case(
        S + "CreateAdjustment",
        "request id reused with another payload",
        lambda w: adjust(w, request_id=w.adjustment_request_id, amount=eur("-6.00")),
        INVALID,
        "request_id",
    ),
    # --- TransferBalance
    *amounts("TransferBalance", lambda w, m: transfer(w, amount=m)),
    case(
        S + "TransferBalance",
        "to the same group",
        lambda w: transfer(w, to_balance_group_id=w.balance_group_id),
        INVALID,
        "to_balance_group_id",
    ),
    case(
        S + "TransferBalance",
        "to another account's group",
        lambda w: transfer(w, to_balance_group_id=w.closed_account_group_id),
        INVALID,
        "to_balance_group_id",
    ),
    case(S + "TransferBalance", "actor missing", lambda w: transfer(w, actor=""), INVALID, "actor"),
    # --- WriteOff
    *amounts("WriteOff", lambda w, m: write_off(w, amount=m)),
    case(S + "WriteOff", "source type missing", lambda w: write_off(w, source_type=""), INVALID, "source_type"),
    case(S + "WriteOff", "source type unknown", lambda w: write_off(w, source_type="invoice"), INVALID, "source_type"),
    case(S + "WriteOff", "source id missing", lambda w: write_off(w, source_id=""), INVALID, "source_id"),
    case(S + "WriteOff", "reason code missing", lambda w: write_off(w, reason_code=""), INVALID, "reason_code"),
    case(S + "WriteOff", "actor missing", lambda w: write_off(w, actor=""), INVALID, "actor"),
    # --- RecordRefund
    *amounts("RecordRefund", lambda w, m: refund(w, amount=m)),
    case(S + "RecordRefund", "reference missing", lambda w: refund(w, reference=""), INVALID, "reference"),
    case(S + "RecordRefund", "actor missing", lambda w: refund(w, actor=""), INVALID, "actor"),
    case(S + "RecordRefund", "more than the group's credit", lambda w: refund(w, amount=eur("5000.00")), FAILED),
    # --- SetCreditLimit
    case(
        S + "SetCreditLimit",
        "limit negative",
        lambda w: limit(w, ["credit_limit"], credit_limit=eur("-1.00")),
        INVALID,
        "credit_policy.credit_limit",
    ),
    case(
        S + "SetCreditLimit",
        "limit huge",
        lambda w: limit(w, ["credit_limit"], credit_limit=money(HUGE_UNITS)),
        INVALID,
        "credit_policy.credit_limit",
    ),
    case(
        S + "SetCreditLimit",
        "limit in another currency",
        lambda w: limit(w, ["credit_limit"], credit_limit=money(100, currency="USD")),
        INVALID,
        "credit_policy.credit_limit",
    ),
    case(
        S + "SetCreditLimit",
        "temporary limit without its expiry",
        lambda w: limit(w, ["temporary_credit_limit"], temporary_credit_limit=eur("100.00")),
        INVALID,
        "credit_policy.temporary_limit_expire_time",
    ),
    case(
        S + "SetCreditLimit",
        "temporary limit expired already",
        lambda w: limit(
            w,
            ["temporary_credit_limit"],
            temporary_credit_limit=eur("100.00"),
            temporary_limit_expire_time=to_timestamp(w.now - timedelta(days=1)),
        ),
        INVALID,
        "credit_policy.temporary_limit_expire_time",
    ),
    case(
        S + "SetCreditLimit",
        "threshold percent NaN",
        lambda w: limit(w, ["thresholds"], thresholds=[balance_pb2.CreditThreshold(percent="NaN")]),
        INVALID,
        "credit_policy.thresholds",
    ),
    case(
        S + "SetCreditLimit",
        "threshold percent over 1000",
        lambda w: limit(w, ["thresholds"], thresholds=[balance_pb2.CreditThreshold(percent="1000.01")]),
        INVALID,
        "credit_policy.thresholds",
    ),
    case(
        S + "SetCreditLimit",
        "21 thresholds",
        lambda w: limit(
            w, ["thresholds"], thresholds=[balance_pb2.CreditThreshold(percent=str(i)) for i in range(1, 22)]
        ),
        INVALID,
        "credit_policy.thresholds",
    ),
    case(
        S + "SetCreditLimit",
        "update mask names an unknown field",
        lambda w: limit(w, ["balance"]),
        INVALID,
        "update_mask",
    ),
    case(
        S + "SetCreditLimit",
        "group id not a UUID",
        lambda w: pb.SetCreditLimitRequest(balance_group_id=NOT_UUID, credit_policy=balance_pb2.CreditPolicy()),
        INVALID,
        "balance_group_id",
    ),
    case(
        S + "SetCreditLimit", "unknown group", lambda w: pb.SetCreditLimitRequest(balance_group_id=UNKNOWN), NOT_FOUND
    ),
    # --- ListLedgerEntries
    case(
        S + "ListLedgerEntries",
        "account id not a UUID",
        lambda w: pb.ListLedgerEntriesRequest(account_id=NOT_UUID),
        INVALID,
        "account_id",
    ),
    case(
        S + "ListLedgerEntries",
        "end before start",
        lambda w: pb.ListLedgerEntriesRequest(
            account_id=w.account_id, start_time=to_timestamp(w.now), end_time=to_timestamp(w.now - timedelta(days=1))
        ),
        INVALID,
        "end_time",
    ),
    case(
        S + "ListLedgerEntries",
        "entry type out of the enum",
        lambda w: pb.ListLedgerEntriesRequest(account_id=w.account_id, types=[99]),
        INVALID,
        "types",
    ),
    case(
        S + "ListLedgerEntries",
        "page token forged",
        lambda w: pb.ListLedgerEntriesRequest(account_id=w.account_id, page_token=NOT_A_TOKEN),
        INVALID,
        "page_token",
    ),
    case(
        S + "ListLedgerEntries",
        "group id not a UUID",
        lambda w: pb.ListLedgerEntriesRequest(account_id=w.account_id, balance_group_id=SQL),
        INVALID,
        "balance_group_id",
    ),
]
