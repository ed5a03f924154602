"""What one reconcile does to a Metamapper's children, decided before anything is done.

:func:`children_plan` compares the desired objects (from :mod:`builders`) with what is
known to exist and gives the writes that close the gap, each with the Event announcing
it. The reconciler computes the whole plan first and only then carries it out, so a
failure met while computing it (a bad value, an unreadable Secret) changes nothing in the
cluster, and a failure while carrying it out stops at a write whose predecessors are done
and announced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from metamapper_operator.builders import SPEC_HASH
from metamapper_operator.status import DeploymentState

# Kinds of children deleted when the spec no longer asks for them (the ConfigMap's name is
# fixed: it is never orphaned).
REMOVABLE = frozenset({"Deployment", "PodDisruptionBudget", "NetworkPolicy", "Service"})


@dataclass(frozen=True, slots=True)
class Note:
    """An Event to post about the Metamapper."""

    type: str       # Normal or Warning
    reason: str
    message: str


def summarised(notes: Sequence[Note]) -> list[Note]:
    """One Event per type and reason for the writes of one reconcile, in order of first
    appearance, its message every write's (a new fleet: one ``Created`` naming each of its
    children, not one Event per child)."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for note in notes:
        grouped.setdefault((note.type, note.reason), []).append(note.message)
    return [Note(kind, reason, "; ".join(messages))
            for (kind, reason), messages in grouped.items()]


@dataclass(frozen=True, slots=True)
class Apply:
    """Server-side apply ``obj``: new (Created), changed (Updated), or its pod template
    fields taken by another manager (Repaired, ``foreign`` the digest of theirs)."""

    obj: Mapping[str, Any]
    verb: str
    foreign: str = ""

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def spec_hash(self) -> str:
        return str(self.obj["metadata"]["annotations"][SPEC_HASH])

    def note(self) -> Note:
        if self.verb == "Repaired":
            return Note("Normal", "Repaired", f"{self.kind} {self.name}: pod template "
                        "fields changed by another manager restored")
        return Note("Normal", self.verb, f"{self.kind} {self.name} {self.verb.lower()}")


@dataclass(frozen=True, slots=True)
class Scale:
    """Same template, another size (bounds, suspend or a pinned pause changed)."""

    name: str
    before: int
    after: int

    def note(self) -> Note:
        return Note("Normal", "Scaled", f"Deployment {self.name} scaled from {self.before} "
                    f"to {self.after} to fit the pool's bounds")


@dataclass(frozen=True, slots=True)
class Delete:
    """A child the spec no longer asks for."""

    kind: str
    name: str

    def note(self) -> Note:
        return Note("Normal", "Deleted", f"{self.kind} {self.name} deleted: no longer in "
                    "the spec")


Action = Apply | Scale | Delete


@dataclass(frozen=True, slots=True)
class ChildrenPlan:
    """The writes, in order; ``settled`` is False when a child's content hash came from
    the operator's memory of its own write rather than from the watches (a later
    reconcile from the same inputs must look again)."""

    actions: tuple[Action, ...]
    settled: bool


def children_plan(desired: Sequence[Mapping[str, Any]],
                  existing: Mapping[tuple[str, str], str],
                  have: Mapping[tuple[str, str], str | None],
                  deployments: Mapping[str, DeploymentState],
                  sizes: Mapping[str, int],
                  repaired: Mapping[str, str]) -> ChildrenPlan:
    """The writes turning what exists into ``desired``.

    ``existing`` holds the content hashes the watches show, by (kind, name); ``have`` the
    content hash each desired child is believed to have (the watch's, or one just applied
    that the watch does not show yet); ``deployments`` the Deployments the watch shows,
    ``sizes`` their sizes as believed (one just set counts); ``repaired`` the foreign
    template fields last overwritten, per Deployment (each change of theirs is restored
    once, not on every reconcile).
    """
    actions: list[Action] = []
    wanted = set()
    settled = True
    for obj in desired:
        kind, name = obj["kind"], obj["metadata"]["name"]
        wanted.add((kind, name))
        spec_hash = obj["metadata"]["annotations"][SPEC_HASH]
        known = have.get((kind, name))
        settled = settled and known == existing.get((kind, name))
        indexed = kind == "Deployment" and name in deployments
        foreign = deployments[name].foreign if indexed and known else ""
        if known != spec_hash:
            actions.append(Apply(obj, "Created" if known is None else "Updated"))
        elif foreign and repaired.get(name) != foreign:
            actions.append(Apply(obj, "Repaired", foreign))
        elif indexed and sizes[name] != obj["spec"]["replicas"]:
            actions.append(Scale(name, sizes[name], obj["spec"]["replicas"]))
    actions.extend(Delete(kind, name) for kind, name in existing
                   if kind in REMOVABLE and (kind, name) not in wanted)
    return ChildrenPlan(tuple(actions), settled)
