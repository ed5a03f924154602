"""The pass values upstream offers: a constant, or a rollup of past observations.

``Rollup`` aggregates (average, maximum, minimum or sum) the values this expectation
observed in its stored results of the last ``interval`` seconds; the caller gives that
history as a function, so this module stays free of the metastore.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from metamapper.checks.expectations import ExpectationError

MODULE = "app.checks.tasks.pass_values"
CONSTANT = f"{MODULE}.Constant"
ROLLUP = f"{MODULE}.Rollup"
AGGREGATORS = ("average", "maximum", "minimum", "sum")

#: (aggregator, seconds back) -> the aggregate of past observed values, or None.
History = Callable[[str, int], Any]


def expected_value(class_name: str, inputs: Mapping[str, Any], history: History) -> Any:
    if class_name == CONSTANT:
        value = inputs.get("value")
        return _integer(value, "Constant: value") if value is not None else None
    if class_name == ROLLUP:
        aggregator = inputs.get("aggregator")
        if aggregator not in AGGREGATORS:
            raise ExpectationError(f"Rollup: unknown aggregator {aggregator!r}")
        return history(aggregator, _integer(inputs.get("interval"), "Rollup: interval"))
    raise ExpectationError(f"unknown pass value {class_name!r}")


def _integer(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ExpectationError(f"{what} is not an integer: {value!r}") from None
