"""Bulk inserts over arrays (evolutivo_runtime.bulk) on a real PostgreSQL: every column type the
services use survives exactly (uuid, exact numeric, text, timestamptz, NULL), rows go in in the
order given, a conflicting row is skipped and only the rows inserted are returned."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from evolutivo_runtime.bulk import arrays, unnest_insert
from evolutivo_runtime.db import create_engine
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    MetaData,
    Numeric,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    select,
)
from support.databases import EmptyDatabase

metadata = MetaData()
entries = Table(
    "entries",
    metadata,
    Column("entry_id", Uuid, primary_key=True),
    Column("seq", BigInteger, Identity(always=True), nullable=False),
    Column("amount", Numeric(38, 9), nullable=False),
    Column("source_id", Text, nullable=False),
    Column("note", Text, nullable=True),
    Column("effective_time", DateTime(timezone=True), nullable=False),
    UniqueConstraint("source_id", name="entries_source"),
)
COLUMNS = ("entry_id", "amount", "source_id", "note", "effective_time")
INSERT = unnest_insert(entries, COLUMNS, on_conflict_constraint="entries_source", returning=("entry_id",))


def row(source: str, amount: str, note: str | None = "n") -> dict[str, object]:
    return {
        "entry_id": uuid.uuid4(),
        "amount": Decimal(amount),
        "source_id": source,
        "note": note,
        "effective_time": datetime(2027, 3, 28, 1, 30, tzinfo=UTC) + timedelta(microseconds=len(source)),
    }


async def test_rows_in_order_exact_values_and_conflicts_skipped(empty_database: EmptyDatabase) -> None:
    engine = create_engine(await empty_database("bulk"))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        first = [row("c", "0.000000001"), row("a", "-12345678901234567890.123456789", None), row("b", "7")]
        async with engine.begin() as conn:
            inserted = {r.entry_id for r in await conn.execute(INSERT, arrays(first, COLUMNS))}
        assert inserted == {r["entry_id"] for r in first}

        # "a" again (another id) conflicts and is skipped; "d" is new.
        second = [row("a", "1"), row("d", "2.5")]
        async with engine.begin() as conn:
            inserted = {r.entry_id for r in await conn.execute(INSERT, arrays(second, COLUMNS))}
        assert inserted == {second[1]["entry_id"]}

        async with engine.connect() as conn:
            stored = (await conn.execute(select(entries).order_by(entries.c.seq))).all()
        assert [r.source_id for r in stored] == ["c", "a", "b", "d"]  # the order given, batch after batch
        by_source = {r.source_id: r for r in stored}
        for expected in [*first, second[1]]:
            got = by_source[str(expected["source_id"])]
            assert got.entry_id == expected["entry_id"]
            assert got.amount == expected["amount"]
            assert got.note == expected["note"]
            assert got.effective_time == expected["effective_time"]
    finally:
        await engine.dispose()


async def test_empty_arrays_insert_nothing(empty_database: EmptyDatabase) -> None:
    engine = create_engine(await empty_database("bulk"))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            assert (await conn.execute(INSERT, arrays([], COLUMNS))).all() == []
    finally:
        await engine.dispose()


def test_statement_names_each_column_with_its_array_type() -> None:
    sql = str(INSERT)
    assert "CAST(:amount AS NUMERIC(38, 9)[])" in sql
    assert "CAST(:entry_id AS UUID[])" in sql
    assert "ON CONFLICT ON CONSTRAINT entries_source DO NOTHING RETURNING entry_id" in sql
