"""The delivery loop: a background loop every billing replica runs (Wiring.background) that emails
issued bills and collections notices (docs/billing.md, "Delivery"; docs/collections.md, "Notices").

Every `BILLING_DELIVERY_CHECK_SECONDS` it takes due deliveries one at a time, each in its own
transaction (`deliver_next`, `deliver_next_notice`, taking turns), until none is due: a crash then
repeats at most the one email being sent. Replicas share the work through row locks (`SKIP LOCKED`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from evolutivo_billing.service_layer.delivery import DeliveryPolicy, Documents, Mailer, deliver_next
from evolutivo_billing.service_layer.notices import deliver_next_notice
from evolutivo_billing.service_layer.unit_of_work import BillingUnitOfWork

log = logging.getLogger(__name__)


class DeliveryLoop:
    def __init__(
        self,
        uow: Callable[[], BillingUnitOfWork],
        documents: Documents,
        mailer: Mailer,
        policy: DeliveryPolicy,
        check_seconds: float,
    ) -> None:
        self._uow = uow
        self.documents = documents
        self.mailer = mailer
        self.policy = policy
        self.check_seconds = check_seconds

    async def deliver_due(self, stop: asyncio.Event | None = None) -> int:
        """Attempts every due delivery, one per transaction, until none is due (or `stop` is set);
        returns how many attempts were made."""
        attempts = 0
        while stop is None or not stop.is_set():
            bill = await deliver_next(self._uow(), self.documents, self.mailer, self.policy)
            notice = await deliver_next_notice(self._uow(), self.documents, self.mailer, self.policy)
            if bill is None and notice is None:
                break
            attempts += (bill is not None) + (notice is not None)
        return attempts

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.deliver_due(stop)
            except Exception:
                # E.g. the database is unreachable: the claimed delivery rolled back, still due.
                log.exception("delivery pass failed; retrying at the next check")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.check_seconds)
