"""``app.audit.tasks.audit`` on Metamapper's metastore: entries as the web app reads them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from metamapper.celery import app
from metamapper.metastore import open_metastore, workspaces
from tests.tasks.conftest import MetamapperDB

AUDIT = "app.audit.tasks.audit"


@pytest.fixture
def metastore(metamapper_db: MetamapperDB) -> Iterator[tuple[psycopg.Connection, int, str]]:
    """The metastore, a user and their workspace."""
    app.loader.import_default_modules()
    with open_metastore() as conn:
        user = workspaces.create_user(conn, "ada@example.com")
        workspace = workspaces.create_workspace(conn, "analytics", "Analytics", user)
        yield conn, user, workspace.id


def audit(*args: Any, **kwargs: Any) -> int:
    """Run the registered task in this process, as a worker would run the message."""
    result: int = app.tasks[AUDIT].apply(args, kwargs, throw=True).get()
    return result


def rows(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT id, actor_id, workspace_id, verb, target_object_id, target_content_type_id,"
        " action_object_object_id, old_values, new_values, extras FROM audit_activity"
        " ORDER BY id").fetchall()


def test_an_audited_change_is_an_entry(metastore: tuple[psycopg.Connection, int, str]) -> None:
    conn, user, workspace = metastore
    # As the web app's audit decorator sends it: two positional, the rest by keyword.
    entry = audit(user, workspace, verb="updated", old_values={"short_desc": None},
                  new_values={"short_desc": "Orders"}, target_object_id=42,
                  target_content_type_id=None, extras={"ip": "10.0.0.1"})
    assert rows(conn) == [(entry, user, workspace, "updated", "42", None, None,
                           {"short_desc": None}, {"short_desc": "Orders"}, {"ip": "10.0.0.1"})]


def test_repeated_edits_within_15_minutes_are_one_entry(
    metastore: tuple[psycopg.Connection, int, str],
) -> None:
    conn, user, workspace = metastore
    edit = {"actor_id": user, "workspace_id": workspace, "verb": "updated",
            "target_object_id": "7"}
    first = audit(**edit, old_values={"readme": ""}, new_values={"readme": "a"})
    again = audit(**edit, old_values={"readme": "a"}, new_values={"readme": "ab"})
    assert again == first
    assert [(r[7], r[8]) for r in rows(conn)] == [({"readme": "a"}, {"readme": "ab"})]
    # Another field is another entry; so are another target and another verb.
    other_field = audit(**edit, old_values={"tags": []}, new_values={"tags": ["pii"]})
    other_target = audit(**{**edit, "target_object_id": "8"}, old_values={"readme": ""},
                         new_values={"readme": "b"})
    assert len({first, other_field, other_target}) == 3
    # Past the window, the same edit starts a new entry.
    conn.execute("UPDATE audit_activity SET timestamp = timestamp - interval '16 minutes'")
    later = audit(**edit, old_values={"readme": "ab"}, new_values={"readme": "abc"})
    assert later not in {first, other_field, other_target}
    assert len(rows(conn)) == 4
