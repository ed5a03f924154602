"""Inspect real PostgreSQL, MariaDB and SQLite databases, change them, inspect again."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
import pymysql
import pytest

from metamapper.catalog import Schema, Table
from metamapper.inspectors import DatastoreUnavailable, inspect
from metamapper.inspectors.mysql import connect_args
from metamapper.metastore import catalog_store, datastores, revisions
from metamapper.metastore.connection import Database
from metamapper.revisioner.workflow import run_now

Execute = Callable[[str], None]


def _postgres(url: str) -> Execute:
    def execute(script: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(script.encode())

    return execute


def _mariadb(url: str) -> Execute:
    def execute(script: str) -> None:
        conn = pymysql.connect(**connect_args(url), database=url.rsplit("/", 1)[1])
        try:
            with conn.cursor() as cursor:
                for statement in filter(str.strip, script.split(";")):
                    cursor.execute(statement)
        finally:
            conn.close()

    return execute


def _sqlite(url: str) -> Execute:
    def execute(script: str) -> None:
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            conn.executescript(script)
        finally:
            conn.close()

    return execute


@pytest.fixture(params=["postgresql", "mysql", "sqlite"])
def datastore(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, Execute]:
    """(engine, URL, execute) for a fresh, empty database of each engine."""
    engine: str = request.param
    if engine == "postgresql":
        url = request.getfixturevalue("postgres_dsn")
        return engine, url, _postgres(url)
    if engine == "mysql":
        url = request.getfixturevalue("mariadb_dsn")
        return engine, url, _mariadb(url)
    url = f"sqlite:///{tmp_path / 'datastore.db'}"
    sqlite3.connect(url.removeprefix("sqlite:///")).close()
    return engine, url, _sqlite(url)


SCHEMA_NAME = {"postgresql": "public", "sqlite": "main"}

CREATE = """
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    name VARCHAR(50) NOT NULL DEFAULT 'anonymous',
    email VARCHAR(100)
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER,
    total NUMERIC(10, 2),
    note VARCHAR(20)
);
CREATE TABLE legacy (id INTEGER);
CREATE UNIQUE INDEX customers_email ON customers (email);
CREATE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 100
"""

#: Add a column, change a type, rename a column, drop a table, add an index.
CHANGE = {
    "postgresql": """
        ALTER TABLE orders ADD COLUMN shipped_at TIMESTAMP;
        ALTER TABLE customers ALTER COLUMN name TYPE TEXT;
        ALTER TABLE orders RENAME COLUMN note TO remark;
        DROP TABLE legacy;
        CREATE INDEX orders_customer ON orders (customer_id)
    """,
    "mysql": """
        ALTER TABLE orders ADD COLUMN shipped_at TIMESTAMP NULL;
        ALTER TABLE customers MODIFY name TEXT NOT NULL DEFAULT 'anonymous';
        ALTER TABLE orders RENAME COLUMN note TO remark;
        DROP TABLE legacy;
        CREATE INDEX orders_customer ON orders (customer_id)
    """,
    # SQLite cannot alter a column's type: it rebuilds the table (sqlite.org/lang_altertable).
    "sqlite": """
        ALTER TABLE orders ADD COLUMN shipped_at TIMESTAMP;
        CREATE TABLE customers_new (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL DEFAULT 'anonymous',
            email VARCHAR(100)
        );
        INSERT INTO customers_new SELECT * FROM customers;
        DROP TABLE customers;
        ALTER TABLE customers_new RENAME TO customers;
        CREATE UNIQUE INDEX customers_email ON customers (email);
        ALTER TABLE orders RENAME COLUMN note TO remark;
        DROP TABLE legacy;
        CREATE INDEX orders_customer ON orders (customer_id)
    """,
}


def _schema(engine: str, url: str) -> str:
    return SCHEMA_NAME.get(engine) or url.rsplit("/", 1)[1]


def _table(schemas: list[Schema], name: str) -> Table:
    [schema] = schemas
    return next(t for t in schema.tables if t.name == name)


def test_inspector_reads_the_catalog(datastore: tuple[str, str, Execute]) -> None:
    engine, url, execute = datastore
    execute(CREATE)
    schemas = inspect(url)
    assert [s.name for s in schemas] == [_schema(engine, url)]
    [schema] = schemas
    assert {t.name: t.table_type for t in schema.tables} == {
        "big_orders": "view", "customers": "table", "legacy": "table", "orders": "table",
    }
    customers = _table(schemas, "customers")
    assert [c.name for c in customers.columns] == ["id", "name", "email"]
    assert [c.ordinal for c in customers.columns] == [1, 2, 3]
    id_, name, email = customers.columns
    assert id_.primary_key and not name.primary_key and not email.primary_key
    assert not name.nullable and email.nullable
    assert "anonymous" in (name.default_value or "")
    assert (name.max_length, email.max_length) == (50, 100)
    total = _table(schemas, "orders").columns[2]
    assert (total.max_length, total.numeric_scale) == (10, 2)
    unique = next(i for i in customers.indexes if i.name == "customers_email")
    assert (unique.columns, unique.is_unique, unique.is_primary) == (["email"], True, False)
    assert [c.name for c in _table(schemas, "big_orders").columns] == ["id", "total"]
    if engine == "postgresql":
        assert schema.native_id and customers.native_id
        assert all(c.native_id for c in customers.columns)
        assert any(i.is_primary and i.columns == ["id"] for i in customers.indexes)


@pytest.mark.parametrize("datastore", ["postgresql", "mysql"], indirect=True)
def test_comments_are_read(datastore: tuple[str, str, Execute]) -> None:
    engine, url, execute = datastore
    if engine == "postgresql":
        execute("CREATE TABLE t (c INTEGER); COMMENT ON TABLE t IS 'facts';"
                " COMMENT ON COLUMN t.c IS 'a count'")
    else:
        execute("CREATE TABLE t (c INTEGER COMMENT 'a count') COMMENT 'facts'")
    table = _table(inspect(url), "t")
    assert (table.comment, table.columns[0].comment) == ("facts", "a count")


@pytest.mark.parametrize(
    ("datastore", "metastore_db"),
    [
        ("postgresql", "sqlite"),
        ("mysql", "sqlite"),
        ("mysql", "postgresql"),
        ("sqlite", "sqlite"),
        ("sqlite", "postgresql"),
    ],
    indirect=True,
)
def test_revisions_after_changes(
    datastore: tuple[str, str, Execute], metastore_db: Database
) -> None:
    engine, url, execute = datastore
    execute(CREATE)
    store = datastores.add(metastore_db, "shop", url=url)
    first = run_now(metastore_db, store)
    schema = _schema(engine, url)
    assert first.status == "SUCCESS"
    assert [(r.action, r.kind, r.path) for r in revisions.history(metastore_db, store.id)] == [
        ("CREATED", "schema", schema),
    ]
    assert run_now(metastore_db, store).status == "SUCCESS"
    assert revisions.history(metastore_db, store.id, run_id=first.id + 1) == []

    execute(CHANGE[engine])
    third = run_now(metastore_db, store)
    assert third.status == "SUCCESS"
    changes = revisions.history(metastore_db, store.id, run_id=third.id)
    assert sorted((r.action, r.kind, r.path, r.field) for r in changes) == sorted([
        ("CREATED", "column", f"{schema}.orders.shipped_at", None),
        ("MODIFIED", "column", f"{schema}.customers.name", "data_type"),
        ("MODIFIED", "column", f"{schema}.customers.name", "max_length"),
        ("MODIFIED", "column", f"{schema}.orders.remark", "name"),
        ("DROPPED", "table", f"{schema}.legacy", None),
        ("CREATED", "index", f"{schema}.orders.orders_customer", None),
    ])
    rename = next(r for r in changes if r.field == "name")
    assert (rename.old_value, rename.new_value) == ("note", "remark")
    length = next(r for r in changes if r.field == "max_length")
    assert length.old_value == 50

    # The stored catalog now is what a fresh inspection sees.
    stored = catalog_store.load(metastore_db, store.id)
    assert _comparable(stored) == _comparable(inspect(url))


def _comparable(schemas: list[Schema]) -> list[tuple[object, ...]]:
    return [
        (s.name, t.name, t.table_type, t.comment,
         [(c.name, c.ordinal, c.data_type, c.max_length, c.nullable, c.primary_key)
          for c in t.columns],
         [(i.name, i.columns, i.is_unique) for i in t.indexes])
        for s in schemas for t in s.tables
    ]


def test_unreachable_datastore_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(DatastoreUnavailable):
        inspect("postgresql://nobody:pw@127.0.0.1:1/none")
    with pytest.raises(DatastoreUnavailable):
        inspect("mysql://nobody:pw@127.0.0.1:1/none")
    with pytest.raises(DatastoreUnavailable):
        inspect(f"sqlite:///{tmp_path / 'missing.db'}")
