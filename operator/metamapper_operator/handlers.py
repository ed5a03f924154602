"""kopf handlers: reconcile each Metamapper into its children, level-based.

On create, update, resume and every resync interval (one loop for all objects, not a
timer per object, which would also need a finalizer on each) the full desired set of children is
rendered by the pure builders and compared, by content hash, with what the watches say
exists (the Metamappers through kopf's index, the children through the operator's own
watches: :mod:`children`). Only what differs is applied (server-side apply) or deleted, so a
fleet in its desired state costs no API request at all. The same comparison gives the
status, which is written only when it changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import kopf

from metamapper_operator.autoscale.loop import Autoscaler
from metamapper_operator.brokers.base import secrets_of
from metamapper_operator.builders import (
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_NAME,
    MANAGED_SELECTOR,
    ONE_BEAT_GATE,
    Held,
    desired_objects,
    scheduler_held,
)
from metamapper_operator.children import KINDS, Child, ChildKind, Children, child_of
from metamapper_operator.coalescing import Coalescer
from metamapper_operator.config import Config
from metamapper_operator.containment import Boundary, settle
from metamapper_operator.crd import GROUP, PLURAL, VERSION
from metamapper_operator.health import Health
from metamapper_operator.kube import Kube, KubeError, unguarded
from metamapper_operator.model import Fleet, SpecError
from metamapper_operator.plan import (
    Action,
    Apply,
    ChildrenPlan,
    Delete,
    Note,
    Scale,
    children_plan,
    summarised,
)
from metamapper_operator.references import (
    BrokerAccess,
    SecretCache,
    SecretRefused,
    held_parts,
    read_spec,
    short_tls_notice,
)
from metamapper_operator.rollouts import Rollouts
from metamapper_operator.runtime import Runtime
from metamapper_operator.state import FleetState, Key, ReconcileInputs
from metamapper_operator.status import DeploymentState, Fault
from metamapper_operator.watching import Watch

log = logging.getLogger(__name__)
CHILD_SELECTOR = ",".join(f"{key}={value}" for key, value in MANAGED_SELECTOR.items())
DIFFBASE_KEY = "last-handled-configuration"   # kopf's annotation, under GROUP/


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo,
                    metamappers: kopf.Index[Key, str], **_: Any) -> None:
    settings.posting.level = logging.INFO
    # Resources are named explicitly; no need to scan CRDs or namespaces (and no RBAC to).
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # kopf's request timeout comes from __main__.kopf_settings (the fencing margin).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key=DIFFBASE_KEY)
    config = memo.get("config") or Config.from_env(os.environ)
    kube = await Kube.connect(config.identity, memo.get("guard") or unguarded)
    runtime = Runtime(config=config, kube=kube,
                      secrets=SecretCache(kube.read_secret, config.secret_ttl_seconds))
    memo["runtime"] = runtime
    feeds = [(kind, namespace) for kind in KINDS for namespace in config.namespaces or (None,)]
    children = Children((kind.kind, namespace) for kind, namespace in feeds)
    memo["children"] = children
    readiness: Coalescer[Key] = Coalescer(lambda key: publish_readiness(runtime, children, key))
    autoscaler = Autoscaler(runtime, children.deployments, bodies=metamappers)
    memo["autoscaler"] = autoscaler
    health: Health | None = memo.get("health")
    if health is not None:
        health.checks.append(autoscaler.stalled)
        health.notes.append(children.refusal)
    watches = [child_watch(kube, kind, namespace, children,
                           lambda child: child_changed(runtime, readiness, child))
               for kind, namespace in feeds]
    memo["tasks"] = [
        *(asyncio.create_task(supervise(f"watch of {watch.what}", watch.run))
          for watch in watches),
        asyncio.create_task(supervise("status of changed Deployments", readiness.run)),
        asyncio.create_task(supervise("resync loop", lambda: resync_loop(
            runtime, metamappers, children))),
        asyncio.create_task(supervise("autoscaling loop", autoscaler.run)),
        asyncio.create_task(supervise("rollouts", Rollouts(runtime, children).run)),
    ]


def child_watch(kube: Kube, kind: ChildKind, namespace: str | None, children: Children,
                changed: Callable[[Child], None]) -> Watch[Child]:
    """The watch of one kind of child (in ``namespace``, or in all when None) that keeps
    ``children`` current and tells ``changed`` of each child an event shows."""
    where = f"in {namespace}" if namespace else "in all namespaces"

    def event(kind_of_event: str, child: Child) -> None:
        children.changed(kind_of_event, child)
        changed(child)

    return Watch(kube.api, kind.path(namespace), f"{kind.kind}s {where}", CHILD_SELECTOR,
                 partial(child_of, kind.kind),
                 partial(children.replace, (kind.kind, namespace)), event,
                 partial(children.refused, (kind.kind, namespace)))


async def supervise(name: str, loop: Callable[[], Awaitable[None]]) -> None:
    """Run a loop forever: one that ends or dies is logged and started again, never
    silently gone."""
    while True:
        try:
            await loop()
            log.error("%s ended; starting it again", name)
        except Exception:
            log.exception("%s died; starting it again", name)
        await asyncio.sleep(1.0)


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    for task in memo.get("tasks", []):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if "autoscaler" in memo:
        await memo["autoscaler"].close()
    runtime: Runtime | None = memo.get("runtime")
    if runtime is not None:
        await runtime.kube.close()


# --- the Metamappers as kopf's index keeps them ------------------------------------


# Annotations that copy the spec (kopf's record of what it handled, kubectl's of what it
# applied): never an input of a reconcile, and as large as the spec.
SPEC_COPIES = frozenset({f"{GROUP}/{DIFFBASE_KEY}",
                         "kubectl.kubernetes.io/last-applied-configuration"})


def _read_annotations(meta: Mapping[str, Any]) -> dict[str, str]:
    """The annotations a reconcile reads: all but the copies of the spec."""
    return {key: value for key, value in (meta.get("annotations") or {}).items()
            if key not in SPEC_COPIES}


@kopf.index(GROUP, VERSION, PLURAL)
async def metamappers(namespace: str, name: str, body: kopf.Body, **_: Any
                      ) -> dict[Key, str]:
    """Every Metamapper as the resync reconciles it, without what it never reads: the
    managedFields (a third of an object's size), the annotations that copy the spec and
    the status (the operator keeps the status it wrote). The index holds every object in
    memory, so as compact JSON: a fifth of the memory the same body takes as dicts, and
    decoding one takes microseconds (see :func:`indexed_body`).

    A coroutine, although it never waits: kopf runs a plain function in its thread pool
    (a thread switch per event), and what a pool thread allocates, each entry kept here
    among it, lands in that thread's own malloc arena, apart from the main thread's."""
    kept = {field: value for field, value in body.items()
            if field not in ("metadata", "status")}
    meta = {field: value for field, value in body.metadata.items()
            if field not in ("managedFields", "annotations")}
    meta["annotations"] = _read_annotations(body.metadata)
    kept["metadata"] = meta
    return {Key(namespace, name): json.dumps(kept, separators=(",", ":"))}


def indexed_body(entry: str) -> kopf.Body:
    """A body kept by :func:`metamappers`."""
    return kopf.Body(json.loads(entry))


# --- reconcile ---------------------------------------------------------------------


def inputs_of(body: kopf.Body, deployments: Mapping[str, DeploymentState],
              others: Mapping[tuple[str, str], str]) -> ReconcileInputs:
    meta = body.metadata
    return ReconcileInputs(generation=int(meta.get("generation", 0)),
                           annotations=frozenset(_read_annotations(meta).items()),
                           labels=frozenset((meta.get("labels") or {}).items()),
                           deployments=frozenset(deployments.values()),
                           others=frozenset(others.items()))


def reads_secrets(fleet: Fleet | None) -> bool:
    """Whether resolving the fleet's references reads a Secret (which may change unseen:
    the operator does not watch Secrets)."""
    if fleet is None:
        return True
    broker = fleet.broker
    return any(ref is not None for ref in (broker.url_secret, broker.rabbitmq_credentials,
                                           broker.sqs_credentials,
                                           fleet.scheduler.lock.redis_url_secret,
                                           fleet.result_backend_secret,
                                           fleet.flower.basic_auth_secret))


def unchanged(runtime: Runtime, key: Key, inputs: ReconcileInputs) -> bool:
    """Whether a reconcile of ``key`` from ``inputs`` would find what the last one found:
    the same object and children, no failure to retry, and no Secret due to be read
    again."""
    state = runtime.fleets.get(key)
    if state is None or state.reconciled != inputs or RECONCILE in state.faults:
        return False
    return not reads_secrets(state.fleet) or (
        time.monotonic() - state.reconciled_at < runtime.config.secret_ttl_seconds)


#: The step of an object's reconcile, as its fault names it (containment.Boundary).
RECONCILE = "reconcile"


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything one reconcile of a valid spec does, decided before any write: the
    children's writes, then the state and status of the new generation."""

    generation: int
    fleet: Fleet
    access: BrokerAccess
    held: str | None        # why the scheduler is held back (see builders.scheduler_held)
    children: ChildrenPlan
    parts: tuple[Held, ...] = ()  # optional parts whose Secret is missing


