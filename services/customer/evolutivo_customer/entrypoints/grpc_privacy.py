"""The privacy RPC of CustomerService: translation only."""

from __future__ import annotations

from collections.abc import Callable

from evolutivo.customer.v1 import customer_service_pb2 as pb
from evolutivo_runtime.idempotency import run_idempotent
from evolutivo_runtime.ids import parse_request_id, parse_uuid
from evolutivo_runtime.server import Context

from evolutivo_customer.adapters import proto
from evolutivo_customer.service_layer import privacy
from evolutivo_customer.service_layer.unit_of_work import CustomerUnitOfWork


class PrivacyApi:
    """Mixed into CustomerServicer."""

    _uow: Callable[[], CustomerUnitOfWork]

    async def ErasePersonalData(
        self, request: pb.ErasePersonalDataRequest, context: Context
    ) -> pb.ErasePersonalDataResponse:
        account_id = parse_uuid("account_id", request.account_id)
        request_id = parse_request_id(request.request_id)

        async def perform(uow: CustomerUnitOfWork) -> pb.ErasePersonalDataResponse:
            account = await privacy.erase_personal_data(uow, account_id)
            return pb.ErasePersonalDataResponse(
                account=proto.account_to_pb(account),
                erased=privacy.ERASED_FIELDS,
                retained=privacy.RETAINED_RECORDS,
            )

        return await run_idempotent(self._uow(), request_id, "ErasePersonalData", pb.ErasePersonalDataResponse, perform)
