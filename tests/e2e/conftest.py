"""The five services as separate processes, with their own embedded PostgreSQL and NATS.

The e2e stack gets servers of its own (not the session's shared ones) because the services'
stream and durable-consumer names are fixed: two stacks on one NATS would share consumers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from evolutivo_runtime.security.redaction import redact
from evolutivo_stack.embedded import scratch_dir
from evolutivo_stack.stack import Stack


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with scratch_dir("stack") as data_dir:
        with Stack(data_dir, base_port=None, clock_mode="controllable") as running:
            yield running


@pytest.fixture(scope="module", autouse=True)
def _logs_hold_no_secret(stack: Stack) -> Iterator[None]:
    """After each module, its stack's logs (every service, every replica) must hold no token, key,
    password, full IBAN or card number (docs/security.md): every line must be what the redaction
    filter would leave of it. Set up after the module's stack, so it checks before it is removed."""
    yield
    leaks = []
    for path in sorted(stack.log_dir.glob("*.log")):
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if redact(line) != line or stack.dev_token() in line:
                leaks.append(f"{path.name}:{number}")  # where, never what
    assert leaks == [], f"secrets in the service logs at {leaks[:20]}"


@pytest.fixture
async def channels(stack: Stack) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    """A channel to replica 0 of every service of the module's stack."""
    opened = {service: stack.channel(service) for service in stack.addresses}
    yield opened
    for channel in opened.values():
        await channel.close(None)
