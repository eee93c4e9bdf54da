"""``promptpulse gateway --workers 2``: two processes on one port, one /metrics for both, a
killed worker replaced, a clean stop. The gateway runs as real processes (live_stack)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.live_stack import StackOptions, live_stack

pytestmark = pytest.mark.integration

REQUESTS = 40


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(child) for child in text]
    return sorted(found)


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def served_by_worker(url: str) -> tuple[dict[str, float], float]:
    """score requests answered 200 per worker label, and workers_unreachable, from one scrape."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    per_worker: dict[str, float] = {}
    unreachable = -1.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "promptpulse_gateway_http_requests_total" and sample.labels.get("code") == "200" \
                    and sample.labels.get("endpoint") == "score":
                per_worker[sample.labels["worker"]] = per_worker.get(sample.labels["worker"], 0) + sample.value
            if sample.name == "promptpulse_gateway_workers_unreachable":
                unreachable = sample.value
    return per_worker, unreachable


async def test_two_workers_share_the_port_one_scrape_sees_both_and_a_killed_one_comes_back(tmp_path: Path) -> None:
    options = StackOptions(sampling_rate=0.0, monitors=[], env={"gateway": {"PROMPTPULSE_GATEWAY__WORKERS": "2"}})
    async with live_stack(tmp_path, options) as stack:
        supervisor = stack.gateway.pid
        assert supervisor is not None
        workers = children(supervisor)
        assert len(workers) == 2

        for index in range(REQUESTS):  # a new connection each: the kernel spreads them
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
                status, _ = await stack.score(f"question {index}", session=session)
                assert status == 200
        per_worker, unreachable = await served_by_worker(stack.gateway.url)
        assert unreachable == 0
        assert set(per_worker) == {"0", "1"}  # both served, and the scrape saw both
        assert sum(per_worker.values()) == REQUESTS

        os.kill(workers[0], signal.SIGKILL)

        async def replaced() -> list[int] | None:
            now = children(supervisor)
            return now if len(now) == 2 and workers[0] not in now else None

        await stack.wait_for(replaced, 30, "the killed worker started again")

        async def both_answer() -> bool:
            try:
                _, missing = await served_by_worker(stack.gateway.url)
            except (aiohttp.ClientError, AssertionError):
                return False
            return missing == 0

        await stack.wait_for(both_answer, 30, "one scrape sees both workers again")
        status, _ = await stack.score("after the restart")
        assert status == 200

        last = children(supervisor)
        code = await stack.gateway.stop(within=30)  # SIGTERM: passed on to both workers
        assert code == 0
        assert not any(alive(pid) for pid in last)  # stopped and reaped
