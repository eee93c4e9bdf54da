"""A malformed HTTP request costs one rate-limited WARNING line, not an ERROR with a traceback
(issue 15, finding 7: unauthenticated log amplification), in the gateway and llmsim as served
in-process, and in every service that sets up logging."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from shared.settings import ServiceSettings
from tests.support.gateway_stack import kafka_for, llmsim_server, running_gateway, write_deployments

pytestmark = pytest.mark.integration

GARBLED = [
    b"GET /healthz HTTP/1.1\r\nA header without a colon\r\n\r\n",
    b"GET /healthz HTTP/9.9.9\r\n\r\n",
    b"POST /v1/x HTTP/1.1\r\nContent-Length: many\r\n\r\n",
]


async def _send(url: str, raw: bytes) -> bytes:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_garbled_requests_log_one_line_without_a_traceback(
    settings: ServiceSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fresh rate limit for this test: the apps below install it.
    monkeypatch.setattr(logging.getLogger("aiohttp.server"), "filters", [])
    caplog.set_level(logging.INFO)
    async with llmsim_server() as sim:
        write_deployments(tmp_path / "deployments", sim.url)
        kafka = kafka_for(settings.kafka.bootstrap_servers)
        async with running_gateway(tmp_path / "deployments", kafka, tmp_path / "spool") as gateway:
            for url in (gateway.url, sim.url):
                for _ in range(4):
                    for raw in GARBLED:
                        answer = await _send(url, raw)
                        assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0]
                async with gateway.session.get(url + "/healthz") as resp:
                    assert resp.status == 200  # still serving
    server = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert [r for r in server if r.levelno >= logging.ERROR or r.exc_info] == []
    [line] = [r for r in server if r.levelno == logging.WARNING]
    assert line.getMessage().startswith("malformed HTTP request from 127.0.0.1 refused (400): ")
    assert "\n" not in line.getMessage()
