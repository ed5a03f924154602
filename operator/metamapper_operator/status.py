"""The status a Metamapper reports: pure functions from what was observed to the dict.

Both writers (the reconciler and the autoscaler loop) render the whole status through
:func:`render`, so they never disagree on its shape, and a status is only written when
:func:`changes` finds a difference (timestamps of unchanged conditions are kept).
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from metamapper_operator.autoscale.schedule import Window
from metamapper_operator.autoscale.waves import Outlook, Wave
from metamapper_operator.builders import (
    Held,
    Part,
    celery_settings,
    pool_deployment_name,
    scheduler_deployment_name,
    scheduler_held,
)
from metamapper_operator.contradictions import (
    early_acks,
    queue_without_consumer,
    short_visibility_timeout,
)
from metamapper_operator.model import (
    PAUSED,
    PAUSED_REPLICAS,
    WORKER_TASK_TIME_LIMIT,
    Fleet,
)
from metamapper_urls import redact_text

CONDITION_TYPES = ("Ready", "Progressing", "Degraded", "InvalidSpec", "BrokerUnreachable",
                   "GracePeriodTooShort", "VisibilityTimeoutTooShort", "AcksTooEarly",
                   "QueueWithoutConsumer", "Paused")
# Conditions that warn of settings contradicting each other: a Warning event is posted
# when one turns True.
WARNING_CONDITIONS = ("GracePeriodTooShort", "VisibilityTimeoutTooShort", "AcksTooEarly",
                      "QueueWithoutConsumer")
#: How status fields and conditions write a time (RFC 3339, seconds, UTC).
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True, kw_only=True, slots=True)
class Fault:
    """A step of one object's reconcile or autoscaling that failed: which step, the
    condition reason it shows as, and a message with every credential scrubbed."""

    step: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Stall:
    """Why a rollout does not progress: a pod's reason (ImagePullBackOff, Unschedulable,
    ...) or the Deployment's own (ProgressDeadlineExceeded, FailedCreate)."""

    reason: str
    message: str


# Why a container waits that no amount of waiting cures: the rollout has failed.
FAILED_WAITING = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                            "CrashLoopBackOff", "CreateContainerConfigError",
                            "CreateContainerError", "RunContainerError"})


def deployment_stall(conditions: Sequence[Mapping[str, Any]]) -> Stall | None:
    """A Deployment's own word that its rollout failed (its ``status.conditions``): the
    progress deadline passed, or its ReplicaSet cannot create pods (a quota, a policy)."""
    for cond in conditions:
        kind, status = cond.get("type"), cond.get("status")
        if ((kind == "Progressing" and status == "False"
             and cond.get("reason") == "ProgressDeadlineExceeded")
                or (kind == "ReplicaFailure" and status == "True")):
            return Stall(str(cond.get("reason") or kind),
                         redact_text(str(cond.get("message") or "")))
    return None


def pod_stall(pods: Sequence[Mapping[str, Any]]) -> Stall | None:
    """The first reason found among ``pods`` (as the API shows them) why a rollout cannot
    finish: a container waiting for a reason in :data:`FAILED_WAITING`, or a pod the
    scheduler finds no room for (capacity stranded above what the nodes hold)."""
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name", "")
        status = pod.get("status") or {}
        for container in [*(status.get("initContainerStatuses") or []),
                          *(status.get("containerStatuses") or [])]:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in FAILED_WAITING:
                detail = redact_text(str(waiting.get("message") or "")).strip()
                return Stall(waiting["reason"], f"pod {name} container "
                             f"{container.get('name', '')}: {waiting['reason']}"
                             + (f": {detail}" if detail else ""))
        for cond in status.get("conditions") or []:
            if (cond.get("type") == "PodScheduled" and cond.get("status") == "False"
                    and cond.get("reason") == "Unschedulable"):
                return Stall("Unschedulable", f"pod {name}: "
                             + redact_text(str(cond.get("message") or "no node fits")))
    return None


