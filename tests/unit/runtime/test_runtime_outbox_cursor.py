"""OutboxCursor: where the relay's next pass starts reading (pure bookkeeping, no database)."""

from __future__ import annotations

from evolutivo_runtime.messaging.outbox_cursor import OutboxCursor
from hypothesis import given
from hypothesis import strategies as st

SETTLE, SWEEP = 1.0, 30.0


def cursor_after_first_sweep(seqs: list[int], now: float = 0.0) -> OutboxCursor:
    cursor = OutboxCursor(SETTLE, SWEEP)
    assert cursor.start(now) == 0  # the first pass reads the whole outbox
    cursor.published(now, seqs, full=False)
    return cursor


def test_passes_read_after_the_highest_seq_published_when_none_is_missing() -> None:
    cursor = cursor_after_first_sweep([1, 2, 3])
    assert cursor.start(0.1) == 3
    cursor.published(0.1, [4, 5], full=False)
    assert cursor.start(0.2) == 5


def test_an_unseen_seq_below_the_highest_holds_passes_back_until_it_is_published() -> None:
    cursor = cursor_after_first_sweep([1, 2, 4, 6])  # 3 and 5 not committed yet
    assert cursor.start(0.5) == 2
    cursor.published(0.5, [3, 7], full=False)
    assert cursor.start(0.6) == 4
    cursor.published(0.6, [5], full=False)
    assert cursor.start(0.7) == 7


def test_a_gap_is_given_up_after_the_settle_time_and_one_sweep_looks_for_it() -> None:
    cursor = cursor_after_first_sweep([1, 2, 4])
    assert cursor.start(0.9) == 2
    assert cursor.start(1.0) == 0  # given up: a sweep
    assert cursor.start(1.1) == 4  # then after the highest again
    assert cursor.start(5.0) == 4


def test_a_gap_given_up_waits_a_settle_time_after_the_last_sweep() -> None:
    cursor = cursor_after_first_sweep([1, 3], now=0.0)
    assert cursor.start(0.5) == 1
    cursor.published(0.5, [5], full=False)  # 4 missing since 0.5
    assert cursor.start(1.0) == 0  # 2 given up; the last sweep was at 0.0
    assert cursor.start(1.2) == 3
    assert cursor.start(1.6) == 5  # 4 given up, but the last sweep was 0.6 s ago
    assert cursor.start(2.0) == 0


def test_a_sweep_runs_every_sweep_seconds() -> None:
    cursor = cursor_after_first_sweep([1, 2])
    assert cursor.start(SWEEP - 0.1) == 2
    assert cursor.start(SWEEP) == 0
    assert cursor.start(SWEEP + 0.1) == 2
    assert cursor.start(2 * SWEEP) == 0


def test_after_a_full_batch_the_next_pass_reads_on_from_its_last_seq() -> None:
    cursor = cursor_after_first_sweep([1, 3])  # 2 missing
    cursor.published(0.1, [4, 5, 6], full=True)
    assert cursor.start(0.2) == 6  # the rest of the backlog first
    assert cursor.start(0.3) == 1  # then from the gap again


def test_a_sweep_asked_for_reads_the_whole_outbox() -> None:
    cursor = cursor_after_first_sweep([1, 2])
    assert cursor.start(0.1, sweep=True) == 0


def test_the_seqs_below_the_first_one_published_are_a_gap_too() -> None:
    """A relay that starts cannot know which lower seqs are still to commit."""
    cursor = cursor_after_first_sweep([5, 7])
    assert cursor.start(0.1) == 0
    cursor.published(0.1, [1, 2], full=False)
    assert cursor.start(0.2) == 2
    cursor.published(0.2, [3, 4, 6], full=False)
    assert cursor.start(0.3) == 7


def test_a_seq_given_up_on_and_published_by_a_sweep_changes_nothing() -> None:
    cursor = cursor_after_first_sweep([1, 3, 4])
    assert cursor.start(1.0) == 0  # 2 given up: a sweep
    cursor.published(1.0, [2], full=False)
    assert cursor.start(1.1) == 4


@st.composite
def passes(draw: st.DrawFn) -> list[tuple[float, list[int]]]:
    """Passes at increasing times, each publishing some seqs never published before."""
    unpublished = list(range(1, 60))
    now, found = 0.0, []
    for _ in range(draw(st.integers(1, 25))):
        now += draw(st.floats(0.01, 0.7))
        chosen = draw(st.lists(st.sampled_from(unpublished), max_size=8, unique=True)) if unpublished else []
        for seq in chosen:
            unpublished.remove(seq)
        found.append((now, sorted(chosen)))
    return found


@given(passes())
def test_an_unseen_seq_younger_than_the_settle_time_is_always_read_by_the_next_pass(
    history: list[tuple[float, list[int]]],
) -> None:
    """The property the relay rests on: a pass skips a seq below the highest published only once
    the seq has been missing for `settle_seconds` (a sweep finds it later)."""
    cursor = OutboxCursor(SETTLE, SWEEP)
    published: set[int] = set()
    missing_since: dict[int, float] = {}
    for now, seqs in history:
        after = cursor.start(now)
        for seq, since in missing_since.items():
            if seq not in published and now - since < SETTLE:
                assert after < seq, f"a pass at {now} reads after {after} and skips {seq}"
        cursor.published(now, seqs, full=False)
        published.update(seqs)
        for seq in range(1, max(published, default=0)):
            if seq not in published:
                missing_since.setdefault(seq, now)