@dataclass(frozen=True, slots=True)
class Refusal:
    """A generation refused: its spec, or a Secret it names, is invalid (InvalidSpec).
    ``final`` when only a change of the spec can help (a missing Secret may appear)."""

    generation: int
    message: str
    final: bool


async def reconcile(body: kopf.Body, runtime: Runtime,
                    deployments: Mapping[str, DeploymentState],
                    others: Mapping[tuple[str, str], str], *, from_event: bool = False
                    ) -> None:
    """Bring one Metamapper's children to the desired state; report it in status.

    ``deployments`` are its Deployments as the watch shows them, ``others`` the content
    hashes of its other children, by (kind, name). ``from_event``: ``body`` is news of
    the object from kopf's watch (a handler's), not kopf's index (the resync's), so the
    object existed a moment ago and missing children need no look at it.

    The reconcile reads (the spec, the Secrets it names), plans (:class:`Plan` or
    :class:`Refusal`, purely), then carries the plan out (the writes, then the state of
    the new generation). All of it runs in one :class:`Boundary`: whatever fails, an API
    request or a value nobody foresaw, becomes this object's fault (Ready False with the
    reason, one Warning event) while the generation last carried out stays in force and
    in ``observedGeneration``. It is then raised to kopf as TemporaryError (retried soon)
    when an API error may pass, PermanentError otherwise (the resync tries again).
    """
    key = Key(body.metadata.namespace or "", body.metadata.name or "")
    state, lock = runtime.state(key, body.metadata.uid or "")
    seen_status = dict(body.get("status") or {})
    inputs = inputs_of(body, deployments, others)
    async with runtime.turns, lock:
        state.reconciled = None
        # Known from the index alone (listed.Learner): its generation is not carried out.
        learned = state.fleet if state.listed else None
        boundary = Boundary(RECONCILE, "ReconcileFailed",
                            secrets_of(state.access) if state.access else (),
                            expected=(KubeError,))
        try:
            with boundary:
                settled = await _reconcile(body, runtime, state, key, inputs.generation,
                                           deployments, others, boundary, from_event)
                settle(state.faults, RECONCILE, None)
                # Only what the watches fully showed may be skipped later: a child known
                # only from the operator's own recent write is checked again.
                if settled:
                    state.reconciled, state.reconciled_at = inputs, time.monotonic()
                await runtime.publish(key, deployments, seen_status)
        finally:  # after every change of the state: the autoscaler reads it afresh
            runtime.note_change()
        if boundary.fault is None:
            return
        fault = boundary.fault
        if isinstance(boundary.error, KubeError):
            fault = replace(fault, reason="ApplyFailed")
        if learned is not None and state.fleet is learned:
            _unlearn(state)
        await runtime.settle(key, RECONCILE, fault)
        with contextlib.suppress(KubeError):  # the status may be what fails
            await runtime.publish(key, deployments, seen_status)
        if isinstance(boundary.error, KubeError) and boundary.error.retryable:
            raise kopf.TemporaryError(fault.message, delay=5)
        raise kopf.PermanentError(fault.message)


