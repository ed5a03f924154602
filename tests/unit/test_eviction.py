"""Disruption: a PodDisruptionBudget per pool and not-safe-to-evict marks on busy pods."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from metamapper_operator.autoscale.eviction import (
    NOT_SAFE_TO_EVICT,
    eviction_marks,
    worth_asking,
)
from metamapper_operator.builders import desired_objects
from metamapper_operator.model import parse

BODY: dict[str, Any] = {
    "metadata": {"namespace": "ns", "name": "mm", "uid": "u-1", "generation": 1},
    "spec": {"image": "worker:1", "broker": {"url": "redis://redis:6379/0"},
             "pools": [{"name": "default", "queues": ["default"]},
                       {"name": "revisioner", "queues": ["revisioner"],
                        "podDisruptionBudget": {"maxUnavailable": "50%"}},
                       {"name": "nobudget", "queues": ["x"],
                        "podDisruptionBudget": {"enabled": False}}]},
}


def test_a_budget_per_pool_selecting_its_pods_unless_turned_off() -> None:
    budgets = {o["metadata"]["name"]: o for o in desired_objects(parse(BODY), "redis", {})
               if o["kind"] == "PodDisruptionBudget"}
    assert set(budgets) == {"mm-default", "mm-revisioner"}
    assert budgets["mm-default"]["spec"]["maxUnavailable"] == 1
    assert budgets["mm-revisioner"]["spec"]["maxUnavailable"] == "50%"
    assert budgets["mm-revisioner"]["spec"]["selector"]["matchLabels"][
        "metamapper.io/pool"] == "revisioner"
    assert budgets["mm-default"]["metadata"]["ownerReferences"][0]["uid"] == "u-1"


MARK = dict(NOT_SAFE_TO_EVICT)
UNMARK = dict.fromkeys(NOT_SAFE_TO_EVICT)

# (pods' annotations, tasks per answering pod, patches expected, pods marked after)
CASES: list[tuple[dict[str, dict[str, str]], dict[str, int], dict[str, Any], set[str]]] = [
    ({"a": {}, "b": {}}, {"a": 2, "b": 0}, {"a": MARK}, {"a"}),
    ({"a": dict(MARK)}, {"a": 1}, {}, {"a"}),                  # already marked: no request
    ({"a": dict(MARK), "b": {}}, {"a": 0, "b": 0}, {"a": UNMARK}, set()),
    ({"a": dict(MARK), "b": {}}, {}, {}, {"a"}),               # silent: keeps its marks
    ({"a": {"karpenter.sh/do-not-disrupt": "true"}}, {"a": 0}, {"a": UNMARK}, set()),
]


@pytest.mark.parametrize(("pods", "active", "patches", "after"), CASES)
def test_busy_pods_are_marked_and_idle_ones_unmarked(
        pods: dict[str, dict[str, str]], active: dict[str, int], patches: dict[str, Any],
        after: set[str]) -> None:
    marks = eviction_marks(copy.deepcopy(pods), active)
    assert marks.patches == patches
    assert marks.marked == after


@pytest.mark.parametrize(("replicas", "busy", "known", "expected"), [
    (0, [True], None, False),               # no pods: nothing to ask
    (2, [False, False], frozenset(), False),  # idle queues, nothing marked: no request
    (2, [False, True], frozenset(), True),
    (2, [False], frozenset({"a"}), True),     # marks to remove
    (2, [False], None, True),                 # after a restart: not known
])
def test_workers_are_asked_only_when_it_can_change_a_mark(
        replicas: int, busy: list[bool], known: frozenset[str] | None, expected: bool) -> None:
    assert worth_asking(replicas, busy, known) is expected
