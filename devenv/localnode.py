"""A development-only stand-in for the kubelet: runs the local control plane's Pods as processes.

The local control plane (``devenv.controlplane``) has no kubelet and no scheduler, so
the Pods the real ReplicaSet controller creates would stay Pending. ``LocalNode`` plays
the node for development, the demo and end-to-end tests. The operator never imports
it and the production images never run it.

What it does:

* registers a Node (``local`` by default) and posts its Ready condition every 10 s, so
  the node-lifecycle controller never declares it unreachable and evicts its pods;
* binds the unscheduled Pods of the watched namespaces to it (``pods/binding``);
* runs the FIRST container of each bound Pod as a local process, in a session (and so
  a process group) of its own, and reports phase, conditions and container status;
* restarts the process per ``restartPolicy``, with a back-off (1 s doubling to 30 s,
  ``CrashLoopBackOff`` while waiting);
* on deletion, stops it the way a container runtime does: SIGTERM to the main process,
  up to the pod's grace period, then SIGKILL to its whole process group; then it removes
  the Pod (grace period 0). A container whose main process exits loses what else it
  started, as when a container's init process exits.

What a container gets:

* ``command`` + ``args``, with Kubernetes ``$(VAR)`` expansion from the container's env.
  The image is ignored: programs come from the current Python environment (its bin
  folder is first on PATH, so ``python``, ``celery``, ``single-beat`` and ``metamapper``
  resolve), and a container without ``command`` cannot start;
* an environment of PATH, HOME, LANG, HOSTNAME (the pod's name), PYTHONUNBUFFERED=1 (as
  the images set it) and the container's ``env`` and ``envFrom``: literal values,
  Secret and ConfigMap keys (``optional`` respected), and the fieldRefs
  metadata.name/namespace/uid/labels/annotations, spec.nodeName/serviceAccountName and
  status.podIP/hostIP (both 127.0.0.1). A missing non-optional Secret, ConfigMap or key
  keeps the container waiting with reason ``CreateContainerConfigError``; it is retried
  every 2 s;
* a folder ``<state dir>/<namespace>_<pod>/`` holding ``log`` (stdout and stderr of
  every run) and one folder per emptyDir mount, named after its mountPath (``/tmp`` ->
  ``<pod folder>/tmp``). The process starts in the pod folder; an argument that begins
  with a mountPath is rewritten into its folder (``--schedule /tmp/celerybeat-schedule``
  -> ``<pod folder>/tmp/celerybeat-schedule``), and TMPDIR points at the ``/tmp`` mount
  when there is one. Folders outlive their pods, so logs can be read afterwards.

Not emulated: images, other containers (init, sidecar), probes (Ready means "the
process runs"), resources, securityContext, other volume kinds, and networking (every
process shares the host's network; podIP is 127.0.0.1).

Stopping the runtime stops every pod's process (SIGTERM, 5 s, SIGKILL) and leaves the
Pods as they are; the Node then turns NotReady.

``python -m devenv.localnode --kubeconfig PATH [--namespace NS ...]
[--state-dir DIR] [--node-name NAME]``
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import functools
import logging
import math
import os
import platform
import re
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from devenv.processes import signal_group

Json = dict[str, Any]

DEFAULT_STATE_DIR = Path.home() / ".cache" / "metamapper-operator" / "localnode"
LOCAL_IP = "127.0.0.1"
HEARTBEAT_SECONDS = 10.0
CONFIG_RETRY_SECONDS = 2.0
BACKOFF_SECONDS, BACKOFF_CAP_SECONDS = 1.0, 30.0
STOP_GRACE_SECONDS = 5.0
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
REFERENCE = re.compile(r"\$(?:(\$)|\(([^)]*)\))")
REFERENCE_KINDS = {"secretRef": "Secret", "configMapRef": "ConfigMap",
                   "secretKeyRef": "Secret", "configMapKeyRef": "ConfigMap"}
LABEL_OR_ANNOTATION = re.compile(r"metadata\.(labels|annotations)\['([^']*)'\]")

log = logging.getLogger(__name__)


class ContainerConfigError(Exception):
    """The container cannot be started as configured (the kubelet's CreateContainerConfigError)."""


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_dir(state_dir: Path, namespace: str, name: str) -> Path:
    """The folder of a pod: its ``log`` and its emptyDir mounts."""
    return state_dir / f"{namespace}_{name}"


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: ``$$`` escapes a ``$``, unknown names stay as written."""

    def replace(match: re.Match[str]) -> str:
        return "$" if match[1] else env.get(match[2], match[0])

    return REFERENCE.sub(replace, text)


def field_value(pod: Json, path: str) -> str:
    """The value of a ``fieldRef``, as the kubelet resolves it on this node."""
    meta, spec = pod["metadata"], pod["spec"]
    simple = {
        "metadata.name": meta["name"], "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"], "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": LOCAL_IP, "status.hostIP": LOCAL_IP,
    }
    if path in simple:
        return str(simple[path])
    if match := LABEL_OR_ANNOTATION.fullmatch(path):
        return str((meta.get(match[1]) or {}).get(match[2], ""))
    raise ContainerConfigError(f"fieldRef {path} is not supported by the local runtime")


def reference(source: Json) -> tuple[str, Json] | None:
    """The kind and reference of an ``envFrom`` entry or a ``valueFrom`` key reference."""
    return next(((kind, source[field]) for field, kind in REFERENCE_KINDS.items()
                 if field in source), None)


def mount_folders(pod: Json, container: Json, folder: Path) -> dict[str, Path]:
    """Each emptyDir mountPath of ``container`` and the folder standing in for it.

    A volume mounted twice gets one folder, named after its first mountPath.
    """
    empty_dirs = {v["name"] for v in pod["spec"].get("volumes") or [] if "emptyDir" in v}
    by_volume: dict[str, Path] = {}
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts") or []:
        if mount["name"] in empty_dirs:
            path = mount["mountPath"].rstrip("/")
            mounts[path] = by_volume.setdefault(mount["name"], folder / path.lstrip("/"))
    return mounts


def rewrite(arg: str, mounts: Mapping[str, Path]) -> str:
    """``arg`` with a leading mountPath replaced by the mount's folder."""
    for path in sorted(mounts, key=len, reverse=True):
        if arg == path or arg.startswith(path + "/"):
            return f"{mounts[path]}{arg[len(path):]}"
    return arg


def base_env(pod_name: str) -> dict[str, str]:
    """What every container's environment starts from, before its own ``env``."""
    env = {k: os.environ[k] for k in ("HOME", "LANG") if k in os.environ}
    bin_dir = str(Path(sys.executable).parent)
    env.update(PATH=os.pathsep.join([bin_dir, os.environ.get("PATH", os.defpath)]),
               HOSTNAME=pod_name, PYTHONUNBUFFERED="1")
    return env


async def first(*waits: Awaitable[object], timeout: float | None = None) -> None:
    """Wait until one of ``waits`` is done or ``timeout`` seconds pass; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


class PodRunner:
    """One Pod bound to the local node: its process, restarts, status and termination."""

    def __init__(self, node: LocalNode, pod: Json) -> None:
        meta, status = pod["metadata"], pod.get("status") or {}
        self.node, self.pod = node, pod
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.container: Json = pod["spec"]["containers"][0]
        self.folder = pod_dir(node.state_dir, self.namespace, self.name)
        self.phase: str = status.get("phase") or "Pending"
        self.start_time: str = status.get("startTime") or now()
        # A pod that ran under an earlier instance of the runtime restarts its container.
        prior = (status.get("containerStatuses") or [{}])[0]
        self.restarts: int = prior.get("restartCount", 0) + int("containerID" in prior)
        self.state: Json = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: Json = {}
        self.process: asyncio.subprocess.Process | None = None
        self.deleting = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._kill_at = math.inf
        self._term_sent = False
        self._transitions: dict[str, tuple[str, str]] = {}
        self._reported: Json | None = None
        self.update(pod)
        self.task = asyncio.create_task(self.run(), name=f"pod {self}")

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    def update(self, pod: Json) -> None:
        """Take a newer version of the pod: a deletionTimestamp starts its grace period.

        A later deletion with a shorter grace period brings the deadline forward.
        """
        self.pod = pod
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            grace = meta.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
            self._deadline(float(grace))

    def gone(self) -> None:
        """The pod left the API without waiting for us (a forced deletion): kill it now."""
        self._deadline(0)

    def _deadline(self, grace: float) -> None:
        self._kill_at = min(self._kill_at, asyncio.get_running_loop().time() + grace)
        self.deleting.set()
        self._wakeup.set()

    async def run(self) -> None:
        try:
            if self.phase not in TERMINAL_PHASES:
                await self._run_container()
            await self.deleting.wait()
            await self._terminate()
            await self.node.remove(self)
        finally:
            if self.process is not None and self.process.returncode is None:
                self._deadline(STOP_GRACE_SECONDS)  # the runtime is stopping
                await self._terminate()

    async def _run_container(self) -> None:
        """Start the process and restart it per restartPolicy, until the pod is deleted."""
        loop = asyncio.get_running_loop()
        policy = self.pod["spec"].get("restartPolicy", "Always")
        crashes = 0
        while not self.deleting.is_set():
            try:
                argv, env = await self._prepare()
            except ContainerConfigError as err:
                self.state = {"waiting": {"reason": "CreateContainerConfigError",
                                          "message": str(err)}}
                await self._report()
                await first(self.deleting.wait(), timeout=CONFIG_RETRY_SECONDS)
                continue
            began = loop.time()
            exit_code = await self._execute(argv, env)
            if exit_code is None:
                return
            if policy == "Never" or (policy == "OnFailure" and exit_code == 0):
                self.phase = "Succeeded" if exit_code == 0 else "Failed"
                await self._report()
                return
            # A container that ran for a while starts its back-off over, as with the kubelet.
            crashes = 1 if loop.time() - began > 2 * BACKOFF_CAP_SECONDS else crashes + 1
            delay = min(BACKOFF_CAP_SECONDS, BACKOFF_SECONDS * 2 ** (crashes - 1))
            self.last_state, self.state = self.state, {"waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {delay:g}s restarting failed container="
                           f"{self.container['name']} pod={self.name}"}}
            await self._report()
            await first(self.deleting.wait(), timeout=delay)
            self.restarts += 1

    async def _prepare(self) -> tuple[list[str], dict[str, str]]:
        """The argv and environment of the container, or why it cannot start."""
        container = self.container
        if not container.get("command"):
            raise ContainerConfigError("the local runtime ignores images: the container "
                                       "needs a command")
        env = await self._container_env()
        mounts = mount_folders(self.pod, container, self.folder)
        for folder in mounts.values():
            folder.mkdir(parents=True, exist_ok=True)
        argv = [rewrite(expand(arg, env), mounts)
                for arg in [*container["command"], *(container.get("args") or [])]]
        full = base_env(self.name)
        if "/tmp" in mounts:
            full["TMPDIR"] = str(mounts["/tmp"])
        return argv, {**full, **env}

    async def _container_env(self) -> dict[str, str]:
        """The container's ``envFrom`` and ``env``, resolved the way the kubelet does."""
        objects: dict[tuple[str, str], dict[str, str] | None] = {}

        async def data(kind: str, ref: Json) -> dict[str, str] | None:
            name = ref["name"]
            if (kind, name) not in objects:
                objects[kind, name] = await self._read(kind, name)
            found = objects[kind, name]
            if found is None and not ref.get("optional", False):
                raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
            return found

        env: dict[str, str] = {}
        for source in self.container.get("envFrom") or []:
            if (whole := reference(source)) is not None:
                found = await data(*whole)
                env.update({source.get("prefix", "") + k: v for k, v in (found or {}).items()})
        for var in self.container.get("env") or []:
            name, source = var["name"], var.get("valueFrom")
            if source is None:
                env[name] = expand(var.get("value", ""), env)
            elif "fieldRef" in source:
                env[name] = field_value(self.pod, source["fieldRef"]["fieldPath"])
            elif (keyed := reference(source)) is not None:
                kind, ref = keyed
                found = await data(kind, ref)
                if found is not None and ref["key"] in found:
                    env[name] = found[ref["key"]]
                elif found is not None and not ref.get("optional", False):
                    raise ContainerConfigError(f"couldn't find key {ref['key']} in {kind} "
                                               f"{self.namespace}/{ref['name']}")
            else:
                raise ContainerConfigError(f"env {name}: {', '.join(source)} is not supported "
                                           "by the local runtime")
        return env

    async def _read(self, kind: str, name: str) -> dict[str, str] | None:
        """The data of a Secret (decoded) or ConfigMap, None when it does not exist."""
        core = self.node.core
        read = core.read_namespaced_secret if kind == "Secret" else core.read_namespaced_config_map
        try:
            obj = await read(name, self.namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise ContainerConfigError(f"reading {kind} {self.namespace}/{name}: "
                                       f"{err.status} {err.reason}") from None
        data = obj.data or {}
        if kind == "Secret":
            return {k: base64.b64decode(v).decode() for k, v in data.items()}
        return dict(data)

    async def _execute(self, argv: list[str], env: dict[str, str]) -> int | None:
        """Run the container's process to its end and return its exit code.

        None when the pod's deletion came first (the process is then still running).
        """
        if self.deleting.is_set():
            return None
        started = now()
        with (self.folder / "log").open("ab") as out:
            try:
                self.process = await asyncio.create_subprocess_exec(
                    *argv, env=env, cwd=self.folder, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as err:
                out.write(f"local runtime: cannot start {argv[0]}: {err}\n".encode())
                self.state = {"terminated": {"exitCode": 128, "reason": "StartError",
                                             "message": str(err), "startedAt": started,
                                             "finishedAt": now()}}
                return 128
        process = self.process
        log.info("%s: started %s (pid %d)", self, argv[0], process.pid)
        self.phase, self.state = "Running", {"running": {"startedAt": started}}
        await self._report()
        await first(process.wait(), self.deleting.wait())
        if process.returncode is None:
            return None
        exit_code = await self._reap(process)
        terminated: Json = {"exitCode": exit_code, "reason": "Error" if exit_code else "Completed",
                            "startedAt": started, "finishedAt": now(),
                            "containerID": f"local://{process.pid}"}
        if process.returncode < 0:
            terminated["signal"] = -process.returncode
        self.state = {"terminated": terminated}
        return exit_code

    async def _terminate(self) -> None:
        """SIGTERM the main process, then SIGKILL its process group at the deadline.

        Only the main process gets SIGTERM, as with a container runtime's stop signal:
        Celery's warm shutdown then lets its pool processes finish their tasks, which a
        SIGTERM to each of them would kill.
        """
        process = self.process
        if process is None or process.returncode is not None:
            return
        loop = asyncio.get_running_loop()
        if not self._term_sent:
            self._term_sent = True
            log.info("%s: SIGTERM to pid %d, %.0fs grace", self, process.pid,
                     max(0.0, self._kill_at - loop.time()))
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        while process.returncode is None and (left := self._kill_at - loop.time()) > 0:
            self._wakeup.clear()
            await first(process.wait(), self._wakeup.wait(), timeout=left)
        if process.returncode is None:
            log.info("%s: grace period over, SIGKILL", self)
        await self._reap(process)

    async def _reap(self, process: asyncio.subprocess.Process) -> int:
        """SIGKILL what is left of the process group; the main process's exit code."""
        signal_group(process.pid, signal.SIGKILL)
        code = await process.wait()
        exit_code = 128 - code if code < 0 else code  # killed by signal N: 128 + N
        log.info("%s: pid %d exited with %d", self, process.pid, exit_code)
        return exit_code

    def _status(self) -> Json:
        ready = "running" in self.state
        conditions = []
        for kind, ok in (("PodScheduled", True), ("Initialized", True),
                         ("ContainersReady", ready), ("Ready", ready)):
            value = "True" if ok else "False"
            if self._transitions.get(kind, ("",))[0] != value:
                self._transitions[kind] = (value, now())
            conditions.append({"type": kind, "status": value,
                               "lastTransitionTime": self._transitions[kind][1]})
        container: Json = {
            "name": self.container["name"], "image": self.container.get("image", ""),
            "imageID": "", "ready": ready, "started": ready, "restartCount": self.restarts,
            "state": self.state, "lastState": self.last_state,
        }
        if self.process is not None:
            container["containerID"] = f"local://{self.process.pid}"
        return {
            "phase": self.phase, "conditions": conditions, "startTime": self.start_time,
            "hostIP": LOCAL_IP, "hostIPs": [{"ip": LOCAL_IP}],
            "podIP": LOCAL_IP, "podIPs": [{"ip": LOCAL_IP}],
            "containerStatuses": [container],
        }

    async def _report(self) -> None:
        """Patch the pod's status when it differs from what was last reported."""
        status = self._status()
        if status == self._reported:
            return
        try:
            await self.node.core.patch_namespaced_pod_status(self.name, self.namespace,
                                                             {"status": status})
        except ApiException as err:
            if err.status != 404:
                log.warning("%s: status update failed: %s %s", self, err.status, err.reason)
            return
        self._reported = status


class LocalNode:
    """The local runtime: one Node, a pod watch per namespace, a PodRunner per bound pod.

    ``namespaces`` limits it to those namespaces (all when empty). ``start()`` and
    ``stop()`` run on the caller's event loop.
    """

    api: client.ApiClient  # set by start()
    core: client.CoreV1Api

    def __init__(self, kubeconfig: Path, state_dir: Path = DEFAULT_STATE_DIR,
                 namespaces: Sequence[str] = (), node_name: str = "local") -> None:
        self.kubeconfig, self.state_dir = kubeconfig, state_dir
        self.namespaces, self.node_name = list(namespaces), node_name
        self.runners: dict[str, PodRunner] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready_since = now()

    async def start(self) -> None:
        configuration = client.Configuration()
        await config.load_kube_config(config_file=str(self.kubeconfig),
                                      client_configuration=configuration)
        self.api = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self.api)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            await self.core.create_node(client.V1Node(metadata=client.V1ObjectMeta(
                name=self.node_name, labels={"kubernetes.io/hostname": self.node_name,
                                             "kubernetes.io/os": "linux"})))
        except ApiException as err:
            if err.status != 409:  # 409: an earlier run's Node, taken over
                raise
        await self._post_node_status()
        self._background(self._heartbeat())
        scopes: list[str | None] = [*self.namespaces] or [None]
        for namespace in scopes:
            self._background(self._watch(namespace))
        log.info("node %s ready; pod folders in %s", self.node_name, self.state_dir)

    async def stop(self) -> None:
        """Stop watching, then stop every pod's process (SIGTERM, 5 s, SIGKILL)."""
        tasks = [*self._tasks, *(runner.task for runner in self.runners.values())]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.api.close()

    def _background(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_node_status(self) -> None:
        capacity = {
            "cpu": str(os.cpu_count() or 1), "pods": "110",
            "memory": f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 1024}Ki",
        }
        machine = platform.machine()
        status = {
            "capacity": capacity, "allocatable": capacity,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "the local runtime runs this node's pods as processes",
                            "lastHeartbeatTime": now(),
                            "lastTransitionTime": self._ready_since}],
            "addresses": [{"type": "InternalIP", "address": LOCAL_IP},
                          {"type": "Hostname", "address": self.node_name}],
            "nodeInfo": {"operatingSystem": "linux", "kubeletVersion": "local",
                         "kernelVersion": platform.release(), "osImage": platform.platform(),
                         "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                             machine, machine),
                         "containerRuntimeVersion": f"local://python{platform.python_version()}"},
        }
        await self.core.patch_node_status(self.node_name, {"status": status})

    async def _heartbeat(self) -> None:
        """Keep the Ready condition fresh: the node-lifecycle controller evicts stale nodes."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self._post_node_status()
            except ApiException as err:
                log.warning("node heartbeat failed: %s %s", err.status, err.reason)

    async def _watch(self, namespace: str | None) -> None:
        """List, then watch, the pods of ``namespace`` (all when None); relist on errors.

        A listing also tells which pods went away while no watch was open.
        """
        call: Callable[..., Awaitable[client.V1PodList]] = (
            self.core.list_pod_for_all_namespaces if namespace is None
            else functools.partial(self.core.list_namespaced_pod, namespace))
        while True:
            try:
                listing = self.api.sanitize_for_serialization(await call())
                present = {pod["metadata"]["uid"] for pod in listing["items"]}
                for runner in list(self.runners.values()):
                    if namespace in (None, runner.namespace) and runner.uid not in present:
                        runner.gone()
                for pod in listing["items"]:
                    self._on_pod(pod)
                async with watch.Watch(return_type="object") as stream:
                    async for event in stream.stream(
                            call, resource_version=listing["metadata"]["resourceVersion"]):
                        if event["type"] == "DELETED":
                            if gone := self.runners.get(event["object"]["metadata"]["uid"]):
                                gone.gone()
                        elif event["type"] in ("ADDED", "MODIFIED"):
                            self._on_pod(event["object"])
            except (TimeoutError, ApiException, aiohttp.ClientError) as err:
                if getattr(err, "status", None) != 410:  # 410: history expired, relist
                    log.warning("pod watch failed, listing again: %s", err)
                await asyncio.sleep(1)

    def _on_pod(self, pod: Json) -> None:
        meta, node = pod["metadata"], pod["spec"].get("nodeName")
        if runner := self.runners.get(meta["uid"]):
            runner.update(pod)
        elif node == self.node_name:
            runner = PodRunner(self, pod)
            self.runners[runner.uid] = runner
            runner.task.add_done_callback(lambda task: self._finished(runner, task))
        elif not node and not meta.get("deletionTimestamp"):
            self._background(self._bind(meta["namespace"], meta["name"]))

    def _finished(self, runner: PodRunner, task: asyncio.Task[None]) -> None:
        if self.runners.get(runner.uid) is runner:
            del self.runners[runner.uid]
        if not task.cancelled() and (err := task.exception()):
            log.error("%s: %r", runner, err, exc_info=err)

    async def _bind(self, namespace: str, name: str) -> None:
        body = client.V1Binding(metadata=client.V1ObjectMeta(name=name),
                                target=client.V1ObjectReference(api_version="v1", kind="Node",
                                                                name=self.node_name))
        try:
            # The reply is a Status, not the Binding the client would parse it as.
            response: Any = await self.core.create_namespaced_pod_binding(
                name, namespace, body, _preload_content=False)
            response.release()
        except ApiException as err:
            if err.status not in (404, 409):  # gone, or bound meanwhile
                log.warning("binding %s/%s failed: %s %s", namespace, name, err.status,
                            err.reason)
            return
        log.info("%s/%s: bound to %s", namespace, name, self.node_name)

    async def remove(self, runner: PodRunner) -> None:
        """Delete a terminated pod for good (grace 0), unless it is already gone."""
        try:
            await self.core.delete_namespaced_pod(
                runner.name, runner.namespace,
                body=client.V1DeleteOptions(grace_period_seconds=0,
                                            preconditions=client.V1Preconditions(uid=runner.uid)))
        except ApiException as err:
            if err.status not in (404, 409):
                log.warning("%s: deleting failed: %s %s", runner, err.status, err.reason)
            return
        log.info("%s: removed", runner)


async def serve(node: LocalNode) -> None:
    """Run ``node`` until SIGTERM or SIGINT, then stop it."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await node.start()
    await stopping.wait()
    log.info("stopping")
    await node.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", type=Path, default=os.environ.get("KUBECONFIG"),
                        required="KUBECONFIG" not in os.environ,
                        help="the control plane's kubeconfig (default: $KUBECONFIG)")
    parser.add_argument("--namespace", action="append", default=[],
                        help="run the pods of this namespace only (repeatable; default: all)")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                        help="pod folders and logs (default: %(default)s)")
    parser.add_argument("--node-name", default="local", help="the Node's name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(serve(LocalNode(args.kubeconfig, args.state_dir, args.namespace,
                                args.node_name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
