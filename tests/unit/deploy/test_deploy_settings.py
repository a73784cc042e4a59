"""deploy/k8s/base/<service>/config.env: every variable is one of the service's settings and parses."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from evolutivo_runtime.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[3]
SERVICES = {"customer": 50051, "charging": 50052, "balance": 50053, "billing": 50054, "erp_gateway": 50055}


# Addresses the ConfigMaps already carry for calls being built (collections, GL export): the
# services' settings must use these names when they add the clients.
PENDING_SETTINGS = {"BILLING_CUSTOMER_ADDRESS", "BILLING_BALANCE_ADDRESS", "ERP_GATEWAY_BALANCE_ADDRESS"}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_k8s_config_names_real_settings(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt variable would be ignored silently (extra="ignore"): every key must be a setting."""
    module = importlib.import_module(f"evolutivo_{service}.settings")
    settings_cls: type[ServiceSettings] = next(
        v
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, ServiceSettings) and v.__module__ == module.__name__
    )
    prefix = service.upper() + "_"
    env_file = ROOT / "deploy" / "k8s" / "base" / service.replace("_", "-") / "config.env"
    pairs = [line.split("=", 1) for line in env_file.read_text().splitlines() if line and not line.startswith("#")]
    fields = {prefix + name.upper() for name in settings_cls.model_fields}
    unknown = {key for key, _ in pairs} - fields - PENDING_SETTINGS
    assert unknown == set()
    for key, value in pairs:
        monkeypatch.setenv(key, value)
    settings = settings_cls()
    assert settings.grpc_port == SERVICES[service]
    assert settings.stream_replicas == 3
