"""JetStream messages as a service's consumer receives them, for driving `EventConsumer.process`
directly against a real database without a broker in between (the broker path has its own tests)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any, TypeVar, cast

from evolutivo_runtime.messaging import envelope
from evolutivo_runtime.messaging.consumer import EventConsumer, Subscription
from evolutivo_runtime.uow import UnitOfWork
from google.protobuf.message import Message
from nats.aio.msg import Msg
from sqlalchemy import Table

U = TypeVar("U", bound=UnitOfWork)
M = TypeVar("M", bound=Message)


@dataclass
class FakeMsg:
    """A stand-in for nats.aio.msg.Msg: the payload, the envelope headers and the ack state."""

    data: bytes
    headers: dict[str, str]
    subject: str = ""
    attempt: int = 1
    acked: bool = False
    naked: bool = False
    metadata: Any = field(init=False)

    def __post_init__(self) -> None:
        self.metadata = SimpleNamespace(
            num_delivered=self.attempt, num_pending=0, sequence=SimpleNamespace(stream=1, consumer=1)
        )

    async def ack(self) -> None:
        self.acked = True

    async def nak(self, delay: float | None = None) -> None:
        self.naked = True

    def again(self) -> FakeMsg:
        """The same message redelivered (same event id, one more delivery)."""
        return FakeMsg(self.data, dict(self.headers), self.subject, attempt=self.attempt + 1)


def message(subject: str, event: Message, occurred_at: datetime, event_id: uuid.UUID | str | None = None) -> FakeMsg:
    """An event as the outbox relay publishes it: the envelope headers and the serialized event."""
    event_id = str(event_id or uuid.uuid4())
    return FakeMsg(
        data=event.SerializeToString(),
        headers={
            envelope.MSG_ID: event_id,
            envelope.EVENT_ID: event_id,
            envelope.EVENT_TYPE: event.DESCRIPTOR.full_name,
            envelope.OCCURRED_AT: occurred_at.isoformat(),
        },
        subject=subject,
    )


def consumer_for(
    subscriptions: Sequence[Subscription[U]], stream: str, uow_factory: Callable[[], U], inbox: Table
) -> EventConsumer[U]:
    """The service's consumer of `stream`, with no JetStream behind it: `process()` never touches it."""
    (subscription,) = [s for s in subscriptions if s.stream == stream]
    return EventConsumer(
        js=None,  # type: ignore[arg-type]
        subscription=subscription,
        uow_factory=uow_factory,
        inbox=inbox,
        dead_letters=None,  # type: ignore[arg-type]  # nothing reaches max_deliver here
        batch_size=100,
        max_deliver=5,
        ack_wait=30,
    )


async def process(consumer: EventConsumer[U], *msgs: FakeMsg) -> None:
    """One fetched batch, applied as the service's consumer applies it."""
    await consumer.process(cast(list[Msg], list(msgs)))


async def handle(
    uow_factory: Callable[[], U],
    handler: Callable[[U, M, envelope.EventMeta], Awaitable[None]],
    event: M,
    occurred_at: datetime,
) -> None:
    """`event` applied by the consumer's handler in a unit of work of its own, without the inbox: for
    tests of the handler itself (redeliveries under new event ids, concurrent appliers)."""
    meta = envelope.EventMeta(uuid.uuid4(), event.DESCRIPTOR.full_name, "test", occurred_at, 1)
    async with uow_factory() as uow:
        await handler(uow, event, meta)
        await uow.commit()