@dataclass(frozen=True, kw_only=True, slots=True)
class DeploymentState:
    """What the operator knows of one child Deployment (from its watch)."""

    name: str
    spec_hash: str
    replicas: int
    ready: int = 0
    updated: int = 0
    generation: int = 0
    observed_generation: int = 0
    # A digest of the pod template fields other managers set (kubectl edit ...): "" when
    # only the operator shapes the template. See :func:`foreign_template_fields`.
    foreign: str = ""
    stall: Stall | None = None   # the Deployment says its rollout failed

    @property
    def settled(self) -> bool:
        return (self.observed_generation >= self.generation and self.ready >= self.replicas
                and self.updated >= self.replicas)


def foreign_template_fields(managed_fields: Sequence[Mapping[str, Any]], manager: str) -> str:
    """A digest of the pod template fields that managers other than ``manager`` own, from
    an object's ``metadata.managedFields`` ("" when there are none).

    A ``kubectl edit`` of a child's image takes that field from the operator's
    server-side apply; the child's content-hash annotation does not change, so only the
    managed fields tell. Status and scale subresources do not shape the template.
    """
    foreign = [(entry.get("manager", ""), entry.get("fieldsV1"))
               for entry in managed_fields
               if entry.get("manager") != manager and not entry.get("subresource")
               and "f:template" in ((entry.get("fieldsV1") or {}).get("f:spec") or {})]
    if not foreign:
        return ""
    return hashlib.sha256(json.dumps(sorted(foreign, key=lambda f: f[0]), sort_keys=True)
                          .encode()).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True, slots=True)
class PoolScale:
    """The autoscaler's latest view of a pool."""

    backlog: int | None = None
    source: str | None = None
    desired: int | None = None
    last_scale_time: str | None = None
    last_scale_reason: str | None = None
    stale_in_flight: int | None = None  # unacknowledged, too old to be running: not counted
    draining: tuple[str, ...] = ()      # pods whose workers stopped consuming, to be removed
    drain_timed_out: str | None = None  # the latest drain given up (its worker consumes again)
    window: Window | None = None         # the schedule window raising the minimum
    warm_up: Outlook | None = None       # the warm-up before the fleet's beat
    throughput_per_pod: float | None = None  # measured, when the pool has a wait target
    arrival_rate: float | None = None        # measured with it (messages per second)
    policy: str | None = None                # what sizes the pool: backlog or serviceTime


@dataclass(frozen=True, kw_only=True, slots=True)
class Observed:
    """Everything a status is rendered from."""

    generation: int
    now: str
    fleet: Fleet | None = None
    transport: str | None = None
    invalid: str | None = None          # InvalidSpec message
    broker_error: str | None = None     # BrokerUnreachable message (credentials redacted)
    deployments: Mapping[str, DeploymentState] | None = None
    scaling: Mapping[str, PoolScale] | None = None
    unconsumed: tuple[str, ...] | None = None  # broker queues nobody consumes or names
    faults: tuple[Fault, ...] = ()      # steps that failed (containment.Boundary)
    held: tuple[Held, ...] = ()         # optional parts held back for a missing Secret


def _condition(kind: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": kind, "status": "True" if ok else "False", "reason": reason,
            "message": message}


def _pools(obs: Observed, fleet: Fleet) -> list[dict[str, Any]]:
    deployments, scaling = obs.deployments or {}, obs.scaling or {}
    pools = []
    for pool in fleet.pools:
        name = pool_deployment_name(fleet, pool)
        dep = deployments.get(name)
        entry: dict[str, Any] = {
            "name": pool.name, "deployment": name, "queues": list(pool.queues),
            "replicas": dep.replicas if dep else 0, "readyReplicas": dep.ready if dep else 0,
        }
        scale = scaling.get(pool.name) if fleet.pause is None else None  # not measured
        if scale:
            optional = {"backlog": scale.backlog, "backlogSource": scale.source,
                        "desiredReplicas": scale.desired, "lastScaleTime": scale.last_scale_time,
                        "lastScaleReason": scale.last_scale_reason,
                        "staleInFlight": scale.stale_in_flight or None,
                        "draining": list(scale.draining) or None,
                        "lastDrainTimeout": scale.drain_timed_out,
                        "policy": scale.policy,
                        "throughputPerPod": scale.throughput_per_pod,
                        "arrivalRate": scale.arrival_rate,
                        "activeSchedule": _window(scale.window),
                        "warmUp": _warm_up(scale.warm_up)}
            entry.update({k: v for k, v in optional.items() if v is not None})
        pools.append(entry)
    return pools


