"""Wires the charging service into the shared runtime."""

from __future__ import annotations

from pathlib import Path

from evolutivo.charging.v1 import charging_service_pb2, charging_service_pb2_grpc
from evolutivo_runtime.server.app import Runtime, ServiceDefinition, Servicer, Wiring

from evolutivo_charging.adapters import events
from evolutivo_charging.adapters.orm import inbox, outbox, request_log
from evolutivo_charging.entrypoints.consumers import subscriptions
from evolutivo_charging.entrypoints.grpc_api import ChargingServicer
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork
from evolutivo_charging.settings import ChargingSettings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def wire(rt: Runtime) -> Wiring:
    def uow() -> ChargingUnitOfWork:
        return ChargingUnitOfWork(rt.sessions, outbox, rt.clock, events.encode, request_log)

    return Wiring(
        servicers=[
            Servicer(
                charging_service_pb2_grpc.add_ChargingServiceServicer_to_server,
                ChargingServicer(uow),
                charging_service_pb2.DESCRIPTOR.services_by_name["ChargingService"].full_name,
            )
        ],
        uow_factory=uow,
        subscriptions=subscriptions(),
        upstream_services=["customer", "billing"],
    )


def definition() -> ServiceDefinition:
    return ServiceDefinition("charging", ChargingSettings(), MIGRATIONS, outbox, inbox, wire)
