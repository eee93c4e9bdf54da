"""An answer reaches the client before the gateway records it (services/gateway/routes/score.py,
stream.py and proxy/relay.py): building and publishing the response event, ending the spans and
the middlewares' bookkeeping are off the client's wait, for flows and the proxy alike.

How it is seen: the client reads in a thread of its own, and the gateway's ``respond`` (which
builds the response event) holds the event loop until that client has the whole answer, or 5 s.
Had the answer been written after ``respond``, the client could not have it then. The events are
still recorded (real Kafka), each request's request and response event once.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from services.gateway.routes.recording import InferenceRecorder
from shared.events.messages import InferenceStatus
from shared.settings import ServiceSettings
from tests.support.gateway_stack import (
    events_by_request,
    kafka_for,
    llmsim_server,
    read_topic,
    running_gateway,
    write_deployments,
    write_proxy_deployment,
)

pytestmark = pytest.mark.integration

QUESTION = "Which comes first?"


def post(url: str, body: dict[str, Any], key: str) -> tuple[str, bytes]:
    """To the end: the whole body, or the stream's last event."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.headers["x-request-id"], answer.read()


def flow_call(stream: bool) -> tuple[str, dict[str, Any]]:
    return f"/v1/deployments/chat/score?stream={str(stream).lower()}", {"question": QUESTION}


def proxy_call(stream: bool) -> tuple[str, dict[str, Any]]:
    return "/v1/chat/completions", {"model": "llmsim-chat", "messages": [{"role": "user", "content": QUESTION}],
                                    "stream": stream}


def whole(kind: str, stream: bool, data: bytes) -> bool:
    if stream:
        return (b"event: done" if kind == "flow" else b"data: [DONE]") in data
    return bool(json.loads(data)["answer" if kind == "flow" else "choices"])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["flow", "proxy"])
async def test_the_client_has_the_whole_answer_before_the_response_event_is_built(
    kind: str, settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    received = threading.Event()
    seen_before_recording: list[bool] = []
    original = InferenceRecorder.respond

    def respond(self: InferenceRecorder, status: Any, **kwargs: Any) -> Any:
        if status == "ok":
            seen_before_recording.append(received.wait(timeout=5))  # holds the loop meanwhile
        return original(self, status, **kwargs)

    monkeypatch.setattr(InferenceRecorder, "respond", respond)
    kafka = kafka_for(settings.kafka.bootstrap_servers)
    async with llmsim_server() as sim:
        folder = tmp_path / "deployments"
        keys = write_deployments(folder, sim.url)
        key = write_proxy_deployment(folder, "proxy") if kind == "proxy" else keys.plain["chat"]
        async with running_gateway(folder, kafka, tmp_path / "spool") as gateway:

            def call(stream: bool) -> tuple[str, bytes]:
                path, body = (flow_call if kind == "flow" else proxy_call)(stream)
                request_id, data = post(gateway.url + path, body, key)
                received.set()
                return request_id, data

            ids = []
            for stream in (False, True):
                received.clear()
                request_id, data = await asyncio.to_thread(call, stream)
                ids.append(request_id)
                assert whole(kind, stream, data)
            await gateway.publisher.wait_delivered()
            records = await read_topic(kafka, gateway.topics.inference, 4)
    assert seen_before_recording == [True, True]  # JSON, then streamed
    by_request = events_by_request(records)
    assert set(by_request) == set(ids)
    for request_id in ids:
        _request, response = by_request[request_id]
        assert response.status == InferenceStatus.INFERENCE_STATUS_OK
        if kind == "flow":
            assert response.outputs.fields["answer"].string_value


@pytest.mark.timeout(120)
async def test_a_whole_answer_cancelled_mid_write_is_still_recorded_ok(
    settings: ServiceSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A handler cancelled during the answer's write (the server stopping, say) must still record
    the completed run as ok, as it did when recording came first, not as cancelled (which would
    keep a finished answer from being judged). Flows and the proxy share ``send_whole``; here it
    writes the answer and then the handler is cancelled."""
    from services.gateway.routes import score
    from services.gateway.routes.common import send_whole
    from services.gateway.routes.proxy import relay

    async def cancelled_after_the_write(response: Any, request: Any) -> None:
        await send_whole(response, request)
        raise asyncio.CancelledError

    monkeypatch.setattr(score, "send_whole", cancelled_after_the_write)
    monkeypatch.setattr(relay, "send_whole", cancelled_after_the_write)
    kafka = kafka_for(settings.kafka.bootstrap_servers)
    async with llmsim_server() as sim:
        folder = tmp_path / "deployments"
        keys = write_deployments(folder, sim.url)
        proxy_key = write_proxy_deployment(folder, "proxy")
        async with running_gateway(folder, kafka, tmp_path / "spool") as gateway:

            def call(kind: str, key: str) -> None:
                path, body = (flow_call if kind == "flow" else proxy_call)(False)
                try:
                    post(gateway.url + path, body, key)
                except OSError:
                    pass  # the connection may close under the cancelled handler: the record is what counts

            await asyncio.to_thread(call, "flow", keys.plain["chat"])
            await asyncio.to_thread(call, "proxy", proxy_key)
            await gateway.publisher.wait_delivered()
            records = await read_topic(kafka, gateway.topics.inference, 4)
    by_request = events_by_request(records)
    assert len(by_request) == 2
    for events in by_request.values():
        assert type(events[-1]).__name__ == "InferenceResponse"
        assert events[-1].status == InferenceStatus.INFERENCE_STATUS_OK
