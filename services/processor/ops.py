"""The ops listener: ``/healthz`` (JSON) and ``/metrics`` (Prometheus text), on loopback by default.

faust's own web server is disabled (it binds 0.0.0.0:6066 by default); this small aiohttp app
runs on the worker's event loop instead, on ``PROMPTPULSE_PROCESSOR__HOST``/``PORT``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from shared.prometheus import PROMETHEUS, Reader, ServiceMetrics, metrics_handler

PREFIX = "promptpulse_processor_"


HealthSource = Callable[[], tuple[int, dict[str, Any]]]


def create_ops_app(health: HealthSource, read_metrics: Reader) -> web.Application:
    """``read_metrics`` fills a scrape's families (named ``promptpulse_processor_...``)."""
    async def healthz(request: web.Request) -> web.Response:
        status, body = health()
        return web.json_response(body, status=status)

    app = web.Application()
    app[PROMETHEUS] = ServiceMetrics(PREFIX, read_metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler)
    return app


class OpsServer:
    """Runs the ops app; ``port`` 0 picks a free one (read :attr:`port` after start)."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        self._host = host
        self._port = port
        self.port: int | None = None

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        await self._runner.cleanup()
