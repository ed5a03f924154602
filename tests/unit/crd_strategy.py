"""Metamapper specs drawn from the CRD's own schema (``crds/``), for generative tests.

The CRD's ``openAPIV3Schema`` is OpenAPI v3 with Kubernetes' extensions. :func:`from_openapi`
turns it into a Hypothesis strategy of the values the apiserver's structural checks admit,
CEL rules (``x-kubernetes-validations``) aside:

- ``type``, ``enum``, ``pattern``, ``minLength``/``maxLength``, ``minimum``/``maximum``,
  ``minItems``/``maxItems``, ``required``, ``properties``, ``additionalProperties`` and
  ``anyOf``, as JSON Schema means them;
- ``x-kubernetes-int-or-string`` and ``format: int-or-string``: an integer or a string;
- ``nullable``: null too;
- ``x-kubernetes-list-type: set`` (unique items) and ``map`` (unique by the
  ``x-kubernetes-list-map-keys``): the apiserver refuses duplicates;
- an object without ``x-kubernetes-preserve-unknown-fields`` has only its own fields (the
  apiserver prunes others); one with it also takes a few small free-form ones;
- sizes are bounded (:class:`Bounds`) so that drawing stays fast;
- every scalar may also take one of the adversarial values given for its type
  (:class:`Adversarial`) where the schema admits it (pattern, length, bounds, enum): the
  values nobody writes by hand go everywhere the CRD lets them.

(hypothesis-jsonschema does the same for JSON Schema, but its releases do not run on the
Hypothesis this project pins: it iterates ``cu.many`` with a ``more()`` that is gone.)

:func:`with_defaults` fills in the schema's defaults as the apiserver does before it
stores an object.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

CRD = Path(__file__).resolve().parents[2] / "crds" / "metamapper.io_metamappers.yaml"
Schema = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Bounds:
    """How large a drawn value may get."""

    items: int = 2          # array items
    properties: int = 2     # free-form object fields (preserve-unknown-fields)
    length: int = 16        # string length, where no pattern bounds it
    depth: int = 1          # nesting of free-form values
    repeat: int = 3         # repetitions of a pattern's part beyond its minimum
    integer: int = 2**63 - 1   # the apiserver keeps integers as int64
    span: int = 100         # integers are drawn from their minimum to this much above


@dataclass(frozen=True, slots=True)
class Adversarial:
    """Values tried wherever the schema admits them, by JSON type."""

    strings: Sequence[str] = ()
    integers: Sequence[int] = ()
    numbers: Sequence[float] = ()
    odds: int = 8


@cache
def crd_schema() -> Schema:
    """The CRD's openAPIV3Schema of its stored version."""
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    schema: Schema = version["schema"]["openAPIV3Schema"]
    return schema


def spec_schema() -> Schema:
    """The schema of ``.spec``."""
    spec: Schema = crd_schema()["properties"]["spec"]
    return spec


def admits(schema: Schema, value: object) -> bool:
    """Whether ``value`` passes ``schema``'s own scalar checks (not its CEL rules)."""
    if "enum" in schema and value not in schema["enum"]:
        return False
    if isinstance(value, str):
        pattern = schema.get("pattern")
        return (schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value))
                and (pattern is None or re.search(pattern, value) is not None))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return schema.get("minimum", value) <= value <= schema.get("maximum", value)
    return True


def free_form(bounds: Bounds, depth: int | None = None) -> st.SearchStrategy[Any]:
    """Any small JSON value: what a preserve-unknown-fields object may hold."""
    depth = bounds.depth if depth is None else depth
    scalars = st.one_of(st.text(max_size=bounds.length), st.integers(-bounds.integer - 1,
                                                                     bounds.integer),
                        st.booleans(), st.none())
    if depth <= 0:
        return scalars
    inner = free_form(bounds, depth - 1)
    return st.one_of(scalars, st.lists(inner, max_size=bounds.items),
                     st.dictionaries(st.text(max_size=bounds.length), inner,
                                     max_size=bounds.properties))


def from_openapi(schema: Schema, bounds: Bounds = Bounds(),
                 adversarial: Adversarial = Adversarial()) -> st.SearchStrategy[Any]:
    """The values ``schema`` (a structural OpenAPI v3 schema of a CRD) admits, bounded,
    CEL rules aside, its scalars sometimes taking an adversarial value it admits."""
    if "anyOf" in schema and not _int_or_string(schema):
        return st.one_of([from_openapi(_merged(schema, sub), bounds, adversarial)
                          for sub in schema["anyOf"]])
    kinds = ["integer", "string"] if _int_or_string(schema) else [schema.get("type")]
    drawn = st.one_of([_of_type(kind, schema, bounds, adversarial) for kind in kinds])
    if schema.get("nullable"):
        drawn = st.one_of(drawn, st.none())
    return drawn


def _int_or_string(schema: Schema) -> bool:
    return bool(schema.get("x-kubernetes-int-or-string")
                or schema.get("format") == "int-or-string")


def _merged(schema: Schema, sub: Schema) -> Schema:
    """One branch of ``anyOf``: the node's own keywords with the branch's."""
    return {**{k: v for k, v in schema.items() if k != "anyOf"}, **sub}


