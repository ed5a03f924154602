"""Inspect real PostgreSQL and MariaDB databases."""

from __future__ import annotations

import pytest

from metamapper.catalog import Schema, Table
from metamapper.inspectors import DatastoreUnavailable, inspect, version
from tests.tasks.sql_scripts import Execute, on_mariadb, on_postgres


@pytest.fixture(params=["postgresql", "mysql"])
def datastore(request: pytest.FixtureRequest) -> tuple[str, str, Execute]:
    """(engine, URL, execute) for a fresh, empty database of each engine."""
    engine: str = request.param
    if engine == "postgresql":
        url = request.getfixturevalue("postgres_dsn")
        return engine, url, on_postgres(url)
    url = request.getfixturevalue("mariadb_dsn")
    return engine, url, on_mariadb(url)


SCHEMA_NAME = {"postgresql": "public"}

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


def test_unreachable_datastore_is_unavailable() -> None:
    for url in ("postgresql://nobody:TopSecret@127.0.0.1:1/none",
                "mysql://nobody:TopSecret@127.0.0.1:1/none"):
        with pytest.raises(DatastoreUnavailable) as raised:
            inspect(url)
        assert "TopSecret" not in str(raised.value)
        with pytest.raises(DatastoreUnavailable):
            version(url)


def test_version(datastore: tuple[str, str, Execute]) -> None:
    engine, url, _ = datastore
    found = version(url)
    assert found[0].isdigit() and ("MariaDB" in found) == (engine == "mysql")


@pytest.mark.parametrize("datastore", ["mysql"], indirect=True)
def test_innodb_table_id_survives_a_rename(datastore: tuple[str, str, Execute]) -> None:
    _, url, execute = datastore
    execute("CREATE TABLE t (id INTEGER)")
    before = _table(inspect(url), "t")
    execute("RENAME TABLE t TO u")
    after = _table(inspect(url), "u")
    assert before.rename_ref is not None and before.rename_ref == after.rename_ref
    assert before.native_id is None  # not stable across a rebuild: matched by name
