"""The /metrics endpoint, streamed one metric family at a time.

prometheus_client's own server renders the whole exposition into one string before it
sends a byte: at 10,000 Metamappers of two pools (190,000 samples, 20 MB of text) a
scrape held 86 MB at once. Here each family is rendered by prometheus_client's
formatter (:func:`generate_latest` over a registry of that one family) and sent before
the next is built, gzipped when the scraper asks for it, as Prometheus does.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import CollectorRegistry

StartResponse = Callable[..., Any]


class _OneFamily(CollectorRegistry):
    """A registry holding one already collected family."""

    def __init__(self, family: Metric) -> None:
        super().__init__(auto_describe=False)
        self._family = family

    def collect(self) -> Iterator[Metric]:
        yield self._family


def exposition(registry: CollectorRegistry = REGISTRY) -> Iterator[bytes]:
    """The text format of every family of ``registry``, family by family."""
    for family in registry.collect():
        yield generate_latest(_OneFamily(family))


def _gzipped(chunks: Iterable[bytes]) -> Iterator[bytes]:
    packer = zlib.compressobj(wbits=31)   # 31: the gzip container
    for chunk in chunks:
        if packed := packer.compress(chunk):
            yield packed
    yield packer.flush()


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The WSGI application: /metrics (and /, as prometheus_client serves it)."""
    if environ.get("PATH_INFO", "/") not in ("/", "/metrics"):
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    headers = [("Content-Type", CONTENT_TYPE_LATEST)]
    body = exposition()
    if "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""):
        headers.append(("Content-Encoding", "gzip"))
        body = _gzipped(body)
    start_response("200 OK", headers)
    return body


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


def serve(port: int, address: str = "") -> WSGIServer:
    """Serve /metrics on ``port`` from a thread of its own; the server, to close."""
    server = make_server(address, port, app, _Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
