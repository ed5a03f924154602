"""A datastore with query statistics, registered in Metamapper's metastore the web app's
way, for the usage tests.

The datastore is a database of its own on the suite's PostgreSQL (which loads
pg_stat_statements) with ``pg_stat_statements`` created in it, a few tables in two
schemas, and two login roles of the test's own who run queries there. The metastore
knows it as a PostgreSQL datastore, with the catalog the revisioner writes from its
inspection.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from metamapper import inspectors
from metamapper.metastore import datastores, definitions, workspaces
from metamapper.revisioner import collector

#: Schema -> tables (one whose quoted name keeps its capital).
TABLES = {"public": ("orders", "customers", "Returns"), "sales": ("items",)}

#: What the metastore holds as the datastore's password (the server trusts local users).
PASSWORD = "usage-secret-b7d1c0"


@dataclass(frozen=True)
class Shop:
    metastore: str  # the metastore's DSN
    datastore_id: str
    workspace_id: str
    dsn: str  # the datastore's database, as its owner
    roles: tuple[str, str]

    def run(self, role: str, query: str, params: Sequence[Any] = (), times: int = 1) -> None:
        """Run ``query`` ``times`` times as ``role``."""
        with psycopg.connect(make_conninfo(self.dsn, user=role), autocommit=True) as conn:
            for _ in range(times):
                conn.execute(query.encode(), params)

    def usage(self) -> dict[tuple[str, str, str], int]:
        """(schema, table, user) -> query count, over every day."""
        with psycopg.connect(self.metastore) as conn:
            rows = conn.execute(
                "SELECT db_schema, db_table, db_user, SUM(query_count)"
                " FROM definitions_table_usage WHERE datastore_id = %s GROUP BY 1, 2, 3",
                (self.datastore_id,),
            ).fetchall()
        return {(schema, table, user): int(count) for schema, table, user, count in rows}

    def scores(self) -> dict[str, tuple[int, int | None, int | None, int | None]]:
        """table -> (usage_score, usage_total_queries, usage_total_users, usage_window),
        for the tables of :data:`TABLES` (the catalog also has pg_stat_statements' views)."""
        with psycopg.connect(self.metastore) as conn:
            rows = conn.execute(
                "SELECT t.name, t.usage_score, t.usage_total_queries, t.usage_total_users,"
                " t.usage_window FROM definitions_table t"
                " JOIN definitions_schema s ON s.object_id = t.schema_id"
                " WHERE s.datastore_id = %s AND t.name = ANY(%s)",
                (self.datastore_id, [name for names in TABLES.values() for name in names]),
            ).fetchall()
        return {name: tuple(values) for name, *values in rows}


def register_datastore(metastore: psycopg.Connection, workspace_id: str, name: str, engine: str,
                       dsn: str, *, is_enabled: bool = True) -> str:
    server = conninfo_to_dict(dsn)
    settings = datastores.ConnectionSettings(
        engine=engine, host=str(server["host"]), port=int(server.get("port") or 5432),
        database=str(server["dbname"]), username=str(server["user"]), password=PASSWORD,
    )
    return datastores.register(metastore, workspace_id, name, settings, is_enabled=is_enabled)


def inspect_into_catalog(metastore: psycopg.Connection, datastore_id: str,
                         workspace_id: str, url: str) -> None:
    """The datastore's catalog as a revisioner run writes it from an inspection."""
    owner = definitions.Owner(uuid.uuid4().hex, datastore_id, workspace_id)
    for schema in collector.collect(datastore_id, inspectors.inspect(url)):
        definitions.write_schema(metastore, owner, schema)


@contextmanager
def shop_database(datastore_dsn: str) -> Iterator[tuple[str, str]]:
    """The datastore's database: ``pg_stat_statements`` created in it, the tables of
    :data:`TABLES`, and two login roles of the test's own who may query them (dropped
    afterwards); yields the roles."""
    suffix = uuid.uuid4().hex[:8]
    roles = (f"usage_alice_{suffix}", f"usage_bob_{suffix}")
    admin = make_conninfo(datastore_dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        for role in roles:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        with psycopg.connect(datastore_dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
            for schema, names in TABLES.items():
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(schema)))
                for table in names:
                    conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, note text)").format(
                        sql.Identifier(schema, table)))
                    conn.execute(sql.SQL("INSERT INTO {} VALUES (1, 'one'), (2, 'two')").format(
                        sql.Identifier(schema, table)))
                grant = ("GRANT USAGE ON SCHEMA {0} TO {1}, {2};"
                         " GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA {0} TO {1}, {2}")
                conn.execute(sql.SQL(grant).format(sql.Identifier(schema),
                                                   *map(sql.Identifier, roles)))
        yield roles
    finally:
        with psycopg.connect(datastore_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}, {}").format(*map(sql.Identifier, roles)))
        with psycopg.connect(admin, autocommit=True) as conn:
            for role in roles:
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@contextmanager
def shop(metastore_dsn: str, datastore_dsn: str) -> Iterator[Shop]:
    """:func:`shop_database`, registered in the metastore with its catalog."""
    with shop_database(datastore_dsn) as roles:
        suffix = uuid.uuid4().hex[:8]
        with psycopg.connect(metastore_dsn, autocommit=True) as conn:
            user = workspaces.create_user(conn, f"owner-{suffix}@example.com")
            workspace = workspaces.create_workspace(conn, f"shop-{suffix}", "Shop", user)
            datastore_id = register_datastore(conn, workspace.id, "shop", "postgresql",
                                              datastore_dsn)
            inspect_into_catalog(conn, datastore_id, workspace.id, datastore_dsn)
        yield Shop(metastore_dsn, datastore_id, workspace.id, datastore_dsn, roles)
