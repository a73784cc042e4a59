"""What a reconciliation finds: differences (the books disagree) and notices (what was not checked)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class Difference:
    """One thing that does not match.

    ``check`` is a stable dotted name (``balance.charge_missing``) scripts can filter on; ``what``
    says it in words; ``ids`` names the records (account, charge, bill...); ``expected`` and
    ``found`` are what one book says and what the other has (``"-"`` when there is nothing)."""

    check: str
    what: str
    account_id: str = ""
    ids: dict[str, str] = field(default_factory=dict)
    expected: str = ""
    found: str = ""

    def line(self) -> str:
        ids = " ".join(f"{key}={value}" for key, value in self.ids.items())
        account = f" account={self.account_id}" if self.account_id else ""
        values = f": expected {self.expected}, found {self.found}" if self.expected or self.found else ""
        return f"[{self.check}]{account}{' ' + ids if ids else ''} {self.what}{values}"


@dataclass
class Report:
    differences: list[Difference] = field(default_factory=list)
    # Checks skipped (no ERP configured...), and state that makes differences likely (outbox backlog).
    notices: list[str] = field(default_factory=list)
    # How many records each check looked at, so "0 differences" is visibly not "0 records read".
    checked: dict[str, int] = field(default_factory=dict)
    # Events committed but not yet published, per service: differences may be in flight.
    outbox_backlog: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.differences

    def add(
        self,
        check: str,
        what: str,
        account_id: object = "",
        expected: object = "",
        found: object = "",
        **ids: object,
    ) -> None:
        self.differences.append(
            Difference(
                check,
                what,
                str(account_id or ""),
                {key: str(value) for key, value in ids.items()},
                _text(expected),
                _text(found),
            )
        )

    def count(self, what: str, n: int) -> None:
        self.checked[what] = self.checked.get(what, 0) + n

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "differences": [asdict(d) for d in self.differences],
            "notices": list(self.notices),
            "checked": dict(self.checked),
            "outbox_backlog": dict(self.outbox_backlog),
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True)

    def text(self) -> str:
        lines = [f"notice: {n}" for n in self.notices]
        lines += [d.line() for d in self.differences]
        checked = ", ".join(f"{k} {v}" for k, v in sorted(self.checked.items()))
        lines.append(f"checked: {checked}")
        backlog = {k: v for k, v in self.outbox_backlog.items() if v}
        if backlog:
            lines.append(f"outbox backlog (events not yet published): {backlog}")
        lines.append(f"{len(self.differences)} difference(s)")
        return "\n".join(lines)


def _text(value: object) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, Decimal):
        return format_amount(value)
    return str(value)


def format_amount(value: Decimal) -> str:
    """A NUMERIC(38, 9) as written by hand: 12.5 rather than 12.500000000."""
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text
