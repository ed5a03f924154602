"""SQL scripts run on a test datastore, PostgreSQL or MariaDB: each script on a new
connection, every statement committed."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pymysql

from metamapper.inspectors.mysql import connect_args

#: Runs one script (statements separated by ``;``).
Execute = Callable[[str], None]


def on_postgres(url: str) -> Execute:
    def execute(script: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(script.encode())

    return execute


def on_mariadb(url: str) -> Execute:
    args = connect_args(url)
    database = url.rsplit("/", 1)[1]

    def execute(script: str) -> None:
        conn = pymysql.connect(**args, database=database, autocommit=True)
        try:
            with conn.cursor() as cursor:
                for statement in filter(str.strip, script.split(";")):
                    cursor.execute(statement)
        finally:
            conn.close()

    return execute
