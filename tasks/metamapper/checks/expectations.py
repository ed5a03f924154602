"""The expectations upstream Metamapper offers, by the class names its web app stores.

An expectation observes one value of a query's result (the row count, a column's first
value, average, maximum or minimum, the number of duplicated value combinations) and
compares it with the pass value using one of six operators. Upstream computes them with
pandas; here they are computed on the rows directly, with its rules:

- a column missing from the result, or a result with no rows, is observed as nothing
  (``None``), and nothing fails every comparison;
- ``skipna`` (true unless the web app stored false) leaves NULLs out; without it a NULL
  makes the average, maximum or minimum NaN, which compares as pandas' NaN does (only
  "not equal to" holds);
- no pass value (a rollup with no history yet) means the expectation passes.

A value that cannot be compared (a text column's average, a date against a number) is an
:class:`ExpectationError` naming the expectation, where upstream had "An unexpected error
has occurred".
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from metamapper.checks.frame import Frame

MODULE = "app.checks.tasks.expectations"

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "equal to": operator.eq,
    "not equal to": operator.ne,
    "greater than": operator.gt,
    "greater than or equal to": operator.ge,
    "less than": operator.lt,
    "less than or equal to": operator.le,
}


#: How an expectation observes a result, given its inputs.
Observe = Callable[[Frame, Mapping[str, Any]], Any]


class ExpectationError(Exception):
    """An expectation that cannot be evaluated; the message says which and why."""


@dataclass(frozen=True)
class Outcome:
    passed: bool
    observed: Any
    expected: Any


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _numbers(values: Sequence[Any]) -> list[Any]:
    return [int(v) if isinstance(v, bool) else v for v in values]


def _reduce(values: Sequence[Any], skipna: bool, reducer: Callable[[list[Any]], Any]) -> Any:
    present = [v for v in values if not _is_null(v)]
    if (not skipna and len(present) < len(values)) or not present:
        return math.nan
    return reducer(_numbers(present))


def _mean(values: list[Any]) -> Any:
    total = sum(values[1:], values[0])
    if isinstance(total, Decimal):
        return total / Decimal(len(values))
    return total / len(values)


@dataclass(frozen=True)
class Handler:
    """One expectation kind: its upstream class name and how it observes a result."""

    name: str
    observe: Observe
    #: Whether "observed nothing" fails (the column kinds) or is compared (row count).
    nothing_fails: bool = True

    @property
    def class_name(self) -> str:
        return f"{MODULE}.{self.name}"


def _skipna(inputs: Mapping[str, Any]) -> bool:
    value = inputs.get("skipna")
    return True if value is None else bool(value)


def _of_column(reducer: Callable[[list[Any], bool], Any]) -> Observe:
    def observe(frame: Frame, inputs: Mapping[str, Any]) -> Any:
        column = inputs.get("column")
        if frame.empty or column not in frame.columns:
            return None
        return reducer(frame.values(column), _skipna(inputs))

    return observe


def _duplicates(frame: Frame, inputs: Mapping[str, Any]) -> Any:
    columns = list(inputs.get("columns") or [])
    if frame.empty or any(column not in frame.columns for column in columns):
        return None
    combos = list(zip(*(frame.values(column) for column in columns), strict=True))
    if _skipna(inputs):
        combos = [combo for combo in combos if not any(_is_null(v) for v in combo)]
    return sum(1 for count in Counter(combos).values() if count > 1)


HANDLERS: dict[str, Handler] = {
    handler.class_name: handler for handler in (
        Handler("AssertRowCountToBe", lambda frame, _: len(frame.rows), nothing_fails=False),
        Handler("AssertFirstValueOfColumnToBe", _of_column(lambda values, _: values[0])),
        Handler("AssertAvgValueOfColumnToBe",
                _of_column(lambda values, skipna: _reduce(values, skipna, _mean))),
        Handler("AssertMaxValueOfColumnToBe",
                _of_column(lambda values, skipna: _reduce(values, skipna, max))),
        Handler("AssertMinValueOfColumnToBe",
                _of_column(lambda values, skipna: _reduce(values, skipna, min))),
        Handler("AssertCountOfDuplicateValuesOfColumnToBe", _duplicates),
    )
}


def handler_of(class_name: str) -> Handler:
    try:
        return HANDLERS[class_name]
    except KeyError:
        raise ExpectationError(f"unknown expectation {class_name!r}") from None


def evaluate(class_name: str, inputs: Mapping[str, Any], frame: Frame,
             expected: Any) -> Outcome:
    """Observe ``frame`` as the expectation says and compare with ``expected``."""
    handler = handler_of(class_name)
    compare = OPERATORS.get(str(inputs.get("op")))
    if compare is None:
        raise ExpectationError(f"{handler.name}: unknown operation {inputs.get('op')!r}")
    try:
        observed = handler.observe(frame, inputs)
        if expected is None:
            passed = True
        elif observed is None and handler.nothing_fails:
            passed = False
        else:
            passed = bool(compare(observed, expected))
    except TypeError:
        raise ExpectationError(
            f"{handler.name}: the values of {_what(inputs)} cannot be compared with"
            f" {expected!r}") from None
    return Outcome(passed, observed, expected)


def _what(inputs: Mapping[str, Any]) -> str:
    if inputs.get("column"):
        return f"column {inputs['column']!r}"
    if inputs.get("columns"):
        return "columns " + ", ".join(repr(c) for c in inputs["columns"])
    return "the result"


def as_bigint(value: Any) -> int | None:
    """A value as the results table stores it (``bigint``, truncated as upstream's
    ``int()``); NULL for nothing, NaN, infinity or anything not a number."""
    if value is None or isinstance(value, str):
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError, ArithmeticError):
        return None
