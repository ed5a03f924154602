"""From queries and how often they ran to per-table, per-user, per-day query counts."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from metamapper.usage.parsing import Dialect, Session, tables_read


@dataclass(frozen=True)
class QueryRecord:
    """A query's text and how many times ``db_user`` ran it on ``execution_date``
    in database ``db_name`` with ``db_schema`` as its current schema."""

    execution_date: date
    db_name: str
    db_user: str
    db_schema: str
    query_text: str
    query_count: int

    def idempotency_id(self, datastore_id: str) -> str:
        """Metamapper's key for "this query of this day was counted" (its
        ``definitions_table_usage_exists`` rows): an MD5 of the fields, date ISO-formatted."""
        text = "".join([datastore_id, self.execution_date.isoformat(), self.db_name,
                        self.db_user, self.db_schema, self.query_text])
        return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True, order=True)
class UsageKey:
    """One row of ``definitions_table_usage`` within a datastore."""

    execution_date: date
    db_schema: str
    db_table: str
    db_user: str


def table_counts(records: Iterable[QueryRecord], dialect: Dialect) -> Counter[UsageKey]:
    """How many queries read each table, by day and user.

    A query counts once for every table it reads in its own database (a name that
    points into another database is not this datastore's table), the engine's system
    relations aside.
    """
    counts: Counter[UsageKey] = Counter()
    for record in records:
        session = Session(database=record.db_name, schema=record.db_schema)
        for table in tables_read(record.query_text, dialect, session):
            if (table.database.upper() == record.db_name.upper()
                    and not dialect.is_system(table)):
                key = UsageKey(record.execution_date, table.schema, table.table, record.db_user)
                counts[key] += record.query_count
    return counts
