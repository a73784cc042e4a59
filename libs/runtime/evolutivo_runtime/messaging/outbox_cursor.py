"""Where the outbox relay's next pass starts reading.

The relay deletes what it publishes, but deleted rows stay in the table and its index until a
vacuum removes them: a pass that reads from the start of the outbox walks all of them, hundreds of
thousands after a bill run (docs/performance.md, "Thirteenth round"). So a pass reads after the
seqs already published instead.

Seqs are taken before commit, so a transaction can commit a lower seq after a pass published
higher ones. The cursor keeps the seqs below the highest one it published that it has not seen
(gaps) and reads from the lowest of them until it knows no transaction can still commit one:
a transaction that writes the outbox holds a RowExclusiveLock on it from before it takes its seqs
until it ends, so once every transaction that held one when the gap was first checked has ended
(`writers_in_progress`, read before the pass's own snapshot), the pass that follows sees all of
the gap that will ever commit, and after it the gap goes. Nothing is given up on a timer, so a
slow commit is not overtaken by the ones after it. A transaction that never ends (a session left
idle in a transaction that wrote the outbox) holds its gaps, and passes read from the oldest, for
as long as it lasts: `oldest_gap` tells the relay to warn about it. A sweep, a pass over the whole
outbox, runs every `sweep_seconds` all the same, for what no bookkeeping foresees (a sequence set
back by a restore), and at stop.

The relay must read at READ COMMITTED, so that its read's snapshot is taken after its check of the
writers, and outbox rows must be deleted only by relays holding the leader lock, so that a read
that found fewer rows than a batch did read everything after `after`.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Sequence
from dataclasses import dataclass

# Past this many gaps (rolled-back seqs piling up behind a writer that does not end), they are
# merged into one: reading from the oldest is what the cursor does anyway, and a merged gap only
# spans seqs that can no longer appear.
MAX_GAPS = 1000


@dataclass
class _Gap:
    first: int
    last: int
    since: float  # when a pass first found it
    # The outbox writers in progress when the gap was first checked and still in progress at the
    # last check; None until the first check.
    writers: frozenset[str] | None = None


class OutboxCursor:
    def __init__(self, sweep_seconds: float) -> None:
        self._sweep_every = sweep_seconds
        # The highest seq published. From 0: the seqs below the first one published are a gap too,
        # since the relay cannot know which of them are still to commit.
        self._top = 0
        self._gaps: list[_Gap] = []  # ascending, all below _top
        self._next_sweep = float("-inf")  # the first pass is a sweep
        self._sweeping = False  # this pass is a sweep (counted as done once a pass led by this relay completes it)
        self._began = 0.0
        self._continue_after: int | None = None  # after a full batch, the next pass reads on from its last seq

    def begin_pass(self, now: float, *, sweep: bool = False) -> int:
        """Starts a pass; returns the seq it reads after (0: the whole outbox, a sweep)."""
        self._began = now
        continue_after, self._continue_after = self._continue_after, None
        self._sweeping = sweep or now >= self._next_sweep
        if self._sweeping:
            return 0
        if continue_after is not None:
            return continue_after
        if self._gaps:
            return self._gaps[0].first - 1
        return self._top

    def oldest_gap(self) -> tuple[int, float, frozenset[str]] | None:
        """The oldest gap's first seq, since when it waits and on which writers (None: none)."""
        if not self._gaps:
            return None
        gap = min(self._gaps, key=lambda gap: gap.since)
        return gap.first, gap.since, gap.writers or frozenset()

    @property
    def checks_writers(self) -> bool:
        """Whether this pass must first learn whether it leads and which outbox writers are in
        progress (`writers_in_progress`): a gap waits on them, or a sweep must not count unless led."""
        return bool(self._gaps) or self._sweeping

    def writers_in_progress(self, writers: Collection[str]) -> None:
        """The transactions holding a lock on the outbox, read in the pass's transaction before its
        read (so every one of them that ended since is visible to the read)."""
        now_writing = frozenset(writers)
        for gap in self._gaps:
            gap.writers = now_writing if gap.writers is None else gap.writers & now_writing

    def published(self, after: int, seqs: Sequence[int], *, full: bool, complete: bool = True) -> None:
        """Notes what a pass that read after `after` published (ascending); `full`: it found a whole
        batch; `complete`: every row it found was published (not a pass whose publishes partly
        failed, whose failed rows stay in the outbox)."""
        for seq in seqs:
            self._note(seq)
        if len(self._gaps) > MAX_GAPS:
            self._gaps = [_merged(self._gaps)]
        if full and seqs:
            self._continue_after = seqs[-1]
        if not complete:
            return
        if self._sweeping:
            self._sweeping, self._next_sweep = False, self._began + self._sweep_every
        # A gap whose writers had all ended goes once this pass read the whole of it.
        reached = seqs[-1] if full and seqs else None
        self._gaps = [
            gap
            for gap in self._gaps
            if gap.writers is None or gap.writers or after >= gap.first or (reached is not None and reached < gap.last)
        ]

    def _note(self, seq: int) -> None:
        if seq > self._top:
            if seq > self._top + 1:
                self._gaps.append(_Gap(self._top + 1, seq - 1, self._began))
            self._top = seq
            return
        i = bisect.bisect_right(self._gaps, seq, key=lambda gap: gap.first) - 1
        if i < 0 or self._gaps[i].last < seq:
            return  # not in a gap: found by a sweep
        gap = self._gaps[i]
        pieces = []
        if gap.first < seq:
            pieces.append(_Gap(gap.first, seq - 1, gap.since, gap.writers))
        if seq < gap.last:
            pieces.append(_Gap(seq + 1, gap.last, gap.since, gap.writers))
        self._gaps[i : i + 1] = pieces


def _merged(gaps: Sequence[_Gap]) -> _Gap:
    """One gap over all of these: it waits on every writer any of them waits on."""
    writers: frozenset[str] | None = frozenset()
    for gap in gaps:
        writers = None if writers is None or gap.writers is None else writers | gap.writers
    return _Gap(gaps[0].first, gaps[-1].last, min(gap.since for gap in gaps), writers)
