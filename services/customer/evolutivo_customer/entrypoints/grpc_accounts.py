"""The account and provisioned-service RPCs of CustomerService: translation only."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from evolutivo.customer.v1 import account_pb2
from evolutivo.customer.v1 import customer_service_pb2 as pb
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.idempotency import run_idempotent
from evolutivo_runtime.ids import parse_request_id, parse_uuid
from evolutivo_runtime.pagination import decode_keyset, decode_token, encode_keyset, encode_token, page_size
from evolutivo_runtime.server import Context
from google.protobuf import field_mask_pb2

from evolutivo_customer.adapters import proto
from evolutivo_customer.adapters.repository import AccountFilter
from evolutivo_customer.domain.model import Account, AccountDetails, BillingProfile
from evolutivo_customer.service_layer import accounts
from evolutivo_customer.service_layer.ports import BalanceReader
from evolutivo_customer.service_layer.unit_of_work import CustomerUnitOfWork

# The update-mask paths UpdateAccount accepts.
_DETAIL_PATHS = {
    "display_name",
    "currency_code",
    "time_zone",
    "locale",
    "country_code",
    "tax_id",
    "date_of_birth",
    "labels",
}
_PROFILE_PATHS = {
    "billing_profile",
    "billing_profile.bill_cycle_day",
    "billing_profile.frequency",
    "billing_profile.payment_terms_days",
    "billing_profile.threshold_amount",
    "billing_profile.delivery",
    "billing_profile.delivery.method",
    "billing_profile.delivery.attach_pdf",
    "billing_profile.collections_exempt",
    "billing_profile.collections_scenario_id",
}


def merge_update(
    pb_account: account_pb2.Account, mask: field_mask_pb2.FieldMask
) -> Callable[[Account], tuple[AccountDetails, BillingProfile]]:
    """Checks the mask now (before any read) and returns how to merge it into the current account."""
    if not mask.paths:
        raise InvalidArgument("update_mask", "is required: name the fields to change, e.g. display_name")
    for path in mask.paths:
        if path not in _DETAIL_PATHS | _PROFILE_PATHS:
            raise InvalidArgument("update_mask", f"{path!r} cannot be updated (status changes have their own calls)")

    def merge(current: Account) -> tuple[AccountDetails, BillingProfile]:
        merged = proto.account_to_pb(current)
        # Masked message and map fields are replaced whole, as AIP-134 describes.
        mask.MergeMessage(pb_account, merged, replace_message_field=True, replace_repeated_field=True)
        return proto.details_from_pb(merged), proto.profile_from_pb(merged.billing_profile, merged.currency_code)

    return merge


class AccountsApi:
    """Mixed into CustomerServicer."""

    _uow: Callable[[], CustomerUnitOfWork]
    _balance: BalanceReader

    async def CreateAccount(self, request: pb.CreateAccountRequest, context: Context) -> pb.CreateAccountResponse:
        if not request.HasField("account"):
            raise InvalidArgument("account", "is required")
        request_id = parse_request_id(request.request_id)
        account_type = proto.account_type_from_pb(request.account.type)
        details = proto.details_from_pb(request.account)
        profile = (
            proto.profile_from_pb(request.account.billing_profile, details.currency_code)
            if request.account.HasField("billing_profile")
            else None
        )

        async def perform(uow: CustomerUnitOfWork) -> pb.CreateAccountResponse:
            account = await accounts.create_account(uow, account_type, details, profile)
            return pb.CreateAccountResponse(account=proto.account_to_pb(account))

        return await run_idempotent(self._uow(), request_id, "CreateAccount", pb.CreateAccountResponse, perform)

    async def GetAccount(self, request: pb.GetAccountRequest, context: Context) -> pb.GetAccountResponse:
        account = await accounts.get_account(self._uow(), parse_uuid("account_id", request.account_id))
        return pb.GetAccountResponse(account=proto.account_to_pb(account))

    async def ListAccounts(self, request: pb.ListAccountsRequest, context: Context) -> pb.ListAccountsResponse:
        size = page_size(request.page_size)
        if request.status and request.status not in proto.STATUSES:
            raise InvalidArgument("status", "is not a known account status")
        where = AccountFilter(
            status=proto.STATUSES[request.status] if request.status else None,
            type=proto.account_type_from_pb(request.type, "type") if request.type else None,
            query=request.query.strip(),
        )
        if len(where.query) > 200:
            raise InvalidArgument("query", "must be at most 200 characters")
        found = await accounts.list_accounts(self._uow(), where, decode_token(request.page_token), size + 1)
        page = found[:size]
        return pb.ListAccountsResponse(
            accounts=[proto.account_to_pb(a) for a in page],
            next_page_token=encode_token(page[-1].account_number) if len(found) > size else "",
        )

    async def UpdateAccount(self, request: pb.UpdateAccountRequest, context: Context) -> pb.UpdateAccountResponse:
        account_id = parse_uuid("account.account_id", request.account.account_id)
        merge = merge_update(request.account, request.update_mask)

        async def perform(uow: CustomerUnitOfWork) -> pb.UpdateAccountResponse:
            account = await accounts.update_account(uow, account_id, merge, request.account.etag)
            return pb.UpdateAccountResponse(account=proto.account_to_pb(account))

        return await run_idempotent(self._uow(), None, "UpdateAccount", pb.UpdateAccountResponse, perform)

    async def SuspendAccount(self, request: pb.SuspendAccountRequest, context: Context) -> pb.SuspendAccountResponse:
        account_id = parse_uuid("account_id", request.account_id)
        actor = proto.ACTORS.get(request.actor)

        async def perform(uow: CustomerUnitOfWork) -> pb.SuspendAccountResponse:
            account, services = await accounts.suspend_account(uow, account_id, request.reason, actor, request.actor_id)
            return pb.SuspendAccountResponse(
                account=proto.account_to_pb(account), suspended_services=[proto.service_to_pb(s) for s in services]
            )

        request_id = parse_request_id(request.request_id)
        return await run_idempotent(self._uow(), request_id, "SuspendAccount", pb.SuspendAccountResponse, perform)

    async def ReinstateAccount(
        self, request: pb.ReinstateAccountRequest, context: Context
    ) -> pb.ReinstateAccountResponse:
        account_id = parse_uuid("account_id", request.account_id)
        actor = proto.ACTORS.get(request.actor)

        async def perform(uow: CustomerUnitOfWork) -> pb.ReinstateAccountResponse:
            account, services = await accounts.reinstate_account(
                uow, account_id, request.reason, actor, request.actor_id
            )
            return pb.ReinstateAccountResponse(
                account=proto.account_to_pb(account), reinstated_services=[proto.service_to_pb(s) for s in services]
            )

        request_id = parse_request_id(request.request_id)
        return await run_idempotent(self._uow(), request_id, "ReinstateAccount", pb.ReinstateAccountResponse, perform)

    async def CloseAccount(self, request: pb.CloseAccountRequest, context: Context) -> pb.CloseAccountResponse:
        account_id = parse_uuid("account_id", request.account_id)
        actor = proto.ACTORS.get(request.actor)

        async def perform(uow: CustomerUnitOfWork) -> pb.CloseAccountResponse:
            account = await accounts.close_account(
                uow, self._balance, account_id, request.reason, actor, request.actor_id, request.force
            )
            return pb.CloseAccountResponse(account=proto.account_to_pb(account))

        request_id = parse_request_id(request.request_id)
        return await run_idempotent(self._uow(), request_id, "CloseAccount", pb.CloseAccountResponse, perform)

    async def CreateProvisionedService(
        self, request: pb.CreateProvisionedServiceRequest, context: Context
    ) -> pb.CreateProvisionedServiceResponse:
        account_id = parse_uuid("account_id", request.account_id)
        s = request.service

        async def perform(uow: CustomerUnitOfWork) -> pb.CreateProvisionedServiceResponse:
            service = await accounts.create_service(
                uow, account_id, s.kind, s.identifier, s.description, dict(s.labels)
            )
            return pb.CreateProvisionedServiceResponse(service=proto.service_to_pb(service))

        request_id = parse_request_id(request.request_id)
        return await run_idempotent(
            self._uow(), request_id, "CreateProvisionedService", pb.CreateProvisionedServiceResponse, perform
        )

    async def ListProvisionedServices(
        self, request: pb.ListProvisionedServicesRequest, context: Context
    ) -> pb.ListProvisionedServicesResponse:
        account_id = parse_uuid("account_id", request.account_id)
        size = page_size(request.page_size)
        key = decode_keyset(request.page_token, 2)
        try:
            after = (datetime.fromisoformat(key[0]), parse_uuid("page_token", key[1])) if key else None
        except ValueError:
            raise InvalidArgument("page_token", "is not a token this service issued") from None
        found = await accounts.list_services(self._uow(), account_id, after, size + 1)
        page = found[:size]
        token = encode_keyset(page[-1].create_time.isoformat(), str(page[-1].service_id)) if len(found) > size else ""
        return pb.ListProvisionedServicesResponse(
            services=[proto.service_to_pb(s) for s in page], next_page_token=token
        )

    async def SetProvisionedServiceStatus(
        self, request: pb.SetProvisionedServiceStatusRequest, context: Context
    ) -> pb.SetProvisionedServiceStatusResponse:
        account_id = parse_uuid("account_id", request.account_id)
        service_id = parse_uuid("service_id", request.service_id)
        status = proto.service_status_from_pb(request.status)
        actor = proto.ACTORS.get(request.actor)

        async def perform(uow: CustomerUnitOfWork) -> pb.SetProvisionedServiceStatusResponse:
            service = await accounts.set_service_status(uow, account_id, service_id, status, request.reason, actor)
            return pb.SetProvisionedServiceStatusResponse(service=proto.service_to_pb(service))

        return await run_idempotent(
            self._uow(), None, "SetProvisionedServiceStatus", pb.SetProvisionedServiceStatusResponse, perform
        )
