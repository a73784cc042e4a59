"""Unit of work: one database transaction, and the events it causes, committed together."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from google.protobuf.message import Message
from sqlalchemy import Table, insert, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from evolutivo_runtime.clock import Clock
from evolutivo_runtime.messaging.envelope import OutgoingEvent
from evolutivo_runtime.messaging.tables import OUTBOX_CHANNEL


class UnitOfWork:
    """Services subclass it to add their repositories (built on `self.session` in `__aenter__`).

    Events added with `publish` are written to the outbox by `commit`, in the same transaction as
    the state change, so an event exists if and only if its change does.
    """

    session: AsyncSession

    def __init__(self, sessions: async_sessionmaker[AsyncSession], outbox: Table, clock: Clock) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self.clock = clock
        self.events: list[OutgoingEvent] = []

    async def __aenter__(self) -> Self:
        self.session = self._sessions()
        self.events = []
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Whatever was not committed is rolled back.
        await self.session.rollback()
        await self.session.close()

    def publish(self, subject: str, message: Message) -> OutgoingEvent:
        event = OutgoingEvent(subject=subject, message=message, occurred_at=self.clock.now())
        self.events.append(event)
        return event

    async def commit(self) -> None:
        if self.events:
            await self.session.execute(
                insert(self._outbox),
                [
                    {
                        "event_id": e.event_id,
                        "subject": e.subject,
                        "event_type": e.event_type,
                        "payload": e.message.SerializeToString(),
                        "headers": e.headers(),
                    }
                    for e in self.events
                ],
            )
            # Delivered to the relay's LISTEN only when the transaction commits.
            await self.session.execute(text(f"NOTIFY {OUTBOX_CHANNEL}"))
        await self.session.commit()
        self.events = []

    async def rollback(self) -> None:
        await self.session.rollback()
        self.events = []
