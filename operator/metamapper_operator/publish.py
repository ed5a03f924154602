"""Status publishing: render a Metamapper's status and write only what changed."""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from typing import Any

from metamapper_operator.kube import Kube
from metamapper_operator.state import FleetState, Key
from metamapper_operator.status import (
    TIME_FORMAT,
    DeploymentState,
    Observed,
    changes,
    measured,
    raised_warnings,
    render,
)


def now() -> str:
    """The time as status fields and conditions show it (RFC 3339, seconds, UTC)."""
    return datetime.datetime.now(datetime.UTC).strftime(TIME_FORMAT)


async def publish(kube: Kube, key: Key, state: FleetState,
                  deployments: Mapping[str, DeploymentState],
                  seen_status: Mapping[str, Any] | None = None) -> None:
    """Render the status of ``key`` from ``state`` and write it if it differs from the
    last one written or seen (``seen_status``, the object's status as the watch saw it).

    Nothing is written for an object known from kopf's index alone (``state.listed``)
    until a status seen comes with it (its reconcile's): compared with nothing, every
    field would look new."""
    if seen_status is None and state.listed:
        return
    if seen_status is not None and state.status is None:
        state.status, state.listed = compact(seen_status), False
        # A process new to the object (a restart, a new leader): it carries on from the
        # measurements its status shows until its autoscaler measures again, but for the
        # pools that autoscaler resized already (known from the index: listed.Learner).
        last = measured(seen_status)
        for pool, scale in last.scaling.items():
            state.scaling.setdefault(pool, scale)
        state.broker_error, state.unconsumed = last.broker_error, last.unconsumed
    previous = json.loads(state.status) if state.status else {}
    observed = Observed(
        generation=state.generation, now=now(), fleet=state.fleet,
        transport=state.access.transport if state.access else None,
        invalid=state.invalid, broker_error=state.broker_error,
        deployments=deployments, scaling=state.scaling, unconsumed=state.unconsumed,
        faults=tuple(state.faults[step] for step in sorted(state.faults)),
        held=state.held_parts,
    )
    new = render(observed, previous)
    patch = changes(previous, new)
    # Settings that contradict each other: a Warning event when one is found.
    for reason, message in raised_warnings(previous, new):
        await kube.event({"namespace": key.namespace, "name": key.name, "uid": state.uid},
                         "Warning", reason, message)
    if patch:
        await kube.patch_status(key.namespace, key.name, patch)
        state.status = compact({**{k: v for k, v in previous.items() if k == "kopf"}, **new})


def compact(status: Mapping[str, Any]) -> str:
    """A status as the state keeps it: JSON, a fifth of the memory of the same dicts,
    for one object of thousands; decoded only when its status is rendered again."""
    return json.dumps(status, separators=(",", ":"))
