"""The NATS usage subject: internal platforms publish usage straight to JetStream.

Subject "evolutivo.usage.v1.events", stream EVOLUTIVO_USAGE (on "evolutivo.usage.>", declared
idempotently here like every stream), payload one `evolutivo.charging.v1.UsageEvent` in protobuf
binary; header `Nats-Msg-Id` = the event's `event_id` is recommended (JetStream then drops a
re-publish inside its duplicate window; charging's own idempotency on `event_id` holds for the
horizon, docs/charging.md). No other header is needed: this is not a service's outbox event, so the runtime's
EventConsumer (which reads the Evolutivo-Event-* headers the outbox relay sets) is not used.

A background loop every charging replica runs (Wiring.background) pulls from one durable consumer
(`charging-usage`; replicas share its messages) and rates each fetched batch in one transaction
through `usage.record_usage`, the service function behind RecordUsageBatch, so an event published
here is validated, rated, kept (unrated or rejected, with its reason) and deduplicated exactly as
one sent over gRPC. The messages are acked after the commit; a crash in between redelivers them
and the stored results are returned again (nothing is charged twice).

An event refused as a call would refuse it (a payload that is not a UsageEvent, an invalid field,
an event type no offer rates, an event_id reused with another payload) is dead-lettered at once
to `evolutivo.dlq.charging.charging-usage` with the error naming the field: retrying cannot fix
it, nothing is stored, and DeadLetterAdminService lists it and replays it once the cause is fixed
(e.g. the offer that rates its type is activated). A batch whose transaction fails is rated again
one event per transaction, so one bad event cannot hold up the others; an event that keeps failing
is retried with backoff and dead-lettered after `consumer_max_deliver` deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import nats.errors
from evolutivo.charging.v1 import usage_pb2
from evolutivo_runtime.errors import InvalidArgument
from evolutivo_runtime.messaging import envelope
from evolutivo_runtime.messaging.consumer import CONSUMER_PENDING
from evolutivo_runtime.messaging.dead_letters import DEAD_LETTERED, DeadLetterQueue
from evolutivo_runtime.messaging.streams import declare_service_stream, stream_name
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import Counter

from evolutivo_charging.adapters import usage_proto
from evolutivo_charging.domain.usage import Received, UsageResult, UsageStatus
from evolutivo_charging.service_layer import usage
from evolutivo_charging.service_layer.unit_of_work import ChargingUnitOfWork

log = logging.getLogger(__name__)

# The publishers' namespace: stream EVOLUTIVO_USAGE on "evolutivo.usage.>".
SOURCE = "usage"
DURABLE = "charging-usage"
USAGE_EVENT = usage_pb2.UsageEvent.DESCRIPTOR.full_name

MESSAGES = Counter(
    "evolutivo_charging_usage_messages_total",
    "Usage events taken from the NATS usage subject, by outcome",
    ["outcome"],
)
# The outcomes: a rated event's status, or what became of a message charging could not rate.
MESSAGE_OUTCOMES = (*(s.value for s in UsageStatus), "refused", "dead_lettered", "retried")
# Every outcome's series exists from the start: an alert's increase() cannot see the first event of
# a series that appears at 1 (deploy/k8s/monitoring).
for _outcome in MESSAGE_OUTCOMES:
    MESSAGES.labels(_outcome)


def usage_subject(source: str = SOURCE) -> str:
    return f"evolutivo.{source}.v1.events"


def _name_event(msg: Msg, event_id: str) -> None:
    """Gives the message the envelope's event id header (platforms need not set it), so a dead
    letter of it is listed with the usage event's id."""
    if event_id and not (msg.headers or {}).get(envelope.EVENT_ID):
        msg.headers = {**(msg.headers or {}), envelope.EVENT_ID: event_id}


