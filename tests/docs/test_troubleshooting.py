"""Every condition type, condition reason and event reason the operator can emit has an
entry (a heading) in docs/troubleshooting.md saying what it means and what to do."""

from __future__ import annotations

import re
from pathlib import Path

from tests.docs.reasons import operator_reasons

PAGE = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md"


def _headings_and_condition_table() -> str:
    """The lines that document a reason: headings, and the conditions table's rows."""
    return "\n".join(line for line in PAGE.read_text().splitlines()
                     if line.startswith("#") or line.startswith("| `"))


def test_the_scan_finds_reasons_of_every_kind() -> None:
    """The scan itself works: a condition reason, an event, a boundary's reason, a
    constant's, a planned write's and an f-string's are among what it finds."""
    texts = {r.text for r in operator_reasons()}
    assert {"BelowDesired", "DrainTimedOut", "ReconcileFailed", "AutoscalingFailed",
            "Created", "Scaled\\w+", "CannotList\\w+s", "Pending"} <= texts


def test_every_reason_has_an_entry() -> None:
    documented = _headings_and_condition_table()
    missing = sorted({f"{r.text} ({r.where})" for r in operator_reasons()
                      if not re.search(f"`{r.regex().pattern}`", documented)})
    assert not missing, (
        f"{PAGE.name} has no entry (a heading naming it in backticks) for: "
        + ", ".join(missing))
