"""Usage collection: which tables queries read, the scores, and collection from
PostgreSQL's pg_stat_statements into Metamapper's metastore."""

from __future__ import annotations

from datetime import date

import psycopg
import pytest

from metamapper.usage.counting import QueryRecord, UsageKey, table_counts
from metamapper.usage.parsing import Dialect, Session, TableRef, tables_read
from metamapper.usage.scoring import TableScore, TableTotals, score_tables, usage_score

SHOP = Session(database="shop", schema="public")
PG = Dialect.POSTGRESQL


def ref(name: str) -> TableRef:
    database, schema, table = name.split(".")
    return TableRef(database, schema, table)


@pytest.mark.parametrize(("query", "tables"), [
    ("SELECT * FROM orders WHERE id = $1", {"shop.public.orders"}),
    ("SELECT o.id FROM sales.orders o JOIN public.customers c ON c.id = o.customer_id",
     {"shop.sales.orders", "shop.public.customers"}),
    ("SELECT * FROM other.sales.orders", {"other.sales.orders"}),
    # Unquoted names fold to lower case; quoted ones are kept as written.
    ('SELECT * FROM Sales.Orders, "Sales"."Orders"',
     {"shop.sales.orders", "shop.Sales.Orders"}),
    # A CTE is not a table, whatever it is called; what it reads is.
    ("WITH orders AS (SELECT * FROM raw.orders) SELECT * FROM orders",
     {"shop.raw.orders"}),
    ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)"
     " SELECT * FROM n", set()),
    # Subqueries, EXISTS, lateral joins, set operations: every table read.
    ("SELECT * FROM a WHERE id IN (SELECT a_id FROM b)"
     " AND EXISTS (SELECT 1 FROM c WHERE c.id = a.id)",
     {"shop.public.a", "shop.public.b", "shop.public.c"}),
    ("SELECT * FROM a, LATERAL (SELECT * FROM b WHERE b.x = a.x) l",
     {"shop.public.a", "shop.public.b"}),
    ("SELECT id FROM a UNION SELECT id FROM s.b", {"shop.public.a", "shop.s.b"}),
    # Table functions and VALUES read no table.
    ("SELECT * FROM generate_series($1, $2), (VALUES (1)) v(x)", set()),
    ("SELECT 1", set()),
    # Writes do not count (Metamapper counts SELECT statements).
    ("INSERT INTO target SELECT * FROM source", set()),
    ("UPDATE orders SET state = $1", set()),
    ("CREATE TABLE t (a int)", set()),
    # Text that does not parse reads nothing.
    ("SELEC * FROM orders", set()),
    ("SELECT 'unterminated FROM orders", set()),
    ("<insufficient privilege>", set()),
    # Several statements: the queries among them.
    ("SELECT * FROM a; DELETE FROM b; SELECT * FROM c", {"shop.public.a", "shop.public.c"}),
])
def test_tables_read_in_postgresql(query: str, tables: set[str]) -> None:
    assert tables_read(query, PG, SHOP) == {ref(name) for name in tables}


def test_the_session_schema_places_bare_names() -> None:
    session = Session(database="shop", schema="analytics")
    assert tables_read("SELECT * FROM orders, public.customers", PG, session) == {
        ref("shop.analytics.orders"), ref("shop.public.customers"),
    }


@pytest.mark.parametrize(("query", "tables"), [
    # Metamapper keeps Snowflake's names in lower case, quoted or not.
    ('SELECT * FROM SALES.ORDERS JOIN "Public"."Customers" USING (ID)',
     {"shop.sales.orders", "shop.public.customers"}),
    ("SELECT * FROM SHOP.SALES.ORDERS", {"shop.sales.orders"}),
    ("SELECT f.value FROM t, LATERAL FLATTEN(input => t.items) f", {"shop.public.t"}),
])
def test_tables_read_in_snowflake(query: str, tables: set[str]) -> None:
    assert tables_read(query, Dialect.SNOWFLAKE, SHOP) == {ref(name) for name in tables}


