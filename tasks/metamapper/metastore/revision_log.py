"""Revision history: what each run changed in a datastore's catalog, one row per change.

Metamapper 1.0 keeps only the current catalog; this worker also records, in a table of
its own that the web app ignores (``revisioner_revision_log``), each object created,
dropped or modified (with the field, its old and its new value) by a run. The changes
come from the revisioner's diff (:mod:`metamapper.revisioner.diff`) between the live
``definitions_*`` rows of a schema and its new definition, taken just before the schema
is written. Objects are matched as Metamapper identifies them (:data:`NAME_FIRST`): by
name, then a rename by the engine's id (``object_ref``), then by shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.types.json import Jsonb

from metamapper.catalog import Column, Schema, Table
from metamapper.metastore import additions
from metamapper.revisioner.collector import SchemaDefinition
from metamapper.revisioner.diff import NAME_FIRST, Revision, diff_schema, dropped_schemas

TABLE = """
CREATE TABLE IF NOT EXISTS revisioner_revision_log (
    id bigserial PRIMARY KEY,
    run_id varchar(32) NOT NULL REFERENCES revisioner_run (id) ON DELETE CASCADE,
    datastore_id varchar(40) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    action varchar(10) NOT NULL,
    kind varchar(10) NOT NULL,
    path text NOT NULL,
    object_id varchar(128) NOT NULL,
    field varchar(32),
    old_value jsonb,
    new_value jsonb
);
CREATE INDEX IF NOT EXISTS revisioner_revision_log_datastore
    ON revisioner_revision_log (datastore_id, id);
"""

@dataclass(frozen=True)
class Change:
    run_id: str
    created_at: datetime
    action: str
    kind: str
    path: str
    field: str | None
    old_value: object
    new_value: object


def as_catalog(definition: SchemaDefinition) -> Schema:
    """A definition as the diff compares it: object ids as ids, object refs as native ids."""
    return Schema(definition.name, definition.object_ref, definition.object_id, tables=[
        Table(t.name, t.kind, t.db_comment, t.object_ref, t.object_id, columns=[
            Column(c.name, c.ordinal_position, c.data_type, c.max_length, c.numeric_scale,
                   c.is_nullable, c.default_value, c.is_primary, c.db_comment, c.object_ref,
                   c.object_id)
            for c in t.columns
        ])
        for t in definition.tables
    ])


def stored(conn: psycopg.Connection, schema_object_id: str) -> Schema | None:
    """The live rows of one schema, as the diff compares them; None if it has none."""
    row = conn.execute(
        "SELECT name, object_ref FROM definitions_schema WHERE object_id = %s"
        " AND deleted_at IS NULL",
        (schema_object_id,),
    ).fetchone()
    if row is None:
        return None
    schema = Schema(row[0], row[1], schema_object_id)
    tables: dict[str, Table] = {}
    for object_id, object_ref, name, kind, comment in conn.execute(
        "SELECT object_id, object_ref, name, kind, db_comment FROM definitions_table"
        " WHERE schema_id = %s AND deleted_at IS NULL ORDER BY name",
        (schema_object_id,),
    ):
        tables[object_id] = Table(name, kind, comment, object_ref, object_id)
        schema.tables.append(tables[object_id])
    for (table_id, name, ordinal, data_type, length, scale, nullable, default, primary,
         comment, object_ref, object_id) in conn.execute(
        "SELECT c.table_id, c.name, c.ordinal_position, c.data_type, c.max_length,"
        " c.numeric_scale, c.is_nullable, c.default_value, c.is_primary, c.db_comment,"
        " c.object_ref, c.object_id FROM definitions_column c JOIN definitions_table t"
        " ON t.object_id = c.table_id WHERE t.schema_id = %s AND t.deleted_at IS NULL"
        " AND c.deleted_at IS NULL ORDER BY c.ordinal_position",
        (schema_object_id,),
    ):
        tables[table_id].columns.append(Column(name, ordinal, data_type, length, scale,
                                               nullable, default, primary, comment,
                                               object_ref, object_id))
    return schema


def record_schema(conn: psycopg.Connection, run_id: str, datastore_id: str,
                  definition: SchemaDefinition) -> None:
    """Record what writing ``definition`` changes (call before writing it)."""
    new = as_catalog(definition)
    old = stored(conn, definition.object_id)
    _record(conn, run_id, datastore_id, diff_schema(old, new, NAME_FIRST))


def record_dropped_schemas(conn: psycopg.Connection, run_id: str, datastore_id: str) -> None:
    """Record the live schemas of the datastore the run did not see (call before they are
    soft-deleted)."""
    rows = conn.execute(
        "SELECT object_id, name, run_id FROM definitions_schema"
        " WHERE datastore_id = %s AND deleted_at IS NULL",
        (datastore_id,),
    ).fetchall()
    live = [Schema(name, id=object_id) for object_id, name, _ in rows]
    seen = {object_id for object_id, _, seen_by in rows if seen_by == run_id}
    _record(conn, run_id, datastore_id, dropped_schemas(live, seen))


def _record(conn: psycopg.Connection, run_id: str, datastore_id: str,
            revisions: Sequence[Revision]) -> None:
    if not revisions:
        return
    additions.ensure(conn, TABLE)
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO revisioner_revision_log (run_id, datastore_id, action, kind, path,"
            " object_id, field, old_value, new_value) VALUES (%s, %s, %s, %s, %s, %s, %s,"
            " %s, %s)",
            [(run_id, datastore_id, r.action, r.kind, r.path, r.object_id, r.field,
              Jsonb(r.old_value), Jsonb(r.new_value)) for r in revisions],
        )


def history(conn: psycopg.Connection, datastore_id: str, limit: int = 100,
            run_id: str | None = None) -> list[Change]:
    """The latest changes of a datastore (or of one of its runs), oldest first."""
    additions.ensure(conn, TABLE)
    rows = conn.execute(
        "SELECT run_id, created_at, action, kind, path, field, old_value, new_value"
        " FROM revisioner_revision_log WHERE datastore_id = %(datastore)s"
        " AND (%(run)s::text IS NULL OR run_id = %(run)s::text)"
        " ORDER BY id DESC LIMIT %(limit)s",
        {"datastore": datastore_id, "run": run_id, "limit": limit},
    ).fetchall()
    return [Change(*row) for row in reversed(rows)]
