"""Local stack launcher for the evolutivo microservices.

The :mod:`evolutivo_stack.embedded` module provides embedded PostgreSQL and
NATS (JetStream) servers that run from pip-installed binaries.
"""

from evolutivo_stack.embedded import (
    EmbeddedNats,
    EmbeddedPostgres,
    EmbeddedServerError,
    create_database,
    free_port,
)

__all__ = [
    "EmbeddedNats",
    "EmbeddedPostgres",
    "EmbeddedServerError",
    "create_database",
    "free_port",
]
