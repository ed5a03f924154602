"""Liveness (``GET /healthz``): served from the start, by a standby as well as the leader.

kopf's own liveness endpoint starts with kopf, which a standby does not run; the kubelet
would restart a healthy standby forever. This one answers 200 while the process is
sound, and 500 naming the problem when work that should progress has stalled (the
autoscaler has not finished a cycle for several intervals), so the kubelet restarts it.
What a restart cannot cure (a listing the apiserver refuses) is named with 200.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Check = Callable[[], str | None]  # a problem, or None when all is well


@dataclass
class Health:
    """``checks`` find problems a restart may cure (500); ``notes`` find problems it
    cannot, such as a permission missing from the operator's RBAC: they are shown in the
    answer (``warnings``) with 200, since a restart would only stop the work that still
    goes on (the autoscaling of every fleet) and meet the same refusal."""

    role: str = "standby"
    checks: list[Check] = field(default_factory=list)
    notes: list[Check] = field(default_factory=list)
    _runner: web.AppRunner | None = field(default=None, repr=False)

    def problems(self) -> list[str]:
        return [problem for check in self.checks if (problem := check()) is not None]

    def report(self) -> tuple[int, dict[str, Any]]:
        """The answer to ``GET /healthz``: its status code and body."""
        problems = self.problems()
        warnings = [note for check in self.notes if (note := check()) is not None]
        return (500 if problems else 200,
                {"role": self.role, "problems": problems, "warnings": warnings})

    async def _healthz(self, _: web.Request) -> web.Response:
        status, body = self.report()
        return web.Response(status=status, content_type="application/json",
                            text=json.dumps(body))

    async def start(self, port: int, host: str = "0.0.0.0") -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
