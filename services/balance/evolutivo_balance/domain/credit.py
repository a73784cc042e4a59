"""Credit limits and thresholds of a balance group. Plain Python: no protobuf, no SQL.

A group's credit state (over its limit or not, which thresholds it has reached) is derived from its
balance, its policy and the clock; the state last published is stored with the group. `assess`
compares the two and names the crossings, so each crossing is published once however the state was
reached (entries, a changed policy, an expired temporary limit) and wherever it is re-assessed.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from evolutivo_runtime.errors import InvalidArgument

MAX_THRESHOLDS = 20
MAX_PERCENT = Decimal(1000)
# Amounts are below 10^18 in absolute value (google.type.Money units are an int64).
MAX_AMOUNT = Decimal(10) ** 18


def _quantum(exponent: int) -> Decimal:
    return Decimal(1).scaleb(-exponent)


def _plain(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros: "80", "87.5", "100"."""
    text = format(value.normalize(), "f")
    return text


@dataclass(frozen=True)
class Threshold:
    """Exactly one of `amount` (a fixed balance) or `percent` (of the limit in force)."""

    amount: Decimal | None = None
    percent: Decimal | None = None

    @property
    def key(self) -> str:
        """Identifies the threshold in the group's state: one threshold per level."""
        if self.amount is not None:
            return f"amount:{_plain(self.amount)}"
        assert self.percent is not None
        return f"percent:{_plain(self.percent)}"

    def level(self, limit: Decimal | None, exponent: int) -> Decimal | None:
        """The balance at which it is reached; None for a percentage without a limit."""
        if self.amount is not None:
            return self.amount
        if limit is None:
            return None
        assert self.percent is not None
        return (limit * self.percent / 100).quantize(_quantum(exponent), rounding=ROUND_HALF_UP)

    def to_json(self) -> dict[str, str]:
        if self.amount is not None:
            return {"amount": format(self.amount, "f")}
        assert self.percent is not None
        return {"percent": _plain(self.percent)}

    @classmethod
    def from_json(cls, value: dict[str, str]) -> Threshold:
        if "amount" in value:
            return cls(amount=Decimal(value["amount"]))
        return cls(percent=Decimal(value["percent"]))


@dataclass(frozen=True)
class CreditPolicy:
    """What SetCreditLimit sets on a group. Empty: no limit, no thresholds."""

    credit_limit: Decimal | None = None
    temporary_limit: Decimal | None = None
    temporary_limit_expire_time: datetime | None = None
    thresholds: tuple[Threshold, ...] = ()

    def limit_at(self, now: datetime) -> Decimal | None:
        """The limit in force: the temporary one until it expires (lazily: the expiry loop only
        publishes what changes when it does), else the credit limit."""
        if self.temporary_limit is not None and self.temporary_limit_expire_time is not None:
            if now < self.temporary_limit_expire_time:
                return self.temporary_limit
        return self.credit_limit

    def without_expired_temporary(self, now: datetime) -> CreditPolicy:
        if self.temporary_limit_expire_time is not None and self.temporary_limit_expire_time <= now:
            return replace(self, temporary_limit=None, temporary_limit_expire_time=None)
        return self


@dataclass(frozen=True)
class CreditState:
    """What was last published about a group's credit."""

    exceeded: bool = False
    # Keys of the thresholds the balance has reached.
    reached: frozenset[str] = frozenset()
    # Grows by one with every limit crossing (CreditLimitExceeded / CreditLimitRestored).
    version: int = 0
    # Grows by one with every threshold crossing (CreditThresholdCrossed).
    threshold_version: int = 0


