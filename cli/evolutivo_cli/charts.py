"""Pictures in the terminal: a sparkline of a balance over time, bars of the aging buckets."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from rich.table import Table
from rich.text import Text

from evolutivo_cli.render import amount

_BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[Decimal], width: int = 60) -> str:
    """One block character per value (resampled to at most ``width``): low to high, min to max."""
    if not values:
        return ""
    if len(values) > width:
        # Keep the last value of each slice: a balance is a level, its latest reading counts.
        step = len(values) / width
        values = [values[min(len(values) - 1, int((i + 1) * step) - 1)] for i in range(width)]
    low, high = min(values), max(values)
    if high == low:
        return _BLOCKS[len(_BLOCKS) // 2] * len(values)
    span = high - low
    last = len(_BLOCKS) - 1
    return "".join(_BLOCKS[int(((v - low) / span * last).to_integral_value())] for v in values)


def running_balance(moves: Sequence[tuple[datetime, Decimal]]) -> list[tuple[datetime, Decimal]]:
    """The balance after each move, oldest first (moves in any order)."""
    total = Decimal(0)
    out: list[tuple[datetime, Decimal]] = []
    for when, delta in sorted(moves, key=lambda move: move[0]):
        total += delta
        out.append((when, total))
    return out


def bars(rows: Sequence[tuple[str, Decimal]], currency: str, width: int = 40, title: str | None = None) -> Table:
    """A horizontal bar per row, scaled to the largest; amounts beside them."""
    top = max((value for _, value in rows), default=Decimal(0))
    out = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 1))
    out.add_column(style="bold")
    out.add_column()
    out.add_column(justify="right")
    for label, value in rows:
        length = 0 if top <= 0 or value <= 0 else max(1, int((value / top * width).to_integral_value()))
        style = _bucket_style(label)
        out.add_row(label, Text("█" * length, style=style), amount(value, currency))
    return out


def _bucket_style(label: str) -> str:
    return {
        "current": "green",
        "1-30": "yellow",
        "31-60": "dark_orange",
        "61-90": "red",
        "90+": "bold red",
    }.get(label, "cyan")
