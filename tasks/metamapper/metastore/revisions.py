"""Revisions: staged by a run while its schemas are processed, applied when it completes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from metamapper.metastore.connection import Database
from metamapper.revisioner.diff import Revision

_COLUMNS = "action, kind, path, object_id, parent_id, field, old_value, new_value"


def stage(
    db: Database, run_id: int, datastore_id: int, schema_name: str, revisions: list[Revision]
) -> None:
    db.executemany(
        f"INSERT INTO revisions (run_id, datastore_id, schema_name, {_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                run_id, datastore_id, schema_name, r.action, r.kind, r.path, r.object_id,
                r.parent_id, r.field, json.dumps(r.old_value), json.dumps(r.new_value),
            )
            for r in revisions
        ],
    )


def staged(db: Database, run_id: int) -> list[Revision]:
    rows = db.fetchall(
        f"SELECT {_COLUMNS} FROM revisions WHERE run_id = ? AND applied_at IS NULL ORDER BY id",
        (run_id,),
    )
    return [
        Revision(action, kind, path, object_id, parent_id, field, json.loads(old), json.loads(new))
        for action, kind, path, object_id, parent_id, field, old, new in rows
    ]


def mark_applied(db: Database, run_id: int, at: datetime) -> None:
    db.execute("UPDATE revisions SET applied_at = ? WHERE run_id = ?", (at, run_id))


@dataclass(frozen=True)
class AppliedRevision:
    run_id: int
    applied_at: datetime
    action: str
    kind: str
    path: str
    field: str | None
    old_value: object
    new_value: object


def history(
    db: Database, datastore_id: int, limit: int = 100, run_id: int | None = None
) -> list[AppliedRevision]:
    """The latest applied revisions of a datastore (or of one of its runs), oldest first."""
    run_filter = "" if run_id is None else " AND run_id = ?"
    rows = db.fetchall(
        "SELECT run_id, applied_at, action, kind, path, field, old_value, new_value"
        f" FROM revisions WHERE datastore_id = ? AND applied_at IS NOT NULL{run_filter}"
        " ORDER BY id DESC LIMIT ?",
        (datastore_id, *(() if run_id is None else (run_id,)), limit),
    )
    return [
        AppliedRevision(run, at, action, kind, path, field, json.loads(old), json.loads(new))
        for run, at, action, kind, path, field, old, new in reversed(rows)
    ]
