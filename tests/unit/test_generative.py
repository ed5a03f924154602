"""Containment, generatively: whatever one Metamapper holds, only that object is affected.

Hypothesis draws Metamapper objects from the CRD's own schema (``crds/``, through
:mod:`tests.unit.crd_strategy`; CEL rules aside), with adversarial values wherever the
schema admits them and in the places where credentials and odd values go (broker URLs,
Secret references, Celery settings, the pause annotations, schedules). Each object runs
next to a valid canary fleet on small fakes of the Kube edge and of the probes: a
reconcile of each, two autoscaling cycles with a growing backlog, and a second reconcile
of the object with its children present. The fake apiserver refuses names it would
refuse, and may fail one apply half-way; the fake broker fails the queues a real one
cannot measure.

Invariants:

- no exception leaves the object's boundary: its reconcile raises nothing but kopf's
  TemporaryError or PermanentError (and then its status does not claim Ready), the
  canary's reconcile raises nothing, and an autoscaling cycle raises nothing;
- the canary grows in every cycle (its backlog asks for it), and the object writes or
  deletes none of the canary's children;
- the object's children have names of their own (no two of one kind share a name);
- no secret (the values of the Secrets in the fake cluster, and credentials written in
  the object itself) appears in any output: status, events, log records, the ConfigMap
  and every applied object (container command and args included), metric labels, and
  the messages of kopf's errors.

Examples: ``METAMAPPER_GENERATIVE_PROFILE`` picks a settings profile, ``fast`` (``make
test-fast``) or ``full`` (the default, the whole suite). Both are derandomized: the same
examples on every run, so CI is deterministic.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import logging
import os
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import kopf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes_asyncio.client import ApiException
from prometheus_client import REGISTRY

from metamapper_operator import handlers
from metamapper_operator.autoscale.drain import WorkerControl
from metamapper_operator.autoscale.loop import Autoscaler
from metamapper_operator.autoscale.shrink import Shrinker
from metamapper_operator.brokers import QueueDepth
from metamapper_operator.builders import SPEC_HASH
from metamapper_operator.config import Config
from metamapper_operator.kube import KubeError
from metamapper_operator.model import PAUSED, PAUSED_REPLICAS
from metamapper_operator.references import BrokerAccess
from metamapper_operator.runtime import Runtime
from metamapper_operator.state import Key
from metamapper_operator.status import DeploymentState
from tests.unit.crd_strategy import Adversarial, Bounds, from_openapi, spec_schema, with_defaults
from tests.unit.test_children_wiring import GateKube
from tests.unit.test_wiring import FakeControl, FakeProbe, runtime_of

# Deterministic (derandomized, no example database): CI runs the same examples every time.
_DETERMINISTIC = settings(deadline=None, derandomize=True, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.function_scoped_fixture,
                                                 HealthCheck.filter_too_much])
settings.register_profile("generative-fast", _DETERMINISTIC, max_examples=300)
settings.register_profile("generative-full", _DETERMINISTIC, max_examples=2000)
PROFILE = settings.get_profile(
    "generative-" + os.environ.get("METAMAPPER_GENERATIVE_PROFILE", "full"))

NAMESPACE = "tenants"

# --- secrets: values that must never be shown -------------------------------------
# Each holds a distinctive core (letters and digits, the same in every spelling: raw,
# percent-encoded, in a URL); some add characters URLs must encode.
BROKER_PASSWORD = "Kq81brokerPw@/%:"
FAILOVER_PASSWORD = "Zt42failoverPw"
QUERY_PASSWORD = "Wm73queryPw"
NOT_A_URL = "Jx55notaurlPw:rest"
SQS_KEY_ID = "AKIAHq29keyid"
SQS_SECRET = "Vb16sqssecret/+="
MANAGEMENT_PASSWORD = "Rc38managementPw"
LOCK_PASSWORD = "Lp90lockPw"
BACKEND_PASSWORD = "Bd27backendPw"
FLOWER_PASSWORD = "Fw64flowerPw"
SPEC_PASSWORD = "Sp11specPw"          # written in the object itself, where it is refused
SETTINGS_PASSWORD = "St47settingsPw"  # in celery.settings, which render into a ConfigMap
BINARY_PASSWORD = "Bn58binaryPw"      # in a Secret value that is not UTF-8
CORES = [re.match(r"[A-Za-z0-9]+", value)[0]  # type: ignore[index]
         for value in (BROKER_PASSWORD, FAILOVER_PASSWORD, QUERY_PASSWORD, NOT_A_URL,
                       SQS_KEY_ID, SQS_SECRET, MANAGEMENT_PASSWORD, LOCK_PASSWORD,
                       BACKEND_PASSWORD, FLOWER_PASSWORD, SPEC_PASSWORD, SETTINGS_PASSWORD,
                       BINARY_PASSWORD)]


def _pw(value: str) -> str:
    return quote(value, safe="")


SECRETS: dict[str, dict[str, str]] = {
    "broker": {
        "url": f"redis://:{_pw(BROKER_PASSWORD)}@redis:6379/0",
        "failover": f"redis://:{FAILOVER_PASSWORD}@redis-a:6379/0;"
                    f"redis://:{FAILOVER_PASSWORD}@redis-b:6379/0",
        "query": f"redis://redis:6379/2?password={QUERY_PASSWORD}",
        "amqp": f"amqp://user:{_pw(BROKER_PASSWORD)}@rabbit:5672//",
        "sqs": f"sqs://{SQS_KEY_ID}:{_pw(SQS_SECRET)}@",
        "plain": NOT_A_URL,
        "spaced": f"  redis://:{_pw(BROKER_PASSWORD)}@redis:6379/3  ",
    },
    "creds": {"username": "operator", "password": MANAGEMENT_PASSWORD,
              "AWS_ACCESS_KEY_ID": SQS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SQS_SECRET},
    "lock": {"url": f"redis://:{LOCK_PASSWORD}@redis:6379/1"},
    "backend": {"url": f"db+postgresql://metamapper:{BACKEND_PASSWORD}@postgres/metamapper"},
    "fa": {"auth": f"admin:{FLOWER_PASSWORD}"},
}
# Secrets as the apiserver holds them: bytes, decoded as UTF-8 the way the Kube edge
# decodes every Secret it reads (``"binary"`` cannot be).
SECRET_BYTES: dict[str, dict[str, bytes]] = {
    **{name: {key: value.encode() for key, value in data.items()}
       for name, data in SECRETS.items()},
    "binary": {"url": f"redis://:{BINARY_PASSWORD}".encode() + b"\xff\xfe@redis:6379/0",
               "auth": b"admin:\xc3\x28" + BINARY_PASSWORD.encode()},
}

# --- adversarial values, tried wherever the schema admits them --------------------
ADVERSARIAL = Adversarial(
    strings=(
        # Queue names that are kombu's own Redis keys of other types, and odd ones.
        "unacked", "unacked_index", "unacked_mutex", "_kombu.binding.default", "celery",
        "canary",  # the canary's queue: a second consumer of it
        "\u00e9" * 200,  # 400 bytes: over AMQP's 255 for a queue name
        # Digits Python's isdigit accepts and int refuses, and other odd numbers.
        "²", "\uff11\uff12", "٣", " 3 ", "-1", "0", "99999999999999999999999", "1e3", "",
        # Names: dots, leading digits, reserved and colliding ones.
        "a.b", "0mm", "flower", "scheduler", "config", "worker", "tmp", "x" * 63,
        # Text with ':' and '@', URL-like text.
        "a:b@c", "user:pass@host", "redis://", "http://rabbit:15672",
        # Cron strings croniter accepts but cannot always evaluate, and others.
        "0 0 30 2 *", "0 0 31 4 *", "0 0 29 2 1", "* * * * *", "59 23 31 12 *", "@daily",
        "0 0 * * * *", "*/0 * * * *",
        # Time zones.
        "UTC", "Europe/Berlin", "Mars/Olympus", "../../etc/passwd",
        # Secret names and keys of the fake cluster, so references resolve.
        "broker", "creds", "lock", "backend", "fa", "binary", "url", "auth", "password", "username",
        "AWS_ACCESS_KEY_ID", "absent",
    ),
    integers=(0, 1, 2, 59, 2**31 - 1, 2**31, 2**53 + 1, 10**12, 2**63 - 1),
    numbers=(0.0, 0.5, 1.0, 1e-300, 1e308),
)
BOUNDS = Bounds()

CANARY_BODY: dict[str, Any] = {
    "apiVersion": "metamapper.io/v1alpha1", "kind": "Metamapper",
    "metadata": {"namespace": NAMESPACE, "name": "canary", "uid": "u-canary",
                 "generation": 1},
    "spec": with_defaults(spec_schema(), {
        "image": "worker:1",
        "broker": {"url": "redis://redis:6379/0"},
        "pools": [{"name": "default", "queues": ["canary"], "concurrency": 1,
                   "minReplicas": 1, "maxReplicas": 1000}],
    }),
}
CANARY = Key(NAMESPACE, "canary")
CANARY_DEPLOYMENT = "canary-default"


# --- drawing an object -------------------------------------------------------------

SPEC_URLS = (
    "redis://redis:6379/0",  # the canary's broker
    f"redis://redis:6379/0?password={SPEC_PASSWORD}",
    f"redis://:{SPEC_PASSWORD}@redis:6379/0", f"amqp://guest:{SPEC_PASSWORD}@rabbit//",
    "amqp://rabbit:5672//", "pyamqp://guest@rabbit//", "rediss://redis:6380/0", "sqs://",
    "sqs://localhost:9324", "redis://redis:99999/0", "redis://[::1", "redis://redis:6379/x",
    "redis://redis:6379/0;redis://redis-b:6379/0", "redis://", "kafka://broker:9092",
)
# Celery settings that carry credentials, or options nobody can read.
SETTINGS = st.sampled_from([
    {"broker_transport_options": "visibility_timeout=60"},
    {"broker_transport_options": [["visibility_timeout", 60]]},
    {"broker_transport_options": 5},
    {"broker_transport_options": None},
    {"broker_transport_options": {"visibility_timeout": "soon"}},
    {"broker_transport_options": {"priority_steps": "abc"}},
    {"broker_transport_options": {"priority_steps": [10**30]}},
    {"broker_transport_options": {"visibility_timeout": 1e308}},
    {"broker_transport_options": {"global_keyprefix": "p:", "sep": ":"}},
    {"broker_transport_options": {"password": SETTINGS_PASSWORD}},
    {"broker_transport_options": {"sentinel_kwargs": {"password": SETTINGS_PASSWORD}}},
    {"result_backend": f"redis://:{SETTINGS_PASSWORD}@redis:6379/1"},
    {"Result_Backend": f"redis://:{SETTINGS_PASSWORD}@redis:6379/1"},
    {"redbeat_redis_url": f"redis://:{SETTINGS_PASSWORD}@redis:6379/1"},
    {"cache_backend": f"redis://redis:6379/1?password={SETTINGS_PASSWORD}"},
    {"task_time_limit": "soon"}, {"task_time_limit": 10**30}, {"task_time_limit": -1},
    {"task_soft_time_limit": 1e308}, {"task_soft_time_limit": None},
])
SECRET_REF = st.fixed_dictionaries({"name": st.sampled_from([*sorted(SECRET_BYTES),
                                                             "absent"])},
                                   optional={"key": st.sampled_from(
                                       [*sorted({k for s in SECRETS.values() for k in s}),
                                        "absent"])})
BROKERS = st.builds(
    lambda source, more: {**more, **source},
    st.one_of(
        st.fixed_dictionaries({"url": st.sampled_from(SPEC_URLS)}),
        st.fixed_dictionaries({"urlSecretRef": st.fixed_dictionaries(
            {"name": st.sampled_from(["broker", "binary"])},
            optional={"key": st.sampled_from([*sorted(SECRETS["broker"]), "absent"])})})),
    st.fixed_dictionaries({}, optional={
        "redis": st.fixed_dictionaries({}, optional={"globalKeyPrefix": st.sampled_from(
            ["", "mm:", "{tenant}:", "\x06\x16"])}),
        "rabbitmq": st.fixed_dictionaries({}, optional={
            "managementURL": st.sampled_from([
                "http://rabbit:15672", "http://rabbit:15672/api",
                f"http://guest:{SPEC_PASSWORD}@rabbit:15672",
                f"http://rabbit:15672/?password={SPEC_PASSWORD}", "http://rabbit:99999",
                "ftp://rabbit"]),
            "credentialsSecretRef": SECRET_REF}),
        "sqs": st.fixed_dictionaries({}, optional={
            "region": st.sampled_from(["eu-west-1", "", "moon-1"]),
            "queueNamePrefix": st.sampled_from(["", "mm-", "x" * 80]),
            "credentialsSecretRef": SECRET_REF}),
    }))
ANNOTATIONS = st.dictionaries(
    st.sampled_from([PAUSED, PAUSED_REPLICAS]),
    st.sampled_from(["true", "false", "TRUE", " true ", "yes", "", "0", "3", " 3 ", "²",
                     "\uff11\uff12", "٣", "-1", "1e3", "99999999999999999999999", str(2**63)]))
NAMES = st.one_of(
    st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,38}[a-z0-9])?", fullmatch=True),
    st.sampled_from(["mm", "a.b", "0mm", "tenant.fleet-1", "x" * 40, "y" * 63, "flower",
                     "canary-default", "config"]),
).filter(lambda name: name != CANARY.name)
WALLS = st.sampled_from([
    datetime.datetime(2026, 12, 6, 17, 0, tzinfo=datetime.UTC),
    datetime.datetime(2024, 2, 29, 0, 0, tzinfo=datetime.UTC),
    datetime.datetime(2026, 3, 29, 1, 30, tzinfo=datetime.UTC),   # a DST change in Europe
])
# Parts replaced, each in some examples, by a value of the strategy, at a path of the spec.
OVERLAYS: dict[tuple[str, ...], st.SearchStrategy[Any]] = {
    ("celery", "settings"): SETTINGS,
    ("celery", "resultBackendSecretRef"): SECRET_REF,
    ("scheduler", "lock", "redisURLSecretRef"): SECRET_REF,
    ("scheduler", "lock", "redisURL"): st.sampled_from(
        [f"redis://redis:6379/1?password={SPEC_PASSWORD}", "redis://redis:6379/1",
         f"redis://:{SPEC_PASSWORD}@redis:6379/1"]),
    ("flower",): st.fixed_dictionaries({"enabled": st.booleans()},
                                       optional={"basicAuthSecretRef": SECRET_REF}),
}


SPECS = from_openapi(spec_schema(), BOUNDS, ADVERSARIAL)
OFTEN = st.sampled_from([True] * 7 + [False])
SOMETIMES = st.sampled_from([False] * 3 + [True])


# Schedules as the CRD's CEL rule has them (five fields), some of which croniter accepts
# but cannot evaluate, with durations past what a datetime holds.
SCHEDULES = st.lists(st.fixed_dictionaries({
    "name": st.sampled_from(["night", "month-end", "x"]),
    "cron": st.sampled_from(["0 0 * * *", "* * * * *", "*/5 * * * *", "0 17 * * *",
                             "0 0 30 2 *", "0 0 31 4 *", "0 0 29 2 1", "59 23 31 12 *"]),
    "durationSeconds": st.sampled_from([3600, 60, 86400, 1, 10**12, 2**63 - 1]),
    "minReplicas": st.sampled_from([2, 0, 3, 2**63 - 1]),
}, optional={"timeZone": st.sampled_from(["UTC", "Europe/Berlin", "America/St_Johns",
                                         "Mars/Olympus"])}),
    min_size=1, max_size=2, unique_by=lambda schedule: schedule["name"])


@dataclass(frozen=True)
class Case:
    """One object to run beside the canary, and how the fake cluster behaves."""

    body: dict[str, Any]
    wall: datetime.datetime
    apply_fails_at: int | None   # the index of the apply that fails (retryably), if any


def _set(spec: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = spec
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value


@st.composite
def cases(draw: st.DrawFn) -> Case:
    spec = draw(SPECS)
    # The broker as the CRD's CEL rules have it (exactly one of url and urlSecretRef), in
    # most examples: drawn from the schema alone it has both or neither half the time.
    if draw(OFTEN):
        _set(spec, ("broker",), draw(BROKERS))
    for path, strategy in OVERLAYS.items():
        if draw(SOMETIMES):
            _set(spec, path, draw(strategy))
    for pool in spec["pools"]:
        if draw(st.booleans()):
            _set(pool, ("autoscaling", "schedules"), draw(SCHEDULES))
    name = draw(NAMES)
    body = {"apiVersion": "metamapper.io/v1alpha1", "kind": "Metamapper",
            "metadata": {"namespace": NAMESPACE, "name": name, "uid": f"u-{name}",
                         "generation": draw(st.integers(1, 2**63 - 1)),
                         "annotations": draw(ANNOTATIONS)},
            "spec": with_defaults(spec_schema(), spec)}
    return Case(body, draw(WALLS), draw(st.none() | st.integers(0, 6)))


# --- the fake cluster --------------------------------------------------------------

_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def _refused(obj: Mapping[str, Any]) -> str | None:
    """What the apiserver would refuse in a child's names and labels, or None."""
    name = obj["metadata"]["name"]
    if obj["kind"] == "Service":
        if len(name) > 63 or not _LABEL_1035.fullmatch(name):
            return f"Service name {name!r} is not a DNS-1035 label"
    elif len(name) > 253 or not _SUBDOMAIN.fullmatch(name):
        return f"{obj['kind']} name {name!r} is not a DNS-1123 subdomain"
    template = obj.get("spec", {}).get("template", {}).get("metadata", {})
    for labels in (obj["metadata"].get("labels") or {}, template.get("labels") or {}):
        for value in labels.values():
            if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
                return f"label value {value!r} is invalid"
    return None


