"""The charge-offer catalog RPCs of ChargingService: translation only."""

from __future__ import annotations

from collections.abc import Callable

from evolutivo.charging.v1 import charging_service_pb2 as pb
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.idempotency import run_idempotent
from evolutivo_runtime.ids import parse_request_id, parse_uuid
from evolutivo_runtime.pagination import decode_keyset, encode_keyset, page_size
from evolutivo_runtime.server import Context

from evolutivo_charging.adapters import catalog_proto
from evolutivo_charging.adapters.catalog_repository import OfferFilter
from evolutivo_charging.domain.catalog import ChargeOffer
from evolutivo_charging.service_layer import catalog
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork


def _page_token(last: ChargeOffer, where: OfferFilter) -> str:
    """Resumes after `last` in (code, version descending) order, for the same filters only."""
    status = where.status.value if where.status else ""
    return encode_keyset(last.code, str(last.version), status, where.code)


def _page_position(token: str, where: OfferFilter) -> tuple[str, int] | None:
    key = decode_keyset(token, 4)
    if key is None:
        return None
    code, version, status, code_filter = key
    if not (version.isascii() and version.isdigit()):
        raise InvalidArgument("page_token", "is not a token this service issued")
    if (status, code_filter) != (where.status.value if where.status else "", where.code):
        raise InvalidArgument("page_token", "was issued for a request with other filters (status, code)")
    return code, int(version)


class CatalogApi:
    """Mixed into ChargingServicer."""

    _uow: Callable[[], ChargingUnitOfWork]

    async def CreateChargeOffer(
        self, request: pb.CreateChargeOfferRequest, context: Context
    ) -> pb.CreateChargeOfferResponse:
        if not request.HasField("charge_offer"):
            raise InvalidArgument("charge_offer", "is required")
        request_id = parse_request_id(request.request_id)
        given = catalog_proto.offer_input_from_pb(request.charge_offer)

        async def perform(uow: ChargingUnitOfWork) -> pb.CreateChargeOfferResponse:
            offer = await catalog.create_charge_offer(uow, given)
            return pb.CreateChargeOfferResponse(charge_offer=catalog_proto.offer_to_pb(offer))

        return await run_idempotent(self._uow(), request_id, "CreateChargeOffer", pb.CreateChargeOfferResponse, perform)

    async def UpdateChargeOffer(
        self, request: pb.UpdateChargeOfferRequest, context: Context
    ) -> pb.UpdateChargeOfferResponse:
        charge_offer_id = parse_uuid("charge_offer.charge_offer_id", request.charge_offer.charge_offer_id)
        paths = list(request.update_mask.paths)
        if not paths:
            raise InvalidArgument("update_mask", "is required: name the fields to change, e.g. charges")
        for path in paths:
            if path not in catalog_proto.EDITABLE:
                raise InvalidArgument(
                    "update_mask", f"{path!r} cannot be updated; paths: {', '.join(catalog_proto.EDITABLE)}"
                )
        changes = catalog_proto.offer_changes_from_pb(request.charge_offer, paths)

        async def perform(uow: ChargingUnitOfWork) -> pb.UpdateChargeOfferResponse:
            offer = await catalog.update_charge_offer(uow, charge_offer_id, changes)
            return pb.UpdateChargeOfferResponse(charge_offer=catalog_proto.offer_to_pb(offer))

        return await run_idempotent(self._uow(), None, "UpdateChargeOffer", pb.UpdateChargeOfferResponse, perform)

    async def ActivateChargeOffer(
        self, request: pb.ActivateChargeOfferRequest, context: Context
    ) -> pb.ActivateChargeOfferResponse:
        charge_offer_id = parse_uuid("charge_offer_id", request.charge_offer_id)

        async def perform(uow: ChargingUnitOfWork) -> pb.ActivateChargeOfferResponse:
            offer = await catalog.activate_charge_offer(uow, charge_offer_id)
            return pb.ActivateChargeOfferResponse(charge_offer=catalog_proto.offer_to_pb(offer))

        return await run_idempotent(self._uow(), None, "ActivateChargeOffer", pb.ActivateChargeOfferResponse, perform)

    async def RetireChargeOffer(
        self, request: pb.RetireChargeOfferRequest, context: Context
    ) -> pb.RetireChargeOfferResponse:
        charge_offer_id = parse_uuid("charge_offer_id", request.charge_offer_id)

        async def perform(uow: ChargingUnitOfWork) -> pb.RetireChargeOfferResponse:
            offer = await catalog.retire_charge_offer(uow, charge_offer_id)
            return pb.RetireChargeOfferResponse(charge_offer=catalog_proto.offer_to_pb(offer))

        return await run_idempotent(self._uow(), None, "RetireChargeOffer", pb.RetireChargeOfferResponse, perform)

    async def GetChargeOffer(self, request: pb.GetChargeOfferRequest, context: Context) -> pb.GetChargeOfferResponse:
        if request.charge_offer_id:
            if request.code:
                raise InvalidArgument("code", "set either charge_offer_id or code, not both")
            if request.HasField("at_time"):
                raise InvalidArgument("at_time", "goes with code; charge_offer_id names one version already")
            offer = await catalog.get_charge_offer(self._uow(), parse_uuid("charge_offer_id", request.charge_offer_id))
        elif request.code:
            at_time = catalog_proto.instant_from_pb(request, "at_time", "at_time")
            offer = await catalog.find_charge_offer(self._uow(), request.code, at_time)
        else:
            raise InvalidArgument("charge_offer_id", "is required: set charge_offer_id, or code (and at_time)")
        return pb.GetChargeOfferResponse(charge_offer=catalog_proto.offer_to_pb(offer))

    async def ListChargeOffers(
        self, request: pb.ListChargeOffersRequest, context: Context
    ) -> pb.ListChargeOffersResponse:
        size = page_size(request.page_size)
        where = OfferFilter(status=catalog_proto.status_from_pb(request.status), code=request.code)
        after = _page_position(request.page_token, where)
        found = await catalog.list_charge_offers(self._uow(), where, after, size + 1)
        page = found[:size]
        return pb.ListChargeOffersResponse(
            charge_offers=[catalog_proto.offer_to_pb(o) for o in page],
            next_page_token=_page_token(page[-1], where) if len(found) > size else "",
        )
