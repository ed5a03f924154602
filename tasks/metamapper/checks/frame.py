"""A query's result: column names and rows, what the expectations look at."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Frame:
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    @classmethod
    def of(cls, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Frame:
        return cls(tuple(columns), tuple(tuple(row) for row in rows))

    @property
    def empty(self) -> bool:
        """No rows, or no columns (pandas' sense of an empty frame)."""
        return not self.rows or not self.columns

    def values(self, column: str) -> list[Any]:
        """The column's values, top to bottom (the first column of that name)."""
        index = self.columns.index(column)
        return [row[index] for row in self.rows]