@dataclass
class WitnessKube(GateKube):
    """The fake Kube edge of the wiring tests, keeping everything the operator writes
    (to look for secrets in it), holding Secrets, and refusing what the apiserver would."""

    secrets: dict[str, dict[str, bytes]] = field(default_factory=dict)
    uids: dict[str, str] = field(default_factory=dict)
    submitted: list[Mapping[str, Any]] = field(default_factory=list)  # refused ones too
    objects: list[Mapping[str, Any]] = field(default_factory=list)    # what it took
    notes: list[str] = field(default_factory=list)         # event messages
    written: list[tuple[str, Mapping[str, Any]]] = field(default_factory=list)  # statuses
    apply_fails_at: int | None = None
    applies: int = 0

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        found = self.secrets.get(name)
        return None if found is None else {key: value.decode() for key, value in found.items()}

    async def metamapper_uid(self, namespace: str, name: str) -> str | None:
        return self.uids.get(name)

    async def apply(self, obj: Mapping[str, Any]) -> None:
        self.submitted.append(copy.deepcopy(obj))
        self.applies += 1
        if self.applies - 1 == self.apply_fails_at:
            raise KubeError(f"applying {obj['kind']}", TimeoutError())
        refused = _refused(obj)
        if refused is not None:
            raise KubeError(f"applying {obj['kind']}",
                            ApiException(status=422, reason=refused))
        self.objects.append(copy.deepcopy(obj))
        await super().apply(obj)

    async def event(self, involved: Mapping[str, Any], type: str, reason: str,
                    message: str) -> None:
        self.notes.append(message)
        await super().event(involved, type, reason, message)

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.written.append((name, copy.deepcopy(status)))
        await super().patch_status(namespace, name, status)

    def children(self, key: Key) -> dict[tuple[str, str], Mapping[str, Any]]:
        """The children of ``key`` the apiserver took, the latest of each, by (kind, name)."""
        uid = self.uids.get(key.name)
        return {(obj["kind"], obj["metadata"]["name"]): obj for obj in self.objects
                if uid is not None and _owned_by(obj, uid)}

    def deployments(self, key: Key) -> dict[str, DeploymentState]:
        """The Deployments of ``key`` as the watch would show them."""
        return {name: DeploymentState(name=name, spec_hash=_hash(obj),
                                      replicas=obj["spec"]["replicas"],
                                      ready=obj["spec"]["replicas"])
                for (kind, name), obj in self.children(key).items() if kind == "Deployment"}

    def others(self, key: Key) -> dict[tuple[str, str], str]:
        """The content hashes of the other children of ``key``, as the watches show them."""
        return {(kind, name): _hash(obj) for (kind, name), obj in self.children(key).items()
                if kind != "Deployment"}


