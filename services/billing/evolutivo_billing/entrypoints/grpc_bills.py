"""The bill and bill-item RPCs of BillingService: translation only."""

from __future__ import annotations

from collections.abc import Callable

from evolutivo.billing.v1 import billing_service_pb2 as pb
from evolutivo_runtime.ids import parse_uuid
from evolutivo_runtime.pagination import page_size
from evolutivo_runtime.server import Context

from evolutivo_billing.adapters import bills_proto
from evolutivo_billing.service_layer import bills
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork


class BillsApi:
    """Mixed into BillingServicer."""

    _uow: Callable[[], BillingUnitOfWork]

    async def ListUnbilledItems(
        self, request: pb.ListUnbilledItemsRequest, context: Context
    ) -> pb.ListUnbilledItemsResponse:
        account_id = parse_uuid("account_id", request.account_id)
        size = page_size(request.page_size)
        after = bills_proto.items_after_from_token(request.page_token, account_id)
        found, next_after = await bills.list_unbilled_items(self._uow(), account_id, size, after)
        return pb.ListUnbilledItemsResponse(
            items=[bills_proto.item_to_pb(i) for i in found],
            next_page_token=bills_proto.items_page_token(next_after, account_id) if next_after else "",
        )

    async def GetBill(self, request: pb.GetBillRequest, context: Context) -> pb.GetBillResponse:
        bill = await bills.get_bill(self._uow(), parse_uuid("bill_id", request.bill_id))
        return pb.GetBillResponse(bill=bills_proto.bill_to_pb(bill))

    async def ListBills(self, request: pb.ListBillsRequest, context: Context) -> pb.ListBillsResponse:
        account_id = parse_uuid("account_id", request.account_id)
        size = page_size(request.page_size)
        before = bills_proto.bills_before_from_token(request.page_token, account_id)
        found, next_before = await bills.list_bills(self._uow(), account_id, size, before)
        return pb.ListBillsResponse(
            bills=[bills_proto.bill_to_pb(b, with_charge_ids=False) for b in found],
            next_page_token=bills_proto.bills_page_token(next_before, account_id) if next_before else "",
        )
