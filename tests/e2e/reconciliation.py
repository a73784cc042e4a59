"""The reconciliation after an end-to-end scenario: `await reconciled(stack)` waits until the
stack's five books agree (events between services land asynchronously) and fails with every
difference when they do not within the timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from evolutivo_reconcile import DatabaseUrls, Report, reconcile
from evolutivo_stack.stack import Stack


def stack_urls(stack: Stack) -> DatabaseUrls:
    return DatabaseUrls(**{service: stack.database_url(service) for service in stack.services})


async def reconcile_stack(stack: Stack, expected_usage_event_ids: Iterable[str] = ()) -> Report:
    """One reconciliation of the stack's databases, as it stands now."""
    return await reconcile(stack_urls(stack), expected_usage_event_ids=expected_usage_event_ids)


async def reconciled(stack: Stack, expected_usage_event_ids: Iterable[str] = (), timeout: float = 60.0) -> Report:
    """Polls the reconciliation until it finds no difference with every outbox published; fails
    with the last report otherwise. Returns the clean report (its `checked` counts)."""
    expected = list(expected_usage_event_ids)
    deadline = time.monotonic() + timeout
    while True:
        report = await reconcile_stack(stack, expected)
        if report.ok and not any(report.outbox_backlog.values()):
            print(report.text())
            return report
        if time.monotonic() >= deadline:
            raise AssertionError(f"the books do not reconcile after {timeout:.0f}s:\n{report.text()}")
        await asyncio.sleep(0.5)  # between polls: let the events in flight land
