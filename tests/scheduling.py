"""The suite in several processes (pytest-xdist, ``make test TEST_WORKERS=2``): every test
of a group runs on one worker, in the order of the collection; every other test runs on
whichever worker is free.

The groups are named by test paths (``GROUPS`` in tests/conftest.py), not by xdist's
``xdist_group`` mark: xdist hands a mark's group to its scheduler by appending it to the
test's node id, which pytest 9 no longer lets a plugin change, so the mark's tests are
spread like any others (pytest-xdist issue #1386).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadGroupScheduling

#: Group name -> the paths of its tests: folders (ending in ``/``) and files, relative to
#: the repository as pytest's node ids are.
Groups = Mapping[str, Sequence[str]]


def group_of(nodeid: str, groups: Groups) -> str | None:
    """The group that holds the test ``nodeid``, if any."""
    path = nodeid.split("::", 1)[0]
    return next((name for name, paths in groups.items() if path.startswith(tuple(paths))),
                None)


class GroupScheduling(LoadGroupScheduling):
    """xdist's scheduling by work units (each sent whole to one worker, the largest first),
    with one unit per group and one per test outside the groups."""

    def __init__(self, config: pytest.Config, log: Producer | None, groups: Groups) -> None:
        super().__init__(config, log)
        self.groups = groups

    def _split_scope(self, nodeid: str) -> str:
        # A group's name has no "::", which every test's node id has.
        return group_of(nodeid, self.groups) or nodeid
