"""The usage RPCs of ChargingService: translation only."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import timedelta

from evolutivo.charging.v1 import charging_service_pb2 as pb
from evolutivo.charging.v1 import usage_pb2
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.idempotency import run_idempotent
from evolutivo_runtime.ids import parse_request_id, parse_uuid
from evolutivo_runtime.pagination import decode_keyset, encode_keyset, page_size
from evolutivo_runtime.server import Context

from evolutivo_charging.adapters import usage_proto
from evolutivo_charging.adapters.catalog_proto import instant_from_pb
from evolutivo_charging.domain.usage import MAX_BATCH, Received
from evolutivo_charging.service_layer import rerating, usage
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork
from evolutivo_charging.service_layer.usage_groups import UsageGroups

OFFER_CODE = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")

# Events one StreamUsage call carries (its answer holds a result for each).
MAX_STREAM_EVENTS = 10 * MAX_BATCH


def _position(token: str, *filters: str) -> int:
    """The last position a page token names, for a request with the same filters; 0 first."""
    key = decode_keyset(token, 1 + len(filters))
    if key is None:
        return 0
    seq, *issued_for = key
    if not (seq.isascii() and seq.isdigit()):
        raise InvalidArgument("page_token", "is not a token this service issued")
    if issued_for != list(filters):
        raise InvalidArgument("page_token", "was issued for a request with other filters")
    return int(seq)


def _received(events: Iterable[usage_pb2.UsageEvent], start: int = 0) -> list[Received]:
    return [usage_proto.received_from_pb(e, f"events[{start + i}]") for i, e in enumerate(events)]


class UsageApi:
    """Mixed into ChargingServicer."""

    _uow: Callable[[], ChargingUnitOfWork]
    # How long rated usage is kept (rerating reaches no further); None: forever.
    _usage_horizon: timedelta | None
    # Concurrent RecordUsage calls rated together (service_layer/usage_groups.py); None: each alone.
    _usage_groups: UsageGroups | None = None

    def group_single_calls(self, max_events: int, max_groups: int) -> None:
        self._usage_groups = UsageGroups(self._uow, max_events, max_groups) if max_events > 1 else None

    async def RecordUsage(self, request: pb.RecordUsageRequest, context: Context) -> pb.RecordUsageResponse:
        if not request.HasField("event"):
            raise InvalidArgument("event", "is required")
        received = usage_proto.received_from_pb(request.event, "event")
        if received.error is not None:
            raise received.error
        if self._usage_groups is not None:
            result = await self._usage_groups.record(received)
        else:
            (result,) = await usage.record_usage(self._uow(), [received])
        return pb.RecordUsageResponse(result=usage_proto.single_result(result))

    async def RecordUsageBatch(
        self, request: pb.RecordUsageBatchRequest, context: Context
    ) -> pb.RecordUsageBatchResponse:
        if len(request.events) > MAX_BATCH:
            raise InvalidArgument("events", f"at most {MAX_BATCH} events per batch, not {len(request.events)}")
        uow = self._uow()
        results = await usage.record_usage(uow, _received(request.events)) if request.events else []
        translated = uow.published_charges
        return pb.RecordUsageBatchResponse(results=[usage_proto.result_to_pb(r, translated) for r in results])

    async def StreamUsage(
        self, request_iterator: AsyncIterator[pb.StreamUsageRequest], context: Context
    ) -> pb.StreamUsageResponse:
        """Rates each slice as a batch, in its own transaction, as it arrives; answers when the
        stream ends. Events are named by their index in the whole stream (`events[1500]`). A slice
        refused (too large, or past the stream's limit) ends the call with its error: the slices
        before it are rated and stay, and sending them again returns their first results."""
        answer = pb.StreamUsageResponse()
        seen = 0
        async for piece in request_iterator:
            if len(piece.events) > MAX_BATCH:
                raise InvalidArgument("events", f"at most {MAX_BATCH} events per slice, not {len(piece.events)}")
            if seen + len(piece.events) > MAX_STREAM_EVENTS:
                raise InvalidArgument("events", f"at most {MAX_STREAM_EVENTS} events per stream; open another")
            if piece.events:
                uow = self._uow()
                results = await usage.record_usage(uow, _received(piece.events, seen))
                answer.results.extend(usage_proto.result_to_pb(r, uow.published_charges) for r in results)
            seen += len(piece.events)
        return answer

    async def ListCharges(self, request: pb.ListChargesRequest, context: Context) -> pb.ListChargesResponse:
        account_id = parse_uuid("account_id", request.account_id)
        bill_cycle_id = parse_uuid("bill_cycle_id", request.bill_cycle_id) if request.bill_cycle_id else None
        size = page_size(request.page_size)
        filters = (str(account_id), str(bill_cycle_id or ""))
        after = _position(request.page_token, *filters)
        found = await usage.list_charges(self._uow(), account_id, bill_cycle_id, after, size + 1)
        page = found[:size]
        return pb.ListChargesResponse(
            charges=[usage_proto.charge_to_pb(c) for _, c in page],
            next_page_token=encode_keyset(str(page[-1][0]), *filters) if len(found) > size else "",
        )

    async def ListUnratedUsage(
        self, request: pb.ListUnratedUsageRequest, context: Context
    ) -> pb.ListUnratedUsageResponse:
        account_id: uuid.UUID | None = parse_uuid("account_id", request.account_id) if request.account_id else None
        size = page_size(request.page_size)
        filters = (str(account_id or ""),)
        after = _position(request.page_token, *filters)
        found = await usage.list_kept_usage(self._uow(), account_id, after, size + 1)
        page = found[:size]
        return pb.ListUnratedUsageResponse(
            usage=[usage_proto.kept_to_pb(s) for s in page],
            next_page_token=encode_keyset(str(page[-1].seq), *filters) if len(found) > size else "",
        )

    async def ResubmitUsage(self, request: pb.ResubmitUsageRequest, context: Context) -> pb.ResubmitUsageResponse:
        if not request.event_ids:
            raise InvalidArgument("event_ids", "name at least one kept event")
        if len(request.event_ids) > MAX_BATCH:
            raise InvalidArgument("event_ids", f"at most {MAX_BATCH} events per call, not {len(request.event_ids)}")
        for i, event_id in enumerate(request.event_ids):
            if not event_id:
                raise InvalidArgument(f"event_ids[{i}]", "is required")
        results = await usage.resubmit_usage(self._uow(), list(request.event_ids))
        return pb.ResubmitUsageResponse(results=[usage_proto.result_to_pb(r) for r in results])

    async def RerateUsage(self, request: pb.RerateUsageRequest, context: Context) -> pb.RerateUsageResponse:
        account_id = parse_uuid("account_id", request.account_id)
        start = instant_from_pb(request, "start_time", "start_time")
        end = instant_from_pb(request, "end_time", "end_time")
        if start is None:
            raise InvalidArgument("start_time", "is required: the window's start (inclusive)")
        if end is None:
            raise InvalidArgument("end_time", "is required: the window's end (exclusive)")
        if end <= start:
            raise InvalidArgument("end_time", "must be after start_time")
        code = request.charge_offer_code
        if code and not OFFER_CODE.match(code):
            raise InvalidArgument("charge_offer_code", "an offer code: lower-case, starts with a letter")
        request_id = parse_request_id(request.request_id)
        if request_id is None:
            raise InvalidArgument("request_id", "is required: a UUID, so a retry does not rerate twice")

        async def perform(uow: ChargingUnitOfWork) -> pb.RerateUsageResponse:
            run, _ = await rerating.rerate_usage(
                uow, account_id, start, end, code, str(request_id), self._usage_horizon
            )
            return pb.RerateUsageResponse(rerate_run=usage_proto.run_to_pb(run))

        return await run_idempotent(self._uow(), request_id, "RerateUsage", pb.RerateUsageResponse, perform)