def _unlearn(state: FleetState) -> None:
    """Drop what was learned of the object from kopf's index alone (listed.Learner),
    before a status with a fault is written: this process has neither carried that
    generation out nor refused it, so the status must not say it is in force."""
    state.fleet, state.access, state.generation = None, None, 0


async def _reconcile(body: kopf.Body, runtime: Runtime, state: FleetState, key: Key,
                     generation: int, deployments: Mapping[str, DeploymentState],
                     others: Mapping[tuple[str, str], str], boundary: Boundary,
                     from_event: bool) -> bool:
    """Read, plan, carry out; False when the same inputs may give another result later: a
    child's state came from memory, not from the watches, a referenced Secret is
    missing (the operator does not watch Secrets, so the resync must look again), or
    the object is gone."""
    planned = await _plan(body, runtime, state, key, generation, deployments, others,
                          boundary, from_event)
    if planned is None:   # gone
        return False
    if isinstance(planned, Refusal):
        if state.invalid != planned.message:
            await runtime.kube.event(body.metadata, "Warning", "InvalidSpec", planned.message)
        state.generation = planned.generation
        state.fleet, state.access, state.invalid = None, None, planned.message
        return planned.final
    await _carry_out(runtime, state, key, body.metadata, planned.children.actions)
    announce = planned.held if planned.held and state.held != planned.held else None
    short_tls = (None if state.access == planned.access else
                 short_tls_notice(planned.fleet, planned.access, runtime.config.home_namespace))
    state.generation, state.fleet, state.access = (planned.generation, planned.fleet,
                                                   planned.access)
    state.invalid, state.held = None, planned.held
    if announce:
        await runtime.kube.event(body.metadata, "Warning", "SchedulerHeld", announce)
    if short_tls:
        await runtime.kube.event(body.metadata, "Warning", "BrokerNameShort", short_tls)
    announced, state.held_parts = state.held_parts, planned.parts
    for part in planned.parts:
        if part not in announced:
            await runtime.kube.event(body.metadata, "Warning", "SecretMissing", part.message)
    return planned.children.settled and not planned.parts   # look for the Secret again


