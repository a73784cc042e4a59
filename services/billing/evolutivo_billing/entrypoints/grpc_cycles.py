"""The bill-cycle RPCs of BillingService: translation only."""

from __future__ import annotations

from collections.abc import Callable

from evolutivo.billing.v1 import billing_service_pb2 as pb
from evolutivo_runtime.ids import parse_uuid
from evolutivo_runtime.pagination import page_size
from evolutivo_runtime.server import Context

from evolutivo_billing.adapters import proto
from evolutivo_billing.service_layer import cycles
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork


class CyclesApi:
    """Mixed into BillingServicer."""

    _uow: Callable[[], BillingUnitOfWork]

    async def ListBillCycles(self, request: pb.ListBillCyclesRequest, context: Context) -> pb.ListBillCyclesResponse:
        account_id = parse_uuid("account_id", request.account_id)
        size = page_size(request.page_size)
        before = proto.cycles_before_from_token(request.page_token, account_id)
        found, next_before = await cycles.list_bill_cycles(self._uow(), account_id, size, before)
        return pb.ListBillCyclesResponse(
            bill_cycles=[proto.cycle_to_pb(c) for c in found],
            next_page_token=proto.cycles_page_token(next_before, account_id) if next_before is not None else "",
        )
