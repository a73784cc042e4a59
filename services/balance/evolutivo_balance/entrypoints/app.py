"""Wires the balance service into the shared runtime."""

from __future__ import annotations

from pathlib import Path

from evolutivo.balance.v1 import balance_service_pb2, balance_service_pb2_grpc
from evolutivo_runtime.server.app import Runtime, ServiceDefinition, Servicer, Wiring

from evolutivo_balance.adapters import events
from evolutivo_balance.adapters.orm import inbox, outbox, request_log
from evolutivo_balance.adapters.repository import CurrentBalances
from evolutivo_balance.entrypoints.consumers import subscriptions
from evolutivo_balance.entrypoints.credit_expiry import TemporaryLimitExpiry
from evolutivo_balance.entrypoints.grpc_api import BalanceServicer
from evolutivo_balance.service_layer.unit_of_work import BalanceUnitOfWork
from evolutivo_balance.settings import BalanceSettings

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def wire(rt: Runtime) -> Wiring:
    def uow() -> BalanceUnitOfWork:
        return BalanceUnitOfWork(rt.sessions, outbox, rt.clock, events.encode, request_log)

    settings = rt.settings
    assert isinstance(settings, BalanceSettings)
    expiry = TemporaryLimitExpiry(uow, settings.credit_expiry_check_seconds, settings.credit_expiry_batch_size)

    return Wiring(
        servicers=[
            Servicer(
                balance_service_pb2_grpc.add_BalanceServiceServicer_to_server,
                BalanceServicer(uow, CurrentBalances(settings.database_url, settings.read_pool_size)),
                balance_service_pb2.DESCRIPTOR.services_by_name["BalanceService"].full_name,
            )
        ],
        uow_factory=uow,
        subscriptions=subscriptions(),
        upstream_services=["customer", "charging", "billing"],
        background=[expiry.run],
    )


def definition() -> ServiceDefinition:
    return ServiceDefinition("balance", BalanceSettings(), MIGRATIONS, outbox, inbox, wire)
