"""Scrape a Prometheus endpoint of a pod and read it with prometheus_client's parser (which
refuses what is not the text format)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType

from prometheus_client.core import Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def scrape(url: str, timeout: float = 5.0) -> list[Sample]:
    """Every sample served at ``url``."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return parse(response.read().decode())


def parse(text: str) -> list[Sample]:
    """Every sample of a page in Prometheus' text format."""
    return [Sample(s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text) for s in family.samples]


def total(samples: Iterable[Sample], metric: str, /, **labels: str) -> float:
    """The sum of ``metric``'s samples whose labels include ``labels``."""
    return sum(s.value for s in samples
               if s.name == metric and labels.items() <= s.labels.items())


def names(samples: Iterable[Sample]) -> set[str]:
    return {s.name for s in samples}


def described(value: object) -> list[Metric]:
    """The families a module-level metric or collector instance says it exposes (none for
    anything else: functions, classes, the registry)."""
    if isinstance(value, MetricWrapperBase):
        return list(value.describe())
    describe = getattr(value, "describe", None)
    if isinstance(value, type) or not callable(describe):
        return []
    return list(describe())


def exported(module: ModuleType) -> set[str]:
    """Every sample name the metrics and collectors defined in ``module`` can expose."""
    found: set[str] = set()
    for value in vars(module).values():
        for family in described(value):
            kind, name = family.type, family.name
            if kind == "counter":
                found |= {f"{name}_total", f"{name}_created"}
            elif kind == "histogram":
                found |= {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
            else:
                found.add(name)
    return found
