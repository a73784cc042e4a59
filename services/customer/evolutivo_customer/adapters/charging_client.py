"""The charging catalog, as customer reads it: over gRPC, with a deadline."""

from __future__ import annotations

from datetime import datetime

import grpc
from evolutivo.charging.v1 import catalog_pb2, charging_service_pb2, charging_service_pb2_grpc
from evolutivo_runtime.errors import Unavailable
from evolutivo_runtime.timestamps import from_timestamp, to_timestamp

from evolutivo_customer.domain.purchases import OfferView


class GrpcCatalogReader:
    def __init__(self, channel: grpc.aio.Channel, timeout: float) -> None:
        self._stub = charging_service_pb2_grpc.ChargingServiceStub(channel)
        self._timeout = timeout

    async def offer_at(self, code: str, instant: datetime) -> OfferView | None:
        try:
            response = await self._stub.GetChargeOffer(
                charging_service_pb2.GetChargeOfferRequest(code=code, at_time=to_timestamp(instant)),
                timeout=self._timeout,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise Unavailable(
                "CHARGING_UNAVAILABLE", f"the charging catalog did not answer: {error.code().name}"
            ) from None
        offer = response.charge_offer
        in_force = (
            offer.HasField("valid_from")
            and from_timestamp(offer.valid_from) <= instant
            and (not offer.HasField("valid_to") or instant < from_timestamp(offer.valid_to))
        )
        return OfferView(
            code=offer.code,
            version=offer.version,
            currency_code=offer.currency_code,
            charge_codes=frozenset(c.code for c in offer.charges),
            purchasable=offer.status == catalog_pb2.CHARGE_OFFER_STATUS_ACTIVE and in_force,
        )
