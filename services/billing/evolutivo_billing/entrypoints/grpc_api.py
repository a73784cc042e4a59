"""BillingService over gRPC: one servicer composed of one mixin per part of the API.

Each part translates messages to service-layer calls and back, nothing more."""

from __future__ import annotations

from collections.abc import Callable

from evolutivo.billing.v1 import billing_service_pb2 as pb
from evolutivo.billing.v1 import billing_service_pb2_grpc as pb_grpc
from evolutivo_runtime.ids import parse_uuid
from evolutivo_runtime.pagination import page_size
from evolutivo_runtime.server import Context

from evolutivo_billing.adapters import pdf, proto
from evolutivo_billing.domain.documents import Seller
from evolutivo_billing.entrypoints.grpc_bills import BillsApi
from evolutivo_billing.entrypoints.grpc_cycles import CyclesApi
from evolutivo_billing.entrypoints.grpc_documents import DocumentsApi
from evolutivo_billing.service_layer import handlers
from evolutivo_billing.service_layer.bills import BillPolicy
from evolutivo_billing.service_layer.delivery import Documents
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork


class BillingServicer(CyclesApi, BillsApi, DocumentsApi, pb_grpc.BillingServiceServicer):
    def __init__(
        self,
        uow: Callable[[], BillingUnitOfWork],
        documents: Documents | None = None,
        policy: BillPolicy | None = None,
    ) -> None:
        self._uow = uow
        # How BillNow bills and credit notes are numbered and taxed (BILLING_* settings).
        self._policy = policy or BillPolicy()
        # How GetBillDocument renders (the seller from settings; a blank seller when not given).
        self._documents = documents or Documents(Seller(), pdf.render)

    async def GetBillUnit(self, request: pb.GetBillUnitRequest, context: Context) -> pb.GetBillUnitResponse:
        unit = await handlers.get_bill_unit(self._uow(), parse_uuid("bill_unit_id", request.bill_unit_id))
        return pb.GetBillUnitResponse(bill_unit=proto.unit_to_pb(unit))

    async def ListBillUnits(self, request: pb.ListBillUnitsRequest, context: Context) -> pb.ListBillUnitsResponse:
        account_id = parse_uuid("account_id", request.account_id) if request.account_id else None
        size = page_size(request.page_size)
        after = proto.position_from_token(request.page_token, account_id)
        units, next_position = await handlers.list_bill_units(self._uow(), account_id, size, after)
        return pb.ListBillUnitsResponse(
            bill_units=[proto.unit_to_pb(u) for u in units],
            next_page_token=proto.page_token(next_position, account_id) if next_position else "",
        )

    async def GetBillingSummary(
        self, request: pb.GetBillingSummaryRequest, context: Context
    ) -> pb.GetBillingSummaryResponse:
        summary = await handlers.get_billing_summary(self._uow(), parse_uuid("account_id", request.account_id))
        return proto.summary_to_pb(summary)
