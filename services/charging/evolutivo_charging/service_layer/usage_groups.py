"""Group commit for the single-event call: concurrent RecordUsage calls of one replica rated
together, in one transaction, through the batch path (docs/performance.md).

A RecordUsage call alone costs ~15 statements, a commit and a ChargesCreated for one event; the
batch path rates hundreds of events for about the same. So the calls that arrive while a group is
being rated wait for it to end and then go together, as one group of at most `max_events`; at
most `max_groups` groups run at once. Nothing waits on a timer: a call arriving when a group slot
is free starts at once (alone, at low load), so grouping adds latency only when the replica is
busy anyway.

Each caller gets exactly what it would have got alone:

- its own UsageResult (the batch path answers per event, with the same errors: an event id repeated
  in the group with the same payload gets the first one's result, with another payload
  ALREADY_EXISTS, as two concurrent calls would);
- its own audit record, in the transaction that commits its change (security/audit.py
  `grouped_audits`);
- when the group's transaction fails as a whole (a deadlock, a broken connection, a bug one event
  triggers), every event of the group is rated again alone, in its own transaction and with its
  own audit context, so one event cannot fail another caller's call;
- a caller cancelled while its call waits for a group is left out of it (nothing is rated, as if
  it never reached the transaction); once its group started, its event is rated and committed
  like an ordinary call whose client went away, and a retry returns the stored result.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from evolutivo_runtime.security.audit import AuditContext, current_audit

from evolutivo_charging.domain.usage import Received, UsageResult
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork
from evolutivo_charging.service_layer.usage import record_usage


@dataclass(frozen=True)
class _Waiting:
    received: Received
    audit: AuditContext | None
    answer: asyncio.Future[UsageResult]


class UsageGroups:
    def __init__(self, uow: Callable[[], ChargingUnitOfWork], max_events: int = 500, max_groups: int = 1) -> None:
        self._uow = uow
        self._max_events = max_events
        self._max_groups = max_groups
        self._waiting: deque[_Waiting] = deque()
        self._running = 0
        # Held so the running groups are not garbage-collected mid-flight.
        self._tasks: set[asyncio.Task[None]] = set()

    async def record(self, received: Received) -> UsageResult:
        """Rates one valid event (possibly together with concurrent calls); its result."""
        answer: asyncio.Future[UsageResult] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(received, current_audit.get(), answer))
        self._start()
        return await answer

    def _start(self) -> None:
        while self._waiting and self._running < self._max_groups:
            group: list[_Waiting] = []
            while self._waiting and len(group) < self._max_events:
                item = self._waiting.popleft()
                if not item.answer.done():  # done: its caller was cancelled while waiting
                    group.append(item)
            if not group:
                return
            self._running += 1
            task = asyncio.create_task(self._run(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, group: Sequence[_Waiting]) -> None:
        # The task's context is a copy of the first caller's: the group is nobody's call.
        current_audit.set(None)
        try:
            try:
                results = await self._together(group)
            except Exception:
                if len(group) == 1:
                    raise
                for item in group:
                    await self._alone(item)
            else:
                for item, result in zip(group, results, strict=True):
                    if not item.answer.done():
                        item.answer.set_result(result)
        except asyncio.CancelledError:
            for item in group:
                item.answer.cancel()
            raise
        except Exception as exc:
            for item in group:
                if not item.answer.done():
                    item.answer.set_exception(exc)
        finally:
            self._running -= 1
            self._start()

    async def _together(self, group: Sequence[_Waiting]) -> list[UsageResult]:
        if len(group) == 1:
            # Alone (the replica is not busy): exactly an ungrouped call, audit record included.
            token = current_audit.set(group[0].audit)
            try:
                return await record_usage(self._uow(), [group[0].received])
            finally:
                current_audit.reset(token)
        # Each caller's audit context, so that only the calls whose event was kept get a record.
        return await record_usage(self._uow(), [item.received for item in group], [item.audit for item in group])

    async def _alone(self, item: _Waiting) -> None:
        """One event in its own transaction, as an ungrouped call: its answer or its error."""
        token = current_audit.set(item.audit)
        try:
            (result,) = await record_usage(self._uow(), [item.received])
        except Exception as exc:
            if not item.answer.done():
                item.answer.set_exception(exc)
        else:
            if not item.answer.done():
                item.answer.set_result(result)
        finally:
            current_audit.reset(token)