async def _plan(body: kopf.Body, runtime: Runtime, state: FleetState, key: Key,
                generation: int, deployments: Mapping[str, DeploymentState],
                others: Mapping[tuple[str, str], str], boundary: Boundary, from_event: bool
                ) -> Plan | Refusal | None:
    """What this reconcile does (None: the object is gone and forgotten). Reads the
    Secrets the spec names, and the object itself when a child is missing and the body
    comes from kopf's index (see :func:`reconcile`); writes nothing."""
    try:
        spec = await read_spec(body, runtime.secrets.read, runtime.config.home_namespace)
    except SpecError as err:
        return Refusal(generation, str(err), final=not isinstance(err, SecretRefused))
    fleet, access = spec.fleet, spec.access
    boundary.secrets.extend(secrets_of(access))
    parts = await held_parts(fleet, runtime.secrets.read)
    desired = desired_objects(fleet, access.transport, {
        n: runtime.replicas(key, n, d.replicas) for n, d in deployments.items()}, parts)
    existing = {**{("Deployment", n): d.spec_hash for n, d in deployments.items()},
                **others}
    if not from_event and any(
            obj["kind"] == "Deployment" and ("Deployment", obj["metadata"]["name"])
            not in existing for obj in desired) and (
            await runtime.kube.metamapper_uid(*key) != body.metadata.uid):
        # Children missing: maybe created just now, maybe garbage-collected because the
        # object is gone (deleted while kopf's watch was down, so its index still has it).
        # Children created for a dead owner would be collected again, on every resync.
        log.info("%s/%s is gone; forgetting it", *key)
        runtime.forget(key)
        return None
    names = [(obj["kind"], obj["metadata"]["name"]) for obj in desired]
    children = children_plan(
        desired, existing,
        have={(kind, name): runtime.content_hash(key, kind, name, existing.get((kind, name)))
              for kind, name in names},
        deployments=deployments,
        sizes={n: runtime.replicas(key, n, d.replicas) for n, d in deployments.items()},
        repaired=state.repaired)
    return Plan(generation, fleet, access, scheduler_held(fleet, access.transport), children,
                parts)


