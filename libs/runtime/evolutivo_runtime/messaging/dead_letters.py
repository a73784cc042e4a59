"""Dead letters: events a consumer gave up on, kept in the EVOLUTIVO_DLQ stream to list and replay."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter

from evolutivo_runtime.clock import Clock
from evolutivo_runtime.messaging import envelope
from evolutivo_runtime.messaging.streams import DLQ_STREAM, dlq_subject

log = logging.getLogger(__name__)

# Each is an event some service did not apply: an operator looks at it, fixes the cause, replays it.
DEAD_LETTERED = Counter(
    "evolutivo_dead_letters_total", "Events a consumer gave up on and put in EVOLUTIVO_DLQ", ["consumer"]
)


@dataclass(frozen=True)
class DeadLetter:
    sequence: int
    event_id: str
    event_type: str
    original_subject: str
    consumer: str
    attempts: int
    error: str
    dead_time: datetime
    payload: bytes
    headers: dict[str, str]


class DeadLetterQueue:
    def __init__(self, js: JetStreamContext, service: str, clock: Clock) -> None:
        self._js = js
        self._service = service
        self._clock = clock

    async def send(self, msg: Msg, consumer: str, error: BaseException) -> None:
        original = dict(msg.headers or {})
        event_id = original.get(envelope.EVENT_ID, "")
        headers = {
            **original,
            # One dead letter per delivery that gave up: a retried send of the same delivery is a
            # duplicate, while the same event failing again after a replay is a new dead letter.
            envelope.MSG_ID: f"dlq:{consumer}:{event_id}:{msg.metadata.sequence.stream}",
            envelope.ORIGINAL_SUBJECT: msg.subject,
            envelope.CONSUMER: consumer,
            envelope.ERROR: f"{type(error).__name__}: {error}"[:1000],
            envelope.ATTEMPTS: str(msg.metadata.num_delivered or 0),
            envelope.DEAD_TIME: self._clock.now().isoformat(),
        }
        ack = await self._js.publish(dlq_subject(self._service, consumer), msg.data, headers=headers)
        if ack.duplicate:
            log.warning("dead letter already recorded", extra={"consumer": consumer, "event_id": event_id})
            return
        DEAD_LETTERED.labels(consumer).inc()
        log.error("event dead-lettered", extra={"consumer": consumer, "event_id": event_id, "subject": msg.subject})

    async def list(self, after_sequence: int, limit: int) -> list[DeadLetter]:
        """This service's dead letters with a stream sequence above `after_sequence`, oldest first."""
        found: list[DeadLetter] = []
        seq = after_sequence + 1
        while len(found) < limit:
            try:
                raw = await self._js.get_msg(DLQ_STREAM, seq=seq, subject=dlq_subject(self._service, "*"), next=True)
            except nats.js.errors.NotFoundError:
                break
            assert raw.seq is not None
            headers = {k: str(v) for k, v in (raw.headers or {}).items()}
            found.append(
                DeadLetter(
                    sequence=raw.seq,
                    event_id=headers.get(envelope.EVENT_ID, ""),
                    event_type=headers.get(envelope.EVENT_TYPE, ""),
                    original_subject=headers.get(envelope.ORIGINAL_SUBJECT, ""),
                    consumer=headers.get(envelope.CONSUMER, ""),
                    attempts=int(headers.get(envelope.ATTEMPTS, "0")),
                    error=headers.get(envelope.ERROR, ""),
                    dead_time=datetime.fromisoformat(headers[envelope.DEAD_TIME])
                    if envelope.DEAD_TIME in headers
                    else datetime.fromtimestamp(0, UTC),
                    payload=raw.data or b"",
                    headers=headers,
                )
            )
            seq = raw.seq + 1
        return found

    async def get(self, sequence: int) -> DeadLetter | None:
        letters = await self.list(sequence - 1, 1)
        return letters[0] if letters and letters[0].sequence == sequence else None

    async def replay(self, letter: DeadLetter) -> None:
        """Republishes to the original subject keeping the event id (the inbox still deduplicates),
        under a fresh Nats-Msg-Id so JetStream's duplicate window does not swallow it."""
        dead_only = {
            envelope.ORIGINAL_SUBJECT,
            envelope.CONSUMER,
            envelope.ERROR,
            envelope.ATTEMPTS,
            envelope.DEAD_TIME,
        }
        headers = {k: v for k, v in letter.headers.items() if k not in dead_only}
        headers[envelope.MSG_ID] = f"{letter.event_id}:replay:{letter.sequence}"
        await self._js.publish(letter.original_subject, letter.payload, headers=headers)
        await self._js.delete_msg(DLQ_STREAM, letter.sequence)
