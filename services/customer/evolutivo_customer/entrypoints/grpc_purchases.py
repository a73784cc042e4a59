"""The purchase RPCs of CustomerService: translation only."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from evolutivo.customer.v1 import customer_service_pb2 as pb
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.idempotency import run_idempotent
from evolutivo_runtime.ids import parse_request_id, parse_uuid
from evolutivo_runtime.pagination import decode_keyset, encode_keyset, page_size
from evolutivo_runtime.server import Context
from evolutivo_runtime.timestamps import from_timestamp

from evolutivo_customer.adapters import proto_purchases
from evolutivo_customer.service_layer import accounts, purchases
from evolutivo_customer.service_layer.ports import CatalogReader
from evolutivo_customer.service_layer.unit_of_work import CustomerUnitOfWork


class PurchasesApi:
    """Mixed into CustomerServicer."""

    _uow: Callable[[], CustomerUnitOfWork]
    _catalog: CatalogReader

    async def CreatePurchase(self, request: pb.CreatePurchaseRequest, context: Context) -> pb.CreatePurchaseResponse:
        account_id = parse_uuid("account_id", request.account_id)
        p = request.purchase
        if not p.charge_offer_code.strip():
            raise InvalidArgument("purchase.charge_offer_code", "is required")
        service_id = parse_uuid("purchase.service_id", p.service_id) if p.service_id else None
        quantity = proto_purchases.quantity_from_pb(p.quantity)
        start = from_timestamp(p.start_time) if p.HasField("start_time") else None
        end = from_timestamp(p.end_time) if p.HasField("end_time") else None

        async def perform(uow: CustomerUnitOfWork) -> pb.CreatePurchaseResponse:
            account = await accounts.load(uow, account_id, for_update=False)
            overrides = proto_purchases.overrides_from_pb(p, account.details.currency_code)
            purchase = await purchases.create_purchase(
                uow, self._catalog, account_id, service_id, p.charge_offer_code.strip(), quantity, start, end, overrides
            )
            return pb.CreatePurchaseResponse(purchase=proto_purchases.purchase_to_pb(purchase, uow.clock.now()))

        request_id = parse_request_id(request.request_id)
        return await run_idempotent(self._uow(), request_id, "CreatePurchase", pb.CreatePurchaseResponse, perform)

    async def EndPurchase(self, request: pb.EndPurchaseRequest, context: Context) -> pb.EndPurchaseResponse:
        account_id = parse_uuid("account_id", request.account_id)
        purchase_id = parse_uuid("purchase_id", request.purchase_id)
        if not request.HasField("end_time"):
            raise InvalidArgument("end_time", "is required")
        end_time = from_timestamp(request.end_time)

        async def perform(uow: CustomerUnitOfWork) -> pb.EndPurchaseResponse:
            purchase = await purchases.end_purchase(uow, account_id, purchase_id, end_time)
            return pb.EndPurchaseResponse(purchase=proto_purchases.purchase_to_pb(purchase, uow.clock.now()))

        return await run_idempotent(self._uow(), None, "EndPurchase", pb.EndPurchaseResponse, perform)

    async def CancelPurchase(self, request: pb.CancelPurchaseRequest, context: Context) -> pb.CancelPurchaseResponse:
        account_id = parse_uuid("account_id", request.account_id)
        purchase_id = parse_uuid("purchase_id", request.purchase_id)

        async def perform(uow: CustomerUnitOfWork) -> pb.CancelPurchaseResponse:
            purchase = await purchases.cancel_purchase(uow, account_id, purchase_id)
            return pb.CancelPurchaseResponse(purchase=proto_purchases.purchase_to_pb(purchase, uow.clock.now()))

        return await run_idempotent(self._uow(), None, "CancelPurchase", pb.CancelPurchaseResponse, perform)

    async def ListPurchases(self, request: pb.ListPurchasesRequest, context: Context) -> pb.ListPurchasesResponse:
        account_id = parse_uuid("account_id", request.account_id)
        size = page_size(request.page_size)
        key = decode_keyset(request.page_token, 2)
        try:
            after = (datetime.fromisoformat(key[0]), parse_uuid("page_token", key[1])) if key else None
        except ValueError:
            raise InvalidArgument("page_token", "is not a token this service issued") from None
        found, now = await purchases.list_purchases(self._uow(), account_id, after, size + 1)
        at = from_timestamp(request.at_time) if request.HasField("at_time") else now
        page = found[:size]
        token = encode_keyset(page[-1].create_time.isoformat(), str(page[-1].purchase_id)) if len(found) > size else ""
        return pb.ListPurchasesResponse(
            purchases=[proto_purchases.purchase_to_pb(p, at) for p in page], next_page_token=token
        )