def _hash(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"].get("annotations", {}).get(SPEC_HASH, ""))


# Queues a real broker cannot measure: kombu's own Redis keys of other types (a hash, a
# sorted set, a set) and names over AMQP's 255 bytes.
POISONED = frozenset({"unacked", "unacked_index", "_kombu.binding.default"})


@dataclass
class PoisonedProbe(FakeProbe):
    """The wiring tests' fake probe, failing the queues a real broker cannot measure the
    way a real probe reports them: named in ``failed``, left out of the answer, every
    other queue measured."""

    async def measure(self, queues: Collection[str]) -> dict[str, QueueDepth]:
        depths = await super().measure(queues)
        self.failed = {queue: "WRONGTYPE Operation against a key holding the wrong kind "
                       "of value" for queue in queues
                       if queue in POISONED or len(queue.encode()) > 255}
        return {queue: depth for queue, depth in depths.items() if queue not in self.failed}


def checked_control(access: BrokerAccess, options: Mapping[str, object]) -> FakeControl:
    """The workers' remote control: made as the real one is (what it refuses, it refuses
    here too), answering as the fake of the wiring tests does."""
    WorkerControl(access, options)
    return FakeControl()


# --- one example -------------------------------------------------------------------


@dataclass
class Outcome:
    kube: WitnessKube
    raised: list[BaseException]          # kopf's errors from the object's reconciles
    labels: list[str]                    # every metric label value while it lived
    grown: list[bool]                    # whether the canary grew, per cycle
    # What each of the object's reconciles submitted, by (kind, name).
    plans: list[list[tuple[str, str]]] = field(default_factory=list)


async def _reconcile(kube: WitnessKube, runtime: Runtime, body: Mapping[str, Any],
                     key: Key) -> None:
    await handlers.reconcile(kopf.Body(copy.deepcopy(dict(body))), runtime,
                             kube.deployments(key), kube.others(key))


def _labels() -> list[str]:
    return [value for metric in REGISTRY.collect() for sample in metric.samples
            for value in sample.labels.values()]


async def run(case: Case) -> Outcome:
    meta = case.body["metadata"]
    key = Key(NAMESPACE, meta["name"])
    kube = WitnessKube(secrets=copy.deepcopy(SECRET_BYTES),
                       uids={CANARY.name: "u-canary", key.name: meta["uid"]})
    runtime = runtime_of(kube, Config(poll_seconds=1))
    now = [0.0]
    autoscaler = Autoscaler(runtime, kube.deployments, clock=lambda: now[0],
                            wall=lambda: case.wall)
    autoscaler.shrinker = Shrinker(kube, autoscaler.clock,  # type: ignore[arg-type]
                                   control_for=checked_control)  # type: ignore[arg-type]
    outcome = Outcome(kube, [], [], [])
    probes: dict[BrokerAccess, PoisonedProbe] = {}

    async def reconcile_object() -> None:
        start = len(kube.submitted)
        try:
            await _reconcile(kube, runtime, case.body, key)
        except (kopf.TemporaryError, kopf.PermanentError) as err:
            outcome.raised.append(err)
        outcome.plans.append([(o["kind"], o["metadata"]["name"])
                              for o in kube.submitted[start:]])

    try:
        await _reconcile(kube, runtime, CANARY_BODY, CANARY)
        kube.apply_fails_at = None if case.apply_fails_at is None else (
            kube.applies + case.apply_fails_at)
        await reconcile_object()
        await _reconcile(kube, runtime, CANARY_BODY, CANARY)
        for cycle, waiting in enumerate((20, 60)):
            for state in runtime.fleets.values():
                if state.access is not None and state.access not in autoscaler.probes:
                    autoscaler.probes[state.access] = probes.setdefault(
                        state.access, PoisonedProbe(waiting))
            for probe in probes.values():
                probe.waiting = waiting
            before = runtime.replicas(CANARY, CANARY_DEPLOYMENT, 1)
            await autoscaler.cycle()
            now[0] += cycle + 1.0
            outcome.grown.append(runtime.replicas(CANARY, CANARY_DEPLOYMENT, 1) > before)
        await reconcile_object()
        outcome.labels = _labels()
    finally:
        runtime.forget(key)
        runtime.forget(CANARY)
        await autoscaler.close()
    return outcome


def _outputs(outcome: Outcome, logged: str) -> Iterator[tuple[str, str]]:
    kube = outcome.kube
    for name, status in kube.written:
        yield f"status of {name}", json.dumps(status)
    for note in kube.notes:
        yield "event", note
    for obj in kube.submitted:
        yield f"{obj['kind']} {obj['metadata']['name']}", json.dumps(obj)
    for err in outcome.raised:
        yield "kopf error", str(err)
    yield "metric labels", json.dumps(outcome.labels)
    yield "log", logged


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    return uid in [ref.get("uid") for ref in obj["metadata"].get("ownerReferences") or ()]


def _claims_ready(status: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status.get("conditions") or ())


# A passing run takes well under a minute; a failing one shrinks its example first.
@pytest.mark.timeout(900)
@PROFILE
@given(case=cases())
def test_whatever_one_object_holds_stays_its_own(case: Case,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        outcome = asyncio.run(run(case))
    assert outcome.grown == [True, True], "the canary did not grow in every cycle"
    for where, text in _outputs(outcome, caplog.text):
        leaked = [core for core in CORES if core in text]
        assert not leaked, f"secret {leaked} in the {where}: {text[:2000]}"
    kube, name = outcome.kube, case.body["metadata"]["name"]
    canary = set(kube.children(CANARY))
    touched = {(o["kind"], o["metadata"]["name"]) for o in kube.submitted
               if not _owned_by(o, "u-canary")}
    assert not touched & canary, f"the object wrote the canary's {touched & canary}"
    assert not set(kube.deleted) & canary, f"the canary's {set(kube.deleted) & canary} deleted"
    for plan in outcome.plans:  # two children of one name: one would overwrite the other
        assert len(set(plan)) == len(plan), f"children of the same name: {plan}"
    if outcome.raised:
        mine = [status for who, status in outcome.kube.written if who == name]
        assert not (mine and _claims_ready(mine[-1])), (
            f"the reconcile failed ({outcome.raised[-1]}) and the status says Ready")


def test_the_objects_come_from_the_crds_schema() -> None:
    """The strategy reads the CRD: every field of the spec may be drawn, and what is
    drawn has only the CRD's fields."""
    schema = spec_schema()
    seen: set[str] = set()

    @settings(_DETERMINISTIC, max_examples=200)
    @given(SPECS)
    def draw(spec: dict[str, Any]) -> None:
        assert set(spec) <= set(schema["properties"])
        assert set(schema["required"]) <= set(spec)
        seen.update(spec)

    draw()
    assert seen == set(schema["properties"])
