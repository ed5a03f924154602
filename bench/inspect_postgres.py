"""Inspect a PostgreSQL catalog of thousands of tables: our inspector vs SQLAlchemy 2.

Builds (once) a database of ``--tables`` tables x 10 columns, each with a primary key,
a second index and comments, then times, in one run on the same database:

- ``metamapper``: :func:`metamapper.inspectors.postgresql.inspect`;
- ``sqlalchemy get_multi_*``: SQLAlchemy's batched Inspector calls for the same
  information (columns, primary keys, indexes, table comments, views included);
- ``sqlalchemy MetaData.reflect``: the usual way to reflect a whole schema (it also
  reads foreign keys and constraints, so it does more).

Every inspection opens its own connection, as a scheduled inspection does (SQLAlchemy
runs without a connection pool). Each is run once to warm up, then ``--repeat`` times;
the best time counts. Usage::

    python bench/inspect_postgres.py [--dsn postgresql://user@host:port/postgres]

Without ``--dsn`` (or BENCH_POSTGRES_DSN) the project's local PostgreSQL is started.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine.reflection import ObjectKind

from metamapper.inspectors import postgresql
from metamapper_urls import redact

DATABASE = "metamapper_bench"
COLUMNS = 10

POPULATE = """
DO $$
BEGIN
  FOR i IN 1..{tables} LOOP
    EXECUTE format(
      'CREATE TABLE t%1$s (id BIGSERIAL PRIMARY KEY, name VARCHAR(100) NOT NULL,'
      ' amount NUMERIC(12, 2) DEFAULT 0, created_at TIMESTAMPTZ NOT NULL DEFAULT now(),'
      ' flag BOOLEAN, note TEXT, ref INTEGER, code CHAR(8), ratio DOUBLE PRECISION,'
      ' payload JSONB)', i);
    EXECUTE format('CREATE INDEX t%1$s_ref ON t%1$s (ref, created_at)', i);
    EXECUTE format('COMMENT ON TABLE t%1$s IS ''table %1$s''', i);
    EXECUTE format('COMMENT ON COLUMN t%1$s.amount IS ''an amount''', i);
  END LOOP;
END $$;
"""


def _default_dsn() -> str:
    from devenv import services

    services.ensure("postgres")
    return f"postgresql://postgres@127.0.0.1:{services.POSTGRES_PORT}/postgres"


def prepare(admin_dsn: str, tables: int) -> str:
    """The benchmark database's URL, created and populated if it is not already."""
    parts = urlsplit(admin_dsn)
    url = urlunsplit(parts._replace(path=f"/{DATABASE}"))
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
        ).fetchone()
        if not exists:
            conn.execute(f"CREATE DATABASE {DATABASE}")
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_class"
            " WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
        ).fetchone()
        if row is None or row[0] != tables:
            print(f"creating {tables} tables x {COLUMNS} columns ...", file=sys.stderr)
            conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
            conn.execute(POPULATE.format(tables=tables).encode())
            conn.execute("ANALYZE")
    return url


def ours(url: str) -> tuple[int, int]:
    tables = [t for s in postgresql.inspect(url) for t in s.tables]
    return len(tables), sum(len(t.columns) for t in tables)


def sqlalchemy_get_multi(engine: sa.Engine) -> tuple[int, int]:
    inspector = sa.inspect(engine)  # a new Inspector each time: no cached answers
    kind = ObjectKind.ANY
    columns = inspector.get_multi_columns(kind=kind)
    inspector.get_multi_pk_constraint(kind=kind)
    inspector.get_multi_indexes(kind=kind)
    inspector.get_multi_table_comment(kind=kind)
    return len(columns), sum(len(c) for c in columns.values())


def sqlalchemy_reflect(engine: sa.Engine) -> tuple[int, int]:
    metadata = sa.MetaData()
    metadata.reflect(bind=engine, views=True)
    return len(metadata.tables), sum(len(t.columns) for t in metadata.tables.values())


def best_time(run: Callable[[], tuple[int, int]], repeat: int) -> tuple[float, tuple[int, int]]:
    counts = run()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        counts = run()
        best = min(best, time.perf_counter() - started)
    return best, counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("BENCH_POSTGRES_DSN"),
                        help="an admin connection URL (the benchmark database is created)")
    parser.add_argument("--tables", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    url = prepare(args.dsn or _default_dsn(), args.tables)
    engine = sa.create_engine(
        url.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=sa.NullPool
    )
    print(f"database: {redact(url)}  ({args.tables} tables x {COLUMNS} columns)")
    ours_time, ours_counts = best_time(lambda: ours(url), args.repeat)
    print(f"  {'metamapper inspector':<30} {ours_time:8.3f} s   "
          f"{ours_counts[0]} tables, {ours_counts[1]} columns")
    for name, run in (
        ("sqlalchemy get_multi_*", lambda: sqlalchemy_get_multi(engine)),
        ("sqlalchemy MetaData.reflect", lambda: sqlalchemy_reflect(engine)),
    ):
        elapsed, counts = best_time(run, args.repeat)
        print(f"  {name:<30} {elapsed:8.3f} s   {counts[0]} tables, {counts[1]} columns"
              f"   ({elapsed / ours_time:.1f}x the inspector's time)")
    engine.dispose()


if __name__ == "__main__":
    main()