def _of_type(kind: str | None, schema: Schema, bounds: Bounds,
             adversarial: Adversarial) -> st.SearchStrategy[Any]:
    if kind == "object":
        return _object(schema, bounds, adversarial)
    if kind == "array":
        return _array(schema, bounds, adversarial)
    if kind == "boolean":
        return st.booleans()
    if kind is None:  # no type: anything (only under preserve-unknown-fields)
        return free_form(bounds)
    plain = _scalar(kind, schema, bounds)
    tried = [value for value in {"string": adversarial.strings,
                                 "integer": adversarial.integers,
                                 "number": adversarial.numbers}.get(kind, ())
             if admits(schema, value)]
    if not tried:
        return plain
    # One scalar in ``odds`` is adversarial: often enough to go everywhere, rarely enough
    # that an object holds few, so that the steps after the first refusal run too.
    return st.one_of(*[plain] * (adversarial.odds - 1), st.sampled_from(tried))


def _scalar(kind: str, schema: Schema, bounds: Bounds) -> st.SearchStrategy[Any]:
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if kind == "string":
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        pattern = schema.get("pattern")
        if pattern is not None:
            return st.from_regex(shortened(pattern, bounds.repeat), fullmatch=True).filter(
                lambda s: low <= len(s) <= (high or len(s)) and re.search(pattern, s)
                is not None)
        return st.text(min_size=low, max_size=max(low, min(high or bounds.length,
                                                           bounds.length)))
    if kind == "integer":  # near the minimum: the adversarial values go far beyond
        low = schema.get("minimum", 0)
        return st.integers(low, min(schema.get("maximum", low + bounds.span), low + bounds.span))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False,
                         allow_infinity=False)
    raise ValueError(f"no strategy for type {kind!r}")


def shortened(pattern: str, extra: int) -> str:
    """``pattern`` with every repetition bounded to ``extra`` more than its minimum: it
    matches fewer strings, all of which ``pattern`` matches, and Hypothesis draws them
    several times faster (the CRD's image pattern nests unbounded repetitions)."""
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            if pattern[i + 1:i + 2] == "^":  # a negated class: its "^" is not its end
                char, i = "[^", i + 1
            if pattern[i + 1:i + 2] == "]":  # a "]" first in a class is a character
                char, i = char + "]", i + 1
        elif char == "*":
            char = f"{{0,{extra}}}"
        elif char == "+":
            char = f"{{1,{1 + extra}}}"
        elif char == "{" and (m := re.match(r"\{(\d+)(,(\d*))?\}", pattern[i:])):
            low = int(m[1])
            high = low if m[2] is None else min(int(m[3] or low + extra), low + extra)
            out.append(f"{{{low},{high}}}")
            i += len(m[0])
            continue
        out.append(char)
        i += 1
    return "".join(out)


def _array(schema: Schema, bounds: Bounds, adversarial: Adversarial
           ) -> st.SearchStrategy[list[Any]]:
    items = from_openapi(schema.get("items") or {}, bounds, adversarial)
    low = schema.get("minItems", 0)
    high = max(low, min(schema.get("maxItems", bounds.items), bounds.items))
    unique_by: Callable[[Any], Any] | None = None
    if schema.get("x-kubernetes-list-type") == "set":
        def unique_by(item: Any) -> Any:
            return repr(item)
    elif schema.get("x-kubernetes-list-type") == "map":
        keys = tuple(schema.get("x-kubernetes-list-map-keys") or ())

        def unique_by(item: Any) -> Any:
            return tuple(repr(item.get(k)) for k in keys)
    return st.lists(items, min_size=low, max_size=high, unique_by=unique_by)


def _object(schema: Schema, bounds: Bounds, adversarial: Adversarial
            ) -> st.SearchStrategy[dict[str, Any]]:
    properties: Mapping[str, Schema] = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    fields = {name: from_openapi(sub, bounds, adversarial) for name, sub in properties.items()}
    own = st.fixed_dictionaries(
        {name: s for name, s in fields.items() if name in required},
        optional={name: s for name, s in fields.items() if name not in required})
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping):
        more: st.SearchStrategy[dict[str, Any]] = st.dictionaries(
            st.text(min_size=1, max_size=bounds.length),
            from_openapi(extra, bounds, adversarial), max_size=bounds.properties)
    elif schema.get("x-kubernetes-preserve-unknown-fields"):
        more = st.dictionaries(st.text(min_size=1, max_size=bounds.length), free_form(bounds),
                               max_size=bounds.properties)
    else:
        return own
    return st.builds(lambda known, unknown: {**unknown, **known}, own, more)


def with_defaults(schema: Schema, value: Any) -> Any:
    """``value`` with the schema's defaults filled in where fields are missing, as the
    apiserver stores it (defaults of defaults included)."""
    value = copy.deepcopy(value)
    _default(schema, value)
    return value


def _default(schema: Schema, value: Any) -> None:
    if isinstance(value, dict):
        properties: Mapping[str, Schema] = schema.get("properties") or {}
        for name, sub in properties.items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                _default(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            for name in value:
                if name not in properties:
                    _default(extra, value[name])
    elif isinstance(value, list):
        for item in value:
            _default(schema.get("items") or {}, item)
