"""OutboxCursor: where the relay's next pass starts reading (pure bookkeeping, no database)."""

from __future__ import annotations

from dataclasses import dataclass, field

from evolutivo_runtime.messaging.outbox_cursor import MAX_GAPS, OutboxCursor
from hypothesis import given, settings
from hypothesis import strategies as st

SWEEP = 60.0


def published_by_first_sweep(seqs: list[int]) -> OutboxCursor:
    cursor = OutboxCursor(SWEEP)
    assert cursor.begin_pass(0.0) == 0  # the first pass reads the whole outbox
    assert cursor.checks_writers  # a sweep counts only once a pass this relay led completes it
    cursor.writers_in_progress([])
    cursor.published(0, seqs, full=False)
    return cursor


def one_pass(cursor: OutboxCursor, now: float, writers: list[str], seqs: list[int], full: bool = False) -> int:
    """A pass this relay leads: returns where it read from."""
    after = cursor.begin_pass(now)
    if cursor.checks_writers:
        cursor.writers_in_progress(writers)
    cursor.published(after, seqs, full=full)
    return after


def test_passes_read_after_the_highest_seq_published_when_none_is_missing() -> None:
    cursor = published_by_first_sweep([1, 2, 3])
    assert cursor.begin_pass(0.1) == 3
    assert not cursor.checks_writers
    cursor.published(3, [4, 5], full=False)
    assert cursor.begin_pass(0.2) == 5


def test_an_unseen_seq_holds_passes_back_until_its_writers_ended_and_a_pass_read_it() -> None:
    cursor = published_by_first_sweep([1, 2, 4])  # 3 not committed yet
    assert one_pass(cursor, 0.1, ["tx-a", "tx-b"], [5]) == 2  # first check: a and b may hold 3
    assert one_pass(cursor, 0.2, ["tx-b", "tx-c"], []) == 2  # b still in progress (c came later)
    assert one_pass(cursor, 0.3, ["tx-c"], []) == 2  # a and b ended: this pass sees what they committed
    assert cursor.begin_pass(0.4) == 5


def test_a_slow_commit_is_waited_for_however_long_it_takes() -> None:
    cursor = published_by_first_sweep([1, 2, 4])
    for second in range(1, 50):
        assert one_pass(cursor, float(second), ["tx-slow"], []) == 2
    assert one_pass(cursor, 50.0, ["tx-slow"], [3]) == 2  # committed: published, the gap filled
    assert cursor.begin_pass(50.1) == 4


def test_a_gap_is_not_dropped_before_its_writers_were_read_once() -> None:
    cursor = published_by_first_sweep([1, 2])
    cursor.begin_pass(0.1)
    assert not cursor.checks_writers
    cursor.published(2, [4], full=False)  # 3 missing: its writers are unknown yet
    assert one_pass(cursor, 0.2, [], []) == 2  # none in progress: this pass reads it one last time
    assert cursor.begin_pass(0.3) == 4


def test_the_seqs_below_the_first_one_published_are_a_gap_too() -> None:
    """A relay that starts cannot know which lower seqs are still to commit."""
    cursor = published_by_first_sweep([5, 7])
    assert one_pass(cursor, 0.1, ["tx-a"], [1, 2]) == 0
    assert one_pass(cursor, 0.2, ["tx-a"], [3, 4, 6]) == 2
    assert cursor.begin_pass(0.3) == 7


def test_a_gap_goes_only_after_a_pass_that_read_all_of_it() -> None:
    cursor = published_by_first_sweep([1, 2, 10])  # 3-9 missing
    assert one_pass(cursor, 0.1, ["tx-a"], [11, 12, 13], full=False) == 2
    # a ended; the pass reads from the gap, but its batch is full before the gap's end
    assert one_pass(cursor, 0.2, [], [3, 4], full=True) == 2
    assert one_pass(cursor, 0.3, [], [5], full=False) == 4  # the continuation: read on, rest of the gap
    assert cursor.begin_pass(0.4) == 13


def test_a_gap_a_full_batch_stopped_in_stays_when_the_pass_after_does_not_lead() -> None:
    cursor = published_by_first_sweep([1, 2, 10])  # 3-9 missing
    one_pass(cursor, 0.1, ["tx-a"], [])
    assert one_pass(cursor, 0.2, [], [3, 4], full=True) == 2  # a ended; the batch stops in the gap
    assert cursor.begin_pass(0.3) == 4  # another relay leads this one: nothing read, nothing noted
    assert one_pass(cursor, 0.4, [], [5, 6, 7, 8, 9]) == 4
    assert cursor.begin_pass(0.5) == 10


def test_after_a_full_batch_the_next_pass_reads_on_from_its_last_seq() -> None:
    cursor = published_by_first_sweep([1, 3])  # 2 missing
    assert one_pass(cursor, 0.1, ["tx-a"], [4, 5, 6], full=True) == 1
    assert one_pass(cursor, 0.2, [], [7], full=False) == 6  # the backlog first; the gap not read: kept
    assert one_pass(cursor, 0.3, [], [], full=False) == 1  # read from the gap: now it goes
    assert cursor.begin_pass(0.4) == 7


def test_a_pass_whose_publishes_partly_failed_drops_no_gap() -> None:
    cursor = published_by_first_sweep([1, 2, 4])
    one_pass(cursor, 0.1, ["tx-a"], [])
    after = cursor.begin_pass(0.2)
    cursor.writers_in_progress([])
    cursor.published(after, [5], full=False, complete=False)  # 3 committed but failed: still in the outbox
    assert cursor.begin_pass(0.3) == 2


