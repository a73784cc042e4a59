"""The payment-method RPCs of CustomerService: translation only. Every method returned is masked."""

from __future__ import annotations

from collections.abc import Callable

from evolutivo.customer.v1 import customer_service_pb2 as pb
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.idempotency import run_idempotent
from evolutivo_runtime.ids import parse_request_id, parse_uuid
from evolutivo_runtime.server import Context

from evolutivo_customer.adapters.proto_payment_methods import details_from_pb, payment_method_to_pb
from evolutivo_customer.service_layer import payment_methods
from evolutivo_customer.service_layer.unit_of_work import CustomerUnitOfWork


class PaymentMethodsApi:
    """Mixed into CustomerServicer."""

    _uow: Callable[[], CustomerUnitOfWork]

    async def AddPaymentMethod(
        self, request: pb.AddPaymentMethodRequest, context: Context
    ) -> pb.AddPaymentMethodResponse:
        account_id = parse_uuid("account_id", request.account_id)
        if not request.HasField("payment_method"):
            raise InvalidArgument("payment_method", "is required")
        details = details_from_pb(request.payment_method)
        request_id = parse_request_id(request.request_id)

        async def perform(uow: CustomerUnitOfWork) -> pb.AddPaymentMethodResponse:
            method = await payment_methods.add_payment_method(uow, account_id, details, request.make_default)
            return pb.AddPaymentMethodResponse(payment_method=payment_method_to_pb(method))

        return await run_idempotent(self._uow(), request_id, "AddPaymentMethod", pb.AddPaymentMethodResponse, perform)

    async def ListPaymentMethods(
        self, request: pb.ListPaymentMethodsRequest, context: Context
    ) -> pb.ListPaymentMethodsResponse:
        account_id = parse_uuid("account_id", request.account_id)
        found = await payment_methods.list_payment_methods(self._uow(), account_id)
        return pb.ListPaymentMethodsResponse(payment_methods=[payment_method_to_pb(m) for m in found])

    async def RemovePaymentMethod(
        self, request: pb.RemovePaymentMethodRequest, context: Context
    ) -> pb.RemovePaymentMethodResponse:
        account_id = parse_uuid("account_id", request.account_id)
        payment_method_id = parse_uuid("payment_method_id", request.payment_method_id)

        async def perform(uow: CustomerUnitOfWork) -> pb.RemovePaymentMethodResponse:
            await payment_methods.remove_payment_method(uow, account_id, payment_method_id)
            return pb.RemovePaymentMethodResponse()

        return await run_idempotent(self._uow(), None, "RemovePaymentMethod", pb.RemovePaymentMethodResponse, perform)

    async def SetDefaultPaymentMethod(
        self, request: pb.SetDefaultPaymentMethodRequest, context: Context
    ) -> pb.SetDefaultPaymentMethodResponse:
        account_id = parse_uuid("account_id", request.account_id)
        payment_method_id = parse_uuid("payment_method_id", request.payment_method_id)

        async def perform(uow: CustomerUnitOfWork) -> pb.SetDefaultPaymentMethodResponse:
            method = await payment_methods.set_default_payment_method(uow, account_id, payment_method_id)
            return pb.SetDefaultPaymentMethodResponse(payment_method=payment_method_to_pb(method))

        return await run_idempotent(
            self._uow(), None, "SetDefaultPaymentMethod", pb.SetDefaultPaymentMethodResponse, perform
        )
