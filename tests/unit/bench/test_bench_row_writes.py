"""bench.row_writes: rows written per operation from two readings of PostgreSQL's counters."""

from __future__ import annotations

from bench.row_writes import by_service, per_operation


def test_rows_per_operation_by_table_largest_first() -> None:
    before = {"billing.bill_items": 1_000, "billing.outbox": 0, "balance.inbox": 7}
    after = {"billing.bill_items": 3_000, "billing.outbox": 1_200, "balance.inbox": 207, "billing.bills": 200}
    assert per_operation(before, after, 200) == {
        "billing.bill_items": 10.0,
        "billing.outbox": 6.0,
        "balance.inbox": 1.0,
        "billing.bills": 1.0,
    }
    assert list(per_operation(before, after, 200))[:2] == ["billing.bill_items", "billing.outbox"]


def test_unchanged_tables_are_left_out_and_services_summed() -> None:
    per_table = per_operation({"a.x": 5, "a.y": 1, "b.z": 0}, {"a.x": 5, "a.y": 3, "b.z": 4}, 2)
    assert per_table == {"b.z": 2.0, "a.y": 1.0}
    assert by_service({"a.x": 1.5, "a.y": 2.0, "b.z": 4.0}) == {"a": 3.5, "b": 4.0}
