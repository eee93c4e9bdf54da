"""The gateway while Kafka is away: requests keep succeeding, nothing acknowledged is lost or
doubled, and a full spool answers 503 instead of acknowledging what it could not keep.

The outage test stops a private broker (tests/support/private_kafka.py), never the shared one.
"Kafka away" in the spool test is a bootstrap address nothing listens on.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from shared.events.messages import InferenceRequest, InferenceResponse
from shared.settings import ServiceSettings
from tests.support.gateway_stack import (
    LlmTap,
    events_by_request,
    kafka_for,
    llmsim_server,
    read_topic,
    running_gateway,
    write_deployments,
)
from tests.support.prometheus_text import value

pytestmark = pytest.mark.integration


def _unused_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("outage", ["stop", "kill"])
async def test_broker_stopped_during_traffic_every_acknowledged_request_is_on_the_topic_once(
    private_kafka, tmp_path: Path, outage: str,
) -> None:
    kafka = kafka_for(private_kafka.bootstrap)
    async with llmsim_server() as sim, LlmTap(sim.url) as tap:
        keys = write_deployments(tmp_path / "deployments", tap.url)
        async with running_gateway(tmp_path / "deployments", kafka, tmp_path / "spool") as gateway:
            acknowledged: list[str] = []
            failures: list[int] = []
            per_phase: Counter[str] = Counter()
            phase = "before"
            stop = asyncio.Event()

            async def client(number: int) -> None:
                headers = {"api-key": keys["demo"]}
                url = gateway.score_url("demo") + ("?stream=true" if number % 2 else "")
                async with aiohttp.ClientSession() as session:
                    while not stop.is_set():
                        async with session.post(url, json={}, headers=headers) as resp:
                            await resp.read()
                            if resp.status != 200:
                                failures.append(resp.status)
                                continue
                            acknowledged.append(resp.headers["x-request-id"])
                            per_phase[phase] += 1
                        await asyncio.sleep(0.01)

            async def until(condition, within: float = 90.0) -> None:  # type: ignore[no-untyped-def]
                async with asyncio.timeout(within):
                    while not condition():  # noqa: ASYNC110 - polls counters of the client tasks
                        await asyncio.sleep(0.05)

            clients = [asyncio.create_task(client(n)) for n in range(4)]
            try:
                await until(lambda: gateway.publisher.metrics.events_sent_direct >= 40)
                phase = "stopping"
                await asyncio.to_thread(getattr(private_kafka, outage))  # the gateway serves meanwhile
                phase = "down"
                await until(lambda: gateway.publisher.spooling)
                await until(lambda: per_phase["down"] >= 40)
                phase = "starting"
                await asyncio.to_thread(private_kafka.start)
                phase = "after"
                await until(lambda: per_phase["after"] >= 40)
            finally:
                stop.set()
                await asyncio.gather(*clients)
            await asyncio.wait_for(gateway.publisher.wait_delivered(), 120)
            metrics = gateway.publisher.metrics
            assert failures == []  # every request succeeded, broker or not
            assert per_phase["down"] >= 40
            assert metrics.events_spooled > 0 and metrics.events_sent_from_spool > 0
            assert metrics.events_lost == {} and metrics.reservations_refused == {}

            records = await read_topic(kafka, gateway.topics.inference, 2 * len(acknowledged), within=120)
    kinds = Counter((r.key.decode(), dict(r.headers)["pp-event-type"].decode()) for r in records)
    missing = [rid for rid in acknowledged
               if not kinds[(rid, "inference.request")] or not kinds[(rid, "inference.response")]]
    duplicated = [rid for rid in acknowledged
                  if kinds[(rid, "inference.request")] > 1 or kinds[(rid, "inference.response")] > 1]
    assert (len(missing), len(duplicated)) == (0, 0), (missing[:5], duplicated[:5])
    assert len(set(acknowledged)) == len(acknowledged)
    for rid, events in events_by_request(records).items():
        assert [type(e) for e in events] == [InferenceRequest, InferenceResponse], rid


async def test_full_spool_answers_503_and_readyz_says_so(settings: ServiceSettings, tmp_path: Path) -> None:
    kafka = kafka_for(_unused_address())
    publisher = {"spool_max_bytes": 1 << 20, "spool_segment_bytes": 64 << 10, "max_event_bytes": 256 << 10,
                 "request_reserve_bytes": 4 << 10}
    async with llmsim_server() as sim, LlmTap(sim.url) as tap:
        keys = write_deployments(tmp_path / "deployments", tap.url)
        async with running_gateway(tmp_path / "deployments", kafka, tmp_path / "spool", create=False,
                                   max_body_bytes=200 << 10, publisher=publisher) as gateway:
            body = {"question": "q " * 40_000}  # ~80 KB: a dozen fill the 1 MiB spool
            statuses: list[int] = []
            for _ in range(40):
                async with gateway.session.post(gateway.score_url("demo"), json=body,
                                                headers={"api-key": keys["demo"]}) as resp:
                    statuses.append(resp.status)
                    payload = await resp.json()
                    if resp.status == 503:
                        assert payload["error"]["type"] == "overloaded"
                        assert int(resp.headers["Retry-After"]) >= 1
                        break
            assert statuses[-1] == 503 and set(statuses[:-1]) == {200} and len(statuses) > 3
            assert len(tap.exchanges) == len(statuses) - 1  # the refused request never reached the LLM
            # Ordinary requests still fit in the last crumbs of room (and /readyz says ready)
            # until they do not either.
            small: list[int] = []
            while not small or small[-1] == 200:
                async with gateway.session.post(gateway.score_url("demo"), json={},
                                                headers={"api-key": keys["demo"]}) as resp:
                    small.append(resp.status)
                assert len(small) < 2000
            assert small[-1] == 503
            # A finished request hands back what its reservation did not use, so a crumb of room
            # may reappear right after a 503. /readyz must agree with admission: while it says
            # ready, a request really is accepted; once the crumbs are gone it says not ready.
            for _ in range(200):
                async with gateway.session.get(gateway.url + "/readyz") as resp:
                    if resp.status == 503:
                        assert (await resp.json())["status"] == "not_ready"
                        break
                    assert resp.status == 200
                async with gateway.session.post(gateway.score_url("demo"), json={},
                                                headers={"api-key": keys["demo"]}) as resp:
                    assert resp.status in (200, 503)
            else:
                raise AssertionError("/readyz kept saying ready with the spool full")
            async with gateway.session.get(gateway.url + "/metrics") as resp:
                text = await resp.text()
            refused = value(text, "promptpulse_gateway_admissions_refused_total", reason="spool_full")
            assert refused is not None and refused >= 1
            # Feedback larger than the room left (under 4 KiB now; the comment is 8,000 bytes of
            # UTF-8, well clear of it) is refused too, never dropped.
            async with gateway.session.post(f"{gateway.url}/v1/deployments/demo/feedback", headers={
                    "api-key": keys["demo"]}, json={"request_id": "0192b3c4-0000-7000-8000-000000000000",
                                                    "comment": "\u00e9" * 4000}) as resp:  # 8,000 bytes
                assert resp.status == 503
                assert (await resp.json())["error"]["type"] == "overloaded"
            assert gateway.publisher.metrics.events_lost == {}
