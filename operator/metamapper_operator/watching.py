"""Watches of a collection of the Kubernetes API, such as the operator's children.

A collection (a kind, in one namespace or in all) is listed in pages, then watched from the
listing's resourceVersion, for ever: a watch the apiserver ends is started again from the
last version seen, a version too old (410 Gone) is listed afresh, and a refused or broken
request is logged with the apiserver's words and tried again after a growing pause. Bodies
are read as plain JSON and reduced to the caller's records at once, so no watched body
outlives its event or its page.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from metamapper_operator.kube import TRANSPORT_ERRORS, KubeError

log = logging.getLogger(__name__)
WATCH_SECONDS = 300        # the apiserver ends each watch after this; it is started again
PAGE = 500                 # objects per page of a listing
FIRST_PAUSE, LONGEST_PAUSE = 1.0, 30.0   # after a failed request, doubling
T = TypeVar("T")


class Gone(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class StreamError(Exception):
    """The watch stream reported an error other than Gone."""


@dataclass
class Watch(Generic[T]):
    """The objects at ``path`` with labels matching ``selector``, each reduced to a record
    by ``reduce``: ``listed`` gets every record of a full listing, ``changed`` each
    record of an event with the event's type (ADDED, MODIFIED, DELETED), ``refused`` why
    a listing failed (in the apiserver's words: a 403 names the missing permission).
    None may wait: the stream is read meanwhile."""

    api: client.ApiClient
    path: str
    what: str          # the collection, as logs name it
    selector: str
    reduce: Callable[[Mapping[str, Any]], T]
    listed: Callable[[list[T]], None]
    changed: Callable[[str, T], None]
    refused: Callable[[str], None]

    async def run(self) -> None:
        """List and watch for ever."""
        version: str | None = None
        pause = FIRST_PAUSE
        while True:
            try:
                if version is None:
                    version = await self._list()
                version = await self._watch(version)
                pause = FIRST_PAUSE
            except Gone:
                log.debug("watch of %s: version too old; listing again", self.what)
                version = None
            except (ApiException, StreamError, ValueError, *TRANSPORT_ERRORS) as err:
                doing = f"{'listing' if version is None else 'watching'} {self.what}"
                why = (f"{doing}: {err}" if isinstance(err, StreamError | ValueError)
                       else str(KubeError(doing, err)))
                log.warning("%s; trying again in %.0f s", why, pause)
                if version is None:
                    self.refused(why)
                await asyncio.sleep(pause)
                pause = min(pause * 2, LONGEST_PAUSE)

    async def _list(self) -> str:
        """Every object, page by page; the listing's resourceVersion."""
        found: list[T] = []
        token = ""
        while True:
            params = [("labelSelector", self.selector), ("limit", PAGE)]
            if token:
                params.append(("continue", token))
            page = await self._get(params, timeout=60.0)
            try:
                body = await page.json()
            finally:
                page.release()
            found.extend(self.reduce(item) for item in body.get("items") or [])
            token = (body.get("metadata") or {}).get("continue") or ""
            if not token:
                self.listed(found)
                return str(body["metadata"]["resourceVersion"])

    async def _watch(self, version: str) -> str:
        """Events from ``version`` until the apiserver ends the watch; the last version."""
        response = await self._get([
            ("labelSelector", self.selector), ("watch", "true"),
            ("allowWatchBookmarks", "true"), ("resourceVersion", version),
            ("timeoutSeconds", WATCH_SECONDS)], timeout=(30.0, WATCH_SECONDS + 30.0))
        try:
            async for event in _events(response):
                version = self._take(event) or version
        finally:
            response.release()
        return version

    def _take(self, event: dict[str, Any]) -> str | None:
        """Apply one event; the resourceVersion it carries."""
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise StreamError(str(obj.get("message") or obj))
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self.changed(kind, self.reduce(obj))
        return version

    async def _get(self, params: list[tuple[str, Any]], timeout: Any
                   ) -> aiohttp.ClientResponse:
        response: aiohttp.ClientResponse = await self.api.call_api(
            self.path, "GET", query_params=params,
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"],
            _preload_content=False, _request_timeout=timeout)
        if response.status == 200:
            return response
        body = await response.read()
        response.release()
        if response.status == 410:
            raise Gone()
        err = ApiException(status=response.status, reason=response.reason)
        err.body = body
        raise err


async def _events(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The JSON events of a watch response, one per line, however long a line is."""
    pending = b""
    async for data in response.content.iter_any():
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)
    if pending.strip():
        yield json.loads(pending)
