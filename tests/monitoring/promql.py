"""The metric names a PromQL expression reads, and the sample names a module exports."""

from __future__ import annotations

import re
from types import ModuleType

from prometheus_client.metrics import MetricWrapperBase

KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
                      "group_right", "bool", "offset", "inf", "nan"})
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
MATCHERS = re.compile(r"\{[^{}]*\}")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
RANGE = re.compile(r"\[[^\]]*\]")
IDENTIFIER = re.compile(r"(?<![\w.$:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Identifiers of ``expr`` that are neither functions, aggregations nor keywords (after
    strings, label matchers, grouping clauses and ranges are removed)."""
    text = STRING.sub('""', expr)
    text = MATCHERS.sub("", text)
    text = GROUPING.sub("", text)
    text = RANGE.sub("", text)
    return {name for name, call in IDENTIFIER.findall(text)
            if not call and name.lower() not in KEYWORDS}


def exported(module: ModuleType) -> set[str]:
    """Every sample name the metrics defined in ``module`` can expose."""
    names: set[str] = set()
    for metric in vars(module).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        for family in metric.describe():
            kind, name = family.type, family.name
            if kind == "counter":
                names |= {f"{name}_total", f"{name}_created"}
            elif kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
            else:
                names.add(name)
    return names
