"""BalanceService over gRPC: translates messages to handler calls and back, nothing more."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from datetime import datetime

from evolutivo.balance.v1 import balance_service_pb2 as pb
from evolutivo.balance.v1 import balance_service_pb2_grpc as pb_grpc
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.idempotency import run_idempotent
from evolutivo_runtime.ids import parse_request_id, parse_uuid
from evolutivo_runtime.money import to_money
from evolutivo_runtime.pagination import decode_keyset, encode_keyset, page_size
from evolutivo_runtime.server import Context
from evolutivo_runtime.timestamps import from_timestamp, to_timestamp

from evolutivo_balance.adapters import proto
from evolutivo_balance.adapters.repository import CurrentBalances, EntryFilter
from evolutivo_balance.domain.model import total
from evolutivo_balance.service_layer import adjustments, credit, handlers, payments, refunds
from evolutivo_balance.service_layer.unit_of_work import BalanceUnitOfWork


def _optional_uuid(field_name: str, value: str) -> uuid.UUID | None:
    return parse_uuid(field_name, value) if value else None


def _payment_key(request: pb.ReversePaymentRequest | pb.GetPaymentRequest) -> tuple[uuid.UUID | None, str]:
    """The payment a request names: by id, or by reference."""
    which = request.WhichOneof("payment")
    if which == "payment_id":
        return parse_uuid("payment_id", request.payment_id), ""
    if which == "reference" and request.reference:
        return None, request.reference
    raise InvalidArgument("payment_id", "is required: name the payment by payment_id or by reference")


def _filter_key(account_id: uuid.UUID, where: EntryFilter) -> str:
    """A short digest of a listing's filters: a page token is only good for the same filters."""
    parts = [
        str(account_id),
        str(where.balance_group_id or ""),
        ",".join(sorted(t.value for t in where.types)),
        where.source_type,
        where.source_id,
        where.start_time.isoformat() if where.start_time else "",
        where.end_time.isoformat() if where.end_time else "",
    ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def _after(token: str, filters: str) -> tuple[datetime, int] | None:
    key = decode_keyset(token, 3)
    if key is None:
        return None
    effective_time, seq, issued_for = key
    try:
        after = datetime.fromisoformat(effective_time), int(seq)
    except ValueError:
        raise InvalidArgument("page_token", "is not a token this service issued") from None
    if issued_for != filters:
        raise InvalidArgument("page_token", "was issued for a request with other filters")
    return after


class BalanceServicer(pb_grpc.BalanceServiceServicer):
    def __init__(self, uow: Callable[[], BalanceUnitOfWork], current: CurrentBalances | None = None) -> None:
        self._uow = uow
        # The current balances' read path outside the units of work; None: through them.
        self._current = current

    # Reads.

    async def GetBalance(self, request: pb.GetBalanceRequest, context: Context) -> pb.GetBalanceResponse:
        account_id = parse_uuid("account_id", request.account_id)
        as_of = from_timestamp(request.as_of_time) if request.HasField("as_of_time") else None
        if as_of is None and self._current is not None:
            at = self._uow().clock.now()
            groups = await handlers.current_balance(self._current, account_id, request.show_closed)
        else:
            groups, at = await handlers.get_balance(self._uow(), account_id, as_of, request.show_closed)
        return pb.GetBalanceResponse(
            account_id=str(account_id),
            balance_groups=[proto.group_to_pb(g, at) for g in groups],
            total=to_money(total(groups), groups[0].currency_code),
            as_of_time=to_timestamp(at),
        )

    async def GetBalanceGroup(self, request: pb.GetBalanceGroupRequest, context: Context) -> pb.GetBalanceGroupResponse:
        group_id = parse_uuid("balance_group_id", request.balance_group_id)
        uow = self._uow()
        group = await handlers.get_group(uow, group_id)
        return pb.GetBalanceGroupResponse(balance_group=proto.group_to_pb(group, uow.clock.now()))

    async def GetPayment(self, request: pb.GetPaymentRequest, context: Context) -> pb.GetPaymentResponse:
        payment_id, reference = _payment_key(request)
        payment = await payments.get_payment(self._uow(), payment_id, reference)
        return pb.GetPaymentResponse(payment=proto.payment_to_pb(payment))

    async def ListLedgerEntries(
        self, request: pb.ListLedgerEntriesRequest, context: Context
    ) -> pb.ListLedgerEntriesResponse:
        account_id = parse_uuid("account_id", request.account_id)
        where = EntryFilter(
            balance_group_id=_optional_uuid("balance_group_id", request.balance_group_id),
            types=tuple(proto.entry_type_from_pb(t, f"types[{i}]") for i, t in enumerate(request.types)),
            source_type=request.source_type,
            source_id=request.source_id,
            start_time=from_timestamp(request.start_time) if request.HasField("start_time") else None,
            end_time=from_timestamp(request.end_time) if request.HasField("end_time") else None,
        )
        if where.start_time and where.end_time and where.end_time <= where.start_time:
            raise InvalidArgument("end_time", "must be after start_time")
        size = page_size(request.page_size)
        filters = _filter_key(account_id, where)
        after = _after(request.page_token, filters)
        found = await handlers.list_entries(self._uow(), account_id, where, after, size + 1)
        page = found[:size]
        next_token = ""
        if len(found) > size:
            seq, last = page[-1]
            next_token = encode_keyset(last.effective_time.isoformat(), str(seq), filters)
        return pb.ListLedgerEntriesResponse(entries=[proto.entry_to_pb(e) for _, e in page], next_page_token=next_token)

    # Balance groups.

    async def CreateBalanceGroup(
        self, request: pb.CreateBalanceGroupRequest, context: Context
    ) -> pb.CreateBalanceGroupResponse:
        account_id = parse_uuid("account_id", request.account_id)
        request_id = parse_request_id(request.request_id)

        async def perform(uow: BalanceUnitOfWork) -> pb.CreateBalanceGroupResponse:
            group = await handlers.create_group(uow, account_id, request.name)
            return pb.CreateBalanceGroupResponse(balance_group=proto.group_to_pb(group, uow.clock.now()))

        return await run_idempotent(
            self._uow(), request_id, "CreateBalanceGroup", pb.CreateBalanceGroupResponse, perform
        )

    async def CloseBalanceGroup(
        self, request: pb.CloseBalanceGroupRequest, context: Context
    ) -> pb.CloseBalanceGroupResponse:
        group_id = parse_uuid("balance_group_id", request.balance_group_id)
        request_id = parse_request_id(request.request_id)

        async def perform(uow: BalanceUnitOfWork) -> pb.CloseBalanceGroupResponse:
            group = await handlers.close_group(uow, group_id)
            return pb.CloseBalanceGroupResponse(balance_group=proto.group_to_pb(group, uow.clock.now()))

        return await run_idempotent(self._uow(), request_id, "CloseBalanceGroup", pb.CloseBalanceGroupResponse, perform)

    # Payments.

    async def RecordPayment(self, request: pb.RecordPaymentRequest, context: Context) -> pb.RecordPaymentResponse:
        amount, currency_code = proto.amount_from_pb("amount", request.HasField("amount"), request.amount)
        cmd = payments.RecordPayment(
            account_id=parse_uuid("account_id", request.account_id),
            balance_group_id=_optional_uuid("balance_group_id", request.balance_group_id),
            amount=amount,
            currency_code=currency_code,
            method=proto.method_from_pb(request.method),
            reference=request.reference,
            received_time=from_timestamp(request.received_time) if request.HasField("received_time") else None,
        )
        request_id = parse_request_id(request.request_id)

        async def perform(uow: BalanceUnitOfWork) -> pb.RecordPaymentResponse:
            payment, entry = await payments.record_payment(uow, cmd)
            return pb.RecordPaymentResponse(payment=proto.payment_to_pb(payment), entry=proto.entry_to_pb(entry))

        return await run_idempotent(self._uow(), request_id, "RecordPayment", pb.RecordPaymentResponse, perform)

    async def ReversePayment(self, request: pb.ReversePaymentRequest, context: Context) -> pb.ReversePaymentResponse:
        payment_id, reference = _payment_key(request)
        request_id = parse_request_id(request.request_id)

        async def perform(uow: BalanceUnitOfWork) -> pb.ReversePaymentResponse:
            payment, entry = await payments.reverse_payment(uow, payment_id, reference, request.reason, request.actor)
            return pb.ReversePaymentResponse(payment=proto.payment_to_pb(payment), entry=proto.entry_to_pb(entry))

        return await run_idempotent(self._uow(), request_id, "ReversePayment", pb.ReversePaymentResponse, perform)

    # Adjustments and transfers.

    async def CreateAdjustment(
        self, request: pb.CreateAdjustmentRequest, context: Context
    ) -> pb.CreateAdjustmentResponse:
        account_id = parse_uuid("account_id", request.account_id)
        group_id = _optional_uuid("balance_group_id", request.balance_group_id)
        amount, currency_code = proto.amount_from_pb("amount", request.HasField("amount"), request.amount)
        request_id = parse_request_id(request.request_id)

        async def perform(uow: BalanceUnitOfWork) -> pb.CreateAdjustmentResponse:
            made = await adjustments.create_adjustment(
                uow, account_id, group_id, amount, currency_code, request.reason_code, request.reason, request.actor
            )
            return pb.CreateAdjustmentResponse(entry=proto.entry_to_pb(made.entry))

        return await run_idempotent(self._uow(), request_id, "CreateAdjustment", pb.CreateAdjustmentResponse, perform)

    async def TransferBalance(self, request: pb.TransferBalanceRequest, context: Context) -> pb.TransferBalanceResponse:
        account_id = parse_uuid("account_id", request.account_id)
        from_id = parse_uuid("from_balance_group_id", request.from_balance_group_id)
        to_id = parse_uuid("to_balance_group_id", request.to_balance_group_id)
        amount, currency_code = proto.amount_from_pb("amount", request.HasField("amount"), request.amount)
        request_id = parse_request_id(request.request_id)

        async def perform(uow: BalanceUnitOfWork) -> pb.TransferBalanceResponse:
            moved = await adjustments.transfer_balance(
                uow, account_id, from_id, to_id, amount, currency_code, request.reason, request.actor
            )
            return pb.TransferBalanceResponse(
                transfer_id=str(moved.transfer_id),
                from_entry=proto.entry_to_pb(moved.from_entry),
                to_entry=proto.entry_to_pb(moved.to_entry),
            )

        return await run_idempotent(self._uow(), request_id, "TransferBalance", pb.TransferBalanceResponse, perform)

    # Write-offs and refunds.

    async def WriteOff(self, request: pb.WriteOffRequest, context: Context) -> pb.WriteOffResponse:
        account_id = parse_uuid("account_id", request.account_id)
        group_id = _optional_uuid("balance_group_id", request.balance_group_id)
        amount, currency_code = proto.amount_from_pb("amount", request.HasField("amount"), request.amount)
        request_id = parse_request_id(request.request_id)

        async def perform(uow: BalanceUnitOfWork) -> pb.WriteOffResponse:
            entry = await refunds.write_off(
                uow,
                account_id,
                group_id,
                amount,
                currency_code,
                request.source_type,
                request.source_id,
                request.reason_code,
                request.reason,
                request.actor,
            )
            return pb.WriteOffResponse(entry=proto.entry_to_pb(entry))

        return await run_idempotent(self._uow(), request_id, "WriteOff", pb.WriteOffResponse, perform)

    async def RecordRefund(self, request: pb.RecordRefundRequest, context: Context) -> pb.RecordRefundResponse:
        account_id = parse_uuid("account_id", request.account_id)
        group_id = _optional_uuid("balance_group_id", request.balance_group_id)
        amount, currency_code = proto.amount_from_pb("amount", request.HasField("amount"), request.amount)
        request_id = parse_request_id(request.request_id)

        async def perform(uow: BalanceUnitOfWork) -> pb.RecordRefundResponse:
            entry = await refunds.record_refund(
                uow, account_id, group_id, amount, currency_code, request.reference, request.reason, request.actor
            )
            return pb.RecordRefundResponse(entry=proto.entry_to_pb(entry))

        return await run_idempotent(self._uow(), request_id, "RecordRefund", pb.RecordRefundResponse, perform)

    # Credit limits.

    async def SetCreditLimit(self, request: pb.SetCreditLimitRequest, context: Context) -> pb.SetCreditLimitResponse:
        group_id = parse_uuid("balance_group_id", request.balance_group_id)
        limit, temporary, expire_time, thresholds = proto.policy_from_pb(request.credit_policy)
        cmd = credit.SetCreditLimit(
            balance_group_id=group_id,
            credit_limit=limit,
            temporary_limit=temporary,
            temporary_limit_expire_time=expire_time,
            thresholds=thresholds,
            paths=list(request.update_mask.paths),
        )
        request_id = parse_request_id(request.request_id)

        async def perform(uow: BalanceUnitOfWork) -> pb.SetCreditLimitResponse:
            group = await credit.set_credit_limit(uow, cmd)
            return pb.SetCreditLimitResponse(balance_group=proto.group_to_pb(group, uow.clock.now()))

        return await run_idempotent(self._uow(), request_id, "SetCreditLimit", pb.SetCreditLimitResponse, perform)