def _window(window: Window | None) -> dict[str, Any] | None:
    if window is None:
        return None
    return {"name": window.name, "minReplicas": window.min_replicas,
            "until": window.end.strftime(TIME_FORMAT)}


def _warm_up(outlook: Outlook | None) -> dict[str, Any] | None:
    if outlook is None:
        return None
    wave = outlook.next_wave
    shown = {"warm": outlook.warm, "coveredByMinReplicas": outlook.covered or None,
             "leadSeconds": outlook.lead_seconds,
             "nextWave": None if wave is None else {
                 "entry": wave.entry, "at": wave.at.strftime(TIME_FORMAT)},
             "continuous": list(outlook.continuous) or None,
             "ignored": list(outlook.ignored) or None}
    return {k: v for k, v in shown.items() if v is not None}


def _outlook(shown: Any) -> Outlook | None:
    """What :func:`_warm_up` wrote, read back; None (nothing read back: the first cycle
    writes it afresh) for a status of another shape, written by another version or by
    hand."""
    if not isinstance(shown, Mapping):
        return None
    try:
        wave = shown.get("nextWave")
        lead = shown.get("leadSeconds")
        return Outlook(warm=bool(shown.get("warm")),
                       covered=bool(shown.get("coveredByMinReplicas")),
                       lead_seconds=None if lead is None else int(lead),
                       next_wave=None if wave is None else Wave(str(wave["entry"]),
                                                                _time(wave["at"])),
                       continuous=tuple(map(str, shown.get("continuous") or ())),
                       ignored=tuple(map(str, shown.get("ignored") or ())))
    except (KeyError, TypeError, ValueError):
        return None


def _time(text: str) -> datetime.datetime:
    """A time as status writes it (:data:`TIME_FORMAT`, UTC), read back."""
    return datetime.datetime.strptime(text, TIME_FORMAT).replace(tzinfo=datetime.UTC)


def short_grace(fleet: Fleet) -> str | None:
    """Pools whose grace period is below the task time limit in force, or None.

    A worker stopped before its task's time limit kills the task; its message then waits
    in the broker for the visibility timeout before anyone runs it again.
    """
    raw = celery_settings(fleet).get("task_time_limit", WORKER_TASK_TIME_LIMIT)
    try:
        limit = float(raw)
    except (TypeError, ValueError):
        return None
    short = [f"{p.name} ({p.termination_grace_period_seconds} s)" for p in fleet.pools
             if p.termination_grace_period_seconds < limit]
    if not short:
        return None
    return (f"terminationGracePeriodSeconds below the task time limit ({limit:g} s) in pool "
            + ", ".join(short) + ": a task still running at the end of the grace period is "
            "killed and waits for the visibility timeout")


def _held(obs: Observed, fleet: Fleet) -> str | None:
    """Why the scheduler is held back: its lock's Secret is missing, or it has no Redis."""
    missing = [h.message for h in obs.held if h.part == Part.SCHEDULER]
    if missing:
        return missing[0]
    return scheduler_held(fleet, obs.transport) if obs.transport else None


def _scheduler(obs: Observed, fleet: Fleet) -> dict[str, Any]:
    dep = (obs.deployments or {}).get(scheduler_deployment_name(fleet))
    replicas, ready = (dep.replicas, dep.ready) if dep else (0, 0)
    if not fleet.scheduler.enabled:
        state = "Disabled"
    elif _held(obs, fleet):
        state = "Held"
    elif fleet.suspend:
        state = "Suspended"
    else:
        state = "Running" if ready > 0 else "Pending"
    return {"state": state, "replicas": replicas, "readyReplicas": ready}


