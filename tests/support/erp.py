"""What the ERP gateway's suites share: a connection as an operator would create it."""

from __future__ import annotations

import uuid
from datetime import datetime

from evolutivo_erp_gateway.domain.connections import Connection, ConnectionType, Mapping


def a_connection(kind: ConnectionType, name: str, endpoint_url: str, now: datetime) -> Connection:
    """An enabled connection without a database, login or mapping (a webhook's, a file export's),
    not importing payments; its credentials are given when it is created."""
    return Connection(
        connection_id=uuid.uuid4(),
        display_name=name,
        type=kind,
        endpoint_url=endpoint_url,
        database="",
        username="",
        mapping=Mapping(),
        enabled=True,
        import_payments=False,
        has_credentials=False,
        create_time=now,
        update_time=now,
    )
