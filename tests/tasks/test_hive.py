"""A Hive Metastore datastore, read through its backing database (MariaDB or PostgreSQL)
and run by the revisioner into Metamapper's catalog.

The backing tables are written here from the facts of Hive's metastore schema (the
tables and columns the inspector reads, Hive's types; Hive's schema tool creates more).
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from metamapper.inspectors import datastore_version, inspect_datastore
from metamapper.inspectors.mysql import connect_args
from metamapper.metastore import datastores, workspaces
from metamapper.metastore.datastores import ConnectionSettings
from metamapper.revisioner import steps
from tests.tasks.sql_scripts import Execute, on_mariadb, on_postgres
from tests.tasks.test_definitions import tables

HIVE_SCHEMA = """
CREATE TABLE {q}VERSION{q} ({q}VER_ID{q} BIGINT PRIMARY KEY,
    {q}SCHEMA_VERSION{q} VARCHAR(127) NOT NULL, {q}VERSION_COMMENT{q} VARCHAR(255));
CREATE TABLE {q}DBS{q} ({q}DB_ID{q} BIGINT PRIMARY KEY, {q}DESC{q} VARCHAR(4000),
    {q}DB_LOCATION_URI{q} VARCHAR(4000) NOT NULL, {q}NAME{q} VARCHAR(128),
    {q}OWNER_NAME{q} VARCHAR(128));
CREATE TABLE {q}CDS{q} ({q}CD_ID{q} BIGINT PRIMARY KEY);
CREATE TABLE {q}SDS{q} ({q}SD_ID{q} BIGINT PRIMARY KEY, {q}CD_ID{q} BIGINT,
    {q}INPUT_FORMAT{q} VARCHAR(4000), {q}LOCATION{q} VARCHAR(4000));
CREATE TABLE {q}COLUMNS_V2{q} ({q}CD_ID{q} BIGINT NOT NULL, {q}COMMENT{q} VARCHAR(256),
    {q}COLUMN_NAME{q} VARCHAR(767) NOT NULL, {q}TYPE_NAME{q} TEXT,
    {q}INTEGER_IDX{q} INTEGER NOT NULL, PRIMARY KEY ({q}CD_ID{q}, {q}COLUMN_NAME{q}));
CREATE TABLE {q}TBLS{q} ({q}TBL_ID{q} BIGINT PRIMARY KEY, {q}CREATE_TIME{q} INTEGER NOT NULL,
    {q}DB_ID{q} BIGINT, {q}OWNER{q} VARCHAR(767), {q}SD_ID{q} BIGINT,
    {q}TBL_NAME{q} VARCHAR(256), {q}TBL_TYPE{q} VARCHAR(128));
CREATE TABLE {q}TABLE_PARAMS{q} ({q}TBL_ID{q} BIGINT NOT NULL,
    {q}PARAM_KEY{q} VARCHAR(256) NOT NULL, {q}PARAM_VALUE{q} TEXT,
    PRIMARY KEY ({q}TBL_ID{q}, {q}PARAM_KEY{q}));
CREATE TABLE {q}PARTITION_KEYS{q} ({q}TBL_ID{q} BIGINT NOT NULL,
    {q}PKEY_COMMENT{q} VARCHAR(4000), {q}PKEY_NAME{q} VARCHAR(128) NOT NULL,
    {q}PKEY_TYPE{q} VARCHAR(767) NOT NULL, {q}INTEGER_IDX{q} INTEGER NOT NULL,
    PRIMARY KEY ({q}TBL_ID{q}, {q}PKEY_NAME{q}));
INSERT INTO {q}VERSION{q} VALUES (1, '3.1.0', 'Hive release version 3.1.0');
INSERT INTO {q}DBS{q} VALUES (1, 'Default Hive database', 'hdfs:///warehouse', 'default',
    'public'), (2, NULL, 'hdfs:///warehouse/sales.db', 'sales', 'etl');
INSERT INTO {q}CDS{q} VALUES (10), (11);
INSERT INTO {q}SDS{q} VALUES (20, 10, 'OrcInputFormat', 'hdfs:///warehouse/sales.db/orders'),
    (21, 11, NULL, NULL);
