"""Usage collection: which tables queries read, the scores, and collection from
PostgreSQL's pg_stat_statements into Metamapper's metastore."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from celery import Celery
from psycopg import sql
from psycopg.conninfo import make_conninfo

from devenv.controlplane import free_port
from devenv.waiting import wait_until
from metamapper.inspectors import DatastoreUnavailable
from metamapper.metastore import workspaces
from metamapper.usage import collect, store, tasks
from metamapper.usage.counting import QueryRecord, UsageKey, table_counts
from metamapper.usage.parsing import Dialect, Session, TableRef, tables_read
from metamapper.usage.scoring import TableScore, TableTotals, score_tables, usage_score
from metamapper.usage.statements import (
    MARK,
    Baseline,
    Reading,
    Statement,
    StatementKey,
    calls_since,
)
from metamapper.usage.tasks import (
    delete_table_usage_older_than_90_days,
    get_query_history_results,
    set_usage_from_query_text,
    update_table_usage_metrics,
)
from tests.tasks import usage_world

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
    ("SELECT * FROM " + "(SELECT * FROM " * 400 + "t" + ") x" * 400, set()),  # too deep
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


@pytest.mark.parametrize(("dialect", "query"), [
    (PG, "SELECT * FROM pg_class JOIN pg_namespace n ON n.oid = relnamespace"),
    (PG, "SELECT * FROM pg_stat_statements"),
    (PG, "SELECT * FROM information_schema.tables"),
    (PG, "SELECT * FROM pg_toast.pg_toast_2619"),
    (Dialect.SNOWFLAKE, "SELECT * FROM INFORMATION_SCHEMA.TABLES"),
])
def test_system_relations_are_not_usage(dialect: Dialect, query: str) -> None:
    assert tables_read(query, dialect, SHOP)
    assert table_counts([record(query, 1)], dialect) == {}


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


# --- pg_stat_statements readings (pure) ------------------------------------------

RESET = datetime(2026, 11, 1, tzinfo=UTC)
ALICE_ORDERS = StatementKey("alice", 11)
BOB_ORDERS = StatementKey("bob", 11)
ALICE_ITEMS = StatementKey("alice", 12)


def reading(calls: dict[StatementKey, int], stats_reset: datetime | None = RESET,
            collector_calls: int = 0) -> Reading:
    texts = {11: "SELECT * FROM orders WHERE id = $1", 12: "SELECT * FROM sales.items"}
    found = [Statement(key, texts[key.queryid], n) for key, n in calls.items()]
    if collector_calls:
        found.append(Statement(StatementKey("alice", 99),
                               MARK + " SELECT * FROM public.pg_stat_statements",
                               collector_calls))
    return Reading("shop", "public", stats_reset, tuple(found))


@pytest.mark.parametrize(("before", "after", "counted"), [
    # The first reading counts everything since the statistics' reset.
    (Baseline(None, {}), reading({ALICE_ORDERS: 3, BOB_ORDERS: 1}),
     {ALICE_ORDERS: 3, BOB_ORDERS: 1}),
    # Then only what ran since; statements that did not run are not records.
    (reading({ALICE_ORDERS: 3, BOB_ORDERS: 1}).baseline(),
     reading({ALICE_ORDERS: 5, BOB_ORDERS: 1, ALICE_ITEMS: 2}),
     {ALICE_ORDERS: 2, ALICE_ITEMS: 2}),
    # Statistics reset since: counted from zero.
    (reading({ALICE_ORDERS: 30}).baseline(),
     reading({ALICE_ORDERS: 4}, stats_reset=RESET + timedelta(days=1)), {ALICE_ORDERS: 4}),
    # Fewer calls than before: evicted and seen anew, counted from zero.
    (reading({ALICE_ORDERS: 30, BOB_ORDERS: 5}).baseline(),
     reading({ALICE_ORDERS: 2, BOB_ORDERS: 5}), {ALICE_ORDERS: 2}),
    # The collector's own statements never count.
    (Baseline(None, {}), reading({ALICE_ORDERS: 1}, collector_calls=7), {ALICE_ORDERS: 1}),
])
def test_calls_since_the_baseline(before: Baseline, after: Reading,
                                  counted: dict[StatementKey, int]) -> None:
    records = calls_since(before, after, DAY)
    assert all(r.execution_date == DAY and r.db_name == "shop" and r.db_schema == "public"
               for r in records)
    texts = {s.key: s.query_text for s in after.statements}
    assert sorted((r.db_user, r.query_text, r.query_count) for r in records) == sorted(
        (key.db_user, texts[key], n) for key, n in counted.items())


def test_sync_start_looks_back_to_the_latest_usage_within_30_days() -> None:
    today = date(2026, 12, 31)
    assert collect.sync_start(None, today) == date(2026, 12, 1)
    assert collect.sync_start(date(2026, 12, 30), today) == date(2026, 12, 30)
    assert collect.sync_start(date(2026, 12, 1), today) == date(2026, 12, 1)
    assert collect.sync_start(date(2026, 11, 2), today) == date(2026, 12, 1)


# --- collection into Metamapper's metastore ---------------------------------------


@pytest.fixture
def shop(metamapper_db: Any, postgres_dsn: str) -> Iterator[usage_world.Shop]:
    with usage_world.shop(metamapper_db.dsn, postgres_dsn) as world:
        yield world


def test_collection_counts_what_ran_since_the_last_one_and_scores_the_tables(
    shop: usage_world.Shop,
) -> None:
    alice, bob = shop.roles
    shop.run(alice, "SELECT * FROM orders WHERE id = %s", [1], times=3)
    shop.run(alice, "SELECT o.note, c.note FROM orders o JOIN customers c USING (id)", times=2)
    shop.run(bob, "SELECT count(*) FROM sales.items")
    shop.run(bob, 'SELECT * FROM "Returns" r WHERE r.id > %s', [0], times=4)
    shop.run(bob, "INSERT INTO orders VALUES (%s, 'new')", [3])  # a write reads nothing

    get_query_history_results(shop.datastore_id, "2026-11-01", "2026-12-01")

    assert shop.usage() == {
        ("public", "orders", alice): 5,
        ("public", "customers", alice): 2,
        ("public", "Returns", bob): 4,
        ("sales", "items", bob): 1,
    }
    # The collector's own statements ran (pg_stat_statements saw them) and did not count.
    with psycopg.connect(shop.dsn) as conn:
        own = conn.execute(
            "SELECT sum(calls) FROM pg_stat_statements WHERE query LIKE %s"
            " AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (MARK + "%",),
        ).fetchone()
    assert own is not None and own[0] >= 3
    # Ranked by total queries: items 1 < customers 2 < Returns 4 < orders 5, of four.
    assert shop.scores() == {"items": (24, 1, 1, 0), "customers": (49, 2, 1, 0),
                             "Returns": (74, 4, 1, 0), "orders": (99, 5, 1, 0)}

    # The next collection counts only what ran since.
    shop.run(bob, "SELECT * FROM orders WHERE id = %s", [2], times=4)
    get_query_history_results(shop.datastore_id, "2026-11-01", "2026-12-01")
    assert shop.usage() == {
        ("public", "orders", alice): 5,
        ("public", "orders", bob): 4,
        ("public", "customers", alice): 2,
        ("public", "Returns", bob): 4,
        ("sales", "items", bob): 1,
    }
    assert shop.scores()["orders"] == (99, 9, 2, 0)

    # This database's statistics dropped (as when evicted): counted from zero again.
    with psycopg.connect(shop.dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database"
                     " WHERE datname = current_database()), 0)")
    shop.run(alice, "SELECT * FROM orders WHERE id = %s", [1], times=2)
    get_query_history_results(shop.datastore_id, "2026-11-01", "2026-12-01")
    assert shop.usage()[("public", "orders", alice)] == 7


def test_a_database_without_statistics_is_a_warning_that_names_the_fix(
    metamapper_db: Any, postgres_dsn: str, caplog: pytest.LogCaptureFixture,
) -> None:
    with psycopg.connect(metamapper_db.dsn, autocommit=True) as conn:
        user = workspaces.create_user(conn, "owner@example.com")
        workspace = workspaces.create_workspace(conn, "plain", "Plain", user)
        datastore_id = usage_world.register_datastore(conn, workspace.id, "plain",
                                                      "postgresql", postgres_dsn)
    with caplog.at_level(logging.WARNING, logger="metamapper.usage.tasks"):
        get_query_history_results(datastore_id, "2026-11-01", "2026-12-01")
    (warning,) = caplog.records
    assert warning.levelno == logging.WARNING
    assert "usage of datastore plain is not collected" in warning.getMessage()
    assert "CREATE EXTENSION pg_stat_statements" in warning.getMessage()


def test_a_user_without_pg_read_all_stats_counts_what_it_may_see_later(
    shop: usage_world.Shop, caplog: pytest.LogCaptureFixture,
) -> None:
    alice, _ = shop.roles
    reader = f"usage_reader_{uuid.uuid4().hex[:8]}"
    admin = make_conninfo(shop.dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(reader)))
    try:
        with psycopg.connect(shop.metastore, autocommit=True) as conn:
            datastore_id = usage_world.register_datastore(
                conn, shop.workspace_id, "as reader", "postgresql",
                make_conninfo(shop.dsn, user=reader))
        shop.run(alice, "SELECT * FROM customers", times=3)
        with caplog.at_level(logging.WARNING, logger="metamapper.usage.tasks"):
            get_query_history_results(datastore_id, "2026-11-01", "2026-12-01")
        assert f"hidden from its user {reader}, who needs pg_read_all_stats" in caplog.text
        with psycopg.connect(shop.metastore) as conn:
            counted = conn.execute("SELECT count(*) FROM definitions_table_usage"
                                   " WHERE datastore_id = %s", (datastore_id,)).fetchone()
        assert counted == (0,)

        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(sql.Identifier(reader)))
        get_query_history_results(datastore_id, "2026-11-01", "2026-12-01")
        with psycopg.connect(shop.metastore) as conn:
            rows = conn.execute("SELECT db_table, db_user, query_count FROM definitions_table_usage"
                                " WHERE datastore_id = %s", (datastore_id,)).fetchall()
        assert rows == [("customers", alice, 3)]
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(reader)))


def test_an_unreachable_datastore_fails_without_its_password(shop: usage_world.Shop) -> None:
    with psycopg.connect(shop.metastore, autocommit=True) as conn:
        datastore_id = usage_world.register_datastore(
            conn, shop.workspace_id, "nowhere", "postgresql",
            make_conninfo(shop.dsn, port=str(free_port())))
    with pytest.raises(DatastoreUnavailable) as failure:
        get_query_history_results(datastore_id, "2026-11-01", "2026-12-01")
    assert usage_world.PASSWORD not in str(failure.value)
    assert "Connection refused" in str(failure.value)


def test_a_query_message_counts_once(shop: usage_world.Shop) -> None:
    """Metamapper's worker sends one message per query of a day (Snowflake's history);
    a message delivered twice counts once."""
    args = [shop.datastore_id, "2026-12-01", "shop", "carol", "public",
            "SELECT * FROM orders JOIN sales.items USING (id)", 6]
    set_usage_from_query_text(*args)
    set_usage_from_query_text(*args)
    set_usage_from_query_text(*args[:5], "SELECT * FROM customers", 2)
    assert shop.usage() == {("public", "orders", "carol"): 6, ("sales", "items", "carol"): 6,
                            ("public", "customers", "carol"): 2}
    update_table_usage_metrics(shop.datastore_id)
    window = (collect.today() - date(2026, 12, 1)).days
    # Ranked: customers 1, orders and items tied at 2, of three used tables.
    assert shop.scores() == {"customers": (32, 2, 1, window), "orders": (66, 6, 1, window),
                             "items": (66, 6, 1, window), "Returns": (0, None, None, None)}
    with psycopg.connect(shop.metastore) as conn:
        marks = conn.execute("SELECT id FROM definitions_table_usage_exists").fetchall()
    assert len(marks) == 2


def test_the_purge_deletes_usage_older_than_90_days(shop: usage_world.Shop) -> None:
    today = collect.today()
    with psycopg.connect(shop.metastore, autocommit=True) as conn:
        for age in (0, 89, 91, 400):
            conn.execute(
                "INSERT INTO definitions_table_usage (datastore_id, execution_date, db_schema,"
                " db_table, db_user, query_count) VALUES (%s, %s, 'public', 'orders', 'alice', 1)",
                (shop.datastore_id, today - timedelta(days=age)),
            )
        for age in (1, 91):
            conn.execute("INSERT INTO definitions_table_usage_exists VALUES (%s, now() - %s)",
                         (f"mark-{age}", timedelta(days=age)))

    delete_table_usage_older_than_90_days()

    with psycopg.connect(shop.metastore) as conn:
        days = conn.execute("SELECT execution_date FROM definitions_table_usage"
                            " ORDER BY execution_date DESC").fetchall()
        marks = conn.execute("SELECT id FROM definitions_table_usage_exists").fetchall()
    assert [row[0] for row in days] == [today, today - timedelta(days=89)]
    assert marks == [("mark-1",)]


def test_the_beats_message_collects_each_due_datastore_on_a_usage_worker(
    shop: usage_world.Shop, metamapper_db: Any, postgres_dsn: str, redis_url: str,
    start_worker: Callable[..., Any], process_env: Callable[..., dict[str, str]],
) -> None:
    """Upstream's beat sends queue_table_usage_jobs to the usage queue; a worker of that
    queue collects the enabled PostgreSQL datastores and fails loudly on Snowflake's."""
    with psycopg.connect(metamapper_db.dsn, autocommit=True) as conn:
        disabled = usage_world.register_datastore(conn, shop.workspace_id, "off", "postgresql",
                                                  postgres_dsn, is_enabled=False)
        usage_world.register_datastore(conn, shop.workspace_id, "flakes", "snowflake",
                                       postgres_dsn)
    alice, _ = shop.roles
    shop.run(alice, "SELECT * FROM customers", times=2)
    env = process_env(METAMAPPER_CELERY_BROKER_URL=redis_url, **metamapper_db.env)
    worker = start_worker(env, queues="usage", name="usage")
    sender = Celery("metamapper", broker=redis_url, set_as_current=False)
    sender.conf.update(task_routes={"app.definitions.tasks.usage.*": {"queue": "usage"}})
    with sender:
        sender.send_task("app.definitions.tasks.usage.queue_table_usage_jobs")

    wait_until(lambda: shop.usage() == {("public", "customers", alice): 2}, 60,
               "the shop's usage")
    worker.wait_for_log("cannot run here: Snowflake's query history", timeout=60)
    with psycopg.connect(metamapper_db.dsn) as conn:
        synced = dict(conn.execute(
            "SELECT name, usage_last_synced_at IS NOT NULL FROM definitions_datastore"
        ).fetchall())
    assert synced == {"shop": True, "flakes": True, "off": False}
    assert shop.scores()["customers"] == (99, 2, 1, 0)
    errors = [line for line in worker.log.splitlines() if "ERROR" in line]
    assert len(errors) == 1
    assert "get_query_history_results cannot run here: Snowflake's" in errors[0]
    assert disabled not in worker.log
    assert usage_world.PASSWORD not in worker.log