async def _carry_out(runtime: Runtime, state: FleetState, key: Key, meta: Mapping[str, Any],
                     actions: tuple[Action, ...]) -> None:
    """The writes of a plan, in order, each remembered until the watches show it; those
    done are announced together once the plan is carried out or fails half way (one
    Event per reason: :func:`plan.summarised`)."""
    kube = runtime.kube
    done: list[Note] = []
    try:
        for action in actions:
            match action:
                case Apply():
                    await kube.apply(action.obj)
                    runtime.note_applied(key, action.kind, action.name, action.spec_hash)
                    if action.foreign:
                        state.repaired[action.name] = action.foreign
                case Scale():
                    await kube.scale(key.namespace, action.name, action.after)
                    runtime.note_scale(key, action.name, action.after)
                case Delete():
                    await kube.delete(action.kind, key.namespace, action.name)
            done.append(action.note())
    finally:
        for note in summarised(done):
            await kube.event(meta, note.type, note.reason, note.message)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def apply_spec(body: kopf.Body, memo: kopf.Memo, reason: str | None = None,
                     **_: Any) -> None:
    runtime: Runtime = memo["runtime"]
    children: Children = memo["children"]
    if reason != kopf.Reason.RESUME:
        # A spec change reads its Secrets afresh. Not a resume: a new process's cache
        # holds only its own reads, which objects still to be learned wait for
        # (listed.Learner).
        runtime.secrets.forget(body.metadata.namespace or "")
    await _until_listed(body, runtime, children)
    await _reconcile_from_watch(body, runtime, children, from_event=True)


#: Seconds a reconcile waits for the children's first listing before it reports a
#: listing that failed (one only slow is waited for, without a word).
LISTING_WAIT = 30.0
#: The step of an object's faults that says its children cannot be listed.
LISTING = "listing children"


