"""Bulk inserts as one constant statement over arrays: ``INSERT ... SELECT ... FROM unnest(...)``.

A multi-row ``INSERT ... VALUES`` is a new statement for every row count: SQLAlchemy compiles it
again (cost grows with the rows) and PostgreSQL plans it again. The same rows passed as one array
per column go through a single statement text, compiled once and prepared once per connection,
whatever the count (docs/performance.md)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Table, TextClause, text
from sqlalchemy.dialects import postgresql

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


def unnest_insert(
    table: Table,
    columns: Sequence[str],
    *,
    on_conflict_constraint: str | None = None,
    returning: Sequence[str] = (),
) -> TextClause:
    """The statement inserting one row per array position, in array order (rows are taken in the
    order given, so two transactions inserting the same keys in the same order wait for each other
    instead of deadlocking). Bind it with `arrays(rows, columns)`."""
    casts = ", ".join(f"CAST(:{name} AS {table.c[name].type.compile(dialect=_DIALECT)}[])" for name in columns)
    names = ", ".join(columns)
    sql = (
        f"INSERT INTO {table.name} ({names}) "
        f"SELECT {names} FROM unnest({casts}) WITH ORDINALITY AS rows({names}, ordinal) ORDER BY ordinal"
    )
    if on_conflict_constraint:
        sql += f" ON CONFLICT ON CONSTRAINT {on_conflict_constraint} DO NOTHING"
    if returning:
        sql += f" RETURNING {', '.join(returning)}"
    return text(sql)


def arrays(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> dict[str, list[Any]]:
    """The rows as one list per column: the parameters of `unnest_insert`'s statement."""
    params: dict[str, list[Any]] = {name: [] for name in columns}
    for row in rows:
        for name in columns:
            params[name].append(row[name])
    return params
