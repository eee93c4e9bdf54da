"""A real Prometheus Alertmanager for tests, and a webhook receiver it delivers to.

Debian's ``prometheus-alertmanager`` (.ci/run installs it) is started on a free loopback port
with its own storage folder, clustering off (one instance), and short group timers so a
notification reaches the receiver within a second or two of the alert arriving. The receiver is
a local aiohttp server that keeps every notification Alertmanager POSTs to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

BINARIES = ("prometheus-alertmanager", "alertmanager")
INSTALL_HINT = "Alertmanager not found: apt-get install prometheus-alertmanager (.ci/run does)"


def alertmanager_binary() -> str:
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError(INSTALL_HINT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Receiver:
    """Alertmanager's webhook notifications, as received (``status``, ``alerts``, ...)."""

    url: str = ""
    notifications: list[dict[str, Any]] = field(default_factory=list)

    def alerts(self, status: str | None = None) -> list[dict[str, Any]]:
        return [a for n in self.notifications for a in n["alerts"] if status is None or a["status"] == status]


@contextlib.asynccontextmanager
async def webhook_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()

    async def handle(request: web.Request) -> web.Response:
        receiver.notifications.append(await request.json())
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/alertmanager", handle)
    async with serving(app) as base:
        receiver.url = f"{base}/alertmanager"
        yield receiver


@contextlib.asynccontextmanager
async def serving(app: web.Application, **runner_options: Any) -> AsyncIterator[str]:
    """``app`` served on a free loopback port; yields its base URL."""
    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def write_config(folder: Path, receiver_url: str) -> Path:
    config = {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": "test",
            "group_by": ["alertname", "deployment", "monitor"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": "test", "webhook_configs": [{"url": receiver_url, "send_resolved": True}]}],
    }
    path = folder / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    return path


class Alertmanager:
    """One Alertmanager process; ``url`` is its base URL (``http://127.0.0.1:PORT``)."""

    def __init__(self, folder: Path, receiver_url: str, port: int | None = None) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = write_config(folder, receiver_url)
        self.log_file = folder / "alertmanager.log"
        self._process: subprocess.Popen[bytes] | None = None

    async def start(self, seconds: float = 30) -> None:
        command = [
            alertmanager_binary(),
            f"--config.file={self.config}",
            f"--storage.path={self.folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # a single instance: no gossip port to collide on
            "--log.level=warn",
        ]
        self._process = _spawn(command, self.log_file)
        deadline = time.monotonic() + seconds
        async with aiohttp.ClientSession() as session:
            while True:
                if self._process.poll() is not None:
                    raise AssertionError(f"Alertmanager exited: {self.log_file.read_text()[-2000:]}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"{self.url}/-/ready") as response:
                        if response.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise AssertionError(f"Alertmanager not ready after {seconds:.0f}s")
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    async def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` with label matchers (``monitor="x"``)."""
        params = [("filter", f'{name}="{value}"') for name, value in filters.items()]
        async with aiohttp.ClientSession() as session, session.get(f"{self.url}/api/v2/alerts", params=params) as r:
            r.raise_for_status()
            found: list[dict[str, Any]] = await r.json()
            return found


def _spawn(command: list[str], log_file: Path) -> subprocess.Popen[bytes]:
    with log_file.open("ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


@contextlib.asynccontextmanager
async def running_alertmanager(folder: Path, receiver_url: str, port: int | None = None) -> AsyncIterator[Alertmanager]:
    manager = Alertmanager(folder, receiver_url, port)
    try:
        await manager.start()
        yield manager
    finally:
        manager.stop()
