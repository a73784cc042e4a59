"""Admin services every service can serve: the shared clock (non-production only) and dead letters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from evolutivo.admin.v1 import (
    clock_admin_service_pb2 as clock_pb,
)
from evolutivo.admin.v1 import (
    clock_admin_service_pb2_grpc as clock_grpc,
)
from evolutivo.admin.v1 import (
    dead_letter_admin_service_pb2 as dlq_pb,
)
from evolutivo.admin.v1 import (
    dead_letter_admin_service_pb2_grpc as dlq_grpc,
)
from google.protobuf.timestamp_pb2 import Timestamp

from evolutivo_runtime.clock import SharedClock
from evolutivo_runtime.errors import InvalidArgument, NotFound
from evolutivo_runtime.messaging.dead_letters import DeadLetter, DeadLetterQueue
from evolutivo_runtime.pagination import page_size as checked_page_size
from evolutivo_runtime.pagination import parse_int_token
from evolutivo_runtime.server import Context

# The shared clock never goes past this: every service adds cycles, terms and horizons to "now", and
# an instant near datetime's year-9999 limit would overflow all of them (for good: the clock only
# moves forward).
LATEST_CLOCK = datetime(3000, 1, 1, tzinfo=UTC)


def _checked_move(clock: SharedClock, delta: timedelta, field: str) -> timedelta:
    try:
        target = clock.now() + delta
    except OverflowError:
        target = LATEST_CLOCK
    if target >= LATEST_CLOCK:
        raise InvalidArgument(field, f"would move the clock past {LATEST_CLOCK.date()}")
    return delta


def _timestamp(clock: SharedClock) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(clock.now())
    return ts


class ClockAdminServicer(clock_grpc.ClockAdminServiceServicer):
    def __init__(self, clock: SharedClock) -> None:
        self._clock = clock

    async def GetClock(self, request: clock_pb.GetClockRequest, context: Context) -> clock_pb.GetClockResponse:
        return clock_pb.GetClockResponse(now=_timestamp(self._clock), revision=self._clock.revision)

    async def SetClock(self, request: clock_pb.SetClockRequest, context: Context) -> clock_pb.SetClockResponse:
        if not request.HasField("time"):
            raise InvalidArgument("time", "is required")
        try:
            delta = request.time.ToDatetime(tzinfo=UTC) - self._clock.now()
        except (ValueError, OverflowError):
            raise InvalidArgument("time", "must be a valid timestamp") from None
        if delta.total_seconds() < 0:
            raise InvalidArgument("time", "must not be before the current time: the clock only moves forward")
        revision = await self._clock.advance(_checked_move(self._clock, delta, "time"))
        return clock_pb.SetClockResponse(now=_timestamp(self._clock), revision=revision)

    async def AdvanceClock(
        self, request: clock_pb.AdvanceClockRequest, context: Context
    ) -> clock_pb.AdvanceClockResponse:
        if not request.HasField("duration"):
            raise InvalidArgument("duration", "is required")
        try:
            delta = request.duration.ToTimedelta()
        except (ValueError, OverflowError):
            raise InvalidArgument("duration", "must be a valid duration") from None
        if delta.total_seconds() < 0:
            raise InvalidArgument("duration", "must not be negative: the clock only moves forward")
        revision = await self._clock.advance(_checked_move(self._clock, delta, "duration"))
        return clock_pb.AdvanceClockResponse(now=_timestamp(self._clock), revision=revision)


def _dead_letter_pb(letter: DeadLetter) -> dlq_pb.DeadLetter:
    dead_time = Timestamp()
    dead_time.FromDatetime(letter.dead_time)
    return dlq_pb.DeadLetter(
        sequence=letter.sequence,
        event_id=letter.event_id,
        event_type=letter.event_type,
        original_subject=letter.original_subject,
        consumer=letter.consumer,
        attempts=letter.attempts,
        error=letter.error,
        dead_time=dead_time,
    )


class DeadLetterAdminServicer(dlq_grpc.DeadLetterAdminServiceServicer):
    def __init__(self, queue: DeadLetterQueue) -> None:
        self._queue = queue

    async def ListDeadLetters(
        self, request: dlq_pb.ListDeadLettersRequest, context: Context
    ) -> dlq_pb.ListDeadLettersResponse:
        size = checked_page_size(request.page_size)
        after = parse_int_token(request.page_token)
        letters = await self._queue.list(after, size + 1)
        page, more = letters[:size], len(letters) > size
        return dlq_pb.ListDeadLettersResponse(
            dead_letters=[_dead_letter_pb(letter) for letter in page],
            next_page_token=str(page[-1].sequence) if more and page else "",
        )

    async def ReplayDeadLetter(
        self, request: dlq_pb.ReplayDeadLetterRequest, context: Context
    ) -> dlq_pb.ReplayDeadLetterResponse:
        if request.sequence <= 0:
            raise InvalidArgument("sequence", "must be a positive dead-letter sequence")
        letter = await self._queue.get(request.sequence)
        if letter is None:
            raise NotFound("dead_letter", str(request.sequence))
        await self._queue.replay(letter)
        return dlq_pb.ReplayDeadLetterResponse(dead_letter=_dead_letter_pb(letter))
