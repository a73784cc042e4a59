"""Bill cycles: the billing periods of a bill unit, opened and closed in sequence.

Rules (docs/billing.md, "Opening and closing cycles"):
- A bill unit's first cycle opens with the unit, from the local day the account was created.
- A bill unit has exactly one OPEN cycle at a time; cycles are numbered 1, 2, 3... without gaps.
- A cycle is due to close once its end plus the late-usage delay has passed. Closing it marks it
  CLOSED at that instant and opens the next cycle, which starts where it ends.
- The next cycle follows the profile in force from it: a pending profile changed before the closing
  cycle's end comes into force; one changed later waits for the following close.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from evolutivo_runtime.ids import new_uuid

from evolutivo_billing.domain import calendar
from evolutivo_billing.domain.model import BillingProfile, BillUnit


class InvalidBillCycle(ValueError):
    """A cycle operation its state does not allow (closing a closed or not yet due cycle)."""


class BillCycleStatus(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


def _frequency(profile: BillingProfile) -> calendar.Frequency:
    return calendar.Frequency(profile.frequency.months)


@dataclass
class BillCycle:
    """One billing period of a bill unit, [start_time, end_time), in the unit's time zone."""

    bill_cycle_id: uuid.UUID
    bill_unit_id: uuid.UUID
    account_id: uuid.UUID
    # 1 for the unit's first cycle, then 2, 3...
    sequence: int
    start_time: datetime
    end_time: datetime
    start_date: date
    end_date: date
    time_zone: str
    status: BillCycleStatus = BillCycleStatus.OPEN
    # When billing closed it; None while open.
    close_time: datetime | None = None
    # Its items up to this `BillItem.seq` are on bills issued while it went on (bill now,
    # threshold); those above it wait for the next such bill or for the cycle's own.
    billed_through_seq: int = 0
    events: list[object] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def _open(cls, unit: BillUnit, sequence: int, window: calendar.Cycle) -> BillCycle:
        cycle = cls(
            bill_cycle_id=new_uuid(),
            bill_unit_id=unit.bill_unit_id,
            account_id=unit.account_id,
            sequence=sequence,
            start_time=window.start,
            end_time=window.end,
            start_date=window.start_date,
            end_date=window.end_date,
            time_zone=unit.time_zone,
        )
        cycle.events.append(BillCycleOpened(cycle))
        return cycle

    @classmethod
    def first(cls, unit: BillUnit, account_created: datetime) -> BillCycle:
        """The unit's first cycle: from the local day the account was created (`account_created`,
        an instant) to the first boundary of the unit's profile after it."""
        if account_created.utcoffset() is None:
            raise InvalidBillCycle("account_created must be timezone-aware")
        profile = unit.profile
        window = calendar.first_cycle(account_created, profile.bill_cycle_day, _frequency(profile), unit.time_zone)
        return cls._open(unit, 1, window)

    @property
    def window(self) -> calendar.Cycle:
        return calendar.Cycle(self.start_time, self.end_time, self.start_date, self.end_date)

    def due_time(self, late_usage_delay: timedelta) -> datetime:
        """When the cycle may close: its end plus the delay allowed for late usage."""
        return self.end_time + late_usage_delay

    def is_due(self, now: datetime, late_usage_delay: timedelta) -> bool:
        return self.status is BillCycleStatus.OPEN and self.due_time(late_usage_delay) <= now

    def bill_through(self, seq: int) -> None:
        """Its items up to `seq` are billed by a bill issued while it goes on."""
        if self.status is not BillCycleStatus.OPEN:
            raise InvalidBillCycle(f"cycle {self.bill_cycle_id} is closed: its own bill took its items")
        if seq <= self.billed_through_seq:
            raise InvalidBillCycle(f"cycle {self.bill_cycle_id} is billed through {self.billed_through_seq} already")
        self.billed_through_seq = seq

    def close(self, unit: BillUnit, now: datetime, late_usage_delay: timedelta) -> BillCycle:
        """Closes this cycle at `now` and returns the next one, open, under the profile in force
        from it (a pending profile changed before this cycle's end comes into force on `unit`).
        Records BillCycleClosed here and BillCycleOpened on the next cycle."""
        if unit.bill_unit_id != self.bill_unit_id:
            raise InvalidBillCycle(f"cycle {self.bill_cycle_id} is not a cycle of bill unit {unit.bill_unit_id}")
        if self.status is not BillCycleStatus.OPEN:
            raise InvalidBillCycle(f"cycle {self.bill_cycle_id} is already closed")
        if now.utcoffset() is None:
            raise InvalidBillCycle("now must be timezone-aware")
        if not self.is_due(now, late_usage_delay):
            raise InvalidBillCycle(
                f"cycle {self.bill_cycle_id} is not due until {self.due_time(late_usage_delay).isoformat()}"
            )
        unit.start_cycle_at(self.end_time)
        profile = unit.profile
        window = calendar.next_cycle(self.window, profile.bill_cycle_day, _frequency(profile), unit.time_zone)
        following = BillCycle._open(unit, self.sequence + 1, window)
        self.status = BillCycleStatus.CLOSED
        self.close_time = now.astimezone(UTC)
        self.events.append(BillCycleClosed(self, following))
        return following


@dataclass(frozen=True)
class BillCycleOpened:
    bill_cycle: BillCycle


@dataclass(frozen=True)
class BillCycleClosed:
    bill_cycle: BillCycle
    # The cycle opened in its place.
    next_bill_cycle: BillCycle
