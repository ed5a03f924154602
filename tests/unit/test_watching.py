"""The children's watch against a small fake of the apiserver's list and watch protocol
(the real apiserver runs it in tests/operator and tests/e2e)."""

from __future__ import annotations

import asyncio
import json
import logging
from functools import partial
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client

from metamapper_operator import watching
from metamapper_operator.children import KINDS, Child, Children, child_of
from metamapper_operator.state import Key
from tests.unit.test_children import body

DEPLOYMENTS = KINDS[0]
FORBIDDEN = ('deployments.apps is forbidden: User "op" cannot list resource "deployments" '
             'in API group "apps" at the cluster scope')


class FakeApiserver:
    """Answers each request to the Deployments' collection with the next scripted reply
    (the last one again once the script is used up), and records the queries."""

    def __init__(self, *replies: web.Response | tuple[int, Any]) -> None:
        self.replies = list(replies)
        self.queries: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.queries.append(dict(request.query))
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, tuple):
            return web.json_response(reply[1], status=reply[0])
        lines = reply.text or ""
        response = web.StreamResponse()
        await response.prepare(request)
        for line in lines.splitlines(keepends=True):   # one write per event
            await response.write(line.encode())
        await response.write_eof()
        return response


def listing(*items: dict[str, Any], version: str = "10", more: str = "") -> tuple[int, Any]:
    return 200, {"kind": "DeploymentList", "items": list(items),
                 "metadata": {"resourceVersion": version, "continue": more}}


def events(*pairs: tuple[str, dict[str, Any]]) -> web.Response:
    return web.Response(text="".join(json.dumps({"type": t, "object": o}) + "\n"
                                     for t, o in pairs))


def versioned(obj: dict[str, Any], version: str) -> dict[str, Any]:
    obj["metadata"]["resourceVersion"] = version
    return obj


async def run_watch(server: FakeApiserver, until: Any, seconds: float = 5.0
                    ) -> tuple[Children, list[Child]]:
    app = web.Application()
    app.router.add_get("/apis/apps/v1/deployments", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    api = client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{port}"))
    children = Children([("Deployment", None)])
    changed: list[Child] = []

    def event(kind: str, child: Child) -> None:
        children.changed(kind, child)
        changed.append(child)

    watch = watching.Watch(api, DEPLOYMENTS.path(None), "Deployments in all namespaces",
                           "a=b", partial(child_of, "Deployment"),
                           partial(children.replace, ("Deployment", None)), event,
                           partial(children.refused, ("Deployment", None)))
    task = asyncio.create_task(watch.run())
    try:
        async with asyncio.timeout(seconds):
            while not until(children, changed):
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await api.close()
        await runner.cleanup()
    return children, changed


def test_a_paged_listing_then_events_then_a_relist_after_gone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watching, "FIRST_PAUSE", 0.01)
    server = FakeApiserver(
        listing(body("mm-default"), version="", more="page-2"),
        listing(body("mm-scheduler"), version="10"),
        events(("ADDED", versioned(body("mm-fast", spec_hash="f"), "11")),
               ("BOOKMARK", {"metadata": {"resourceVersion": "12"}}),
               ("DELETED", versioned(body("mm-scheduler"), "13"))),
        events(("ERROR", {"code": 410, "message": "too old resource version"})),
        listing(body("mm-default", spec_hash="new"), version="20"),
        events())

    children, changed = asyncio.run(run_watch(server, lambda *_: len(server.queries) >= 6))
    assert children.listed.is_set()
    relisted = children.deployments(Key("ns", "mm"))
    assert set(relisted) == {"mm-default"} and relisted["mm-default"].spec_hash == "new"
    assert [(c.name, c.spec_hash) for c in changed] == [("mm-fast", "f"), ("mm-scheduler", "h")]
    assert server.queries[0] == {"labelSelector": "a=b", "limit": "500"}
    assert server.queries[1]["continue"] == "page-2"
    # The watch starts from the listing's version, the next from the last event's.
    assert server.queries[2]["resourceVersion"] == "10"
    assert server.queries[3]["resourceVersion"] == "13"
    assert server.queries[4] == {"labelSelector": "a=b", "limit": "500"}
    assert server.queries[5]["resourceVersion"] == "20"


def test_a_refused_listing_is_logged_in_the_apiservers_words_and_tried_again(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(watching, "FIRST_PAUSE", 0.01)
    refusal = {"kind": "Status", "status": "Failure", "message": FORBIDDEN, "code": 403}
    server = FakeApiserver((403, refusal), (403, refusal), listing(body("mm-default")), events())
    seen: list[str | None] = []
    with caplog.at_level(logging.WARNING, logger=watching.__name__):
        children, _ = asyncio.run(run_watch(server, lambda children, _: (
            seen.append(children.refusal()) or children.listed.is_set())))
    assert set(children.deployments(Key("ns", "mm"))) == {"mm-default"}
    # Until it is listed, the refusal is known, in the apiserver's words, then forgotten.
    assert f"listing Deployments in all namespaces: 403 {FORBIDDEN}" in seen
    assert children.refusal() is None and children.refusals == {}
    refused = [r.getMessage() for r in caplog.records]
    assert len(refused) == 2 and refused[0].startswith(
        f"listing Deployments in all namespaces: 403 {FORBIDDEN}; trying again in")


def test_a_refused_watch_is_tried_again_from_the_same_version(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Without the right to watch, the listing is all the operator knows: it does not
    list again and again in its place."""
    monkeypatch.setattr(watching, "FIRST_PAUSE", 0.01)
    refusal = {"kind": "Status", "message": FORBIDDEN.replace("list", "watch"), "code": 403}
    server = FakeApiserver(listing(body("mm-default"), version="7"), (403, refusal))
    with caplog.at_level(logging.WARNING, logger=watching.__name__):
        asyncio.run(run_watch(server, lambda *_: len(server.queries) >= 4))
    assert [q.get("resourceVersion") for q in server.queries[1:4]] == ["7", "7", "7"]
    assert "cannot watch resource" in caplog.records[0].getMessage()
