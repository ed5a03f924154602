"""Generate docs/reference/metamapper.md, the Metamapper API reference, from crds/.

Every field of every served version with its type, default, validation (enums, bounds,
patterns, list types, CEL rules with their messages) and description: what ``kubectl
explain`` shows, on one page. Run it after changing the CRD::

    .venv/bin/python hack/crd_reference.py            # rewrite the page
    .venv/bin/python hack/crd_reference.py --check    # exit 1 when the page is stale
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

import yaml
from reference_markdown import REPO, Schema, code, constraints, literal, main, prose, type_name

CRD = REPO / "crds" / "metamapper.io_metamappers.yaml"
PAGE = REPO / "docs" / "reference" / "metamapper.md"


@dataclass(frozen=True)
class Section:
    """One object of the schema with fields of its own: a heading and its fields."""

    path: str
    schema: Schema


def anchor(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "root"


def object_of(schema: Schema) -> Schema | None:
    """The object with fields this value holds: itself, its items, or its map values."""
    for candidate in (schema, schema.get("items", {}), schema.get("additionalProperties")):
        if isinstance(candidate, dict) and "properties" in candidate:
            return candidate
    return None


def child_path(path: str, name: str, schema: Schema) -> str:
    base = f"{path}.{name}" if path else name
    if schema.get("type") == "array":
        return base + "[]"
    if isinstance(schema.get("additionalProperties"), dict):
        return base + ".*"
    return base


def sections(path: str, schema: Schema) -> list[Section]:
    found = [Section(path, schema)]
    for name, field in schema.get("properties", {}).items():
        inner = object_of(field)
        if inner is not None:
            found.extend(sections(child_path(path, name, field), inner))
    return found


def field_entry(path: str, name: str, field: Schema, required: bool) -> list[str]:
    head = f"- **{code(name)}** ({code(type_name(field))}{', required' if required else ''})"
    description = prose(field.get("description", ""))
    lines = [head + (f": {description}" if description else "")]
    details: list[str] = []
    if "default" in field:
        details.append("default: " + literal(field["default"]))
    inner_object = object_of(field)
    own = {k: v for k, v in field.items() if k != "x-kubernetes-validations"}
    # An object's own rules are listed in its section, once.
    details.extend(constraints(own if inner_object is field else field))
    for part, words in (("items", "each item"), ("additionalProperties", "each value")):
        inner = field.get(part)
        if isinstance(inner, dict) and "properties" not in inner:
            details.extend(f"{words}: {c}" for c in constraints(inner))
            if "default" in inner:
                details.append(f"{words}: default {literal(inner['default'])}")
    if inner_object is not None:
        target = child_path(path, name, field)
        details.append(f"fields: [{code(target)}](#{anchor(target)})")
    lines.extend(f"    - {d}" for d in details)
    return lines


def render_section(section: Section) -> list[str]:
    title = section.path or "Metamapper"
    lines = [f"### {code(title)} {{#{anchor(section.path)}}}", ""]
    description = prose(section.schema.get("description", ""))
    if description:
        lines += [description, ""]
    own = constraints({k: v for k, v in section.schema.items()
                       if k in ("x-kubernetes-validations", "minProperties", "maxProperties")})
    if own:
        lines += ["Rules over this object:", ""] + [f"- {c}" for c in own] + [""]
    required = set(section.schema.get("required", []))
    for name, field in section.schema["properties"].items():
        lines += field_entry(section.path, name, field, name in required)
    return [*lines, ""]


def render_version(crd: Schema, version: Schema) -> list[str]:
    names = crd["spec"]["names"]
    flags = [word for word in ("served", "storage") if version.get(word)]
    lines = [f"## {names['kind']} {version['name']}", "",
             f"`apiVersion: {crd['spec']['group']}/{version['name']}` ({', '.join(flags)}; "
             f"subresources: {', '.join(sorted(version.get('subresources', {}))) or 'none'}).",
             ""]
    columns = version.get("additionalPrinterColumns", [])
    if columns:
        lines += ["Columns of `kubectl get " + names["plural"] + "` (`-o wide` adds those "
                  "with a priority):", "",
                  "| column | type | JSONPath | priority | description |",
                  "| --- | --- | --- | --- | --- |"]
        for column in columns:
            lines.append(" | ".join([
                f"| {column['name']}", column["type"], code(column["jsonPath"]).replace("|", "\\|"),
                str(column.get("priority", 0)), prose(column.get("description", "")) + " |"]))
        lines.append("")
    for section in sections("", version["schema"]["openAPIV3Schema"]):
        lines += render_section(section)
    return lines


def listed(words: list[str]) -> str:
    return ", ".join(code(w) for w in words)


def render() -> str:
    crd = yaml.safe_load(CRD.read_text())
    names = crd["spec"]["names"]
    lines = [
        f"# {names['kind']} API reference",
        "",
        "<!-- Generated by hack/crd_reference.py from crds/metamapper.io_metamappers.yaml; "
        "do not edit by hand. -->",
        "",
        f"The `{names['kind']}` resource (`{crd['metadata']['name']}`): group "
        f"`{crd['spec']['group']}`, {crd['spec']['scope'].lower()}, plural "
        f"`{names['plural']}`, short names {listed(names.get('shortNames', []))}, "
        f"categories {listed(names.get('categories', []))}. "
        "Generated from the CustomResourceDefinition, so every field, type, default, "
        "validation and description here is what the apiserver enforces and what `kubectl "
        "explain metamapper.<path>` prints. How the fields are used: "
        "[The Metamapper resource](../metamapper-resource.md) and "
        "[Autoscaling](../autoscaling.md).",
        "",
    ]
    for version in crd["spec"]["versions"]:
        lines += render_version(crd, version)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.exit(main(render, PAGE, "hack/crd_reference.py"))
