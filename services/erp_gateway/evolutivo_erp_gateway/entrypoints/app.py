"""Wires the ERP gateway into the shared runtime."""

from __future__ import annotations

from pathlib import Path

from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2, erp_gateway_service_pb2_grpc
from evolutivo_runtime.server.app import Runtime, ServiceDefinition, Servicer, Wiring

from evolutivo_erp_gateway.adapters import events
from evolutivo_erp_gateway.adapters.orm import inbox, outbox
from evolutivo_erp_gateway.entrypoints.consumers import subscriptions
from evolutivo_erp_gateway.entrypoints.grpc_api import ErpGatewayServicer
from evolutivo_erp_gateway.service_layer.unit_of_work import ErpGatewayUnitOfWork
from evolutivo_erp_gateway.settings import ErpGatewaySettings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def wire(rt: Runtime) -> Wiring:
    def uow() -> ErpGatewayUnitOfWork:
        return ErpGatewayUnitOfWork(rt.sessions, outbox, rt.clock, events.encode)

    return Wiring(
        servicers=[
            Servicer(
                erp_gateway_service_pb2_grpc.add_ErpGatewayServiceServicer_to_server,
                ErpGatewayServicer(uow),
                erp_gateway_service_pb2.DESCRIPTOR.services_by_name["ErpGatewayService"].full_name,
            )
        ],
        uow_factory=uow,
        subscriptions=subscriptions(),
        upstream_services=["customer"],
    )


def definition() -> ServiceDefinition:
    return ServiceDefinition("erp_gateway", ErpGatewaySettings(), MIGRATIONS, outbox, inbox, wire)
