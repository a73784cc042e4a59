"""Every statement the services build once, at import, is one SQLAlchemy caches the compiled form
of. A construct that is not cacheable (a VALUES list, say) makes SQLAlchemy compile the statement
again on every execution: charging's read of the usage events received before cost ~0.45 ms of CPU
per call that way, unseen until a benchmark (docs/performance.md, "Twelfth round")."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from sqlalchemy.sql.elements import ClauseElement

PACKAGES = [
    "evolutivo_runtime",
    "evolutivo_customer",
    "evolutivo_charging",
    "evolutivo_balance",
    "evolutivo_billing",
    "evolutivo_erp_gateway",
]


def _module_statements(package: str) -> list[tuple[str, str, ClauseElement]]:
    found = []
    root = importlib.import_module(package)
    for module_info in pkgutil.walk_packages(root.__path__, f"{package}."):
        if ".migrations" in module_info.name:
            continue
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if isinstance(value, ClauseElement):
                found.append((module_info.name, name, value))
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_statements_built_at_import_are_cached_compiled(package: str) -> None:
    statements = _module_statements(package)
    uncached = [f"{module}.{name}" for module, name, statement in statements if statement._generate_cache_key() is None]
    assert uncached == []


def test_the_check_finds_statements_and_an_uncacheable_one() -> None:
    from evolutivo_charging.adapters import usage_repository
    from sqlalchemy import Integer, column, select, values

    names = {name for _, name, _ in _module_statements("evolutivo_charging")}
    assert {"_RECEIVED", "_INSERT_NEW", "_RECORD_OUTCOMES"} <= names
    assert select(values(column("n", Integer), name="one").data([(1,)]))._generate_cache_key() is None
    assert usage_repository._RECEIVED._generate_cache_key() is not None
