"""Wires the ERP gateway into the shared runtime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta
from pathlib import Path

from evolutivo.erp_gateway.v1 import erp_gateway_service_pb2, erp_gateway_service_pb2_grpc
from evolutivo_runtime.server.app import Runtime, ServiceDefinition, Servicer, Wiring

from evolutivo_erp_gateway.adapters import events
from evolutivo_erp_gateway.adapters.balance import BalanceClient
from evolutivo_erp_gateway.adapters.crypto import SecretCipher
from evolutivo_erp_gateway.adapters.factory import Adapters
from evolutivo_erp_gateway.adapters.orm import inbox, outbox
from evolutivo_erp_gateway.domain.jobs import CircuitBreaker, RetryPolicy
from evolutivo_erp_gateway.entrypoints.consumers import subscriptions
from evolutivo_erp_gateway.entrypoints.grpc_api import ErpGatewayServicer
from evolutivo_erp_gateway.service_layer import handlers
from evolutivo_erp_gateway.service_layer.unit_of_work import ErpGatewayUnitOfWork
from evolutivo_erp_gateway.settings import ErpGatewaySettings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
log = logging.getLogger(__name__)
# How often the jobs-by-state gauge is refreshed (a count over sync_jobs_due; monotonic seconds).
JOB_COUNT_SECONDS = 15.0


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


def wire(rt: Runtime) -> Wiring:
    settings = rt.settings
    assert isinstance(settings, ErpGatewaySettings)

    def uow() -> ErpGatewayUnitOfWork:
        return ErpGatewayUnitOfWork(rt.sessions, outbox, rt.clock, events.encode)

    keys = settings.credential_keys.get_secret_value()
    cipher = SecretCipher.from_setting(keys) if keys.strip() else None
    adapters = Adapters(cipher, settings.erp_timeout_seconds, rt.clock.now)
    policy = RetryPolicy(
        base=timedelta(seconds=settings.sync_backoff_base_seconds),
        cap=timedelta(seconds=settings.sync_backoff_cap_seconds),
        max_attempts=settings.sync_max_attempts,
    )
    breaker = CircuitBreaker(settings.breaker_threshold, timedelta(seconds=settings.breaker_pause_seconds))
    balance = BalanceClient(settings.balance_address, settings.balance_timeout_seconds)

    async def sync_jobs(stop: asyncio.Event) -> None:
        """Every replica runs it: each job is claimed with FOR UPDATE SKIP LOCKED. Between batches
        it also refreshes the jobs-by-state gauge, at most every JOB_COUNT_SECONDS."""
        counted = -JOB_COUNT_SECONDS
        while not stop.is_set():
            if time.monotonic() - counted >= JOB_COUNT_SECONDS:
                counted = time.monotonic()
                try:
                    await handlers.count_jobs(uow())
                except Exception:
                    log.exception("counting the sync jobs failed; the gauge keeps its last values")
            ran = 0
            while not stop.is_set() and ran < settings.sync_batch_size:
                if await handlers.run_next_job(uow(), adapters, policy, breaker=breaker) is None:
                    break
                ran += 1
            if ran < settings.sync_batch_size:
                await _pause(stop, settings.sync_poll_seconds)

    async def import_payments(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await handlers.import_payments(uow, adapters, balance)
            except Exception:
                # An ERP or balance that does not answer: the cursor did not move; poll again later.
                handlers.PAYMENT_IMPORT_FAILURES.inc()
                log.exception("payment import failed; retrying at the next poll")
            await _pause(stop, settings.import_poll_seconds)

    return Wiring(
        servicers=[
            Servicer(
                erp_gateway_service_pb2_grpc.add_ErpGatewayServiceServicer_to_server,
                ErpGatewayServicer(uow, adapters),
                erp_gateway_service_pb2.DESCRIPTOR.services_by_name["ErpGatewayService"].full_name,
            )
        ],
        uow_factory=uow,
        subscriptions=subscriptions(),
        upstream_services=["customer", "billing", "balance"],
        background=[sync_jobs, import_payments],
    )


def definition() -> ServiceDefinition:
    return ServiceDefinition("erp_gateway", ErpGatewaySettings(), MIGRATIONS, outbox, inbox, wire)
