"""The streamed /metrics endpoint: prometheus_client's text, family by family."""

from __future__ import annotations

import gzip
import urllib.error
import urllib.request

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, Histogram, generate_latest
from prometheus_client.registry import CollectorRegistry

from metamapper_operator import metrics, metrics_server


def registry() -> CollectorRegistry:
    own = CollectorRegistry(auto_describe=False)
    Gauge("some_gauge", "a gauge", ["a"], registry=own).labels("x").set(2)
    Histogram("some_seconds", "a histogram", registry=own).observe(0.3)
    table = metrics.PoolTable()
    own.register(table)
    for pool in ("default", "revisioner"):
        table.record(metrics.PoolSeries("ns", "mm", pool), metrics.PoolFigures(
            1, 1, 0, 4, 3, {"q": metrics.QueueFigures(3, None, 1.5)}))
    return own


def test_the_stream_is_prometheus_clients_text_format() -> None:
    own = registry()
    chunks = list(metrics_server.exposition(own))
    assert len(chunks) > 2   # one per family
    assert b"".join(chunks) == generate_latest(own)


def test_the_endpoint_serves_metrics_gzipped_when_asked_and_nothing_else() -> None:
    server = metrics_server.serve(0, "127.0.0.1")
    url = f"http://127.0.0.1:{server.server_port}"
    metrics.pool_table.record(metrics.PoolSeries("ns", "served", "default"),
                              metrics.PoolFigures(1, 1, 0, 4, 7, {}))
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as plain:
            assert plain.headers["Content-Type"] == CONTENT_TYPE_LATEST
            text = plain.read().decode()
        request = urllib.request.Request(f"{url}/metrics",
                                         headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request, timeout=10) as packed:
            assert packed.headers["Content-Encoding"] == "gzip"
            unpacked = gzip.decompress(packed.read()).decode()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{url}/other", timeout=10)
        assert missing.value.code == 404
    finally:
        server.shutdown()
        server.server_close()
        metrics.forget("ns", "served")
    line = 'metamapper_pool_backlog{metamapper="served",namespace="ns",pool="default"} 7.0'
    assert line in text.splitlines() and line in unpacked.splitlines()
    assert "metamapper_autoscale_cycle_seconds_bucket" in text
    assert text.count("# TYPE") == generate_latest(REGISTRY).decode().count("# TYPE")
