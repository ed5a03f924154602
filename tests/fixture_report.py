"""A pytest plugin for tests/test_groups.py (``-p tests.fixture_report
--fixture-report=FILE``): once the tests are collected, it writes each one's node id and
the fixtures it uses (those its fixtures use included) to FILE, one JSON object a line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

OPTION = "--fixture-report"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(OPTION, type=Path, required=True,
                     help="where to write each test's node id and fixtures")


def pytest_collection_finish(session: pytest.Session) -> None:
    report: Path = session.config.getoption(OPTION)
    with report.open("w") as out:
        for item in session.items:
            fixtures = sorted(getattr(item, "fixturenames", ()))
            out.write(json.dumps({"nodeid": item.nodeid, "fixtures": fixtures}) + "\n")
