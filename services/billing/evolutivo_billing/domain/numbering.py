"""Bill numbers: a configurable format (BILLING_NUMBER_FORMAT) over gapless series.

The format is a Python format string with two fields: `{year}` (the issue date's year) and
`{seq}` (the number's place in its series, with an optional integer spec such as `{seq:06d}`).
The series a number comes from is the format rendered without its `{seq}` field, stripped of the
separators around it: "F-{year}-{seq:06d}" numbers bills issued in 2031 "F-2031-000001",
"F-2031-000002"... in the series "F-2031", and starts again at 1 in "F-2032"."""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import date

from evolutivo_billing.domain.bills import BillNumber

DEFAULT_FORMAT = "F-{year}-{seq:06d}"
_FIELDS = {"year", "seq"}
_SEPARATORS = " -_/.#"


class InvalidNumberFormat(ValueError):
    pass


@dataclass(frozen=True)
class NumberFormat:
    template: str = DEFAULT_FORMAT

    def __post_init__(self) -> None:
        try:
            parsed = list(string.Formatter().parse(self.template))
        except ValueError as exc:
            raise InvalidNumberFormat(f"bill number format {self.template!r}: {exc}") from None
        fields = [name for _, name, _, _ in parsed if name is not None]
        if fields.count("seq") != 1:
            raise InvalidNumberFormat(f"bill number format {self.template!r} must have exactly one {{seq}} field")
        unknown = set(fields) - _FIELDS
        if unknown:
            raise InvalidNumberFormat(
                f"bill number format {self.template!r} has unknown fields {sorted(unknown)}: only year and seq"
            )
        if any(conversion for _, name, _, conversion in parsed if name is not None):
            raise InvalidNumberFormat(f"bill number format {self.template!r}: no !r / !s conversions")
        try:
            self.render(date(2031, 1, 1), 1)
        except (ValueError, TypeError) as exc:
            raise InvalidNumberFormat(f"bill number format {self.template!r}: {exc}") from None

    def series(self, issue_date: date) -> str:
        """The series key of bills issued on `issue_date`: the format without its sequence."""
        parts = []
        for literal, name, spec, _ in string.Formatter().parse(self.template):
            parts.append(literal)
            if name == "year":
                parts.append(format(issue_date.year, spec or ""))
            elif name == "seq":
                parts.append("\x00")
        before, _, after = "".join(parts).partition("\x00")
        return (before.rstrip(_SEPARATORS) + " " + after.lstrip(_SEPARATORS)).strip()

    def render(self, issue_date: date, sequence: int) -> str:
        return self.template.format(year=issue_date.year, seq=sequence)

    def number(self, issue_date: date, sequence: int) -> BillNumber:
        if sequence < 1:
            raise InvalidNumberFormat(f"a series starts at 1, not {sequence}")
        return BillNumber(self.render(issue_date, sequence), self.series(issue_date), sequence)
