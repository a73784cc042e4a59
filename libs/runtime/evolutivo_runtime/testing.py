"""Helpers for the suites that drive services across processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 30.0, what: str = "condition") -> T:
    """Polls `probe` until it returns something other than None: events cross processes
    asynchronously, so a test waits for their effect, boundedly, instead of sleeping."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = await probe()
            if result is not None:
                return result
        except Exception as exc:  # e.g. NOT_FOUND until the event arrives
            last_error = exc
        await asyncio.sleep(0.1)  # the poll interval
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last error: {last_error!r}")
