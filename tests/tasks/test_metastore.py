"""Metamapper's metastore on the real PostgreSQL: its schema, the connection from
METAMAPPER_DB_*, datastore credentials under METAMAPPER_FERNET_KEY, the heartbeat."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from cryptography.fernet import Fernet

from metamapper.metastore import datastores, heartbeats, schema
from metamapper.metastore.connection import (
    MetastoreSettings,
    MetastoreUnavailable,
    open_metastore,
)
from metamapper.metastore.datastores import ConnectionSettings, DatastoreError
from metamapper.metastore.fernet import Cipher, UndecryptableSecret
from metamapper.metastore.workspaces import Workspace, create_user, create_workspace
from tests.tasks.conftest import MetamapperDB

METAMAPPER_TABLES = {
    "auth_users", "auth_workspaces", "auth_memberships", "definitions_datastore",
    "definitions_schema", "definitions_table", "definitions_column", "definitions_table_usage",
    "definitions_table_usage_exists", "revisioner_run", "revisioner_runtask", "checks",
    "checks_query", "checks_execution", "checks_expectation", "checks_expectationresult",
    "checks_alertrule", "healthchecks_heartbeat", "audit_activity", "sso_domains",
}


def test_schema_has_metamapper_tables(metamapper_db: MetamapperDB) -> None:
    with psycopg.connect(metamapper_db.dsn, autocommit=True) as conn:
        assert schema.tables(conn) >= METAMAPPER_TABLES
        with pytest.raises(schema.SchemaExists):
            schema.create(conn)
        password_type = conn.execute(
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_name = 'definitions_datastore' AND column_name = 'password'"
        ).fetchone()
        assert password_type == ("bytea",)
        # Django's foreign keys: checked at commit, so rows may be written in any order.
        deferred = conn.execute(
            "SELECT bool_and(condeferrable AND condeferred) FROM pg_constraint WHERE contype = 'f'"
        ).fetchone()
        assert deferred == (True,)
        # A workspace's datastores have distinct names, as the web app's model says.
        unique = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'definitions_datastore'::regclass AND contype = 'u'"
        ).fetchall()
        assert ("UNIQUE (workspace_id, name)",) in unique


def test_settings_default_to_the_web_apps() -> None:
    assert MetastoreSettings.from_env({"METAMAPPER_DB_HOST": "database"}) == MetastoreSettings(
        host="database", port=5432, name="metamapper", user="postgres", password="postgres"
    )
    given = MetastoreSettings.from_env({
        "METAMAPPER_DB_HOST": "pg", "METAMAPPER_DB_PORT": "6432", "METAMAPPER_DB_NAME": "mm",
        "METAMAPPER_DB_USER": "app", "METAMAPPER_DB_PASSWORD": "hunter2",
    })
    assert (given.host, given.port, given.name, given.user) == ("pg", 6432, "mm", "app")
    assert "hunter2" not in repr(given) + given.display
    with pytest.raises(MetastoreUnavailable, match="METAMAPPER_DB_PORT"):
        MetastoreSettings.from_env({"METAMAPPER_DB_PORT": "x"})
    from_url = MetastoreSettings.from_dsn("postgresql://app:p%40ss@pg:6432/mm")
    assert from_url == MetastoreSettings("pg", 6432, "mm", "app", "p@ss")
    assert MetastoreSettings.from_env(from_url.environment()) == from_url


def test_connection_errors_hold_no_password(
    metamapper_db: MetamapperDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_metastore() as conn:  # METAMAPPER_DB_* as the fixture set them
        assert conn.execute("SELECT current_database()").fetchone() == (
            metamapper_db.env["METAMAPPER_DB_NAME"],
        )
    # The server names the unknown role in its error: here that is the password too.
    monkeypatch.setenv("METAMAPPER_DB_USER", "Pa55-w0rd")
    monkeypatch.setenv("METAMAPPER_DB_PASSWORD", "Pa55-w0rd")
    with pytest.raises(MetastoreUnavailable) as raised, open_metastore():
        pass
    assert "Pa55-w0rd" not in str(raised.value)
    assert "does not exist" in str(raised.value)


def _rfc5869_key(secret: str) -> bytes:
    """HKDF-SHA256 by hand (RFC 5869), with Metamapper's salt and info: the key the web
    app derives from one secret of METAMAPPER_FERNET_KEY."""
    prk = hmac.new(b"django-fernet-fields-hkdf-salt", secret.encode(), hashlib.sha256).digest()
    okm = hmac.new(prk, b"django-fernet-fields" + b"\x01", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(okm)


@pytest.fixture
def workspace(metamapper_db: MetamapperDB) -> Iterator[tuple[psycopg.Connection, Workspace]]:
    with open_metastore() as conn:
        user = create_user(conn, "owner@example.com", "Ada", "Owner")
        yield conn, create_workspace(conn, "acme", "Acme", user)


def test_datastore_password_as_the_web_app_encrypts_it(
    workspace: tuple[psycopg.Connection, Workspace], metamapper_db: MetamapperDB
) -> None:
    conn, ws = workspace
    settings = ConnectionSettings("postgresql", "db.internal", 5432, "shop", "app", "x@y/z%")
    datastore_id = datastores.register(
        conn, ws.id, "Shop DB", settings, incident_contacts=["oncall@example.com"]
    )
    # What the web app would have stored: a Fernet token under the derived key.
    stored = conn.execute(
        "SELECT password FROM definitions_datastore WHERE id = %s", (datastore_id,)
    ).fetchone()
    assert stored is not None
    web_app = Fernet(_rfc5869_key(metamapper_db.fernet_key))
    assert web_app.decrypt(stored[0]) == b"x@y/z%"
    conn.execute(
        "UPDATE definitions_datastore SET password = %s WHERE id = %s",
        (web_app.encrypt(b"from-the-web-app"), datastore_id),
    )

    loaded = datastores.load(conn, datastore_id)
    assert loaded.connection.password == "from-the-web-app"
    assert (loaded.name, loaded.slug, loaded.workspace_slug) == ("Shop DB", "shop-db", "acme")
    assert loaded.incident_contacts == ("oncall@example.com",)
    assert loaded.interval == timedelta(days=1)
    assert "from-the-web-app" not in repr(loaded)
    assert loaded.connection.url() == "postgresql://app:from-the-web-app@db.internal:5432/shop"

    assert datastores.set_version(conn, datastore_id, "16.4")
    assert not datastores.set_version(conn, datastore_id, "16.4")
    assert datastores.load(conn, datastore_id).version == "16.4"

    conn.execute("UPDATE definitions_datastore SET deleted_at = now() WHERE id = %s",
                 (datastore_id,))
    with pytest.raises(DatastoreError, match="no datastore"):
        datastores.load(conn, datastore_id)
    assert datastores.load(conn, datastore_id, include_deleted=True).deleted_at is not None


def test_fernet_key_rotation(workspace: tuple[psycopg.Connection, Workspace]) -> None:
    conn, ws = workspace
    settings = ConnectionSettings("mysql", "h", 3306, "d", "u", "Sesame-42")
    old_id = datastores.register(conn, ws.id, "old", settings, cipher=Cipher(["k-old"]))
    rotated = Cipher(["k-new", "k-old"])
    assert datastores.load(conn, old_id, rotated).connection.password == "Sesame-42"
    new_id = datastores.register(conn, ws.id, "new", settings, cipher=rotated)
    assert datastores.load(conn, new_id, Cipher(["k-new"])).connection.password == "Sesame-42"
    with pytest.raises(UndecryptableSecret):
        datastores.load(conn, new_id, Cipher(["k-old"]))


def test_wrong_fernet_key_is_a_clear_error_without_secrets(
    workspace: tuple[psycopg.Connection, Workspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    conn, ws = workspace
    settings = ConnectionSettings("postgresql", "h", 5432, "d", "u", "Sesame-42")
    datastore_id = datastores.register(conn, ws.id, "warehouse", settings)
    monkeypatch.setenv("METAMAPPER_FERNET_KEY", "Wrong-Key-99")
    with pytest.raises(UndecryptableSecret) as raised:
        datastores.load(conn, datastore_id)
    message = str(raised.value)
    assert "password of datastore 'warehouse'" in message and "METAMAPPER_FERNET_KEY" in message
    assert "Wrong-Key-99" not in message and "Sesame-42" not in message


def test_heartbeat_is_one_row_replaced_on_every_beat(metamapper_db: MetamapperDB) -> None:
    with open_metastore() as conn:
        assert heartbeats.latest(conn) is None
        first = heartbeats.beat(conn, datetime(2026, 12, 6, 12, 0, tzinfo=UTC))
        second = heartbeats.beat(conn)
        assert second > first
        rows = conn.execute("SELECT ts FROM healthchecks_heartbeat").fetchall()
        assert rows == [(second,)]
        assert heartbeats.latest(conn) == second


def test_fernet_keys_split_as_the_web_app_splits_them() -> None:
    # Unset: one empty secret, as the web app's "".split(",") gives.
    token = Fernet(_rfc5869_key("")).encrypt(b"s")
    assert Cipher.from_env({}).decrypt(token, "it") == "s"
    # No trimming: " b" is its own secret, not "b".
    token = Fernet(_rfc5869_key(" b")).encrypt(b"s")
    assert Cipher.from_env({"METAMAPPER_FERNET_KEY": "a, b"}).decrypt(token, "it") == "s"
    with pytest.raises(UndecryptableSecret):
        Cipher.from_env({"METAMAPPER_FERNET_KEY": "a,b"}).decrypt(token, "it")