def test_a_sweep_runs_every_sweep_seconds_and_counts_once_completed() -> None:
    cursor = published_by_first_sweep([1, 2])
    assert one_pass(cursor, SWEEP - 0.1, [], []) == 2
    assert cursor.begin_pass(SWEEP) == 0
    assert cursor.checks_writers  # the relay learns whether it leads; it did not: nothing noted
    assert cursor.begin_pass(SWEEP + 0.1) == 0  # still due
    cursor.writers_in_progress([])
    cursor.published(0, [], full=False)
    assert cursor.begin_pass(SWEEP + 0.2) == 2
    assert cursor.begin_pass(2 * SWEEP + 0.1) == 0


def test_gaps_past_the_cap_are_merged_into_one_that_waits_on_all_their_writers() -> None:
    cursor = published_by_first_sweep([1])
    one_pass(cursor, 0.1, ["tx-stuck"], [2 * n + 1 for n in range(1, MAX_GAPS + 2)])  # every even seq missing
    top = 2 * MAX_GAPS + 3
    assert cursor.oldest_gap() == (2, 0.1, frozenset())  # merged: its writers not read yet
    assert one_pass(cursor, 0.2, ["tx-stuck", "tx-b"], []) == 1
    assert cursor.oldest_gap() == (2, 0.1, frozenset({"tx-stuck", "tx-b"}))
    assert one_pass(cursor, 0.3, ["tx-stuck"], []) == 1
    assert one_pass(cursor, 0.4, [], []) == 1  # the stuck one ended: the last read of the gap
    assert cursor.oldest_gap() is None
    assert cursor.begin_pass(0.5) == top


def test_the_oldest_gap_says_since_when_and_on_which_writers_it_waits() -> None:
    cursor = published_by_first_sweep([1, 3])
    assert cursor.oldest_gap() == (2, 0.0, frozenset())
    one_pass(cursor, 0.5, ["tx-a"], [5])
    assert cursor.oldest_gap() == (2, 0.0, frozenset({"tx-a"}))
    one_pass(cursor, 0.6, ["tx-b"], [])  # a ended: 2 goes; 4 waits on b, in progress at its first check
    assert cursor.oldest_gap() == (4, 0.5, frozenset({"tx-b"}))


def test_a_sweep_asked_for_reads_the_whole_outbox() -> None:
    cursor = published_by_first_sweep([1, 2])
    assert cursor.begin_pass(0.1, sweep=True) == 0


@dataclass
class Outbox:
    """A model of the outbox: transactions take seqs, then commit or roll back."""

    next_seq: int = 1
    in_progress: dict[str, list[int]] = field(default_factory=dict)
    committed: set[int] = field(default_factory=set)
    published: list[int] = field(default_factory=list)

    def read(self, after: int, batch: int) -> list[int]:
        taken = set(self.published)
        return sorted(s for s in self.committed if s > after and s not in taken)[:batch]


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[str, int]]:
    kinds = st.sampled_from(["begin", "commit", "rollback", "pass", "not leading", "partly failed"])
    steps = st.tuples(kinds, st.integers(0, 5))
    return draw(st.lists(steps, min_size=1, max_size=80))


def relay_pass(cursor: OutboxCursor, outbox: Outbox, now: float, batch: int, failing: int | None = None) -> None:
    """A pass this relay leads; `failing`: every other publish of it fails (those rows stay), from
    the first one (0) or the second (1)."""
    after = cursor.begin_pass(now)
    if cursor.checks_writers:
        cursor.writers_in_progress(outbox.in_progress)
    found = outbox.read(after, batch)
    if failing is not None:
        acked = found[1 - failing % 2 :: 2]
        outbox.published.extend(acked)
        cursor.published(after, acked, full=False, complete=False)
    else:
        outbox.published.extend(found)
        cursor.published(after, found, full=len(found) == batch)


@settings(max_examples=1000)
@given(histories(), st.integers(1, 4))
def test_every_committed_seq_is_published_once_and_none_waits_for_a_sweep(
    history: list[tuple[str, int]], batch: int
) -> None:
    """Transactions take seqs and commit or roll back in any order around the passes of two relays
    (as two replicas: each pass led by one of them), some of which publish only part of what they
    read; no sweep ever runs after the first. Once they have all ended, a few passes publish every committed
    seq, each once, and then read after the last one."""
    relays = [OutboxCursor(sweep_seconds=float("inf")), OutboxCursor(sweep_seconds=float("inf"))]
    outbox, now = Outbox(), 0.0
    for number, (step, pick) in enumerate(history):
        now += 0.01
        open_ = sorted(outbox.in_progress)
        if step == "begin":
            seqs = list(range(outbox.next_seq, outbox.next_seq + 1 + pick % 3))
            outbox.next_seq += len(seqs)
            outbox.in_progress[f"tx-{number}"] = seqs
        elif step in ("commit", "rollback") and open_:
            seqs = outbox.in_progress.pop(open_[pick % len(open_)])
            if step == "commit":
                outbox.committed.update(seqs)
        elif step == "pass":
            relay_pass(relays[pick % 2], outbox, now, batch)
        elif step == "not leading":  # or failed before its read: nothing read, nothing noted
            relays[pick % 2].begin_pass(now)
        elif step == "partly failed":
            relay_pass(relays[pick % 2], outbox, now, batch, failing=pick // 2)
    for name in sorted(outbox.in_progress):
        outbox.committed.update(outbox.in_progress.pop(name))
    for n in range(4 * len(outbox.committed) + 10):
        now += 0.01
        relay_pass(relays[n % 2], outbox, now, batch)
    assert sorted(outbox.published) == sorted(outbox.committed)
    assert len(outbox.published) == len(set(outbox.published))
    assert [relay.oldest_gap() for relay in relays] == [None, None]  # nothing holds either back
