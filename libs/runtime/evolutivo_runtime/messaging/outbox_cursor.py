"""Where the outbox relay's next pass starts reading.

The relay deletes what it publishes, but deleted rows stay in the table and its index until a
vacuum removes them: a pass that reads from the start of the outbox walks all of them, hundreds of
thousands after a bill run (docs/performance.md, "Thirteenth round"). So a pass reads after the
seqs already published instead. Seqs are taken before commit, though, so a transaction can commit
a lower seq after a pass published higher ones: the cursor keeps the seqs it has not seen below the
highest one it published (gaps) and reads from the lowest of them. A gap is given up after
`settle_seconds` (a rolled-back transaction, or another relay replica that published it, leaves
one for good), and then a sweep, a pass from the start of the outbox, publishes whatever of it has
committed meanwhile. A sweep also runs every `sweep_seconds`, for a transaction that committed
later still. No row is ever skipped for good: it waits at most for the next sweep.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class _Gap:
    first: int
    last: int
    since: float  # when a pass first published a seq above it


class OutboxCursor:
    def __init__(self, settle_seconds: float, sweep_seconds: float) -> None:
        self._settle = settle_seconds
        self._sweep_every = sweep_seconds
        # The highest seq published. From 0: seqs below the first one published are a gap too, since
        # the relay cannot know which of them are still to commit.
        self._top = 0
        self._gaps: list[_Gap] = []  # ascending, all below _top
        self._next_sweep = float("-inf")  # the first pass is a sweep
        self._last_sweep = float("-inf")
        self._gave_up = False  # a gap was given up since the last sweep
        self._continue_after: int | None = None  # after a full batch, the next pass reads on from its last seq

    def start(self, now: float, *, sweep: bool = False) -> int:
        """The seq the pass starting now reads after (0: the whole outbox, a sweep)."""
        kept = [gap for gap in self._gaps if gap.since > now - self._settle]
        if len(kept) != len(self._gaps):
            self._gaps, self._gave_up = kept, True
        continue_after, self._continue_after = self._continue_after, None
        if sweep or now >= self._next_sweep or (self._gave_up and now - self._last_sweep >= self._settle):
            self._next_sweep, self._last_sweep, self._gave_up = now + self._sweep_every, now, False
            return 0
        if continue_after is not None:
            return continue_after
        if self._gaps:
            return self._gaps[0].first - 1
        return self._top

    def published(self, began: float, seqs: Sequence[int], *, full: bool) -> None:
        """Notes the seqs (ascending) a pass that began at `began` published; `full`: it found a
        whole batch, so the next pass reads on from its last seq."""
        for seq in seqs:
            self._note(seq, began)
        if full and seqs:
            self._continue_after = seqs[-1]

    def _note(self, seq: int, now: float) -> None:
        if seq > self._top:
            if seq > self._top + 1:
                self._gaps.append(_Gap(self._top + 1, seq - 1, now))
            self._top = seq
            return
        i = bisect.bisect_right(self._gaps, seq, key=lambda gap: gap.first) - 1
        if i < 0 or self._gaps[i].last < seq:
            return  # not in a gap: a seq given up on, published by a sweep
        gap = self._gaps[i]
        pieces = []
        if gap.first < seq:
            pieces.append(_Gap(gap.first, seq - 1, gap.since))
        if seq < gap.last:
            pieces.append(_Gap(seq + 1, gap.last, gap.since))
        self._gaps[i : i + 1] = pieces