DAY = date(2026, 12, 1)


def record(query: str, count: int, user: str = "alice", day: date = DAY,
           db_name: str = "shop") -> QueryRecord:
    return QueryRecord(execution_date=day, db_name=db_name, db_user=user, db_schema="public",
                       query_text=query, query_count=count)


def test_table_counts_sum_by_day_table_and_user() -> None:
    counts = table_counts([
        record("SELECT * FROM orders JOIN customers USING (id)", 3),
        record("SELECT count(*) FROM orders", 2),
        record("SELECT * FROM orders", 5, user="bob"),
        record("SELECT * FROM orders", 7, day=date(2026, 12, 2)),
        # Another database's table is not this datastore's.
        record("SELECT * FROM warehouse.public.orders", 11),
        record("SELECT * FROM SHOP.public.orders", 13),
        record("not sql at all", 17),
    ], PG)
    assert counts == {
        UsageKey(DAY, "public", "orders", "alice"): 3 + 2 + 13,
        UsageKey(DAY, "public", "customers", "alice"): 3,
        UsageKey(DAY, "public", "orders", "bob"): 5,
        UsageKey(date(2026, 12, 2), "public", "orders", "alice"): 7,
    }


def test_idempotency_id_is_metamappers_md5_of_the_fields() -> None:
    # md5 of "ds1" "2026-12-01" "shop" "alice" "public" "SELECT 1", concatenated.
    assert record("SELECT 1", 4).idempotency_id("ds1") == "113a1ecd12a54619034a2502fd303b19"


@pytest.mark.parametrize(("rank", "tables", "score"), [
    (1, 1, 99), (1, 2, 49), (2, 2, 99), (1, 4, 24), (4, 4, 99),
    (1, 3, 32), (2, 3, 66), (1, 100, 0), (1, 200, 0), (3, 200, 1),
])
def test_usage_score(rank: int, tables: int, score: int) -> None:
    assert usage_score(rank, tables) == score


def test_usage_score_is_postgresqls_arithmetic(postgres_dsn: str) -> None:
    """Metamapper's formula evaluated by PostgreSQL itself, for every rank of 1 to 60
    tables and some larger datastores (where the rounding of halves shows)."""
    pairs = [(r, n) for n in [*range(1, 61), 199, 400, 800, 1999, 4000] for r in range(1, n + 1)]
    with psycopg.connect(postgres_dsn) as conn:
        expected = conn.execute(
            "SELECT GREATEST(COALESCE((r / n::float)::decimal(6,4) * 100, 0) - 1, 0)::integer"
            " FROM unnest(%s::int[], %s::int[]) WITH ORDINALITY AS p(r, n, i) ORDER BY i",
            ([r for r, _ in pairs], [n for _, n in pairs]),
        ).fetchall()
    assert [usage_score(r, n) for r, n in pairs] == [row[0] for row in expected]


def totals(table: str, queries: int, users: int = 1, first: date = DAY) -> TableTotals:
    return TableTotals("public", table, queries, users, first)


def test_score_tables_ranks_ties_together() -> None:
    today = date(2026, 12, 11)
    scores = score_tables([
        totals("a", 10, users=2, first=date(2026, 12, 1)),
        totals("b", 30),
        totals("c", 10),
        totals("d", 50, users=3, first=date(2026, 11, 11)),
    ], today)
    assert scores == [
        TableScore("public", "a", 24, 10, 2, 10),   # rank 1 of 4 (tied with c)
        TableScore("public", "b", 74, 30, 1, 10),   # rank 3 of 4
        TableScore("public", "c", 24, 10, 1, 10),
        TableScore("public", "d", 99, 50, 3, 30),
    ]


def test_score_tables_of_nothing() -> None:
    assert score_tables([], DAY) == []
