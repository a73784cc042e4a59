"""Wires the charging service into the shared runtime."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from evolutivo.charging.v1 import charging_service_pb2, charging_service_pb2_grpc
from evolutivo_runtime.messaging.dead_letters import DeadLetterQueue
from evolutivo_runtime.server.app import Runtime, ServiceDefinition, Servicer, Wiring

from evolutivo_charging.adapters import events
from evolutivo_charging.adapters.cache import CacheListener, RatingCache
from evolutivo_charging.adapters.orm import inbox, outbox, request_log
from evolutivo_charging.entrypoints.consumers import all_subscriptions
from evolutivo_charging.entrypoints.expiry_loop import ExpiryLoop
from evolutivo_charging.entrypoints.fee_loop import FeeLoop
from evolutivo_charging.entrypoints.grpc_api import ChargingServicer
from evolutivo_charging.entrypoints.usage_subject import UsageSubscriber
from evolutivo_charging.service_layer.reads import load_catalog
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork
from evolutivo_charging.settings import ChargingSettings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def wire(rt: Runtime) -> Wiring:
    settings = rt.settings if isinstance(rt.settings, ChargingSettings) else ChargingSettings()
    # The replica's rating cache, kept in step with the database by its listener (adapters/cache.py).
    cache = RatingCache(settings.cache_accounts) if settings.cache_accounts else None

    def uow() -> ChargingUnitOfWork:
        return ChargingUnitOfWork(rt.sessions, outbox, rt.clock, events.encode, request_log, cache=cache)

    horizon = timedelta(days=settings.usage_retention_days)
    fee_loop = FeeLoop(uow, settings.fee_check_seconds, settings.fee_batch_size)
    expiry_loop = ExpiryLoop(uow, horizon, settings.usage_expiry_check_seconds, settings.usage_expiry_batch_size)
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
    # The fee loop (purchases whose start the clock passed), the NATS usage subject, the expiry of
    # usage past the idempotency horizon and, with a cache, its listener.
    background = [fee_loop.run, usage_subscriber.run, expiry_loop.run]
    if cache is not None:
        background.append(CacheListener(cache, settings.database_url, lambda g: load_catalog(uow(), g)).run)
    servicer = ChargingServicer(uow, horizon)
    servicer.group_single_calls(settings.usage_group_max_events, settings.usage_groups_at_once)
    return Wiring(
        servicers=[
            Servicer(
                charging_service_pb2_grpc.add_ChargingServiceServicer_to_server,
                servicer,
                charging_service_pb2.DESCRIPTOR.services_by_name["ChargingService"].full_name,
            )
        ],
        uow_factory=uow,
        subscriptions=all_subscriptions(),
        upstream_services=["customer", "billing", "balance"],
        background=background,
    )


def definition() -> ServiceDefinition:
    return ServiceDefinition("charging", ChargingSettings(), MIGRATIONS, outbox, inbox, wire)
