"""Resident memory (RSS) of every service process, at rest and the peak under load."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import psutil  # type: ignore[import-untyped]  # no stubs pinned; the harness only
from evolutivo_stack.stack import Stack


def rss_mib(stack: Stack) -> dict[str, float]:
    """RSS of each replica now, MiB, by replica name (`charging`, `charging-1`, ...)."""
    found: dict[str, float] = {}
    for service in stack.services:
        for replica in stack.replicas(service):
            if replica.pid is None:
                continue
            with contextlib.suppress(psutil.Error):
                found[replica.name] = psutil.Process(replica.pid).memory_info().rss / 2**20
    return found


class PeakSampler:
    """Samples every replica's RSS twice a second while the load runs; keeps each one's peak."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self.peak: dict[str, float] = {}

    def sample(self) -> None:
        for name, value in rss_mib(self._stack).items():
            self.peak[name] = max(self.peak.get(name, 0.0), value)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[PeakSampler]:
        stop = asyncio.Event()

        async def loop() -> None:
            while not stop.is_set():
                self.sample()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)

        task = asyncio.create_task(loop())
        try:
            yield self
        finally:
            stop.set()
            await task
            self.sample()


# The services whose CPU a measure is charged with: all five. The usage and the bills flow through
# charging, balance and billing; the gateway books every bill and payment for the ERP; customer
# applies every ChargesCreated (an account's first charge fixes its currency).
MEASURED = ("customer", "charging", "balance", "billing", "erp_gateway")
# And the embedded servers' (every PostgreSQL backend and helper process, NATS), when the stack runs them.
SERVERS = ("postgres", "nats")


def cpu_seconds(stack: Stack, services: tuple[str, ...] = MEASURED + SERVERS) -> dict[str, float]:
    """CPU time (user + system) each service's replicas, or each embedded server's processes,
    used so far, summed per name: the cost of a measure is the difference, which the machine's
    other load does not inflate the way it inflates wall-clock rates. A server's processes that
    exited meanwhile (a closed connection's backend) count too (`_tree_cpu_seconds`)."""
    found: dict[str, float] = {}
    servers = stack.server_pids()
    for service in services:
        if service in servers:
            found[service] = _tree_cpu_seconds(servers[service])
            continue
        if service not in stack.services:
            continue
        for replica in stack.replicas(service):
            if replica.pid is None:
                continue
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(replica.pid).cpu_times()
                found[service] = found.get(service, 0.0) + times.user + times.system
    return found


def _tree_cpu_seconds(pid: int) -> float:
    """A server's CPU so far: its own, its live children's, and (the kernel adds them to the
    parent when it reaps them) its exited children's, so a backend that closed between two
    readings still counts and the total only grows."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        times = root.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for process in root.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
    return total


async def settled_cpu_seconds(
    stack: Stack,
    services: tuple[str, ...] = MEASURED,
    also: tuple[str, ...] = SERVERS,
    quiet_share: float = 0.05,
    interval: float = 0.5,
    timeout: float = 120.0,
) -> dict[str, float]:
    """`cpu_seconds` of `services` and `also` once every one of `services` has gone quiet (under
    `quiet_share` of a core for two intervals in a row): a consumer still working through its
    backlog after the measured call returned is charged to the measure instead of being left out.
    The servers (`also`) are read then but not waited for (PostgreSQL's autovacuum may run on).
    Gives up after `timeout` and reads what it has (the report then includes the other services'
    background work)."""
    deadline = time.monotonic() + timeout
    last = cpu_seconds(stack, services)
    calm = 0
    while time.monotonic() < deadline and calm < 2:
        await asyncio.sleep(interval)
        now = cpu_seconds(stack, services)
        busy = any(now.get(s, 0.0) - last.get(s, 0.0) > quiet_share * interval for s in now)
        calm = 0 if busy else calm + 1
        last = now
    return last | cpu_seconds(stack, also)
