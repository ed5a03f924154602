"""kmock as a fault-scripting proxy in front of the real apiserver.

The Kubernetes API in these tests stays the real kube-apiserver: every request reaches it
through this proxy unchanged, and its answers, watch streams included, come back
unchanged. Only what the real server will not produce on demand is scripted, with kmock's
DSL on ``proxy.kmock``, above the pass-through fallback::

    deployments = kmock.resource("apps", "v1", "deployments")
    proxy.kmock[kmock.method.PATCH, deployments][:2] << 500 << status(500)
    proxy.kmock[kmock.action.WATCH, deployments][:1] << proxy.cut_after(1)

A scripted reaction answers only the requests its slice selects; the rest fall through to
the real server, and kmock records every request for the test to assert on.

The proxy listens on plain http on loopback and authenticates upstream with the admin
client certificate, so the process under test gets a kubeconfig with no credentials
(``write_kubeconfig``). It runs an event loop in a thread of its own, so that synchronous
tests can script it and read its records directly; script it before any traffic starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
import kmock
import yaml
import yarl

T = TypeVar("T")
# Hop-by-hop and framing headers: each side of the proxy sets its own.
REQUEST_HEADERS_DROPPED = frozenset({"host", "content-length", "transfer-encoding",
                                     "connection", "accept-encoding"})
RESPONSE_HEADERS_DROPPED = frozenset({"content-length", "transfer-encoding",
                                      "content-encoding", "connection"})


def status(code: int, message: str = "scripted fault") -> dict[str, Any]:
    """The Kubernetes ``Status`` body the apiserver sends with an error ``code``."""
    reason = "InternalError" if code == 500 else HTTPStatus(code).phrase.replace(" ", "")
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


async def _relay(upstream: aiohttp.ClientResponse, events: int | None
                 ) -> AsyncIterator[bytes]:
    """A watch's body as it arrives: all of it, or its first ``events`` lines."""
    try:
        # kmock sends the headers with the first chunk (send them now), and takes a stream
        # that yields nothing for an exhausted reaction (which it would then disable).
        yield b""
        if events is None:
            async for chunk in upstream.content.iter_any():
                yield chunk
        else:
            for _ in range(events):
                yield await upstream.content.readline()
    except aiohttp.ClientError:
        pass  # the apiserver (or the proxy's shutdown) ended it: end it here too
    finally:
        upstream.close()


class FaultProxy:
    """A kmock server forwarding to the apiserver at ``upstream`` (certificates in ``pki``)."""

    def __init__(self, upstream: str, pki: Path) -> None:
        self.upstream = upstream.rstrip("/")
        self.pki = pki
        self.kmock = kmock.RawHandler()
        # The pass-through: its records are the requests no scripted reaction answered.
        self.passed: kmock.View = self.kmock.fallback << self.forward
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy",
                                        daemon=True)
        self._stack = contextlib.AsyncExitStack()
        self._session: aiohttp.ClientSession | None = None
        self._server: kmock.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "the proxy is not running"
        return str(self._server.url).rstrip("/")

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig for the proxy: plain http, no credentials (the proxy has them)."""
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fault-proxy",
            "clusters": [{"name": "fault-proxy", "cluster": {"server": self.url}}],
            "users": [{"name": "fault-proxy", "user": {}}],
            "contexts": [{"name": "fault-proxy", "context": {
                "cluster": "fault-proxy", "user": "fault-proxy"}}],
        }))
        return path

    def cut_after(self, events: int) -> Callable[[kmock.Request], Coroutine[Any, Any,
                                                                            kmock.Response]]:
        """A reaction for watches: the real stream, closed after ``events`` events (0: at
        once), as when the connection drops."""
        return functools.partial(self.forward, events=events)

    async def forward(self, request: kmock.Request, events: int | None = None
                      ) -> kmock.Response:
        """Send ``request`` to the apiserver and answer with its response."""
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in REQUEST_HEADERS_DROPPED}
        upstream = await self._session.request(
            request.method.value, yarl.URL(self.upstream + request.url.raw_path_qs,
                                           encoded=True),
            headers=headers, data=request.body or None)
        reply_headers = {k: v for k, v in upstream.headers.items()
                         if k.lower() not in RESPONSE_HEADERS_DROPPED}
        if request.action == kmock.action.WATCH and upstream.status == 200:
            body: kmock.Payload = _relay(upstream, events)
        else:
            async with upstream:
                body = await upstream.read()
        return kmock.Response(status=upstream.status, headers=reply_headers, payload=body)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=60)

    async def _open(self) -> None:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        context.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context),
                                        timeout=aiohttp.ClientTimeout(total=None,
                                                                      sock_connect=10))
        self._session = session
        await self._stack.enter_async_context(self.kmock)
        self._server = await self._stack.enter_async_context(kmock.Server(self.kmock))
        # Closed first: that ends every relayed watch, so the server stops at once.
        self._stack.push_async_callback(session.close)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        self._call(self._open())
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self._call(self._stack.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