def _faulted(faults: Sequence[Fault]) -> str:
    return "; ".join(f"{fault.step}: {fault.message}" for fault in faults)


def _conditions(obs: Observed) -> list[dict[str, Any]]:
    if obs.invalid is None and obs.fleet is None:
        # No generation carried out yet: the first one failed (or is under way).
        reason = obs.faults[0].reason if obs.faults else "Pending"
        message = _faulted(obs.faults) if obs.faults else "not reconciled yet"
        return [_condition("Ready", False, reason, message),
                _condition("Progressing", not obs.faults, reason, message),
                _condition("Degraded", bool(obs.faults), reason, message)]
    if obs.invalid is not None or obs.fleet is None:
        message = obs.invalid or "the spec could not be read"
        return [_condition("Ready", False, "InvalidSpec", message),
                _condition("Progressing", False, "InvalidSpec", "waiting for a valid spec"),
                _condition("Degraded", True, "InvalidSpec", message),
                _condition("InvalidSpec", True, "InvalidSpec", message)]
    fleet, deployments = obs.fleet, obs.deployments or {}
    expected = [pool_deployment_name(fleet, p) for p in fleet.pools]
    held = _held(obs, fleet)
    parts_held = "; ".join(h.message for h in obs.held if h.part != Part.SCHEDULER)
    # A paused fleet's broker is not measured: an error from before the pause is stale.
    broker_error = obs.broker_error if fleet.pause is None else None
    if fleet.scheduler.enabled and not held:
        expected.append(scheduler_deployment_name(fleet))
    missing = [n for n in expected if n not in deployments]
    unsettled = [n for n in expected if n in deployments and not deployments[n].settled]
    stalls = [(n, stall) for n in expected if n in deployments
              and (stall := deployments[n].stall) is not None]
    stalled = "; ".join(f"{n}: {stall.reason}: {stall.message}" for n, stall in stalls)
    if missing:
        progressing = _condition("Progressing", True, "Creating", "creating " + ", ".join(missing))
    elif stalls:
        progressing = _condition("Progressing", False, stalls[0][1].reason, stalled)
    elif unsettled:
        progressing = _condition("Progressing", True, "RollingOut",
                                 "waiting for pods of " + ", ".join(unsettled))
    else:
        progressing = _condition("Progressing", False, "Settled", "all pods are up to date")
    # Every problem at once: the first names the reason, the message carries them all, so
    # a broker outage does not hide a held scheduler (or the other way round).
    problems = [(reason, message) for reason, message in (
        *((fault.reason, f"{fault.step}: {fault.message}") for fault in obs.faults),
        (stalls[0][1].reason if stalls else "", stalled),
        ("BrokerUnreachable", broker_error), ("SchedulerHeld", held),
        ("SecretMissing", parts_held)) if message]
    if problems:
        degraded = _condition("Degraded", True, problems[0][0],
                              "; ".join(message for _, message in problems))
    else:
        degraded = _condition("Degraded", False, "AsExpected", "no problems")
    if fleet.suspend:
        ready = _condition("Ready", False, "Suspended", "spec.suspend is true")
    elif obs.faults:  # a step of this object failed (the others' went on)
        ready = _condition("Ready", False, obs.faults[0].reason, _faulted(obs.faults))
    elif stalls:  # a rollout that failed: waiting longer will not finish it
        ready = _condition("Ready", False, stalls[0][1].reason, stalled)
    elif broker_error:  # pools cannot follow their queues: not ready (as KEDA says)
        ready = _condition("Ready", False, "BrokerUnreachable", broker_error)
    elif held:
        ready = _condition("Ready", False, "SchedulerHeld", held)
    elif parts_held:
        ready = _condition("Ready", False, "SecretMissing", parts_held)
    elif fleet.pause is not None and fleet.pause.replicas == 0:
        ready = _condition("Ready", False, "PinnedToZero", f"{PAUSED_REPLICAS} is 0: no "
                           "worker runs, nothing consumes the pools' queues")
    elif missing or unsettled:
        ready = _condition("Ready", False, progressing["reason"], progressing["message"])
    elif short := _below_desired(obs, fleet):
        ready = _condition("Ready", False, "BelowDesired", short)
    else:
        ready = _condition("Ready", True, "Ready", "every pool and the scheduler are ready")
    conditions = [ready, progressing, degraded,
                  _condition("InvalidSpec", False, "Valid", "the spec is valid")]
    grace = short_grace(fleet)
    conditions.append(_condition("GracePeriodTooShort", grace is not None,
                                 "BelowTaskTimeLimit" if grace else "AboveTaskTimeLimit",
                                 grace or "every pool's grace period covers the task time limit"))
    visibility = short_visibility_timeout(celery_settings(fleet), obs.transport)
    conditions.append(_condition("VisibilityTimeoutTooShort", visibility is not None,
                                 "BelowTaskTimeLimit" if visibility else "AboveTaskTimeLimit",
                                 visibility or "the broker's visibility timeout covers the "
                                 "longest task time limit (or the broker has none)"))
    early = early_acks(celery_settings(fleet))
    conditions.append(_condition("AcksTooEarly", early is not None,
                                 early.reason if early else "AckedAfterRun",
                                 early.message if early else "a task is acknowledged once it "
                                 "ends, and handed back when its pool process dies"))
    if obs.unconsumed is not None:
        orphans = queue_without_consumer(list(obs.unconsumed))
        conditions.append(_condition("QueueWithoutConsumer", orphans is not None,
                                     "Unconsumed" if orphans else "AllConsumed",
                                     orphans or "every queue holding messages has a consumer "
                                     "or a pool"))
    conditions.append(_paused(fleet))
    if fleet.pause is not None:
        conditions.append(_condition("BrokerUnreachable", False, "NotMeasured",
                                     "autoscaling is paused: the broker is not measured"))
    elif broker_error is not None:
        conditions.append(_condition("BrokerUnreachable", True, "ProbeFailed", broker_error))
    elif obs.scaling:
        conditions.append(_condition("BrokerUnreachable", False, "Reachable",
                                     "the broker answered the last probe"))
    return conditions


