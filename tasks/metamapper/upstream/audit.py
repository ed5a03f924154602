"""``app.audit.tasks.audit``: the web app's activity feed, rows of ``audit_activity``.

The web app sends one message per change it audits (who, in which workspace, what verb,
on what target and action object, the old and new values). As upstream does, a change
repeated by the same actor on the same objects within 15 minutes updates the recent row
instead of adding one, provided that row already records every field the new change
records (so a series of edits to a description is one entry, while an edit of another
field is its own).
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from metamapper.celery import app
from metamapper.metastore import open_metastore

#: Changes within this long of an entry's last update merge into it.
MERGE_WINDOW = timedelta(minutes=15)


@dataclass(frozen=True)
class Subject:
    """What identifies an activity: who did what, where, to which objects."""

    actor_id: int
    workspace_id: str
    verb: str
    target_object_id: str | None
    target_content_type_id: int | None
    action_object_object_id: str | None
    action_object_content_type_id: int | None


def _object_id(value: Any) -> str | None:
    """Object ids are text columns; the web app sends integers as well as strings."""
    return None if value is None else str(value)


def record(conn: psycopg.Connection, subject: Subject, old_values: dict[str, Any],
           new_values: dict[str, Any], extras: dict[str, Any]) -> int:
    """Merge the change into a recent entry of the same subject, or add one; its id."""
    columns = ("actor_id", "workspace_id", "verb", "target_object_id",
               "target_content_type_id", "action_object_object_id",
               "action_object_content_type_id")
    # IS NOT DISTINCT FROM: an absent target or action object matches an absent one.
    same = " AND ".join(f"{column} IS NOT DISTINCT FROM %s" for column in columns)
    with conn.transaction():
        # Two messages for one subject at once merge as if they had come one after other.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (repr(astuple(subject)),))
        row = conn.execute(
            f"SELECT id FROM audit_activity WHERE {same}"
            " AND timestamp >= now() - %s AND old_values ?& %s::text[]"
            " ORDER BY timestamp DESC LIMIT 1",
            (*astuple(subject), MERGE_WINDOW, list(old_values)),
        ).fetchone()
        if row is not None:
            conn.execute(
                "UPDATE audit_activity SET extras = %s, timestamp = now(), old_values = %s,"
                " new_values = %s WHERE id = %s",
                (Jsonb(extras), Jsonb(old_values), Jsonb(new_values), row[0]),
            )
            return int(row[0])
        inserted = conn.execute(
            f"INSERT INTO audit_activity ({', '.join(columns)}, extras, timestamp,"
            " old_values, new_values) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now(), %s, %s)"
            " RETURNING id",
            (*astuple(subject), Jsonb(extras), Jsonb(old_values), Jsonb(new_values)),
        ).fetchone()
    assert inserted is not None
    return int(inserted[0])


@app.task(name="app.audit.tasks.audit")
def audit(actor_id: int, workspace_id: str, verb: str, old_values: dict[str, Any],
          new_values: dict[str, Any], extras: dict[str, Any] | None = None,
          target_object_id: Any = None, target_content_type_id: int | None = None,
          action_object_object_id: Any = None,
          action_object_content_type_id: int | None = None) -> int:
    """Record one audited change (upstream's arguments); returns the entry's id."""
    subject = Subject(actor_id, workspace_id, verb, _object_id(target_object_id),
                      target_content_type_id, _object_id(action_object_object_id),
                      action_object_content_type_id)
    with open_metastore() as conn:
        return record(conn, subject, old_values, new_values, extras or {})
