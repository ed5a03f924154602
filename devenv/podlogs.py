"""Task errors in the logs of a namespace's pods: what ``make demo`` checks at its end and
the walkthrough's end-to-end test asserts (none, in any container of any pod).

A Celery log record starts with ``[<time>: <LEVEL>/<process>]``; the lines after it up to
the next such line (a traceback) belong to it. A record is an error when it is logged at
ERROR or CRITICAL (`` ERROR/``: a task's failure, a refused message, a lost worker) or
holds ``raised unexpected`` or ``Traceback`` (also a traceback printed outside Celery's
logging). :func:`errors_in` is pure; :class:`PodLogs` reads the logs with kubectl.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

RECORD_START = re.compile(r"^\[\d{4}-\d{2}-\d{2} [\d:,.]+: (?P<level>[A-Z]+)/[^\]]*\]")
ERROR_LEVELS = frozenset({"ERROR", "CRITICAL"})
MARKERS = ("raised unexpected", "Traceback")

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@dataclass(frozen=True)
class TaskError:
    """An error record in one container's log: where, and the line that says so (the
    record's first line, or its first line with a marker when its level is not an error)."""

    pod: str
    container: str
    line: str

    def __str__(self) -> str:
        return f"{self.pod}/{self.container}: {self.line}"


def _records(text: str) -> list[list[str]]:
    found: list[list[str]] = []
    for line in text.splitlines():
        if RECORD_START.match(line) or not found:
            found.append([line])
        else:
            found[-1].append(line)
    return found


def errors_in(text: str, expected: Iterable[str] = ()) -> list[str]:
    """The lines reporting the error records of a log. A record naming, on its first line,
    a task of ``expected`` (``name[``, as Celery logs a task with its id) is left out: a
    task that fails on purpose."""
    wanted = tuple(f"{name}[" for name in expected)
    lines = []
    for record in _records(text):
        start = RECORD_START.match(record[0])
        if start and start["level"] in ERROR_LEVELS:
            line = record[0]
        else:
            line = next((each for each in record if any(m in each for m in MARKERS)), "")
        if line and not any(name in record[0] for name in wanted):
            lines.append(line)
    return lines


class PodLogs:
    """The latest log of each container of a namespace's pods, kept after its pod is gone
    (read a terminating pod's log while it terminates: once deleted, it cannot be read)."""

    def __init__(self, kubectl: Kubectl, namespace: str) -> None:
        self.kubectl, self.namespace = kubectl, namespace
        self.logs: dict[tuple[str, str], str] = {}

    def read(self, terminating_only: bool = False) -> None:
        """Read every container's log (a restarted one's previous log too), or with
        ``terminating_only`` those of the pods being deleted."""
        listed = self.kubectl("get", "pods", "-n", self.namespace, "-o", "json", check=False)
        pods: list[dict[str, Any]] = json.loads(listed.stdout)["items"] if listed.stdout else []
        for pod in pods:
            if terminating_only and not pod["metadata"].get("deletionTimestamp"):
                continue
            name = pod["metadata"]["name"]
            restarts = {s["name"]: s.get("restartCount", 0)
                        for s in (pod.get("status") or {}).get("containerStatuses") or []}
            for container in pod["spec"]["containers"]:
                self._read(name, container["name"])
                if restarts.get(container["name"]):
                    self._read(name, container["name"], previous=True)

    def _read(self, pod: str, container: str, previous: bool = False) -> None:
        done = self.kubectl("logs", "-n", self.namespace, pod, "-c", container,
                            *(["--previous"] if previous else []), check=False)
        if done.returncode == 0:
            self.logs[pod, f"{container} (previous)" if previous else container] = done.stdout

    def errors(self, expected: Iterable[str] = ()) -> list[TaskError]:
        """The error records of every log read (see :func:`errors_in`)."""
        expected = tuple(expected)
        return [TaskError(pod, container, line)
                for (pod, container), text in sorted(self.logs.items())
                for line in errors_in(text, expected)]
