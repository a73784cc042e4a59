"""The five services as separate processes, with their own embedded PostgreSQL and NATS.

The e2e stack gets servers of its own (not the session's shared ones) because the services'
stream and durable-consumer names are fixed: two stacks on one NATS would share consumers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from evolutivo_stack.embedded import scratch_dir
from evolutivo_stack.stack import Stack


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with scratch_dir("stack") as data_dir:
        with Stack(data_dir, base_port=None, clock_mode="controllable") as running:
            yield running


@pytest.fixture
async def channels(stack: Stack) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    """A channel to replica 0 of every service of the module's stack."""
    opened = {service: stack.channel(service) for service in stack.addresses}
    yield opened
    for channel in opened.values():
        await channel.close(None)
