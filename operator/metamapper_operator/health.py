"""Liveness (``GET /healthz``): served from the start, by a standby as well as the leader.

kopf's own liveness endpoint starts with kopf, which a standby does not run; the kubelet
would restart a healthy standby forever. This one answers 200 while the process is
sound, and 500 naming the problem when work that should progress has stalled (the
autoscaler has not finished a cycle for several intervals), so the kubelet restarts it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

Check = Callable[[], str | None]  # a problem, or None when all is well


@dataclass
class Health:
    role: str = "standby"
    checks: list[Check] = field(default_factory=list)
    _runner: web.AppRunner | None = field(default=None, repr=False)

    def problems(self) -> list[str]:
        return [problem for check in self.checks if (problem := check()) is not None]

    async def _healthz(self, _: web.Request) -> web.Response:
        problems = self.problems()
        return web.Response(status=500 if problems else 200, content_type="application/json",
                            text=json.dumps({"role": self.role, "problems": problems}))

    async def start(self, port: int, host: str = "0.0.0.0") -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
