"""The CRD's identity in code is the one the CRD in crds/ declares."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from metamapper_operator import crd
from metamapper_operator.model import MAX_WINDOW_SECONDS
from metamapper_urls import SECRET_PARAMETERS

DEFINITION = Path(__file__).resolve().parents[2] / "crds" / "metamapper.io_metamappers.yaml"


def test_the_identity_matches_the_custom_resource_definition() -> None:
    definition = yaml.safe_load(DEFINITION.read_text())
    names = definition["spec"]["names"]
    assert definition["metadata"]["name"] == crd.NAME
    assert definition["spec"]["group"] == crd.GROUP
    assert (names["kind"], names["plural"]) == (crd.KIND, crd.PLURAL)
    assert crd.SHORT_NAME in names["shortNames"]
    assert [v["name"] for v in definition["spec"]["versions"] if v["storage"]] == [crd.VERSION]
    assert f"{crd.GROUP}/{crd.VERSION}" == crd.API_VERSION


def _walk(node: Any) -> list[dict[str, Any]]:
    """Every schema node of the CRD (dicts), depth first."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found += _walk(value)
    elif isinstance(node, list):
        for value in node:
            found += _walk(value)
    return found


def test_the_schema_bounds_what_the_model_bounds() -> None:
    """The CRD refuses what the model refuses, where the schema can say it: the credential
    query parameters of a URL, the longest schedule window."""
    schema = yaml.safe_load(DEFINITION.read_text())
    rules = " ".join(str(node["rule"]) for node in _walk(schema) if "rule" in node)
    lists = re.findall(r"\(\?i\)\[\?&;\]\(([^)]*)\)=", rules)
    assert len(lists) == 2  # broker.url and scheduler.lock.redisURL
    assert all(set(names.split("|")) == SECRET_PARAMETERS for names in lists)
    windows = [node for node in _walk(schema) if "durationSeconds" in (
        node.get("properties") or {})]
    assert [w["properties"]["durationSeconds"]["maximum"] for w in windows] == [MAX_WINDOW_SECONDS]
