"""The worker's probes over HTTP: ``/livez`` and ``/readyz`` on ``METAMAPPER_PROBE_PORT``.

The verdicts are those of ``metamapper-probe worker-live`` and ``worker-ready`` (the same
stamps, :mod:`metamapper.probe`); only the way the kubelet asks differs. An exec probe
starts a process in the container at every period (the runtime's exec plus a Python
start-up): 4.3 % of a core per idle worker pod on a 2-core node, with readiness every 5 s
and liveness every 20 s (``bench/probe_cost.py``). An HTTP probe is one request to a
thread of the worker's main process, which measured no more than no probe at all.

``/livez?max-age=S`` takes the liveness's maximum age (default 60 s). A main process that
is stopped does not answer at all, which the kubelet counts as a failure too. Requests are
not logged: the kubelet asks every few seconds.
"""

from __future__ import annotations

import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from metamapper import probe

PORT_ENV = "METAMAPPER_PROBE_PORT"
DEFAULT_MAX_AGE = 60.0


def verdict_for(target: str) -> probe.Verdict | None:
    """The verdict a request for ``target`` (path and query) asks for; None: no such check."""
    url = urlsplit(target)
    if url.path == "/readyz":
        return probe.worker_ready()
    if url.path == "/livez":
        ages = parse_qs(url.query).get("max-age", [])
        try:
            max_age = float(ages[-1]) if ages else DEFAULT_MAX_AGE
        except ValueError:
            return probe.Verdict(False, f"max-age must be a number of seconds, not {ages[-1]!r}")
        return probe.worker_live(max_age)
    return None


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        verdict = verdict_for(self.path)
        if verdict is None:
            self._answer(HTTPStatus.NOT_FOUND, "no such probe: /livez or /readyz")
            return
        self._answer(HTTPStatus.OK if verdict.ok else HTTPStatus.SERVICE_UNAVAILABLE,
                     verdict.detail)

    def _answer(self, status: HTTPStatus, text: str) -> None:
        body = f"{text}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the kubelet asks every few seconds."""


class ProbeServer:
    """``/livez`` and ``/readyz`` served from a daemon thread until :meth:`close`."""

    def __init__(self, port: int, host: str = "") -> None:
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="probe-server", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
