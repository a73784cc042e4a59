"""The document and delivery RPCs of BillingService: translation only."""

from __future__ import annotations

from collections.abc import Callable

from evolutivo.billing.v1 import document_pb2 as pb
from evolutivo_runtime.ids import parse_uuid
from evolutivo_runtime.server import Context

from evolutivo_billing.adapters import documents_proto
from evolutivo_billing.service_layer import delivery
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork


class DocumentsApi:
    """Mixed into BillingServicer."""

    _uow: Callable[[], BillingUnitOfWork]
    _documents: delivery.Documents

    async def GetBillDocument(self, request: pb.GetBillDocumentRequest, context: Context) -> pb.GetBillDocumentResponse:
        bill_id = parse_uuid("bill_id", request.bill_id)
        document = await delivery.get_bill_document(self._uow(), bill_id, self._documents)
        return pb.GetBillDocumentResponse(document=documents_proto.document_to_pb(document))

    async def GetBillDelivery(self, request: pb.GetBillDeliveryRequest, context: Context) -> pb.GetBillDeliveryResponse:
        found = await delivery.get_bill_delivery(self._uow(), parse_uuid("bill_id", request.bill_id))
        return pb.GetBillDeliveryResponse(delivery=documents_proto.delivery_to_pb(found))

    async def RetryBillDelivery(
        self, request: pb.RetryBillDeliveryRequest, context: Context
    ) -> pb.RetryBillDeliveryResponse:
        retried = await delivery.retry_bill_delivery(self._uow(), parse_uuid("bill_id", request.bill_id))
        return pb.RetryBillDeliveryResponse(delivery=documents_proto.delivery_to_pb(retried))
