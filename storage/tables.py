"""Conform rows to a table's Arrow schema before anything is written.

Casting at write time turns a wrong type or a misspelt column into an error now, with the table and column
named, instead of a surprise in a reader months later. Missing nullable columns become nulls, so a writer
only has to fill the columns it knows.
"""

from __future__ import annotations

import pyarrow as pa

from storage.schemas import TABLES

Rows = pa.Table | list[dict]


class SchemaError(ValueError):
    """Rows do not fit the table's schema: unknown table or column, a type that cannot be cast, a wrong run."""


def schema_of(table: str) -> pa.Schema:
    try:
        return TABLES[table]
    except KeyError:
        raise SchemaError(f"unknown table {table!r}; known: {sorted(TABLES)}") from None


def conform(table: str, data: Rows, run_id: str) -> pa.Table:
    """Return ``data`` as a table with exactly ``table``'s schema, every row carrying ``run_id``.

    ``data`` is an Arrow table or a list of dicts. The ``run_id`` column may be left out (it is filled in);
    where given, it must equal ``run_id``, so rows of one run are never filed under another.

    >>> conform("rejects", [{"stage": "load", "reason": "no answer"}], "r1").column("run_id").to_pylist()
    ['r1']
    """
    schema = schema_of(table)
    names = set(data.column_names) if isinstance(data, pa.Table) else set().union(*map(dict.keys, data))
    unknown = names - set(schema.names)
    if unknown:
        raise SchemaError(f"{table}: unknown columns {sorted(unknown)}; schema has {schema.names}")
    if not isinstance(data, pa.Table):
        data = _from_rows(table, schema, data, names)
    columns = [_column(table, field, data) for field in schema]
    out = pa.Table.from_arrays(columns, schema=schema)
    return _with_run_id(table, out, run_id)


def _from_rows(table: str, schema: pa.Schema, rows: list[dict], names: set[str]) -> pa.Table:
    present = pa.schema([f for f in schema if f.name in names])
    try:
        return pa.Table.from_pylist(rows, schema=present)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise SchemaError(f"{table}: rows do not fit the schema: {e}") from e


def _column(table: str, field: pa.Field, data: pa.Table) -> pa.ChunkedArray:
    if field.name not in data.column_names:
        if not field.nullable:
            raise SchemaError(f"{table}: missing non-nullable column {field.name!r}")
        return pa.chunked_array([pa.nulls(data.num_rows, field.type)], field.type)
    column = data.column(field.name)
    try:
        column = column.cast(field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        raise SchemaError(f"{table}.{field.name}: cannot cast {column.type} to {field.type}: {e}") from e
    if not field.nullable and column.null_count:
        raise SchemaError(f"{table}.{field.name}: {column.null_count} nulls in a non-nullable column")
    return column


def _with_run_id(table: str, data: pa.Table, run_id: str) -> pa.Table:
    given = data.column("run_id").unique().drop_null().to_pylist()
    if any(value != run_id for value in given):
        raise SchemaError(f"{table}: rows carry run_id {given}, but are written to run {run_id!r}")
    index = data.schema.get_field_index("run_id")
    constant = pa.repeat(pa.scalar(run_id, pa.string()), data.num_rows)
    return data.set_column(index, data.schema.field(index), constant)
