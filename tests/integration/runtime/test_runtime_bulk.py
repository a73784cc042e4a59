"""Bulk inserts over arrays (evolutivo_runtime.bulk) on a real PostgreSQL: every column type the
services use survives exactly (uuid, exact numeric, text, timestamptz, NULL), rows go in in the
order given, a conflicting row is skipped and only the rows inserted are returned."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from evolutivo_runtime.bulk import insert_rows
from evolutivo_runtime.db import create_engine
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Column,
    DateTime,
    Identity,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
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


def insert(rows: list[dict[str, object]]) -> tuple[Any, dict[str, list[Any]]]:
    return insert_rows(entries, rows, on_conflict_constraint="entries_source", returning=("entry_id",))


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
            inserted = {r.entry_id for r in await conn.execute(*insert(first))}
        assert inserted == {r["entry_id"] for r in first}

        # "a" again (another id) conflicts and is skipped; "d" is new.
        second = [row("a", "1"), row("d", "2.5")]
        async with engine.begin() as conn:
            inserted = {r.entry_id for r in await conn.execute(*insert(second))}
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


def test_no_rows_is_a_caller_error() -> None:
    with pytest.raises(ValueError):
        insert([])


def test_statement_names_each_column_with_its_array_type_in_order() -> None:
    sql = str(insert([row("a", "1")])[0])
    assert "CAST(:amount AS NUMERIC(38, 9)[])" in sql
    assert "CAST(:entry_id AS UUID[])" in sql
    assert "WITH ORDINALITY" in sql and "ORDER BY v.ordinal" in sql
    assert "ON CONFLICT ON CONSTRAINT entries_source DO NOTHING RETURNING entry_id" in sql
    by_columns = str(insert_rows(entries, [row("a", "1")], on_conflict_columns=["source_id"])[0])
    assert by_columns.endswith("ON CONFLICT (source_id) DO NOTHING")


async def test_jsonb_values_and_none_as_sqlalchemy_writes_them(empty_database: EmptyDatabase) -> None:
    docs = Table(
        "docs",
        MetaData(),
        Column("doc_id", Integer, primary_key=True),
        Column("body", JSONB, nullable=True),  # None is JSON null
        Column("extra", JSONB(none_as_null=True), nullable=True),  # None is SQL NULL
    )
    engine = create_engine(await empty_database("bulk"))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(docs.metadata.create_all)
            rows = [
                {"doc_id": 1, "body": {"tiers": [{"units": "1.5"}]}, "extra": ["x"]},
                {"doc_id": 2, "body": None, "extra": None},
            ]
            await conn.execute(*insert_rows(docs, rows))
            stored = (
                await conn.execute(
                    text(
                        "SELECT doc_id, body, extra, body IS NULL AS sql_null, jsonb_typeof(body) AS kind"
                        " FROM docs ORDER BY doc_id"
                    )
                )
            ).all()
        assert stored[0].body == {"tiers": [{"units": "1.5"}]} and stored[0].extra == ["x"]
        assert stored[1].sql_null is False and stored[1].kind == "null"  # JSON null, as insert(docs) writes it
        assert stored[1].extra is None
    finally:
        await engine.dispose()


async def test_values_the_same_in_every_row_go_once_array_columns_too(empty_database: EmptyDatabase) -> None:
    events = Table(
        "events",
        MetaData(),
        Column("event_id", Text, primary_key=True),
        Column("charge_ids", ARRAY(Uuid), nullable=False),
        Column("status", Text, nullable=False),
        Column("meta", JSONB, nullable=False),
        Column("receive_time", DateTime(timezone=True), nullable=False),
    )
    when = datetime(2027, 10, 31, 1, 30, tzinfo=UTC)
    engine = create_engine(await empty_database("bulk"))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(events.metadata.create_all)
            statement = insert_rows(
                events,
                [{"event_id": "b", "status": "new"}, {"event_id": "a", "status": "old"}],
                on_conflict_columns=["event_id"],
                returning=("event_id",),
                same={"charge_ids": [], "meta": {"k": "v"}, "receive_time": when},
            )
            assert {r.event_id for r in await conn.execute(*statement)} == {"a", "b"}
            stored = (await conn.execute(select(events).order_by(events.c.event_id))).all()
        assert [(r.event_id, r.status, r.charge_ids, r.meta, r.receive_time) for r in stored] == [
            ("a", "old", [], {"k": "v"}, when),
            ("b", "new", [], {"k": "v"}, when),
        ]
    finally:
        await engine.dispose()


async def test_array_columns_differ_row_by_row_and_keep_every_element(empty_database: EmptyDatabase) -> None:
    """Per-row arrays go as array literals (unnest would flatten an array of arrays): each row
    keeps its own elements in order, empty and NULL arrays and NULL elements included, and text
    elements with the characters an array literal quotes survive exactly."""
    lines = Table(
        "lines",
        MetaData(),
        Column("line_id", Integer, primary_key=True),
        Column("charge_ids", ARRAY(Uuid), nullable=True),
        Column("labels", ARRAY(Text), nullable=False),
    )
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    tricky = ['comma, "quote"', "back\\slash", "{braces}", "NULL", " spaced ", ""]
    rows = [
        {"line_id": 1, "charge_ids": [b, a, c], "labels": tricky},
        {"line_id": 2, "charge_ids": [], "labels": ["x"]},
        {"line_id": 3, "charge_ids": None, "labels": [None, "y"]},
    ]
    engine = create_engine(await empty_database("bulk"))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lines.metadata.create_all)
            await conn.execute(*insert_rows(lines, rows))
            stored = (await conn.execute(select(lines).order_by(lines.c.line_id))).all()
        assert [(r.line_id, r.charge_ids, r.labels) for r in stored] == [
            (1, [b, a, c], tricky),
            (2, [], ["x"]),
            (3, None, [None, "y"]),
        ]
    finally:
        await engine.dispose()


async def test_conflicting_rows_update_where_the_condition_holds(empty_database: EmptyDatabase) -> None:
    """`on_conflict_update`: a row whose key is there updates the named columns to its values when
    `update_where` holds, else is left out; RETURNING names the rows inserted or updated."""
    engine = create_engine(await empty_database("bulk_update"))

    def upsert(rows: list[dict[str, object]]) -> tuple[Any, dict[str, list[Any]]]:
        return insert_rows(
            entries,
            rows,
            on_conflict_columns=("source_id",),
            on_conflict_update=("amount", "note"),
            update_where="entries.amount < excluded.amount",
            returning=("source_id",),
        )

    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        async with engine.begin() as conn:
            returned = [r.source_id for r in await conn.execute(*upsert([row("a", "5"), row("b", "5")]))]
        assert returned == ["a", "b"]

        # "a" with more updates (its id stays), "b" with less is left as it was, "c" is new.
        async with engine.begin() as conn:
            returned = [
                r.source_id
                for r in await conn.execute(*upsert([row("a", "7", "x"), row("b", "1", "y"), row("c", "2")]))
            ]
        assert returned == ["a", "c"]
        async with engine.connect() as conn:
            stored = {r.source_id: (r.amount, r.note) for r in await conn.execute(select(entries))}
        assert stored == {"a": (Decimal(7), "x"), "b": (Decimal(5), "n"), "c": (Decimal(2), "n")}

        with pytest.raises(ValueError, match="on_conflict_columns"):
            insert_rows(entries, [row("d", "1")], on_conflict_update=("amount",))
    finally:
        await engine.dispose()


async def test_a_condition_filters_the_rows_and_prefixed_parameters_do_not_clash(
    empty_database: EmptyDatabase,
) -> None:
    engine = create_engine(await empty_database("bulk_where"))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        rows = [row("small", "1"), row("large", "100"), row("medium", "10")]
        statement, params = insert_rows(
            entries, rows, where="v.amount >= :least", param_prefix="p_", returning=("source_id",)
        )
        assert set(params) == {"p_entry_id", "p_amount", "p_source_id", "p_note", "p_effective_time"}
        assert ":p_amount" in str(statement) and ":amount" not in str(statement)
        async with engine.begin() as conn:
            inserted = [r.source_id for r in await conn.execute(statement, {**params, "least": Decimal(10)})]
        assert inserted == ["large", "medium"]
        # A one-time filter (no row's column in it) that is false inserts nothing.
        statement, params = insert_rows(entries, [row("late", "5")], where="(SELECT count(*) FROM entries) > 5")
        async with engine.begin() as conn:
            assert (await conn.execute(statement, params)).rowcount == 0
        async with engine.connect() as conn:
            assert (await conn.scalars(select(entries.c.source_id).order_by(entries.c.seq))).all() == [
                "large",
                "medium",
            ]
    finally:
        await engine.dispose()