def test_due_datastores_are_taken_once_per_four_hours(
    shop: usage_world.Shop, postgres_dsn: str,
) -> None:
    with psycopg.connect(shop.metastore, autocommit=True) as conn:
        ids = {name: usage_world.register_datastore(conn, shop.workspace_id, name, engine,
                                                    postgres_dsn)
               for name, engine in [("recent", "postgresql"), ("stale", "snowflake"),
                                    ("mysql", "mysql"), ("gone", "postgresql")]}
        conn.execute("UPDATE definitions_datastore SET usage_last_synced_at = now() - %s"
                     " WHERE id = %s", (timedelta(hours=3), ids["recent"]))
        conn.execute("UPDATE definitions_datastore SET usage_last_synced_at = now() - %s"
                     " WHERE id = %s", (timedelta(hours=5), ids["stale"]))
        conn.execute("UPDATE definitions_datastore SET deleted_at = now() WHERE id = %s",
                     (ids["gone"],))
        conn.execute(
            "INSERT INTO definitions_table_usage (datastore_id, execution_date, db_schema,"
            " db_table, db_user, query_count) VALUES (%s, %s, 'public', 'orders', 'alice', 1)",
            (ids["stale"], date(2026, 11, 30)),
        )
        due = store.take_due(conn, tasks.QUEUED_ENGINES)
        again = store.take_due(conn, tasks.QUEUED_ENGINES)
    # The shop (never collected) and the stale one; not the recent, MySQL or deleted one.
    assert sorted(due, key=lambda d: d.id) == sorted(
        [store.DueDatastore(shop.datastore_id, None),
         store.DueDatastore(ids["stale"], date(2026, 11, 30))], key=lambda d: d.id)
    assert again == []
