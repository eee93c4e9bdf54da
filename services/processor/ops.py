"""The ops listener: ``/healthz`` (JSON) and ``/metrics`` (Prometheus text), on loopback by default.

faust's own web server is disabled (it binds 0.0.0.0:6066 by default); this small aiohttp app
runs on the worker's event loop instead, on ``PROMPTPULSE_PROCESSOR__HOST``/``PORT``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

PREFIX = "promptpulse_processor_"


@dataclass
class Family:
    name: str
    kind: str  # counter | gauge
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: Any) -> Family:
        self.samples.append(({k: str(v) for k, v in labels.items()}, value))
        return self


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(families: Iterable[Family]) -> str:
    """The Prometheus text exposition format (version 0.0.4)."""
    lines = []
    for family in families:
        name = PREFIX + family.name
        lines.append(f"# HELP {name} {family.help}")
        lines.append(f"# TYPE {name} {family.kind}")
        for labels, value in family.samples:
            label_text = ",".join(f'{key}="{_escape(val)}"' for key, val in sorted(labels.items()))
            number = repr(float(value)) if isinstance(value, float) and not value.is_integer() else str(int(value))
            lines.append(f"{name}{{{label_text}}} {number}" if label_text else f"{name} {number}")
    return "\n".join(lines) + "\n"


HealthSource = Callable[[], tuple[int, dict[str, Any]]]
MetricsSource = Callable[[], list[Family]]


def create_ops_app(health: HealthSource, metrics: MetricsSource) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        status, body = health()
        return web.json_response(body, status=status)

    async def metrics_handler(request: web.Request) -> web.Response:
        return web.Response(
            text=render(metrics()), content_type="text/plain", charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    app = web.Application()
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
