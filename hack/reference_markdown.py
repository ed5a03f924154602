"""What the generated reference pages share: Markdown spans and writing or checking a page.

The reference pages under docs/reference/ are generated, never edited by hand: each
generator renders its page and either writes it or, with ``--check``, fails when the
committed page differs (the suite runs the check, so a stale page fails it).
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

Schema = dict[str, Any]


def code(text: str) -> str:
    """A Markdown code span holding ``text`` as is, whatever backticks it contains."""
    fence = "`"
    while fence in text:
        fence += "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def literal(value: Any) -> str:
    """A YAML/JSON value as compact JSON in a code span (how a default reads in a page)."""
    return code(json.dumps(value, separators=(", ", ": "), ensure_ascii=False))


def prose(text: str) -> str:
    """A description on one line (folded YAML keeps line breaks of its own).

    Angle brackets outside code spans are escaped: ``<metadata.name>-<pool>`` is a
    placeholder, not an HTML tag.
    """
    parts = " ".join(text.split()).split("`")
    return "`".join(part if inside else part.replace("<", "&lt;").replace(">", "&gt;")
                    for part, inside in zip(parts, itertools.cycle((False, True)), strict=False))


def type_name(schema: Schema) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array":
        return "[]" + type_name(schema.get("items", {}))
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return "map[string]" + type_name(schema["additionalProperties"])
    if kind == "object" and "properties" not in schema and schema.get(
            "x-kubernetes-preserve-unknown-fields"):
        return "object (any fields)"
    return str(kind or "any")


def constraints(schema: Schema) -> list[str]:
    """The validation the apiserver applies to this value itself."""
    found: list[str] = []
    if "enum" in schema:
        found.append("one of " + ", ".join(literal(v) for v in schema["enum"]))
    for key, words in (("minimum", "at least"), ("maximum", "at most"),
                       ("minLength", "length at least"), ("maxLength", "length at most"),
                       ("minItems", "items: at least"), ("maxItems", "items: at most"),
                       ("minProperties", "entries: at least"),
                       ("maxProperties", "entries: at most")):
        if key in schema:
            exclusive = schema.get("exclusive" + key[0].upper() + key[1:]) is True
            found.append(f"{words} {schema[key]}" + (" (exclusive)" if exclusive else ""))
    if "pattern" in schema:
        found.append("matches " + code(schema["pattern"]))
    if "format" in schema:
        found.append("format " + code(schema["format"]))
    if schema.get("uniqueItems"):
        found.append("items unique")
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "map":
        keys = ", ".join(code(k) for k in schema.get("x-kubernetes-list-map-keys", []))
        found.append(f"list of entries unique by {keys} (list type `map`)")
    elif list_type:
        found.append(f"list type {code(list_type)}")
    if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" in schema:
        found.append("unknown fields kept")
    for rule in schema.get("x-kubernetes-validations", []):
        text = f"rule {code(rule['rule'])}"
        if "message" in rule:
            text += f": {prose(rule['message'])}"
        if "fieldPath" in rule:
            text += f" (reported at {code(rule['fieldPath'])})"
        found.append(text)
    return found


def main(render: Callable[[], str], page: Path, script: str) -> int:
    """Write ``page`` from ``render()``, or with ``--check`` report whether it is current."""
    parser = argparse.ArgumentParser(description=f"Generate {page.relative_to(REPO)}.")
    parser.add_argument("--check", action="store_true",
                        help="fail (exit 1) when the committed page differs from a fresh render")
    parser.add_argument("--output", type=Path, default=page, help="where to write the page")
    args = parser.parse_args()
    text = render()
    if not args.check:
        args.output.write_text(text)
        return 0
    current = page.read_text() if page.exists() else ""
    if current == text:
        return 0
    diff = difflib.unified_diff(current.splitlines(), text.splitlines(),
                                str(page.relative_to(REPO)), "fresh render", lineterm="", n=1)
    sys.stderr.write("\n".join(list(diff)[:40]) + "\n")
    sys.stderr.write(f"{page.relative_to(REPO)} is stale: run `.venv/bin/python {script}`\n")
    return 1