INSERT INTO {q}COLUMNS_V2{q} VALUES (10, 'the order', 'id', 'bigint', 0),
    (10, NULL, 'items', 'array<struct<sku:string,qty:int>>', 1),
    (11, NULL, 'id', 'bigint', 0);
INSERT INTO {q}TBLS{q} VALUES (100, 0, 2, 'etl', 20, 'orders', 'MANAGED_TABLE'),
    (101, 0, 2, 'etl', 21, 'big_orders', 'VIRTUAL_VIEW');
INSERT INTO {q}TABLE_PARAMS{q} VALUES (100, 'comment', 'one row per order'),
    (100, 'numRows', '12');
INSERT INTO {q}PARTITION_KEYS{q} VALUES (100, 'the day', 'ds', 'string', 0)
"""


@pytest.fixture(params=["mysql", "postgresql"])
def backing(request: pytest.FixtureRequest) -> tuple[ConnectionSettings, Execute]:
    """A Hive metastore's backing database with the schema above: the Hive datastore's
    connection settings, and a way to change it."""
    dialect: str = request.param
    if dialect == "mysql":
        url = request.getfixturevalue("mariadb_dsn")
        args = connect_args(url)
        settings = ConnectionSettings("hive", args["host"], args["port"],
                                      url.rsplit("/", 1)[1], args["user"], args["password"],
                                      {"dialect": "mysql"})
        execute = on_mariadb(url)
        execute(HIVE_SCHEMA.format(q="`"))
        return settings, execute
    url = request.getfixturevalue("postgres_dsn")
    parts = conninfo_to_dict(url)
    settings = ConnectionSettings("hive", str(parts["host"]), int(parts["port"] or 5432),
                                  str(parts["dbname"]), str(parts["user"]),
                                  str(parts.get("password") or ""), {"dialect": "postgresql"})
    execute = on_postgres(url)
    execute(HIVE_SCHEMA.format(q='"'))
    return settings, execute


def test_hive_catalog(backing: tuple[ConnectionSettings, Execute]) -> None:
    settings, _ = backing
    default, sales = inspect_datastore(settings)
    assert (default.name, default.native_id, default.tables) == ("default", "1", [])
    assert sales.native_id == "2"
    big_orders, orders = sales.tables
    assert (orders.table_type, orders.comment, orders.native_id) == (
        "MANAGED_TABLE", "one row per order", "100")
    assert [(c.name, c.ordinal, c.data_type, c.primary_key, c.nullable, c.comment, c.native_id)
            for c in orders.columns] == [
        ("id", 1, "bigint", False, True, "the order", "100/id"),
        ("items", 2, "array<struct<sku:string,qty:int>>", False, True, None, "100/items"),
        ("ds", 3, "string", True, False, "the day", "100/ds"),
    ]
    assert (big_orders.table_type, [c.name for c in big_orders.columns]) == (
        "VIRTUAL_VIEW", ["id"])
    assert datastore_version(settings) == "3.1.0"


def test_hive_runs_into_metamappers_catalog(
    backing: tuple[ConnectionSettings, Execute], metastore: psycopg.Connection
) -> None:
    settings, execute = backing
    owner = workspaces.create_user(metastore, "hive@example.org")
    workspace = workspaces.create_workspace(metastore, "lake", "Lake", owner)
    datastore_id = datastores.register(metastore, workspace.id, "Lake", settings)
    assert steps.run_now(metastore, datastore_id).status == "SUCCESS"
    first = tables(metastore, datastore_id)
    assert {name: row[3] for name, row in first.items()} == {
        "orders": "MANAGED_TABLE", "big_orders": "VIRTUAL_VIEW"}

    q = "`" if settings.extras["dialect"] == "mysql" else '"'
    execute(f"UPDATE {q}TBLS{q} SET {q}TBL_NAME{q} = 'purchases' WHERE {q}TBL_ID{q} = 100")
    assert steps.run_now(metastore, datastore_id).status == "SUCCESS"
    second = tables(metastore, datastore_id)
    assert set(second) == {"purchases", "big_orders"}
    assert second["purchases"][0] == first["orders"][0]  # the same row, renamed
