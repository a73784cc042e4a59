"""The five services as separate processes, with their own embedded PostgreSQL and NATS.

The e2e stack gets servers of its own (not the session's shared ones) because the services'
stream and durable-consumer names are fixed: two stacks on one NATS would share consumers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from evolutivo_stack.stack import Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir: Path = tmp_path_factory.mktemp("stack")
    with Stack(data_dir, base_port=None, clock_mode="controllable") as running:
        yield running
