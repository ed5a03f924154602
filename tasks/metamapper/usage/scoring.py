"""Metamapper's usage metrics of a table, from its datastore's per-table query totals.

A table's score is its percentile among the datastore's used tables, ranked by total
queries (ties share the lower rank, as SQL's ``RANK()``), minus one point and never
below zero: the least used of four tables scores 24, the most used 99. Metamapper
computes it in SQL; the arithmetic here repeats PostgreSQL's step for step (the ratio
as a double, rounded to four decimals, then to an integer, halves away from zero), so
the web app shows the same numbers either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

_FOUR_PLACES = Decimal("0.0001")


@dataclass(frozen=True)
class TableTotals:
    """One table's usage summed over the datastore's usage rows."""

    db_schema: str
    db_table: str
    total_queries: int
    total_users: int
    first_seen: date


@dataclass(frozen=True)
class TableScore:
    """What ``definitions_table`` shows of a table's usage."""

    db_schema: str
    db_table: str
    usage_score: int
    usage_total_queries: int
    usage_total_users: int
    usage_window: int  # days since the first query seen


def usage_score(rank: int, tables: int) -> int:
    """The score of the table ranked ``rank`` (1 = least used) of ``tables``."""
    # PostgreSQL turns a double into numeric through its 15 significant digits.
    ratio = Decimal(format(rank / tables, ".15g")).quantize(_FOUR_PLACES, ROUND_HALF_UP)
    score = max(ratio * 100 - 1, Decimal(0))
    return int(score.to_integral_value(ROUND_HALF_UP))


def score_tables(totals: Sequence[TableTotals], today: date) -> list[TableScore]:
    """Every table's metrics; ``today`` ends the usage window."""
    ordered = sorted(t.total_queries for t in totals)
    rank_of: dict[int, int] = {}
    for position, queries in enumerate(ordered, start=1):
        rank_of.setdefault(queries, position)
    return [
        TableScore(
            db_schema=t.db_schema,
            db_table=t.db_table,
            usage_score=usage_score(rank_of[t.total_queries], len(totals)),
            usage_total_queries=t.total_queries,
            usage_total_users=t.total_users,
            usage_window=(today - t.first_seen).days,
        )
        for t in totals
    ]