class Direction(enum.StrEnum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class LimitCrossing:
    """Over the limit (exceeded) or back within it."""

    exceeded: bool
    # The limit in force after the crossing; None when the group has none left.
    limit: Decimal | None
    version: int


@dataclass(frozen=True)
class ThresholdCrossing:
    threshold: Threshold
    # Its level at the crossing; None for a percentage that lost its limit.
    level: Decimal | None
    direction: Direction
    limit: Decimal | None
    version: int


Crossing = LimitCrossing | ThresholdCrossing


def is_exceeded(balance: Decimal, limit: Decimal | None) -> bool:
    """Exceeded when the balance (debt) is strictly above the limit: owing exactly the limit is
    within it."""
    return limit is not None and balance > limit


def available_credit(balance: Decimal, limit: Decimal | None) -> Decimal | None:
    """limit - balance, floored at zero (over the limit there is nothing left, not a negative
    amount); None without a limit."""
    if limit is None:
        return None
    return max(limit - balance, Decimal(0))


def assess(
    policy: CreditPolicy, state: CreditState, balance: Decimal, exponent: int, now: datetime
) -> tuple[CreditState, list[Crossing]]:
    """The group's credit state now, and the crossings since `state`, in the order a reader expects
    them: back within the limit, thresholds going down (highest first), thresholds going up (lowest
    first), over the limit. A threshold removed from the policy is forgotten without an event."""
    limit = policy.limit_at(now)
    levels = {t.key: (t, t.level(limit, exponent)) for t in policy.thresholds}
    reached = frozenset(
        key for key, (_, level) in levels.items() if level is not None and balance > 0 and balance >= level
    )
    before = state.reached & levels.keys()
    exceeded = is_exceeded(balance, limit)
    crossings: list[Crossing] = []
    version, threshold_version = state.version, state.threshold_version
    if state.exceeded and not exceeded:
        version += 1
        crossings.append(LimitCrossing(False, limit, version))

    def order(key: str) -> tuple[Decimal, str]:
        level = levels[key][1]
        return (level if level is not None else Decimal(0), key)

    for key in sorted(before - reached, key=order, reverse=True):
        threshold_version += 1
        crossings.append(ThresholdCrossing(levels[key][0], levels[key][1], Direction.DOWN, limit, threshold_version))
    for key in sorted(reached - before, key=order):
        threshold_version += 1
        crossings.append(ThresholdCrossing(levels[key][0], levels[key][1], Direction.UP, limit, threshold_version))
    if exceeded and not state.exceeded:
        version += 1
        crossings.append(LimitCrossing(True, limit, version))
    return CreditState(exceeded, reached, version, threshold_version), crossings


# Validation of what SetCreditLimit sends. Each names the request field it checks.


def check_limit(field_name: str, amount: Decimal, currency_code: str, group_currency: str, exponent: int) -> Decimal:
    if currency_code != group_currency:
        raise InvalidArgument(
            f"{field_name}.currency_code",
            f"must be the group's currency {group_currency}, not {currency_code or 'empty'}",
            "CURRENCY_MISMATCH",
        )
    if amount < 0:
        raise InvalidArgument(field_name, "must not be negative (0: the group may owe nothing)")
    if amount >= MAX_AMOUNT:
        raise InvalidArgument(field_name, "must be below 10^18")
    if amount != amount.quantize(_quantum(exponent)):
        raise InvalidArgument(field_name, f"must have at most {exponent} decimals in {currency_code}")
    return amount


def parse_percent(field_name: str, text: str) -> Decimal:
    try:
        percent = Decimal(text.strip())
    except InvalidOperation:
        raise InvalidArgument(field_name, 'must be a decimal string, e.g. "80" or "87.5"') from None
    if not percent.is_finite() or percent <= 0 or percent > MAX_PERCENT:
        raise InvalidArgument(field_name, f"must be greater than 0 and at most {MAX_PERCENT}")
    if percent != percent.quantize(Decimal("0.01")):
        raise InvalidArgument(field_name, "must have at most 2 decimals")
    return percent


def check_thresholds(field_name: str, thresholds: Sequence[Threshold]) -> tuple[Threshold, ...]:
    if len(thresholds) > MAX_THRESHOLDS:
        raise InvalidArgument(field_name, f"must be at most {MAX_THRESHOLDS}")
    seen: set[str] = set()
    for i, threshold in enumerate(thresholds):
        if threshold.key in seen:
            raise InvalidArgument(f"{field_name}[{i}]", "gives a level given before: each level once")
        seen.add(threshold.key)
    return tuple(thresholds)


def check_temporary(
    field_name: str, limit: Decimal | None, expire_time: datetime | None, now: datetime
) -> tuple[Decimal | None, datetime | None]:
    """A temporary limit comes with its expire time, in the future, and vice versa."""
    if limit is None and expire_time is None:
        return None, None
    if limit is None:
        raise InvalidArgument(f"{field_name}.temporary_credit_limit", "is required with temporary_limit_expire_time")
    if expire_time is None:
        raise InvalidArgument(f"{field_name}.temporary_limit_expire_time", "is required with temporary_credit_limit")
    if expire_time <= now:
        raise InvalidArgument(f"{field_name}.temporary_limit_expire_time", "must be in the future")
    return limit, expire_time


@dataclass(frozen=True)
class Amount:
    """An amount as a request carries it, before it is checked against the group's currency."""

    amount: Decimal
    currency_code: str


@dataclass(frozen=True)
class ThresholdSpec:
    """A threshold as a request carries it: exactly one of the two is set."""

    amount: Amount | None = None
    percent: str | None = None


POLICY_FIELDS = ("credit_limit", "temporary_credit_limit", "thresholds")
# "temporary_limit_expire_time" names the same pair as "temporary_credit_limit".
_PATH_ALIASES = {"temporary_limit_expire_time": "temporary_credit_limit"}


def policy_paths(paths: Sequence[str]) -> frozenset[str]:
    """The policy fields an update mask names; every field when it names none."""
    if not paths:
        return frozenset(POLICY_FIELDS)
    named = set()
    for path in paths:
        field_name = _PATH_ALIASES.get(path, path)
        if field_name not in POLICY_FIELDS:
            raise InvalidArgument("update_mask", f"{path!r} is not a credit policy field: {', '.join(POLICY_FIELDS)}")
        named.add(field_name)
    return frozenset(named)


def updated_policy(
    current: CreditPolicy,
    paths: frozenset[str],
    credit_limit: Amount | None,
    temporary_limit: Amount | None,
    temporary_limit_expire_time: datetime | None,
    thresholds: Sequence[ThresholdSpec],
    currency_code: str,
    exponent: int,
    now: datetime,
) -> CreditPolicy:
    """`current` with the fields in `paths` set from the request (an unset field clears), checked
    against the group's currency; fields outside `paths` are kept as they are."""
    field = "credit_policy"
    policy = current
    if "credit_limit" in paths:
        limit = None
        if credit_limit is not None:
            limit = check_limit(
                f"{field}.credit_limit", credit_limit.amount, credit_limit.currency_code, currency_code, exponent
            )
        policy = replace(policy, credit_limit=limit)
    if "temporary_credit_limit" in paths:
        temporary = None
        if temporary_limit is not None:
            temporary = check_limit(
                f"{field}.temporary_credit_limit",
                temporary_limit.amount,
                temporary_limit.currency_code,
                currency_code,
                exponent,
            )
        temporary, expire_time = check_temporary(field, temporary, temporary_limit_expire_time, now)
        policy = replace(policy, temporary_limit=temporary, temporary_limit_expire_time=expire_time)
    if "thresholds" in paths:
        checked = []
        for i, spec in enumerate(thresholds):
            name = f"{field}.thresholds[{i}]"
            if spec.amount is not None:
                level = check_limit(
                    f"{name}.amount", spec.amount.amount, spec.amount.currency_code, currency_code, exponent
                )
                if level == 0:
                    raise InvalidArgument(f"{name}.amount", "must be greater than zero")
                checked.append(Threshold(amount=level))
            elif spec.percent is not None:
                checked.append(Threshold(percent=parse_percent(f"{name}.percent", spec.percent)))
            else:
                raise InvalidArgument(name, "must give an amount or a percent")
        policy = replace(policy, thresholds=check_thresholds(f"{field}.thresholds", checked))
    return policy
