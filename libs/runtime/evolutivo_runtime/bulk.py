"""Bulk inserts as one constant statement over arrays: ``INSERT ... SELECT ... FROM unnest(...)``.

A multi-row ``INSERT ... VALUES`` is a new statement for every row count: SQLAlchemy compiles it
again (cost grows with the rows) and PostgreSQL plans it again; an executemany runs the statement
once per row on the server. The same rows passed as one array per column go through a single
statement text, compiled once and prepared once per connection, executed once whatever the count
(docs/performance.md: balance's ledger entries, billing's set-based bill run)."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ARRAY, Table, TextClause, text
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
    same: Mapping[str, Any] | None = None,
    on_conflict_update: Sequence[str] = (),
    update_where: str | None = None,
    param_prefix: str = "",
    where: str | None = None,
) -> tuple[TextClause, dict[str, Any]]:
    """The rows (dicts with the same keys, columns of `table`; at least one) as ONE statement and
    its parameters, one array per column. Rows go in in the order given (two transactions
    inserting the same keys in the same order wait for each other instead of deadlocking). JSONB
    values go as JSON text cast in the statement, None as SQLAlchemy's JSONB type writes it (JSON
    null unless the column's type says `none_as_null`), so the rows are those `insert(table)` would
    write. With `on_conflict_constraint` (a constraint's name) or `on_conflict_columns` (a unique
    index's columns), a row conflicting with it is skipped; `returning` names the columns returned
    of the rows inserted. `same` gives columns whose value is the same in every row, bound once.
    An array column's values (lists, or None) go as array literals in a text array, cast in the
    statement: unnest would flatten an array of arrays.

    With `on_conflict_update` (and `on_conflict_columns`), a conflicting row updates those columns
    of the row there to its own values instead (`excluded`), when `update_where` (SQL over the
    table's and `excluded`'s columns, if given) holds; `returning` then names the rows inserted or
    updated. One row may not update another of the same statement (PostgreSQL refuses it): the
    caller keeps one row per key.

    `param_prefix` starts every parameter's name: two such statements with different prefixes
    can go in one (a data-modifying WITH) without their parameters clashing.

    `where` (SQL) filters the rows (`v.<column>`), or is a one-time filter evaluated before the
    first row goes in (an uncorrelated scalar subquery, e.g. one taking locks); the caller adds
    its parameters to those returned."""
    if not rows:
        raise ValueError("insert_rows needs at least one row")
    if on_conflict_update and not on_conflict_columns:
        raise ValueError("on_conflict_update needs on_conflict_columns")
    constants = dict(same or {})
    statement = _statement(
        table,
        tuple(rows[0]),
        tuple(constants),
        on_conflict_constraint,
        tuple(on_conflict_columns),
        tuple(returning),
        tuple(on_conflict_update),
        update_where,
        param_prefix,
        where,
    )
    arrays: dict[str, list[Any]] = {name: [] for name in statement.columns}
    for row in rows:
        for name in statement.columns:
            value = row[name]
            if name in statement.json_none_as_null and (value is not None or not statement.json_none_as_null[name]):
                value = json.dumps(value)
            elif name in statement.array_columns and value is not None:
                value = _array_literal(value)
            arrays[name].append(value)
    params: dict[str, Any] = {f"{param_prefix}{name}": values for name, values in arrays.items()}
    for name, constant in constants.items():
        params[f"{param_prefix}same_{name}"] = json.dumps(constant) if name in statement.json_constants else constant
    return statement.text, params


@dataclass(frozen=True)
class _Statement:
    text: TextClause
    columns: tuple[str, ...]
    # JSONB columns of the rows -> whether None is SQL NULL there (else JSON null).
    json_none_as_null: Mapping[str, bool]
    json_constants: frozenset[str]
    # Array columns of the rows: their values go as array literals.
    array_columns: frozenset[str]


def _array_literal(values: Sequence[Any]) -> str:
    """A one-dimensional PostgreSQL array literal: every element quoted (backslash and quote
    escaped), None as NULL."""
    quoted = ("NULL" if v is None else '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


# Statements by shape: building one compiles every column's type and parses the text, which on
# the hot paths (one insert per call or batch) cost more than binding the arrays.
@functools.lru_cache(maxsize=512)
def _statement(
    table: Table,
    columns: tuple[str, ...],
    constants: tuple[str, ...],
    on_conflict_constraint: str | None,
    on_conflict_columns: tuple[str, ...],
    returning: tuple[str, ...],
    on_conflict_update: tuple[str, ...],
    update_where: str | None,
    param_prefix: str,
    where: str | None,
) -> _Statement:
    json_none_as_null: dict[str, bool] = {}
    array_columns = set()
    casts, selected = [], []
    for name in columns:
        column_type = table.c[name].type
        if isinstance(column_type, JSONB):
            json_none_as_null[name] = bool(column_type.none_as_null)
            casts.append(f"CAST(:{param_prefix}{name} AS text[])")
            selected.append(f"CAST(v.{name} AS jsonb)")
        elif isinstance(column_type, ARRAY):
            array_columns.add(name)
            casts.append(f"CAST(:{param_prefix}{name} AS text[])")
            selected.append(f"CAST(v.{name} AS {column_type.compile(dialect=_DIALECT)})")
        else:
            casts.append(f"CAST(:{param_prefix}{name} AS {column_type.compile(dialect=_DIALECT)}[])")
            selected.append(f"v.{name}")
    # Their parameters are named after no column (`same_<column>`), so they never clash with the rows'.
    same_selected = []
    json_constants = set()
    for name in constants:
        column_type = table.c[name].type
        if isinstance(column_type, JSONB):
            json_constants.add(name)
            same_selected.append(f"CAST(CAST(:{param_prefix}same_{name} AS text) AS jsonb)")
        else:
            same_selected.append(f"CAST(:{param_prefix}same_{name} AS {column_type.compile(dialect=_DIALECT)})")
    names = ", ".join(columns)
    sql = (
        f"INSERT INTO {table.name} ({', '.join([*columns, *constants])}) "
        f"SELECT {', '.join([*selected, *same_selected])} "
        f"FROM unnest({', '.join(casts)}) WITH ORDINALITY AS v({names}, ordinal)"
        f"{f' WHERE {where}' if where else ''} ORDER BY v.ordinal"
    )
    if on_conflict_constraint:
        sql += f" ON CONFLICT ON CONSTRAINT {on_conflict_constraint} DO NOTHING"
    elif on_conflict_update:
        assignments = ", ".join(f"{name} = excluded.{name}" for name in on_conflict_update)
        sql += f" ON CONFLICT ({', '.join(on_conflict_columns)}) DO UPDATE SET {assignments}"
        if update_where:
            sql += f" WHERE {update_where}"
    elif on_conflict_columns:
        sql += f" ON CONFLICT ({', '.join(on_conflict_columns)}) DO NOTHING"
    if returning:
        sql += f" RETURNING {', '.join(returning)}"
    return _Statement(text(sql), columns, json_none_as_null, frozenset(json_constants), frozenset(array_columns))
