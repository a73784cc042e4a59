"""How long the service itself took, from its own histograms.

The harness's latencies are what its client sees: the service's handling, plus gRPC's transport
and queueing on both sides and the client's own loop, all on the same 2 cores. Read before and
after a run, `grpc_server_handling_seconds` says how much of that was the handler
(ServiceInterceptor times it from the call's start in the handler to its answer) and
`evolutivo_event_loop_lag_seconds` how long the service's loop was held, so that a call could
not start, to the resolution of their buckets.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Sequence

from prometheus_client.parser import text_string_to_metric_families

HANDLING = "grpc_server_handling_seconds"
# The service's event loop lag (evolutivo_runtime.server.loop_lag): time a call may have waited
# on the loop before its handler started.
LOOP_LAG = "evolutivo_event_loop_lag_seconds"


def _buckets(url: str, histogram: str, labels: dict[str, str]) -> dict[float, float]:
    """Cumulative count of the histogram's observations (with those labels) per bucket upper
    bound (s) at one replica."""
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    counts: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != histogram:
            continue
        for sample in family.samples:
            if sample.name == f"{histogram}_bucket" and all(sample.labels.get(k) == v for k, v in labels.items()):
                bound = float(sample.labels["le"])
                counts[bound] = counts.get(bound, 0.0) + sample.value
    return counts


async def buckets(urls: Sequence[str], histogram: str, **labels: str) -> dict[float, float]:
    """The histogram's cumulative bucket counts summed over the replicas' metrics endpoints."""
    total: dict[float, float] = {}
    for found in await asyncio.gather(*(asyncio.to_thread(_buckets, u, histogram, labels) for u in urls)):
        for bound, count in found.items():
            total[bound] = total.get(bound, 0.0) + count
    return total


def quantile_bound_ms(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The upper bound (ms) of the bucket the q-quantile of the calls made between the two
    readings falls in: the quantile is at most that. None when no call was made."""
    bounds = sorted(after)
    calls = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    if calls <= 0:
        return None
    for bound in bounds:
        if after[bound] - before.get(bound, 0.0) >= q * calls:
            return bound * 1000
    return None