def _below_desired(obs: Observed, fleet: Fleet) -> str | None:
    """Pools with fewer ready workers than the autoscaler wants (capacity stranded: the
    size could not be set, or its pods find no room), or None."""
    if fleet.pause is not None:   # not measured: the last wish is stale
        return None
    deployments, scaling = obs.deployments or {}, obs.scaling or {}
    short = []
    for pool in fleet.pools:
        desired = (scale := scaling.get(pool.name)) and scale.desired
        dep = deployments.get(pool_deployment_name(fleet, pool))
        ready = dep.ready if dep else 0
        if desired and ready < desired:
            short.append(f"{pool.name}: {ready} of {desired} desired workers ready")
    return "; ".join(short) or None


def _paused(fleet: Fleet) -> dict[str, Any]:
    pause = fleet.pause
    if pause is None:
        return _condition("Paused", False, "NotPaused", "the autoscaler sizes the pools")
    if pause.replicas is None:
        return _condition("Paused", True, "Annotation", f"{PAUSED} is set: every pool "
                          "keeps its size and its broker is not measured")
    return _condition("Paused", True, "PinnedReplicas", f"{PAUSED_REPLICAS} is set: every "
                      f"pool is held at {pause.replicas} pods and its broker is not measured")


def render(obs: Observed, previous: Mapping[str, Any]) -> dict[str, Any]:
    """The full status; conditions keep their lastTransitionTime while unchanged."""
    before = {c.get("type"): c for c in previous.get("conditions") or []}
    conditions = []
    for cond in _conditions(obs):
        old = before.get(cond["type"]) or {}
        unchanged = old.get("status") == cond["status"]
        cond["lastTransitionTime"] = old.get("lastTransitionTime", obs.now) if unchanged \
            else obs.now
        cond["observedGeneration"] = obs.generation
        conditions.append(cond)
    status: dict[str, Any] = {"observedGeneration": obs.generation, "conditions": conditions}
    if obs.fleet is not None and obs.invalid is None:
        pools = _pools(obs, obs.fleet)
        status.update({
            "transport": obs.transport,
            "poolCount": len(pools),
            "workers": "{}/{}".format(sum(p["readyReplicas"] for p in pools),
                                      sum(p["replicas"] for p in pools)),
            "pools": pools,
            "scheduler": _scheduler(obs, obs.fleet),
        })
        backlogs = [p["backlog"] for p in pools if "backlog" in p]
        if backlogs:
            status["backlog"] = sum(backlogs)
    return status


