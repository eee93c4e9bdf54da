"""llmsim's faults, driven by the official openai client over real HTTP on 127.0.0.1: 429 with
Retry-After, 500, hangs (the client times out; a hang gives up at its cap), malformed bodies and
streams, unparseable judge replies, queued faults and fault rates, typed 400s for bad requests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import openai
import pytest

from services.llmsim.settings import FaultRates
from tests.integration.test_llmsim import CHAT, CONTEXT, Sim, chat_answer, verdict
from tests.integration.test_llmsim import sim as sim_fixture
from tests.integration.test_llmsim import start as start_fixture

sim, start = sim_fixture, start_fixture  # test_llmsim's fixtures, under the names its tests ask for


async def test_429_carries_retry_after(sim: Sim) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        await chat_answer(sim.client(), extra_headers={"x-llmsim-fault": "429"})
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "1"


async def test_500_is_an_internal_server_error(sim: Sim) -> None:
    with pytest.raises(openai.InternalServerError):
        await chat_answer(sim.client(), extra_headers={"x-llmsim-fault": "500"})


async def test_fault_marker_in_the_model_name(sim: Sim) -> None:
    with pytest.raises(openai.InternalServerError):
        await sim.client().chat.completions.create(model="llmsim-chat+fault=500", messages=CHAT)  # type: ignore[arg-type]


async def hang_end_counts(sim: Sim) -> dict[str, int]:
    _, state = await sim.control("GET", "/control/state")
    return {k: v for k, v in state["counters"].items() if k.startswith("hangs_ended")}


async def wait_for_hang_to_end(sim: Sim) -> dict[str, int]:
    # The server notices a departed client within its poll interval; give it a generous bound.
    for _ in range(100):
        if counts := await hang_end_counts(sim):
            return counts
        await asyncio.sleep(0.05)
    return {}


async def test_hang_makes_the_client_time_out(sim: Sim) -> None:
    with pytest.raises(openai.APITimeoutError):
        await chat_answer(sim.client(timeout=0.5), extra_headers={"x-llmsim-fault": "hang"})
    assert await wait_for_hang_to_end(sim) == {"hangs_ended_client_gone": 1}


async def test_streaming_hang_sends_a_first_chunk_then_times_out(sim: Sim) -> None:
    stream = await sim.client(timeout=0.5).chat.completions.create(
        model="llmsim-chat",
        messages=CHAT,  # type: ignore[arg-type]
        stream=True,
        extra_headers={"x-llmsim-fault": "hang"},
    )
    received = []
    with pytest.raises(openai.APITimeoutError):
        async for chunk in stream:
            received.append(chunk)
    assert len(received) == 1 and received[0].choices[0].delta.role == "assistant"
    assert await wait_for_hang_to_end(sim) == {"hangs_ended_client_gone": 1}


async def test_hang_gives_up_at_its_cap(start: Callable[..., Any]) -> None:
    async with start(faults=FaultRates(hang_cap_seconds=0.3)) as sim:
        with pytest.raises(openai.APIStatusError) as caught:
            await chat_answer(sim.client(timeout=10), extra_headers={"x-llmsim-fault": "hang"})
        assert caught.value.status_code == 504
        assert await hang_end_counts(sim) == {"hangs_ended_cap": 1}


async def test_malformed_body_cannot_be_decoded(sim: Sim) -> None:
    with pytest.raises(json.JSONDecodeError):
        await chat_answer(sim.client(), extra_headers={"x-llmsim-fault": "malformed"})


async def test_malformed_stream_breaks_the_client_mid_stream(sim: Sim) -> None:
    stream = await sim.client().chat.completions.create(
        model="llmsim-chat",
        messages=CHAT,  # type: ignore[arg-type]
        stream=True,
        extra_headers={"x-llmsim-fault": "malformed"},
    )
    with pytest.raises(json.JSONDecodeError):
        async for _ in stream:
            pass


async def test_unparseable_fault_gives_a_judge_reply_without_json(sim: Sim) -> None:
    with pytest.raises(json.JSONDecodeError):
        await verdict(sim.client(), CONTEXT, extra_headers={"x-llmsim-fault": "unparseable"})


async def test_queued_faults_hit_only_their_target_and_run_out(sim: Sim) -> None:
    status, _ = await sim.control(
        "POST", "/control/faults", {"fault": "429", "count": 2, "target": "judge"}
    )
    assert status == 200
    client = sim.client()
    assert await chat_answer(client)  # chat calls are not the target
    for _ in range(2):
        with pytest.raises(openai.RateLimitError):
            await verdict(client, CONTEXT)
    assert "score" in await verdict(client, CONTEXT)
    _, state = await sim.control("GET", "/control/state")
    assert state["faults"]["queue"] == []
    assert state["counters"]["faults_429"] == 2


async def test_fault_header_none_overrides_queued_faults(sim: Sim) -> None:
    await sim.control("POST", "/control/faults", {"fault": "500", "count": 1})
    assert await chat_answer(sim.client(), extra_headers={"x-llmsim-fault": "none"})
    with pytest.raises(openai.InternalServerError):
        await chat_answer(sim.client())


async def test_fault_rates_from_control_and_reset(sim: Sim) -> None:
    await sim.control("POST", "/control/faults", {"rates": {"500": 1.0}})
    with pytest.raises(openai.InternalServerError):
        await chat_answer(sim.client())
    await sim.control("DELETE", "/control/faults")
    assert await chat_answer(sim.client())


async def test_configured_fault_rate(start: Callable[..., Any]) -> None:
    async with start(faults=FaultRates(rate_429=1.0, retry_after_seconds=3)) as sim:
        with pytest.raises(openai.RateLimitError) as caught:
            await chat_answer(sim.client())
    assert caught.value.response.headers["retry-after"] == "3"


async def test_bad_requests_get_typed_400s(sim: Sim) -> None:
    client = sim.client()
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="m", messages=[])
    assert "messages" in str(caught.value)
    with pytest.raises(openai.BadRequestError) as caught:
        await chat_answer(client, extra_headers={"x-llmsim-fault": "teapot"})
    assert "x-llmsim-fault" in str(caught.value)
    with pytest.raises(openai.BadRequestError) as caught:
        await chat_answer(client, extra_headers={"x-llmsim-latency": "tps=0"})
    assert "tokens_per_second" in str(caught.value)
    status, body = await sim.control("POST", "/control/drift", {"variant": "b", "level": 3})
    assert status == 400 and "level" in body["error"]["message"]
