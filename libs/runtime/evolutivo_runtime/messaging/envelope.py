"""What travels with every event: ids and type in NATS headers, the protobuf message as payload."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from google.protobuf.message import Message

from evolutivo_runtime.ids import new_uuid

# JetStream drops a second publish with the same Nats-Msg-Id inside the stream's duplicate window.
MSG_ID = "Nats-Msg-Id"
EVENT_ID = "Evolutivo-Event-Id"
EVENT_TYPE = "Evolutivo-Event-Type"
OCCURRED_AT = "Evolutivo-Occurred-At"
# Dead-letter headers.
ORIGINAL_SUBJECT = "Evolutivo-Original-Subject"
CONSUMER = "Evolutivo-Consumer"
ERROR = "Evolutivo-Error"
ATTEMPTS = "Evolutivo-Attempts"
DEAD_TIME = "Evolutivo-Dead-Time"


@dataclass(frozen=True)
class OutgoingEvent:
    subject: str
    message: Message
    occurred_at: datetime
    event_id: uuid.UUID = field(default_factory=new_uuid)

    @property
    def event_type(self) -> str:
        return self.message.DESCRIPTOR.full_name

    def headers(self) -> dict[str, str]:
        return {
            MSG_ID: str(self.event_id),
            EVENT_ID: str(self.event_id),
            EVENT_TYPE: self.event_type,
            OCCURRED_AT: self.occurred_at.isoformat(),
        }


@dataclass(frozen=True)
class EventMeta:
    """What a consumer's handler learns about the event besides its message."""

    event_id: uuid.UUID
    event_type: str
    subject: str
    occurred_at: datetime
    stream_sequence: int
