"""End to end: the operator in a pod, a real node, and real Celery workers on real Redis.

The package runs ONE stack of its own (``devenv.stack.Stack``: its own control plane and
node in a temporary folder, the project's images, the operator installed with
``helm install`` and polling every second), so its operator is the only one managing its
namespace. Each test makes its own Metamapper (``fleets``) on a Redis database or server
of its own; the fixture deletes it afterwards and waits until its pods are gone, so
nothing lingers into the next test. Pools are small and windows short: every pod is a real
``celery worker`` in a container of the workload image (the worker image plus the tasks
of ``devenv.workload``), which record what they did in the test's Redis database.

When a test fails, its report gets the tails of the operator's and its pods' logs
(``kubectl logs``).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pytest
import redis
from celery import Celery

from devenv.errors import DevenvError
from devenv.stack import Stack
from devenv.waiting import WaitTimeout, wait_until
from devenv.workload import MODULE, TASK, Tally, records, tally
from metamapper_operator import crd

NAMESPACE = "e2e"
POOL = "default"
WINDOW_SECONDS = 4
GRACE_SECONDS = 60  # above the longest task of these tests
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"

Json = dict[str, Any]
T = TypeVar("T")


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Redis, a control plane with a node, the images, the operator in a pod (1 s polling),
    for this package."""
    running = Stack(tmp_path_factory.mktemp("e2e"), NAMESPACE, poll_seconds=1.0)
    try:
        running.start()
    except DevenvError as err:
        running.stop()
        pytest.fail(f"the end-to-end stack could not start: {err}", pytrace=False)
    yield running
    output = running.operator_logs()
    running.stop()
    assert "Traceback" not in output, output[-5000:]


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes


def service_get(url: str, headers: dict[str, str] | None = None) -> Reply:
    """GET ``url`` on a Service's ClusterIP. kube-proxy programs a Service's rules a moment
    after its pod turns ready: until then the connection is refused, so wait for them."""
    request = urllib.request.Request(url, headers=headers or {})

    def reply() -> Reply | None:
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return Reply(int(response.status), response.read())
        except urllib.error.HTTPError as answered:
            return Reply(answered.code, answered.read())
        except urllib.error.URLError as failed:
            if isinstance(failed.reason, ConnectionRefusedError):
                return None
            raise

    return wait_until(reply, what=f"an answer from {url}")


class Sampler(Generic[T]):
    """Calls ``probe`` every ``interval`` seconds in a thread; keeps (wall time, value)."""

    def __init__(self, probe: Callable[[], T], interval: float) -> None:
        self.samples: list[tuple[float, T]] = []
        self._probe, self._interval = probe, interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.samples.append((time.time(), self._probe()))
            self._stopping.wait(self._interval)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def first(self, predicate: Callable[[T], bool]) -> float | None:
        """When the first value satisfying ``predicate`` was sampled (wall time), if yet."""
        return next((at for at, value in self.samples if predicate(value)), None)

    def after(self, moment: float) -> T:
        """The first value sampled after ``moment`` (wall time)."""
        return next(value for at, value in self.samples if at > moment)


class Watch:
    """``kubectl get --watch -o jsonpath=TEMPLATE``: one line per event, timed (wall clock),
    split on ``|``."""

    def __init__(self, stack: Stack, template: str, *selection: str) -> None:
        self.lines: list[tuple[float, list[str]]] = []
        self._proc = stack.kubectl_popen("get", "-n", stack.namespace, *selection, "--watch",
                                         "-o", f"jsonpath={template}{{\"\\n\"}}")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self.lines.append((time.time(), line.rstrip("\n").split("|")))

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait()
        self._thread.join()


class ReplicasWatch(Watch):
    """The ``spec.replicas`` of a Deployment, as the apiserver reports each change.

    Made once the watch has printed the Deployment's size at the start, so the first value
    is the size before whatever the test does next.
    """

    def __init__(self, stack: Stack, deployment: str) -> None:
        super().__init__(stack, "{.spec.replicas}", "deployment", deployment)
        wait_until(lambda: self.lines, what=f"the size of deployment {deployment}")

    def stop_once(self, replicas: int) -> None:
        """Stop once the watch has seen ``replicas``: a GET may show a change before the
        watch delivers it."""
        wait_until(lambda: self.values()[-1:] == [replicas],
                   what=f"the watch seeing {replicas} replicas")
        self.stop()

    def changes(self) -> list[tuple[float, int]]:
        """(time, replicas) at each change, starting from the first value seen."""
        found: list[tuple[float, int]] = []
        for at, (value,) in self.lines:
            if not found or found[-1][1] != int(value):
                found.append((at, int(value)))
        return found

    def values(self) -> list[int]:
        return [value for _, value in self.changes()]


