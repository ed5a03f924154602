"""checkov, an infrastructure-as-code scanner, over what this project puts into a cluster.

Scanned: deploy/install.yaml (the chart rendered with its default values) and the children
the operator generates for each example fleet. Every finding must be fixed or listed, with
its reason, in tests/checkov-accepted.yaml; a listed finding that no longer occurs fails
too, so the list never outlives its reasons. checkov runs from its own virtualenv
(``make checkov``): its dependencies conflict with the operator's.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from metamapper_operator.builders import desired_objects
from metamapper_operator.model import parse

REPO = Path(__file__).resolve().parent.parent
CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
ACCEPTED = REPO / "tests" / "checkov-accepted.yaml"
EXAMPLES = ["metamapper.yaml", "metamapper-platform.yaml"]
NAMESPACE = "metamapper"


def children(example: Path) -> list[dict[str, Any]]:
    """What the operator creates for an example fleet (a Redis broker in its Secret)."""
    body = yaml.safe_load(example.read_text())
    body["metadata"].update(namespace=NAMESPACE, uid="00000000-0000-0000-0000-000000000000",
                            generation=1)
    return desired_objects(parse(body), "redis", {})


def scan(folder: Path) -> dict[str, Any]:
    assert CHECKOV.exists(), f"{CHECKOV} is missing: run `make checkov` first"
    result = subprocess.run(
        [str(CHECKOV), "--quiet", "--compact", "--output", "json", "--framework",
         "kubernetes", "--directory", str(folder)],
        capture_output=True, text=True, timeout=600)
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


def test_every_checkov_finding_is_fixed_or_listed_with_its_reason(tmp_path: Path) -> None:
    for example in EXAMPLES:
        (tmp_path / f"children-{example}").write_text(
            yaml.safe_dump_all(children(REPO / "examples" / example), sort_keys=False))
    (tmp_path / "install.yaml").write_text((REPO / "deploy" / "install.yaml").read_text())
    report = scan(tmp_path)
    assert report["summary"]["passed"] > 0, report["summary"]
    findings = {(f["check_id"], f["resource"]) for f in report["results"]["failed_checks"]}
    accepted = yaml.safe_load(ACCEPTED.read_text())
    assert all(entry.get("reason") for entry in accepted), "every entry needs a reason"

    def listed(check: str, resource: str) -> bool:
        return any(entry["check"] == check and any(
            fnmatch.fnmatchcase(resource, pattern) for pattern in entry["resources"])
            for entry in accepted)

    unlisted = sorted(f for f in findings if not listed(*f))
    assert not unlisted, f"checkov findings neither fixed nor listed: {unlisted}"
    stale = [(entry["check"], pattern) for entry in accepted for pattern in entry["resources"]
             if not any(check == entry["check"] and fnmatch.fnmatchcase(resource, pattern)
                        for check, resource in findings)]
    assert not stale, f"listed in {ACCEPTED.name} but no longer found: {stale}"
