"""Every RPC in protos/ has a declared scope in the one table (evolutivo_runtime.security.scopes)."""

from __future__ import annotations

import importlib
import pkgutil

import evolutivo
import pytest
from evolutivo_runtime.security import scopes


def _all_methods() -> set[str]:
    """Every method of every service in the generated descriptors (gen/python: all of protos/)."""
    methods: set[str] = set()
    for module_info in pkgutil.walk_packages(evolutivo.__path__, "evolutivo."):
        if not module_info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(module_info.name)
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                methods.add(f"/{service.full_name}/{method.name}")
    return methods


def test_the_walk_finds_the_services() -> None:
    methods = _all_methods()
    # A walk that found nothing would pass the next test vacuously.
    for service in ("CustomerService", "ChargingService", "BalanceService", "BillingService", "ErpGatewayService"):
        assert any(f"{service}/" in m for m in methods), service
    assert "/evolutivo.admin.v1.AuditAdminService/ListAuditRecords" in methods


def test_every_rpc_in_protos_has_a_scope() -> None:
    missing = sorted(m for m in _all_methods() if m not in scopes.RULES)
    assert missing == [], f"RPCs without a scope in evolutivo_runtime/security/scopes.py: {missing}"


def test_no_rule_names_a_method_that_does_not_exist() -> None:
    methods = _all_methods()
    stale = sorted(m for m in scopes.RULES if m not in methods and "/grpc.reflection." not in m)
    assert stale == []


@pytest.mark.parametrize("method", sorted(scopes.RULES))
def test_scopes_are_resource_and_access_level(method: str) -> None:
    resource, _, level = scopes.RULES[method].scope.partition(":")
    assert resource and level in {"read", "write", "admin"}


def test_reads_do_not_mutate_and_writes_are_not_plain_reads() -> None:
    for method, rule in scopes.RULES.items():
        name = method.rsplit("/", 1)[1]
        if name.startswith(("Get", "List")):
            assert not rule.mutates, method
        if rule.scope.endswith(":write"):
            assert rule.mutates, method


def test_service_identities_ask_only_for_declared_scopes() -> None:
    for service, granted in scopes.SERVICE_SCOPES.items():
        assert granted <= scopes.ALL_SCOPES, service


def test_only_health_is_public() -> None:
    assert scopes.is_public("/grpc.health.v1.Health/Check")
    assert scopes.is_public("/grpc.health.v1.Health/Watch")
    assert not scopes.is_public("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert not any(scopes.is_public(m) for m in scopes.RULES)