@dataclass
class PodHistory:
    cost: str = ""              # the last pod-deletion-cost seen
    deleted_at: float | None = None


class PodsWatch(Watch):
    """Each worker pod of a fleet: its last deletion cost and when its deletion began."""

    def __init__(self, stack: Stack, fleet: str) -> None:
        cost = DELETION_COST.replace(".", "\\.")
        super().__init__(stack, f"{{.metadata.name}}|{{.metadata.annotations.{cost}}}|"
                                "{.metadata.deletionTimestamp}",
                         "pods", "-l", f"{LABEL_INSTANCE}={fleet},{LABEL_COMPONENT}=worker")

    def pods(self) -> dict[str, PodHistory]:
        found: dict[str, PodHistory] = {}
        for at, (name, cost, deleting) in self.lines:
            pod = found.setdefault(name, PodHistory())
            pod.cost = cost
            if deleting and pod.deleted_at is None:
                pod.deleted_at = at
        return found


@dataclass
class Fleet:
    """A Metamapper of one test's own in the stack's namespace, one pool ``default``; its
    tasks record what they did in the Redis database ``records``."""

    stack: Stack
    name: str
    broker: str
    records: str

    @property
    def deployment(self) -> str:
        return f"{self.name}-{POOL}"

    def body(self, pool: Json, scheduler: Json, settings: Json, **spec: Any) -> Json:
        return {
            "apiVersion": crd.API_VERSION, "kind": crd.KIND,
            "metadata": {"name": self.name},
            "spec": {
                "image": self.stack.images.workload if self.stack.images else "",
                "broker": {"url": self.broker},
                "celery": {"settings": {"imports": [MODULE], **settings}},
                "pools": [{
                    "name": POOL, "queues": ["default"], "concurrency": 1,
                    "minReplicas": 1, "maxReplicas": 4,
                    "terminationGracePeriodSeconds": GRACE_SECONDS,
                    **pool,
                    "autoscaling": {"scaleDownStabilizationSeconds": WINDOW_SECONDS,
                                    "scaleToZeroCooldownSeconds": WINDOW_SECONDS,
                                    **pool.get("autoscaling", {})},
                }],
                "scheduler": scheduler,
                **spec,
            },
        }

    def apply(self, pool: Json | None = None, scheduler: Json | None = None,
              settings: Json | None = None, **spec: Any) -> None:
        """Apply the fleet; ``spec`` adds other top-level spec fields (flower, probes...)."""
        body = self.body(pool or {}, scheduler or {"enabled": False}, settings or {}, **spec)
        self.stack.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(body))

    def get(self, *what: str) -> Json:
        out = self.stack.kubectl("get", "-n", NAMESPACE, *what, "-o", "json").stdout
        found: Json = json.loads(out)
        return found

    def pods(self, component: str = "worker") -> list[Json]:
        selector = f"{LABEL_INSTANCE}={self.name},{LABEL_COMPONENT}={component}"
        items: list[Json] = self.get("pods", "-l", selector)["items"]
        return items

    def live_pods(self) -> list[Json]:
        """The worker pods not being deleted."""
        return [p for p in self.pods() if not p["metadata"].get("deletionTimestamp")]

    def replicas(self) -> int:
        return int(self.get("deployment", self.deployment)["spec"]["replicas"])

    def pool_status(self) -> Json:
        """The status of the fleet's first pool ({} until the operator has written one)."""
        pools = (self.get("metamapper", self.name).get("status") or {}).get("pools") or [{}]
        return dict(pools[0])

    def condition(self, kind: str) -> str:
        status = self.get("metamapper", self.name).get("status") or {}
        return next((c["status"] for c in status.get("conditions") or []
                     if c["type"] == kind), "")

    def events(self, reason: str) -> list[str]:
        items = self.get("events", "--field-selector",
                         f"reason={reason},involvedObject.name={self.name}")["items"]
        # Once per occurrence: a repeat is counted in the Event it repeats.
        return [e["message"] for e in items for _ in range(e.get("count") or 1)]

    def log(self, pod: str) -> str:
        """The pod's log, as ``kubectl logs`` shows it (or why it cannot)."""
        done = self.stack.kubectl("logs", "-n", NAMESPACE, pod, check=False)
        return done.stdout or done.stderr

    def wait_for_workers(self, count: int) -> None:
        """Until ``count`` worker pods run a Celery worker that consumes (logged ``ready.``)."""
        def consuming() -> bool:
            pods = self.live_pods()
            return len(pods) == count and all(
                " ready." in self.log(p["metadata"]["name"]) for p in pods)

        wait_until(consuming, timeout=90, what=f"{count} consuming workers of {self.name}")

    def send(self, count: int, seconds: float) -> list[str]:
        """``count`` workload tasks of ``seconds`` each on the pool's queue, as one burst
        (one connection); their ids."""
        ids = [uuid.uuid4().hex for _ in range(count)]
        self.send_tasks(TASK, [[task_id, seconds, self.records] for task_id in ids])
        return ids

    def send_task(self, name: str, args: list[Any]) -> None:
        self.send_tasks(name, [args])

    def send_tasks(self, name: str, arguments: list[list[Any]]) -> None:
        app = Celery("e2e", broker=self.broker, set_as_current=False)
        try:
            for args in arguments:
                app.send_task(name, args=args, queue="default")
        finally:
            app.close()

    def tally(self, ids: list[str]) -> Tally:
        return tally(self.records, ids)

    def wait_done(self, ids: list[str], timeout: float = 120) -> Tally:
        try:
            wait_until(lambda: self.tally(ids).done == len(ids), timeout=timeout,
                       interval=0.5, what=f"{len(ids)} tasks done")
        except WaitTimeout as late:
            raise AssertionError(f"{late}\n{self.whereabouts(ids)}") from None
        return self.tally(ids)

    def whereabouts(self, ids: list[str]) -> str:
        """Where the tasks not done are: their runs, and the broker's lists of messages."""
        missing = {i: records(self.records, "started", i) for i in ids
                   if not records(self.records, "done", i)}
        client = redis.Redis.from_url(self.broker, decode_responses=True)
        try:
            waiting = client.lrange(POOL, 0, -1)
            unacked = client.hgetall("unacked")
            mutex_ttl = client.pttl("unacked_mutex")
            index = dict(client.zrange("unacked_index", 0, -1, withscores=True))
        except redis.RedisError as err:
            return f"{self.tally(ids)}; the broker cannot be read: {err}"
        finally:
            client.close()
        lines = [f"{self.tally(ids)}; broker: {len(waiting)} waiting, {len(unacked)} unacked, "
                 f"unacked_mutex pttl {mutex_ttl} ms, now {time.time():.1f}"]
        for task_id, runs in missing.items():
            where = [f"{tag} since {index.get(tag, 0):.1f}" for tag, body in unacked.items()
                     if task_id in body] + [f"waiting #{n}" for n, body in enumerate(waiting)
                                            if task_id in body]
            lines.append(f"not done: {task_id}: started {[(r.at, r.pod) for r in runs]}, "
                         f"in the broker: {where or 'nowhere'}")
        return "\n".join(lines)

    def backlog(self) -> int:
        """Waiting plus in-flight messages, measured here independently of the operator."""
        client = redis.Redis.from_url(self.broker)
        try:
            return int(client.llen("default")) + int(client.hlen("unacked"))
        finally:
            client.close()

    def diagnostics(self) -> str:
        """Log tails of the operator and of this fleet's pods."""
        operator = "\n".join(self.stack.operator_logs().splitlines()[-40:])
        parts = [f"--- operator ---\n{operator}"]
        for pod in self.get("pods", "-l", f"{LABEL_INSTANCE}={self.name}")["items"]:
            name = pod["metadata"]["name"]
            tail = "\n".join(self.log(name).splitlines()[-15:])
            parts.append(f"--- pod {name} ({pod['status'].get('phase')}) ---\n{tail}")
        return "\n".join(parts)

    def delete(self) -> None:
        """Delete the Metamapper; wait until its pods (and so their containers) are gone."""
        self.stack.kubectl("delete", "-n", NAMESPACE, "metamapper", self.name,
                           "--ignore-not-found", "--wait=true")
        wait_until(lambda: not self.get("pods", "-l", f"{LABEL_INSTANCE}={self.name}")["items"],
                   timeout=GRACE_SECONDS + 30, interval=0.5,
                   what=f"the pods of {self.name} to be gone")


class Fleets:
    """Makes the test's fleets; the fixture deletes them afterwards."""

    def __init__(self, stack: Stack, records: str) -> None:
        self.stack, self.records = stack, records
        self.made: list[Fleet] = []

    def __call__(self, name: str, broker: str) -> Fleet:
        fleet = Fleet(self.stack, name, broker, self.records)
        self.made.append(fleet)
        return fleet


@pytest.fixture
def fleets(stack: Stack, redis_url: str) -> Iterator[Fleets]:
    """The test's fleets; their tasks' records go to the test's Redis database."""
    made = Fleets(stack, redis_url)
    yield made
    for fleet in made.made:
        fleet.delete()
    stack.check()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    """Attach the logs to a failed test's report (before teardown deletes the fleet)."""
    outcome: Any = yield
    report = outcome.get_result()
    made = getattr(item, "funcargs", {}).get("fleets")
    if report.failed and report.when == "call" and isinstance(made, Fleets):
        for fleet in made.made:
            report.sections.append((f"logs of {fleet.name}", fleet.diagnostics()))
