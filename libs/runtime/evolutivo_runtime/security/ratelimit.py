"""Per-caller token buckets (one set per replica, in memory).

A replica allows each caller `rate` calls per second per bucket, with bursts up to `burst`. With N
replicas behind a balancer a caller gets at most N times that; a cluster-wide quota belongs in the
API gateway in front of the suite. Time is the monotonic clock: limits are about real load, not
business time.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# Callers remembered per bucket; the least recently seen are forgotten first (a forgotten caller
# starts again with a full bucket, which only errs on the generous side).
_MAX_CALLERS = 100_000


@dataclass(frozen=True)
class Limit:
    rate: float
    burst: int


class RateLimiter:
    def __init__(self, limits: dict[str, Limit], now: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._now = now
        # (bucket, caller) -> (tokens, last refill)
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def acquire(self, bucket: str, caller: str, cost: float = 1.0) -> float:
        """Takes `cost` tokens; returns 0 when allowed, else the seconds until it would be."""
        limit = self._limits.get(bucket)
        if limit is None:
            return 0.0
        key = (bucket, caller)
        now = self._now()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(limit.burst), now))
            tokens = min(float(limit.burst), tokens + (now - last) * limit.rate)
            if tokens >= cost:
                self._buckets[key] = (tokens - cost, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (cost - tokens) / limit.rate
            self._buckets.move_to_end(key)
            while len(self._buckets) > _MAX_CALLERS:
                self._buckets.popitem(last=False)
        return wait
