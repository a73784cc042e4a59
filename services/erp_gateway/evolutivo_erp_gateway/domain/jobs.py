"""Sync jobs: sending one suite record to one connection, with retries. Plain Python."""

from __future__ import annotations

import enum
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from evolutivo_erp_gateway.domain.model import EntityType


class JobState(enum.Enum):
    PENDING = "pending"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    DEAD = "dead"


# The order records of one customer reach an ERP in: a job waits for the ones before it.
ORDER = {
    EntityType.CUSTOMER: 0,
    EntityType.INVOICE: 1,
    EntityType.CREDIT_NOTE: 2,
    EntityType.PAYMENT: 3,
    EntityType.PAYMENT_REVERSAL: 4,
    EntityType.WRITE_OFF: 5,
    EntityType.REFERRAL: 6,
    EntityType.PAYMENT_ALLOCATION: 7,
    EntityType.CREDIT_NOTE_ALLOCATION: 8,
}
# What opens or settles invoices: a write-off is split over the invoices open when it is sent, so
# it waits for the records of its customer queued before it that open or settle them. (Payments
# and the allocations of payments' and credit notes' credit go to the invoices billing allocated
# them to: they wait for those.)
SETTLEMENT_PREDECESSORS = (
    EntityType.INVOICE,
    EntityType.CREDIT_NOTE,
    EntityType.PAYMENT,
    EntityType.PAYMENT_REVERSAL,
    EntityType.WRITE_OFF,
    EntityType.PAYMENT_ALLOCATION,
    EntityType.CREDIT_NOTE_ALLOCATION,
)


@dataclass(frozen=True)
class SyncJob:
    job_id: uuid.UUID
    connection_id: uuid.UUID
    entity_type: EntityType
    entity_id: uuid.UUID
    account_id: uuid.UUID
    state: JobState
    attempts: int
    last_error: str
    next_attempt_time: datetime
    erp_id: str
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits base * 2^(n-1), capped, times a random
    factor in [0.5, 1] so that jobs failing together do not retry together."""

    base: timedelta = timedelta(seconds=2)
    cap: timedelta = timedelta(minutes=30)
    # With these defaults the attempts span well over an hour before a job goes DEAD.
    max_attempts: int = 16

    def delay(self, attempts: int, rng: random.Random | None = None) -> timedelta:
        exponent = min(max(attempts - 1, 0), 30)
        delay = min(self.base * (2**exponent), self.cap)
        factor = (rng or random).uniform(0.5, 1.0)
        result: timedelta = delay * factor
        return result

    def exhausted(self, attempts: int) -> bool:
        return attempts >= self.max_attempts


@dataclass(frozen=True)
class CircuitBreaker:
    """A connection that fails this many times in a row (unreachable, login refused) is paused:
    its jobs keep their attempts and wait, and after the pause one attempt probes it; a success
    closes the breaker, a failure pauses it again."""

    threshold: int = 5
    pause: timedelta = timedelta(minutes=1)
