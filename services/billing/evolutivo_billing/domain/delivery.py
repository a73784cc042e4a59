"""The email delivery of issued bills and of collections notices (payment reminders, dunning
letters: docs/collections.md, "Notices"). Plain Python.

Rules (docs/billing.md, "Delivery"):
- Each issued bill has one delivery, PENDING from its issue: due at once, then after each failed
  attempt with an exponential backoff (first delay doubling up to a cap), FAILED when
  `max_attempts` attempts failed.
- SENT once the SMTP server accepted the email for at least one recipient; NO_RECIPIENT when the
  account has no billing (or primary) contact with an email address; NOT_BY_EMAIL when the
  account's billing profile asks for postal or portal delivery. Those three end it.
- A retry (RetryBillDelivery) makes any delivery but a SENT one PENDING and due now, with its
  attempts counted again from zero.
- The email's Message-ID depends only on the bill: a second copy (a crash between the SMTP
  server's acceptance and the commit that records it) carries the same one.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Self, cast

# Longest error text kept on a delivery.
MAX_ERROR_LENGTH = 1000


class DeliveryState(enum.Enum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    NO_RECIPIENT = "no_recipient"
    NOT_BY_EMAIL = "not_by_email"


class NoticeOnlyState(enum.Enum):
    """The end of a notice's delivery that bills' never have (the bill contract's states stay
    DeliveryState's): not sent because its case closed (e.g. paid) before it went out."""

    CANCELLED = "cancelled"


class DeliveryAlreadySent(ValueError):
    """A retry of a delivery the SMTP server accepted already."""


@dataclass(frozen=True)
class RetryPolicy:
    """BILLING_DELIVERY_MAX_ATTEMPTS, BILLING_DELIVERY_RETRY_SECONDS, BILLING_DELIVERY_RETRY_MAX_SECONDS."""

    max_attempts: int = 5
    first_delay: timedelta = timedelta(minutes=1)
    max_delay: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.first_delay <= timedelta(0) or self.max_delay < self.first_delay:
            raise ValueError("retry delays must be positive, the cap at least the first delay")

    def delay(self, attempts: int) -> timedelta:
        """The wait after the `attempts`-th failed attempt: first_delay * 2^(attempts - 1), capped."""
        if attempts < 1:
            return timedelta(0)
        # Capped before multiplying, so a large attempt count cannot overflow timedelta.
        doublings = min(attempts - 1, 32)
        delay: timedelta = min(self.first_delay * (2**doublings), self.max_delay)
        return delay


@dataclass(frozen=True)
class Email:
    """One email (a bill's, a notice's), as the mail adapter sends it; without an attachment when
    `attachment_name` is empty (a payment reminder)."""

    sender: str
    recipients: tuple[str, ...]
    subject: str
    text: str
    message_id: str
    attachment: bytes = b""
    attachment_name: str = ""
    attachment_type: str = "application/pdf"
    # The Date header: when it is sent, on the service clock.
    date: datetime | None = None


def message_id(bill_id: uuid.UUID, sender: str) -> str:
    """ "<bill-<id>@<sender's domain>>": the same for every copy of a bill's email."""
    domain = sender.rpartition("@")[2] or "localhost"
    return f"<bill-{bill_id}@{domain}>"


def notice_message_id(notice_id: uuid.UUID, sender: str) -> str:
    """ "<notice-<id>@<sender's domain>>": the same for every copy of a notice's email."""
    domain = sender.rpartition("@")[2] or "localhost"
    return f"<notice-{notice_id}@{domain}>"


def _error(text: str) -> str:
    return text if len(text) <= MAX_ERROR_LENGTH else text[: MAX_ERROR_LENGTH - 3] + "..."


class _Attempts:
    """The state machine of one email's delivery, shared by bills' and notices' deliveries (frozen
    dataclasses with these fields): each step returns a changed copy."""

    state: DeliveryState | NoticeOnlyState
    attempts: int
    next_attempt_time: datetime | None
    recipients: tuple[str, ...]
    message_id: str

    def _copy(self, **changes: Any) -> Self:
        copied: Self = replace(cast(Any, self), **changes)
        return copied

    def is_due(self, now: datetime) -> bool:
        due = self.next_attempt_time
        return self.state is DeliveryState.PENDING and due is not None and due <= now

    def sent(self, now: datetime, recipients: tuple[str, ...], message_id: str, refused: str = "") -> Self:
        """Accepted by the SMTP server (for at least one recipient; `refused` names the others)."""
        return self._copy(
            state=DeliveryState.SENT,
            attempts=self.attempts + 1,
            next_attempt_time=None,
            last_attempt_time=now,
            last_error=_error(refused),
            sent_time=now,
            recipients=recipients,
            message_id=message_id,
        )

    def failed_attempt(
        self, now: datetime, error: str, policy: RetryPolicy, recipients: tuple[str, ...] = (), message_id: str = ""
    ) -> Self:
        """An attempt that failed: PENDING again after the backoff, FAILED after the last one."""
        attempts = self.attempts + 1
        final = attempts >= policy.max_attempts
        return self._copy(
            state=DeliveryState.FAILED if final else DeliveryState.PENDING,
            attempts=attempts,
            next_attempt_time=None if final else now + policy.delay(attempts),
            last_attempt_time=now,
            last_error=_error(error),
            recipients=recipients or self.recipients,
            message_id=message_id or self.message_id,
        )

    def no_recipient(self, now: datetime, error: str = "") -> Self:
        return self._copy(
            state=DeliveryState.NO_RECIPIENT,
            next_attempt_time=None,
            last_attempt_time=now,
            last_error=error or "the account has no billing or primary contact with an email address",
            recipients=(),
        )


@dataclass(frozen=True)
class BillDelivery(_Attempts):
    bill_id: uuid.UUID
    account_id: uuid.UUID
    state: DeliveryState
    create_time: datetime
    attempts: int = 0
    next_attempt_time: datetime | None = None
    last_attempt_time: datetime | None = None
    last_error: str = ""
    sent_time: datetime | None = None
    recipients: tuple[str, ...] = field(default=())
    message_id: str = ""

    @classmethod
    def scheduled(cls, bill_id: uuid.UUID, account_id: uuid.UUID, now: datetime) -> BillDelivery:
        """The delivery of a bill issued before billing kept deliveries (see retry)."""
        return cls(bill_id, account_id, DeliveryState.PENDING, now, next_attempt_time=now)

    def not_by_email(self, now: datetime, method: str) -> BillDelivery:
        return replace(
            self,
            state=DeliveryState.NOT_BY_EMAIL,
            next_attempt_time=None,
            last_attempt_time=now,
            last_error=f"the account's billing profile asks for {method} delivery",
            recipients=(),
        )

    def retry(self, now: datetime) -> BillDelivery:
        """PENDING and due now, attempts counted from zero; DeliveryAlreadySent when SENT."""
        if self.state is DeliveryState.SENT:
            raise DeliveryAlreadySent(f"the bill {self.bill_id} was sent at {self.sent_time}")
        return replace(self, state=DeliveryState.PENDING, attempts=0, next_attempt_time=now)


@dataclass(frozen=True)
class NoticeDelivery(_Attempts):
    """The email of one collections notice: PENDING from its making, then as a bill's (retries
    with backoff, FAILED after the last attempt, NO_RECIPIENT without an address), or CANCELLED
    when its case closed before it went out. Whatever the account's bill delivery method: a
    reminder is an email by definition, and a letter's PDF is there for posting as well."""

    notice_id: uuid.UUID
    account_id: uuid.UUID
    state: DeliveryState | NoticeOnlyState
    create_time: datetime
    attempts: int = 0
    next_attempt_time: datetime | None = None
    last_attempt_time: datetime | None = None
    last_error: str = ""
    sent_time: datetime | None = None
    recipients: tuple[str, ...] = field(default=())
    message_id: str = ""

    @classmethod
    def scheduled(cls, notice_id: uuid.UUID, account_id: uuid.UUID, now: datetime) -> NoticeDelivery:
        return cls(notice_id, account_id, DeliveryState.PENDING, now, next_attempt_time=now)

    def cancelled(self, now: datetime, reason: str) -> NoticeDelivery:
        return replace(
            self, state=NoticeOnlyState.CANCELLED, next_attempt_time=None, last_attempt_time=now, last_error=reason
        )
