"""An operator upgrade as a fault: a soak's stack started under an earlier release
(``devenv.releases``) is upgraded to this checkout's chart, CRD and operator image exactly
as docs/upgrading.md says, in the middle of the stream and a burst on every fleet.

:func:`upgrade` does it and gathers what ``tests/node/test_soak.py`` asserts (an
:class:`Upgrade`, checked with ``_chaos_upgrade_checks``): the Metamappers, the pools'
Deployments, ReplicaSets and pods before and after, the Warning events since it began, the
image of the operator holding the Lease, and the ledger of every task sent until the fleet
was whole again. The upgrade and each pool's rollout are recorded as faults of the soak
(``helm-upgrade``, which cuts no run off, and ``pool-rollout`` on the pods a rollout
replaced), so a soak that goes on afterwards explains what they did.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import yaml

from _chaos_injectors import HELM_SECONDS, LEADER_WAIT, fleet_name, helm
from _chaos_ledger import Fault, Task
from _chaos_upgrade_checks import (
    FleetSeen,
    PoolSeen,
    earlier_release_warnings,
    fleets_seen,
    pools_seen,
    rendered_hashes,
    replaced_pods,
    spec_schema,
    unexplained_warnings,
)
from chaos import DRAIN_LIMIT, NAMESPACE, RECOVERY_LIMIT, Soak
from devenv.controlplane import REPO
from devenv.waiting import WaitTimeout, wait_until
from metamapper_operator import crd
from metamapper_operator.model import transport_of

CRD_FILE = REPO / "crds" / "metamapper.io_metamappers.yaml"
STREAM_SECONDS = 45.0    # the stream under the earlier operator before the upgrade
MEASURED_LIMIT = 120.0   # seconds for the earlier operator to have measured every broker
ROLLOUT_LIMIT = 300.0    # seconds for every pool to be on this checkout's template
#: The longest :func:`upgrade` takes, its waits one after the other: the earlier operator
#: measuring, the stream, helm's rollout, the pools', the Lease taken, the fleet whole
#: again, the stream's tasks done.
UPGRADE_LIMIT = (MEASURED_LIMIT + STREAM_SECONDS + HELM_SECONDS + ROLLOUT_LIMIT + LEADER_WAIT
                 + RECOVERY_LIMIT + DRAIN_LIMIT)
UPGRADE_INDEX = -1       # the upgrade's faults are not of the seeded schedule
WORKERS = "app.kubernetes.io/component=worker"


@dataclass(frozen=True)
class Upgrade:
    """What the upgrade did and left. ``began``: the CRD's apply; ``ended``: helm's
    rollout of the operator done and every pool rolled out on this checkout's template;
    ``recovered``: the fleet whole again (None: not within the soak's limit)."""

    began: float
    ended: float
    recovered: float | None
    fleets_before: dict[str, FleetSeen]
    fleets_after: dict[str, FleetSeen]
    pools_before: dict[str, PoolSeen]
    pools_after: dict[str, PoolSeen]
    rendered: dict[str, str]          # each pool's spec hash as this checkout renders it
    crd_spec_schema: dict[str, Any]   # of this checkout's CRD
    leader_image: str
    warnings: tuple[str, ...]
    # The earlier release's operator's, posted while it still led: shown, not judged.
    earlier_warnings: tuple[str, ...]
    faults: tuple[Fault, ...]
    tasks: tuple[Task, ...]           # every task sent until the fleet was whole again


def _items(run: Soak, *what: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(run.stack.kubectl(
        "get", *what, "-o", "json").stdout)["items"]
    return found


def _fleets(run: Soak) -> list[dict[str, Any]]:
    return _items(run, crd.PLURAL, "-n", NAMESPACE)


def _pools(run: Soak) -> dict[str, PoolSeen]:
    return pools_seen(_items(run, "deployments", "-n", NAMESPACE, "-l", WORKERS),
                      _items(run, "replicasets", "-n", NAMESPACE, "-l", WORKERS),
                      _items(run, "pods", "-n", NAMESPACE, "-l", WORKERS))


def _measured(run: Soak) -> bool:
    """Every fleet's broker measured by the operator (its BrokerUnreachable condition
    False, reason Reachable): it scales and drains."""
    fleets = _fleets(run)
    return len(fleets) == len(run.brokers) and all(any(
        c.get("type") == "BrokerUnreachable" and c.get("reason") == "Reachable"
        for c in (f.get("status") or {}).get("conditions") or []) for f in fleets)


def _rendered(run: Soak) -> dict[str, str]:
    transports = {fleet_name(name): transport_of(broker.host_url)
                  for name, broker in run.brokers.items()}
    return {name: value for body in _fleets(run)
            for name, value in rendered_hashes(body, transports[body["metadata"]["name"]])
            .items()}


def _on_template(rendered: dict[str, str], pools: dict[str, PoolSeen]) -> bool:
    """Every pool carries the spec hash this checkout renders (``rendered``) and has
    rolled out."""
    return set(rendered) == set(pools) and all(
        pools[name].spec_hash == value and pools[name].rolled_out and not
        pools[name].stragglers for name, value in rendered.items())


def _leader_image(run: Soak) -> str:
    """The image of the live operator pod holding the Lease ("": none within the
    injectors' wait for one)."""
    assert run.injectors is not None
    try:
        leader = run.injectors.leader()
    except RuntimeError:
        return ""
    return str(leader["spec"]["containers"][0]["image"])


def upgrade(run: Soak) -> Upgrade:
    """Upgrade the started ``run`` (under an earlier release) to this checkout, in the
    middle of its stream (started here if it was not) and a burst on every fleet; the
    upgrade's faults are added to the run's."""
    assert run.producer is not None and run.stack.images is not None
    image = run.stack.images.operator
    try:
        wait_until(lambda: _measured(run), MEASURED_LIMIT,
                   "the earlier operator measuring every fleet's broker", interval=2)
    except WaitTimeout as err:
        raise RuntimeError(f"{err}; the fleets' conditions: " + json.dumps(
            {f["metadata"]["name"]: (f.get("status") or {}).get("conditions")
             for f in _fleets(run)})) from None
    run.producer.start()
    time.sleep(STREAM_SECONDS)
    fleets_before, pools_before = fleets_seen(_fleets(run)), _pools(run)
    for broker in run.brokers:
        run.producer.burst(broker)
    # docs/upgrading.md: the CRD first, then the chart with the values in force
    began = time.time()
    run.stack.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    helm(run.stack, "upgrade", "--reuse-values", "--set",
         f"image.tag={image.rpartition(':')[2]}")
    # The pools as they were when all of them had rolled out at once (the autoscaler keeps
    # resizing them: a later look may catch one mid-scale), else as last seen: the test
    # names what is not so.
    last: dict[str, dict[str, PoolSeen]] = {}

    def rolled() -> bool:
        last["pools"] = _pools(run)
        return _on_template(_rendered(run), last["pools"])

    with contextlib.suppress(WaitTimeout):
        wait_until(rolled, ROLLOUT_LIMIT, "every pool rolled out on this checkout's template",
                   interval=2)
    ended = time.time()
    rendered, pools_after = _rendered(run), last["pools"]
    leader_image = _leader_image(run)   # helm waited: the old pods are gone or going
    recovered = run.wait_whole(began, ended)
    fleets_after = fleets_seen(_fleets(run))
    events = _items(run, "events", "--all-namespaces")
    warnings = unexplained_warnings(events, began)
    earlier = earlier_release_warnings(events, began)
    for shown in earlier:
        print(f"  the earlier release's operator, while it led: {shown}", file=sys.stderr)
    settled = time.time()
    run.wait_done([s.task_id for s in run.producer.sent if s.at < settled])
    tasks = tuple(run.ledger(sent_before=settled))
    faults = [Fault(UPGRADE_INDEX, "helm-upgrade", min(run.brokers), frozenset(), began,
                    ended, recovered)]
    replaced = replaced_pods(pools_before, pools_after,
                             (r.pod for task in tasks for r in task.runs))
    faults += [Fault(UPGRADE_INDEX, "pool-rollout", next(
        b for b in run.brokers if fleet_name(b) == pools_after[pool].fleet), pods, began,
        ended, recovered) for pool, pods in sorted(replaced.items()) if pods]
    run.faults.extend(faults)
    return Upgrade(began, ended, recovered, fleets_before, fleets_after, pools_before,
                   pools_after, rendered, spec_schema(yaml.safe_load(CRD_FILE.read_text()),
                                                      crd.VERSION),
                   leader_image, tuple(warnings), tuple(earlier), tuple(faults), tasks)

