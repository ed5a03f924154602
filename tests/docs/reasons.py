"""The condition types, condition reasons and event reasons the operator can emit, read
from its code with an AST scan (they are spelt where they are used, across modules).

What counts as a reason:

- the argument after an event type (``"Normal"`` / ``"Warning"``) in any call: events
  (``kube.event(meta, "Warning", "InvalidSpec", ...)``) and notes (``Note("Normal", ...)``);
- ``_condition(type, ok, reason, message)``: the type and the reason;
- the reason of a containment boundary (``Boundary(step, reason, ...)``) and any
  ``reason=`` keyword;
- the verbs of planned writes (``Apply(obj, "Created" if ... else "Updated")``), which
  become Normal events;
- anything assigned to a variable named ``reason``.

A string is taken as it is, a name through the module-level string constants of the
package, and an f-string as a pattern (``Scaled{direction.capitalize()}`` -> ``Scaled\\w+``).
Reasons passed through from Kubernetes (a pod's ``CrashLoopBackOff``) are not in the code.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "metamapper_operator"
EVENT_TYPES = {"Normal", "Warning"}
REASON_CALLS = {"Boundary": 1, "Apply": 1}


@dataclass(frozen=True)
class Reason:
    """One reason as spelt in the code: a literal, or a pattern from an f-string."""

    text: str
    pattern: bool
    where: str

    def regex(self) -> re.Pattern[str]:
        return re.compile(self.text if self.pattern else re.escape(self.text))


def _constants(trees: dict[Path, ast.Module]) -> dict[str, str]:
    found: dict[str, str] = {}
    for tree in trees.values():
        for node in tree.body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name)
                    and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
                found[node.targets[0].id] = node.value.value
    return found


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


class _Scan(ast.NodeVisitor):
    def __init__(self, where: str, constants: dict[str, str]) -> None:
        self.where = where
        self.constants = constants
        self.found: set[Reason] = set()

    def take(self, node: ast.expr | None) -> None:
        """Record the reasons an expression can evaluate to."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value:
            self.found.add(Reason(node.value, False, self.where))
        elif isinstance(node, ast.Name) and node.id in self.constants:
            self.found.add(Reason(self.constants[node.id], False, self.where))
        elif isinstance(node, ast.IfExp):
            self.take(node.body)
            self.take(node.orelse)
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                self.take(value)
        elif isinstance(node, ast.JoinedStr):
            parts = [re.escape(str(p.value)) if isinstance(p, ast.Constant) else r"\w+"
                     for p in node.values]
            self.found.add(Reason("".join(parts), True, self.where))

    def visit_Call(self, node: ast.Call) -> None:
        args = node.args
        for i, arg in enumerate(args[:-1]):
            if isinstance(arg, ast.Constant) and arg.value in EVENT_TYPES:
                self.take(args[i + 1])
        name = _name(node.func)
        if name == "_condition" and len(args) >= 3:
            self.take(args[0])
            self.take(args[2])
        if name in REASON_CALLS and len(args) > REASON_CALLS[name]:
            self.take(args[REASON_CALLS[name]])
        for keyword in node.keywords:
            if keyword.arg == "reason":
                self.take(keyword.value)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        if any(isinstance(t, ast.Name) and t.id == "reason" for t in node.targets):
            self.take(node.value)
        self.generic_visit(node)


def operator_reasons(package: Path = PACKAGE) -> set[Reason]:
    trees = {path: ast.parse(path.read_text(), str(path)) for path in sorted(package.rglob("*.py"))}
    constants = _constants(trees)
    found: set[Reason] = set()
    for path, tree in trees.items():
        scan = _Scan(str(path.relative_to(package)), constants)
        scan.visit(tree)
        found |= scan.found
    return found
