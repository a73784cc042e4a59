"""Bulk inserts as one constant statement over arrays: ``INSERT ... SELECT ... FROM unnest(...)``.

A multi-row ``INSERT ... VALUES`` is a new statement for every row count: SQLAlchemy compiles it
again (cost grows with the rows) and PostgreSQL plans it again; an executemany runs the statement
once per row on the server. The same rows passed as one array per column go through a single
statement text, compiled once and prepared once per connection, executed once whatever the count
(docs/performance.md: balance's ledger entries, billing's set-based bill run)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table, TextClause, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


def insert_rows(
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    on_conflict_constraint: str | None = None,
    on_conflict_columns: Sequence[str] = (),
    returning: Sequence[str] = (),
) -> tuple[TextClause, dict[str, list[Any]]]:
    """The rows (dicts with the same keys, columns of `table`; at least one) as ONE statement and
    its parameters, one array per column. Rows go in in the order given (two transactions
    inserting the same keys in the same order wait for each other instead of deadlocking). JSONB
    values go as JSON text cast in the statement, None as SQLAlchemy's JSONB type writes it (JSON
    null unless the column's type says `none_as_null`), so the rows are those `insert(table)` would
    write. With `on_conflict_constraint` (a constraint's name) or `on_conflict_columns` (a unique
    index's columns), a row conflicting with it is skipped; `returning` names the columns returned
    of the rows inserted. Array columns cannot go this way (unnest flattens arrays of arrays)."""
    if not rows:
        raise ValueError("insert_rows needs at least one row")
    columns = list(rows[0])
    json_none_as_null: dict[str, bool] = {}
    casts, selected = [], []
    for name in columns:
        column_type = table.c[name].type
        if isinstance(column_type, JSONB):
            json_none_as_null[name] = bool(column_type.none_as_null)
            casts.append(f"CAST(:{name} AS text[])")
            selected.append(f"CAST(v.{name} AS jsonb)")
        else:
            casts.append(f"CAST(:{name} AS {column_type.compile(dialect=_DIALECT)}[])")
            selected.append(f"v.{name}")
    names = ", ".join(columns)
    sql = (
        f"INSERT INTO {table.name} ({names}) SELECT {', '.join(selected)} "
        f"FROM unnest({', '.join(casts)}) WITH ORDINALITY AS v({names}, ordinal) ORDER BY v.ordinal"
    )
    if on_conflict_constraint:
        sql += f" ON CONFLICT ON CONSTRAINT {on_conflict_constraint} DO NOTHING"
    elif on_conflict_columns:
        sql += f" ON CONFLICT ({', '.join(on_conflict_columns)}) DO NOTHING"
    if returning:
        sql += f" RETURNING {', '.join(returning)}"
    params: dict[str, list[Any]] = {name: [] for name in columns}
    for row in rows:
        for name in columns:
            value = row[name]
            if name in json_none_as_null and (value is not None or not json_none_as_null[name]):
                value = json.dumps(value)
            params[name].append(value)
    return text(sql), params
