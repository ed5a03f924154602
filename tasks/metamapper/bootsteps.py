"""Worker bootsteps that stamp the files the pods' probes read (:mod:`metamapper.probe`).

- :class:`Liveness` (a worker step): stamps at start, then from the worker's event loop
  every ``metamapper_probe_interval`` seconds. The stamp is refreshed only while the loop
  runs, so a stuck loop shows as a stamp growing old.
- :class:`Readiness` (a consumer step, after the task consumer): stamped when the worker
  starts consuming, removed when the consumer stops, which Celery does when the broker
  connection is lost (the consumer restarts its steps on reconnecting).
- :class:`HttpProbes` (a worker step): serves the same verdicts over HTTP
  (:mod:`metamapper.probe_server`) when ``METAMAPPER_PROBE_PORT`` is set.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from celery import bootsteps

from metamapper import probe
from metamapper.probe_server import PORT_ENV, ProbeServer

INTERVAL_SETTING = "metamapper_probe_interval"


class Liveness(bootsteps.StartStopStep):
    requires: ClassVar[set[str]] = {"celery.worker.components:Timer"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.entry: Any = None

    def start(self, worker: Any) -> None:
        probe.stamp(probe.WORKER_LIVE)
        interval = float(worker.app.conf.get(INTERVAL_SETTING, 10))
        self.entry = worker.timer.call_repeatedly(interval, probe.stamp, (probe.WORKER_LIVE,))

    def stop(self, worker: Any) -> None:
        if self.entry is not None:
            self.entry.cancel()
            self.entry = None
        probe.unstamp(probe.WORKER_LIVE)


class Readiness(bootsteps.StartStopStep):
    requires: ClassVar[set[str]] = {"celery.worker.consumer.tasks:Tasks"}

    def start(self, consumer: Any) -> None:
        probe.stamp(probe.WORKER_READY)

    def stop(self, consumer: Any) -> None:
        probe.unstamp(probe.WORKER_READY)

    def shutdown(self, consumer: Any) -> None:
        probe.unstamp(probe.WORKER_READY)


class HttpProbes(bootsteps.StartStopStep):
    """Serves from its start to the worker's stop; until then the kubelet gets no answer,
    which fails both probes, as a missing stamp does."""

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.server: ProbeServer | None = None

    def start(self, worker: Any) -> None:
        port = os.environ.get(PORT_ENV)
        if port:
            self.server = ProbeServer(int(port))

    def stop(self, worker: Any) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
