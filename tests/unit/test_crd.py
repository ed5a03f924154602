"""The CRD's identity in code is the one the CRD in crds/ declares."""

from __future__ import annotations

from pathlib import Path

import yaml

from metamapper_operator import crd

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
