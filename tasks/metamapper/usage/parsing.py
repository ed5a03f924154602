"""Which tables a query reads, from its text (sqlglot, in the datastore's dialect).

Only queries count (SELECT, set operations, ``WITH ... SELECT``): Metamapper's own
collection takes Snowflake's history of SELECT statements, and a write names its
target, which it does not read. Names are resolved the way the engine resolves them,
so that they meet the names its inspector stored: a bare table lies in the session's
schema and database, common table expressions and table functions are not tables.
Text that does not parse reads nothing.

sqlglot says nothing here: it would warn about every statement it reads as a mere
command (``ALTER ROLE ... PASSWORD '...'``, whose text pg_stat_statements keeps as
typed), and the warning quotes the statement.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers
from sqlglot.optimizer.scope import traverse_scope

logging.getLogger("sqlglot").setLevel(logging.ERROR)


class Dialect(Enum):
    """How an engine's query text is read; the value is sqlglot's name for it."""

    POSTGRESQL = "postgres"
    SNOWFLAKE = "snowflake"

    def fold(self, expression: exp.Expr) -> exp.Expr:
        """Unquoted names as the inspector stored them.

        PostgreSQL folds unquoted names to lower case and its catalog keeps quoted ones
        as written; Metamapper stores Snowflake's names in lower case, quoted or not.
        """
        if self is Dialect.SNOWFLAKE:
            for identifier in expression.find_all(exp.Identifier):
                identifier.set("this", identifier.name.lower())
            return expression
        return normalize_identifiers(expression, dialect=self.value)

    def is_system(self, table: TableRef) -> bool:
        """A relation of the engine's own, which no inspection catalogs: PostgreSQL's
        ``information_schema`` and ``pg_*`` schemas and relations (the system catalog
        comes first on every search path; extensions' statistics views share the
        prefix); Snowflake's ``information_schema``."""
        if self is Dialect.SNOWFLAKE:
            return table.schema == "information_schema"
        return (table.schema == "information_schema" or table.schema.startswith("pg_")
                or table.table.startswith("pg_"))


@dataclass(frozen=True)
class Session:
    """Where a bare name resolves: the connection's database and current schema."""

    database: str
    schema: str


@dataclass(frozen=True, order=True)
class TableRef:
    database: str
    schema: str
    table: str


def tables_read(query_text: str, dialect: Dialect, session: Session) -> frozenset[TableRef]:
    """The tables the queries in ``query_text`` read; none when it does not parse."""
    found: set[TableRef] = set()
    try:
        for statement in sqlglot.parse(query_text, dialect=dialect.value):
            if isinstance(statement, exp.Query):
                found.update(_tables_of(dialect.fold(statement), session))
    # Whatever one statement of a history does to the parser (deep nesting exhausts its
    # recursion), it must not stop the others from being counted.
    except (SqlglotError, RecursionError):
        return frozenset()
    return frozenset(found)


def _tables_of(query: exp.Expr, session: Session) -> set[TableRef]:
    found = set()
    # A scope's sources map names to tables or to the scopes of CTEs and subqueries.
    for scope in traverse_scope(query):
        for source in scope.sources.values():
            if isinstance(source, exp.Table) and isinstance(source.this, exp.Identifier):
                found.add(TableRef(
                    database=source.catalog or session.database,
                    schema=source.db or session.schema,
                    table=source.name,
                ))
    return found
