"""A datastore's catalog in Metamapper's ``definitions_schema``, ``definitions_table`` and
``definitions_column``, written the way Metamapper 1.0's revisioner writes it.

- :func:`write_schema` upserts one schema, its tables and their columns by ``object_id``
  (new rows get the web app's defaults; existing rows keep everything people wrote on
  them: descriptions, tags, owners' rows point at the same ids) and soft-deletes the
  tables of that schema, and the columns of those tables, the run did not see.
- :func:`complete` soft-deletes whatever of the datastore the run did not see, then
  corrects renames: an object soft-deleted by this run whose ``object_ref`` (the engine's
  own id) is that of an object the run wrote in the same datastore is the same object
  under a new name (upstream also revives rows deleted by earlier runs, which can put a
  long-dropped table's descriptions on an unrelated new one that reuses its oid).
  The old row takes the new row's name and identity and comes back to life; the new row
  is removed. Columns first, then tables, then schemas, all in one transaction, so the
  foreign keys (checked at commit) hold.

Rows are matched on ``object_ref`` within one datastore only: two datastores may well
have objects with the same oid.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from metamapper.revisioner.collector import SchemaDefinition


@dataclass(frozen=True)
class Owner:
    """Whose catalog a run writes."""

    run_id: str
    datastore_id: str
    workspace_id: str


def write_schema(conn: psycopg.Connection, owner: Owner, schema: SchemaDefinition) -> None:
    """Upsert ``schema`` with its tables and columns, soft-deleting what it no longer has."""
    with conn.transaction(), conn.cursor() as cursor:
        cursor.execute(
            """INSERT INTO definitions_schema (created_at, updated_at, run_id, object_id,
                   object_ref, name, tags, datastore_id, workspace_id)
               VALUES (now(), now(), %s, %s, %s, %s, '{}', %s, %s)
               ON CONFLICT (datastore_id, object_id) DO UPDATE SET
                   updated_at = now(), deleted_at = NULL, run_id = EXCLUDED.run_id,
                   object_ref = EXCLUDED.object_ref, name = EXCLUDED.name,
                   workspace_id = EXCLUDED.workspace_id""",
            (owner.run_id, schema.object_id, schema.object_ref, schema.name,
             owner.datastore_id, owner.workspace_id),
        )
        cursor.executemany(
            """INSERT INTO definitions_table (created_at, updated_at, custom_properties,
                   run_id, object_id, object_ref, name, tags, kind, db_comment, properties,
                   schema_id, workspace_id, usage_score)
               VALUES (now(), now(), '{}', %s, %s, %s, %s, '{}', %s, %s, '{}', %s, %s, 0)
               ON CONFLICT (schema_id, object_id) DO UPDATE SET
                   updated_at = now(), deleted_at = NULL, run_id = EXCLUDED.run_id,
                   object_ref = EXCLUDED.object_ref, name = EXCLUDED.name,
                   kind = EXCLUDED.kind, db_comment = EXCLUDED.db_comment,
                   workspace_id = EXCLUDED.workspace_id""",
            [
                (owner.run_id, t.object_id, t.object_ref, t.name, t.kind, t.db_comment,
                 schema.object_id, owner.workspace_id)
                for t in schema.tables
            ],
        )
        cursor.executemany(
            """INSERT INTO definitions_column (created_at, updated_at, run_id, object_id,
                   object_ref, name, ordinal_position, data_type, max_length, numeric_scale,
                   is_primary, is_nullable, default_value, db_comment, tags, table_id,
                   workspace_id)
               VALUES (now(), now(), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, '{}',
                       %s, %s)
               ON CONFLICT (table_id, object_id) DO UPDATE SET
                   updated_at = now(), deleted_at = NULL, run_id = EXCLUDED.run_id,
                   object_ref = EXCLUDED.object_ref, name = EXCLUDED.name,
                   ordinal_position = EXCLUDED.ordinal_position,
                   data_type = EXCLUDED.data_type, max_length = EXCLUDED.max_length,
                   numeric_scale = EXCLUDED.numeric_scale, is_primary = EXCLUDED.is_primary,
                   is_nullable = EXCLUDED.is_nullable,
                   default_value = EXCLUDED.default_value,
                   db_comment = EXCLUDED.db_comment, workspace_id = EXCLUDED.workspace_id""",
            [
                (owner.run_id, c.object_id, c.object_ref, c.name, c.ordinal_position,
                 c.data_type, c.max_length, c.numeric_scale, c.is_primary, c.is_nullable,
                 c.default_value, c.db_comment, t.object_id, owner.workspace_id)
                for t in schema.tables for c in t.columns
            ],
        )
        table_ids = [t.object_id for t in schema.tables]
        cursor.execute(
            "UPDATE definitions_column SET deleted_at = now() WHERE table_id = ANY(%s)"
            " AND deleted_at IS NULL AND run_id IS DISTINCT FROM %s",
            (table_ids, owner.run_id),
        )
        cursor.execute(
            "UPDATE definitions_table SET deleted_at = now() WHERE schema_id = %s"
            " AND deleted_at IS NULL AND run_id IS DISTINCT FROM %s",
            (schema.object_id, owner.run_id),
        )


# The live schemas, tables and columns of a datastore, whatever their state.
_SCHEMAS = "SELECT object_id FROM definitions_schema WHERE datastore_id = %(datastore)s"
_TABLES = f"SELECT object_id FROM definitions_table WHERE schema_id IN ({_SCHEMAS})"


def complete(conn: psycopg.Connection, owner: Owner, since: datetime) -> None:
    """Soft-delete what the run did not see, then correct renames (see the module's doc)
    among the objects deleted ``since`` the run started."""
    params = {"datastore": owner.datastore_id, "run": owner.run_id}
    with conn.transaction():
        for table, scope in (
            ("definitions_column", f"table_id IN ({_TABLES})"),
            ("definitions_table", f"schema_id IN ({_SCHEMAS})"),
            ("definitions_schema", "datastore_id = %(datastore)s"),
        ):
            conn.execute(
                f"UPDATE {table} SET deleted_at = now() WHERE {scope}"
                " AND deleted_at IS NULL AND run_id IS DISTINCT FROM %(run)s",
                params,
            )
        for correction in CORRECTIONS:
            correction.apply(conn, owner, since)


@dataclass(frozen=True)
class Correction:
    """Rename correction for one table: ``fields`` are what the old row takes from the new
    one (besides its identity); ``scope`` selects the datastore's rows."""

    table: str
    fields: tuple[str, ...]
    scope: str

    def apply(self, conn: psycopg.Connection, owner: Owner, since: datetime) -> None:
        params: dict[str, Any] = {
            "datastore": owner.datastore_id, "run": owner.run_id, "since": since}
        # Two plain lookups matched here, rather than one self-join: the join's plan goes
        # quadratic while the tables' statistics still describe them as nearly empty.
        deleted: dict[str, list[int]] = {}
        for old_id, object_ref in conn.execute(
            f"SELECT id, object_ref FROM {self.table} WHERE deleted_at >= %(since)s"
            f" AND object_ref IS NOT NULL AND {self.scope} ORDER BY deleted_at DESC, id DESC",
            params,
        ):
            deleted.setdefault(object_ref, []).append(old_id)
        if not deleted:
            return
        taken = ", ".join(("id", "object_ref", "object_id", *self.fields))
        live = conn.execute(
            f"SELECT {taken} FROM {self.table} WHERE deleted_at IS NULL AND run_id = %(run)s"
            f" AND object_ref = ANY(%(refs)s) AND {self.scope} ORDER BY id",
            {**params, "refs": list(deleted)},
        ).fetchall()
        # Each live row takes back one old row (the one deleted last), each old row once.
        chosen = []
        for new_id, object_ref, *values in live:
            olds = deleted[object_ref]
            if olds:
                chosen.append((olds.pop(0), new_id, values))
        if not chosen:
            return
        conn.execute(f"DELETE FROM {self.table} WHERE id = ANY(%s)", ([c[1] for c in chosen],))
        assignments = ", ".join(f"{f} = %s" for f in ("object_id", *self.fields))
        with conn.cursor() as cursor:
            cursor.executemany(
                f"UPDATE {self.table} SET {assignments}, deleted_at = NULL, run_id = %s,"
                " updated_at = now() WHERE id = %s",
                [(*values, owner.run_id, old_id) for old_id, _, values in chosen],
            )


CORRECTIONS = (
    Correction(
        "definitions_column",
        ("name", "table_id", "ordinal_position", "data_type", "max_length", "numeric_scale",
         "is_primary", "is_nullable", "default_value", "db_comment"),
        f"table_id IN ({_TABLES})",
    ),
    Correction(
        "definitions_table", ("name", "schema_id", "kind", "db_comment"),
        f"schema_id IN ({_SCHEMAS})",
    ),
    Correction("definitions_schema", ("name",), "datastore_id = %(datastore)s"),
)
