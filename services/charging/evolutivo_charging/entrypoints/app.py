"""Wires the charging service into the shared runtime."""

from __future__ import annotations

from pathlib import Path

from evolutivo.charging.v1 import charging_service_pb2, charging_service_pb2_grpc
from evolutivo_runtime.messaging.dead_letters import DeadLetterQueue
from evolutivo_runtime.server.app import Runtime, ServiceDefinition, Servicer, Wiring

from evolutivo_charging.adapters import events
from evolutivo_charging.adapters.orm import inbox, outbox, request_log
from evolutivo_charging.entrypoints.consumers import subscriptions
from evolutivo_charging.entrypoints.fee_loop import FeeLoop
from evolutivo_charging.entrypoints.grpc_api import ChargingServicer
from evolutivo_charging.entrypoints.usage_subject import UsageSubscriber
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork
from evolutivo_charging.settings import ChargingSettings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def wire(rt: Runtime) -> Wiring:
    def uow() -> ChargingUnitOfWork:
        return ChargingUnitOfWork(rt.sessions, outbox, rt.clock, events.encode, request_log)

    settings = rt.settings if isinstance(rt.settings, ChargingSettings) else ChargingSettings()
    fee_loop = FeeLoop(uow, settings.fee_check_seconds, settings.fee_batch_size)
    usage_subscriber = UsageSubscriber(
        rt.js,
        uow,
        DeadLetterQueue(rt.js, rt.name, rt.clock),
        settings.usage_batch_size,
        settings.consumer_max_deliver,
        settings.consumer_ack_wait_seconds,
        settings.stream_replicas,
        settings.duplicate_window_seconds,
    )
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
        # The fee loop (purchases whose start the clock passed) and the NATS usage subject.
        background=[fee_loop.run, usage_subscriber.run],
    )


def definition() -> ServiceDefinition:
    return ServiceDefinition("charging", ChargingSettings(), MIGRATIONS, outbox, inbox, wire)