@dataclass(frozen=True, kw_only=True, slots=True)
class Measured:
    """What the autoscaler last measured of one object, as the object's status shows it."""

    scaling: dict[str, PoolScale]
    broker_error: str | None
    unconsumed: tuple[str, ...] | None


def measured(status: Mapping[str, Any]) -> Measured:
    """The measurements a status shows (what :func:`render` wrote from them), for a new
    operator process to start from: its first reconcile then renders the status that is
    there, instead of one without measurements that its first autoscaling cycle would
    write back. Queues without a consumer are named only in a message: a status that
    reports some gives None (not measured), and the first cycle measures them again."""
    scaling = {}
    for pool in status.get("pools") or []:
        if "backlog" not in pool and "desiredReplicas" not in pool:
            continue   # not measured (autoscaling off, or paused)
        window = pool.get("activeSchedule")
        scaling[str(pool["name"])] = PoolScale(
            backlog=pool.get("backlog"), source=pool.get("backlogSource"),
            desired=pool.get("desiredReplicas"), last_scale_time=pool.get("lastScaleTime"),
            last_scale_reason=pool.get("lastScaleReason"),
            stale_in_flight=pool.get("staleInFlight"),
            draining=tuple(pool.get("draining") or ()),
            drain_timed_out=pool.get("lastDrainTimeout"),
            warm_up=_outlook(pool.get("warmUp")),
            window=None if window is None else Window(
                name=str(window["name"]), min_replicas=int(window["minReplicas"]),
                end=_time(window["until"])),
            throughput_per_pod=pool.get("throughputPerPod"),
            arrival_rate=pool.get("arrivalRate"), policy=pool.get("policy"))
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    unreachable = conditions.get("BrokerUnreachable") or {}
    orphans = conditions.get("QueueWithoutConsumer") or {}
    return Measured(
        scaling=scaling,
        broker_error=str(unreachable.get("message", "")) if (
            unreachable.get("status") == "True"
            and unreachable.get("reason") == "ProbeFailed") else None,
        unconsumed=() if orphans.get("status") == "False" else None)


def raised_warnings(previous: Mapping[str, Any], new: Mapping[str, Any]
                    ) -> list[tuple[str, str]]:
    """(condition type, message) of every warning condition that turned True, or whose
    message changed while True: each deserves a Warning event."""
    before = {c.get("type"): c for c in previous.get("conditions") or []}
    raised = []
    for cond in new.get("conditions") or []:
        if cond["type"] in WARNING_CONDITIONS and cond["status"] == "True":
            old = before.get(cond["type"]) or {}
            if old.get("status") != "True" or old.get("message") != cond["message"]:
                raised.append((cond["type"], cond["message"]))
    return raised


def changes(previous: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch turning ``previous`` into ``new`` (empty when nothing changed).

    Keys the operator no longer reports are removed; ``kopf``'s own bookkeeping is left
    alone.
    """
    patch: dict[str, Any] = {k: v for k, v in new.items() if previous.get(k) != v}
    for key in previous:
        if key not in new and key != "kopf":
            patch[key] = None
    return patch