async def _until_listed(body: kopf.Body, runtime: Runtime, children: Children) -> None:
    """Wait until every kind of child has been listed (before that, existing children
    would look missing: a reconcile would re-create them at their initial size). A
    listing the apiserver keeps refusing (a permission missing from the operator's RBAC)
    is this object's fault after :data:`LISTING_WAIT`: its status and one Warning event
    name the permission, and kopf tries again later."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(children.listed.wait(), LISTING_WAIT)
            return
        why = children.refusal()
        if why is None:
            continue
        kind = next(iter(children.refusals))[0]
        key = Key(body.metadata.namespace or "", body.metadata.name or "")
        state, lock = runtime.state(key, body.metadata.uid or "")  # made if new: settle finds it
        fault = Fault(step=LISTING, reason=f"CannotList{kind}s", message=why)
        async with lock:
            if state.listed:
                _unlearn(state)
            await runtime.settle(key, LISTING, fault)
            with contextlib.suppress(KubeError):  # the next try writes it
                await runtime.publish(key, {}, dict(body.get("status") or {}))
        raise kopf.TemporaryError(why, delay=LISTING_WAIT)


async def resync_loop(runtime: Runtime, bodies: kopf.Index[Key, str],
                      children: Children) -> None:
    """Every resync interval, reconcile every object whose spec or children changed since
    its last reconcile, or whose Secrets are due to be read again: repairs drift the
    handlers missed. An object at rest costs a comparison."""
    while True:
        await asyncio.sleep(runtime.config.resync_seconds)
        await resync_once(runtime, bodies, children)


async def resync_once(runtime: Runtime, bodies: Mapping[Key, Collection[str]],
                      children: Children) -> None:
    """One round of :func:`resync_loop`. An object with no state, or known from the
    index alone (``state.listed``), is left to its resume handler, queued after a
    restart: it brings the status the watch saw, where the index's body has none (every
    field would look new, and be written)."""
    await children.listed.wait()
    for key in list(bodies):
        state = runtime.fleets.get(key)
        if state is None or state.listed:
            continue
        owned = children.of(key)
        for entry in list(bodies.get(key, [])):
            body = indexed_body(entry)
            if unchanged(runtime, key, inputs_of(body, owned.deployments, owned.hashes)):
                continue
            try:
                await _reconcile_from_watch(body, runtime, children)
            except (kopf.TemporaryError, kopf.PermanentError) as err:
                log.warning("resync of %s/%s failed: %s", *key, err)
            except Exception:
                # One broken object must not stop the others from being reconciled.
                log.exception("resync of %s/%s failed", *key)


async def _reconcile_from_watch(body: kopf.Body, runtime: Runtime, children: Children,
                                *, from_event: bool = False) -> None:
    key = Key(body.metadata.namespace or "", body.metadata.name or "")
    if (state := runtime.fleets.get(key)) is not None:
        state.faults.pop(LISTING, None)   # listed now: the reconcile publishes the rest
    owned = children.of(key)
    await reconcile(body, runtime, dict(owned.deployments), dict(owned.hashes),
                    from_event=from_event)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def forget_deleted(type: str, namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    """A deleted Metamapper's children go with it (owner references); so does our state."""
    runtime: Runtime | None = memo.get("runtime")
    if type == "DELETED" and runtime is not None:
        runtime.forget(Key(namespace, name))


def child_changed(runtime: Runtime, readiness: Coalescer[Key], child: Child) -> None:
    """A child changed: the autoscaler reads the state afresh (a size or readiness may
    have changed), and a Deployment's owner reports its readiness as soon as it can."""
    runtime.note_change()
    if child.kind == "Deployment":
        readiness.ask(child.owner)


async def publish_readiness(runtime: Runtime, children: Children, key: Key) -> None:
    """Reflect the Deployments' readiness in the status of ``key``, once reconciled.

    Not while a Deployment's controller has yet to see its latest spec: its news follows
    within moments (the controller writes ``observedGeneration``), and a status written
    before would be rewritten then (a new or edited fleet: one write, not two)."""
    lock = runtime.locks.get(key)
    deployments = children.deployments(key)
    if lock is None or any(d.observed_generation < d.generation
                           for d in deployments.values()):
        return
    try:
        async with lock:
            await runtime.publish(key, deployments)
    except KubeError as err:  # the next event or resync writes it
        log.warning("status of %s/%s: %s", *key, err)


@kopf.on.event("v1", "pods", labels={**MANAGED_SELECTOR, LABEL_COMPONENT: "scheduler"})
async def one_beat(namespace: str, labels: Mapping[str, str], memo: kopf.Memo,
                   **_: Any) -> None:
    """Standalone scheduler: let a gated pod be scheduled only when it is the fleet's only
    scheduler pod, so a replacement waits until its predecessor is gone (not merely
    terminating) and two beats never run at once."""
    runtime: Runtime | None = memo.get("runtime")
    if runtime is None:
        return
    fleet = labels.get(LABEL_INSTANCE, "")
    try:
        pods = await runtime.kube.gated_pods(namespace, {
            LABEL_NAME: "metamapper", LABEL_INSTANCE: fleet, LABEL_COMPONENT: "scheduler",
            **MANAGED_SELECTOR}, ONE_BEAT_GATE)
        if pods.gated and not pods.others:
            await runtime.kube.ungate_pod(namespace, pods.gated[0])
            log.info("%s/%s: scheduler pod %s may start: no other scheduler pod exists",
                     namespace, fleet, pods.gated[0])
    except KubeError as err:  # the next pod event tries again
        log.warning("scheduler pods of %s/%s: %s", namespace, fleet, err)

