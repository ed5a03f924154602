"""Draft, not collected yet (the suite collects ``tests/`` only): the short soak.

Every fault kind of the catalogue once (one round of the seeded schedule), on both fleets,
against the invariant: no task lost, every repeated run explained by a fault that could
cut the run before it off, every fault recovered from, no fault that could not be
injected, nothing left behind. The figures stay in ``bench/chaos.py``; this asserts
correctness only. Its place once validated on the node: ``tests/node/``, which the suite
marks as timing-dependent.

Duration, estimated (never measured yet): the stack's start (about 4 minutes with the
images cached), 14 faults at 2 to 5 s apart, each with its hold (a long partition about
a minute, a pause about half a minute, a DNS outage up to 40 s) and its recovery (tens of
seconds), then the backlog: about 15 to 20 minutes.
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

from _chaos_faults import CATALOGUE  # noqa: E402
from chaos import soak  # noqa: E402

SEED = 20261206


def test_every_fault_once_loses_no_task_and_leaves_nothing_behind(tmp_path: Path) -> None:
    outcome = soak(SEED, faults=len(CATALOGUE), pauses=(2.0, 5.0), root=tmp_path)
    assert outcome.failed_injections == ()
    assert sorted(f.kind for f in outcome.faults) == sorted(k.name for k in CATALOGUE)
    assert outcome.verdict.tasks > 0
    assert outcome.verdict.lost == ()
    assert outcome.verdict.unexplained == ()
    assert outcome.verdict.not_recovered == ()
    assert outcome.left_behind == ()