class UsageSubscriber:
    """Pulls usage events from the usage stream and rates them, a fetched batch per transaction.

    `source` names the stream and subject (tests use their own); the service uses the default."""

    def __init__(
        self,
        js: JetStreamContext,
        uow: Callable[[], ChargingUnitOfWork],
        dead_letters: DeadLetterQueue,
        batch_size: int,
        max_deliver: int,
        ack_wait: float,
        replicas: int = 1,
        duplicate_window: float = 120.0,
        source: str = SOURCE,
        durable: str = DURABLE,
    ) -> None:
        self._js = js
        self._uow = uow
        self._dead_letters = dead_letters
        self.batch_size = batch_size
        self._max_deliver = max_deliver
        self._ack_wait = ack_wait
        self._replicas = replicas
        self._duplicate_window = duplicate_window
        self.source = source
        self.durable = durable
        DEAD_LETTERED.labels(durable)  # present from the start (dead_letters.py)
        self.stream = stream_name(source)
        self.subject = usage_subject(source)
        self._psub: JetStreamContext.PullSubscription | None = None

    async def setup(self) -> None:
        """Declares the stream and the durable consumer (both idempotent) and binds to it."""
        await declare_service_stream(self._js, self.source, self._replicas, self._duplicate_window)
        config = ConsumerConfig(
            durable_name=self.durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            # Unlimited at the server: this loop counts deliveries and dead-letters itself.
            max_deliver=-1,
            filter_subject=self.subject,
            max_ack_pending=max(1000, self.batch_size * 10),
        )
        await self._js.add_consumer(self.stream, config)
        self._psub = await self._js.pull_subscribe_bind(self.durable, stream=self.stream)

    async def run(self, stop: asyncio.Event) -> None:
        if self._psub is None:
            await self.setup()
        try:
            while not stop.is_set():
                await self.poll()
        finally:
            psub, self._psub = self._psub, None
            if psub is not None:
                with contextlib.suppress(Exception):
                    await psub.unsubscribe()

    async def poll(self, timeout: float = 1.0) -> int:
        """Fetches one batch (waiting up to `timeout` for the first message) and processes it;
        returns how many messages it took."""
        if self._psub is None:
            await self.setup()
        assert self._psub is not None
        try:
            messages = await self._psub.fetch(self.batch_size, timeout=timeout)
        except (nats.errors.TimeoutError, TimeoutError):
            return 0  # nothing published within the poll
        except Exception:
            log.exception("usage fetch failed", extra={"consumer": self.durable})
            await asyncio.sleep(1.0)  # the connection is reconnecting; don't spin
            return 0
        await self.process(messages)
        return len(messages)

    async def process(self, messages: Sequence[Msg]) -> None:
        """Rates a fetched batch in one transaction, then acks; refused events are dead-lettered."""
        refused: list[tuple[Msg, Exception]] = []
        valid: list[tuple[Msg, Received]] = []
        for msg in messages:
            try:
                event = usage_pb2.UsageEvent.FromString(msg.data)
            except DecodeError:
                refused.append((msg, InvalidArgument("event", f"the payload is not an {USAGE_EVENT}")))
                continue
            _name_event(msg, event.event_id)
            received = usage_proto.received_from_pb(event, "event")
            if received.error is not None:
                refused.append((msg, received.error))
            else:
                valid.append((msg, received))

        outcomes: list[tuple[Msg, UsageResult]] = []
        failed: list[tuple[Msg, Exception]] = []
        if valid:
            try:
                results = await usage.record_usage(self._uow(), [r for _, r in valid])
                outcomes = list(zip([m for m, _ in valid], results, strict=True))
            except Exception:
                log.exception("usage batch failed; rating its events one by one", extra={"consumer": self.durable})
                for msg, received in valid:
                    try:
                        (result,) = await usage.record_usage(self._uow(), [received])
                        outcomes.append((msg, result))
                    except Exception as exc:
                        failed.append((msg, exc))

        for msg, result in outcomes:
            if result.status is None:
                assert result.error is not None
                refused.append((msg, result.error))
            else:
                await msg.ack()
                MESSAGES.labels(result.status.value).inc()
        for msg, error in refused:
            log.warning(
                "usage event refused; dead-lettered",
                extra={"consumer": self.durable, "usage_error": str(error), "sequence": msg.metadata.sequence.stream},
            )
            await self._dead_letters.send(msg, self.durable, error)
            await msg.ack()
            MESSAGES.labels("refused").inc()
        for msg, failure in failed:
            attempts = msg.metadata.num_delivered or 1
            if attempts >= self._max_deliver:
                await self._dead_letters.send(msg, self.durable, failure)
                await msg.ack()
                MESSAGES.labels("dead_lettered").inc()
            else:
                await msg.nak(delay=min(2.0**attempts, 60.0))
                MESSAGES.labels("retried").inc()
        if messages:
            CONSUMER_PENDING.labels(self.durable).set(messages[-1].metadata.num_pending or 0)
