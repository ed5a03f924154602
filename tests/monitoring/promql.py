"""The metric names a PromQL expression reads."""

from __future__ import annotations

import re

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
