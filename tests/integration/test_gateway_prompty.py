"""A ``.prompty`` file deployed by itself, through the gateway against llmsim and real Kafka: two
deployment variants pointing at two prompty files, answered as JSON and streamed (ours and
prompt flow's /score), with the LLM usage counted in the response event."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.apikeys import new_api_key_record
from shared.events.builders import struct_to_dict
from shared.events.messages import InferenceResponse, InferenceStatus
from shared.settings import ServiceSettings
from tests.integration.test_gateway_streaming import sse_events
from tests.support.gateway_stack import (
    LlmTap,
    events_by_request,
    kafka_for,
    llmsim_server,
    read_topic,
    running_gateway,
    write_deployments,
)

pytestmark = pytest.mark.integration

PROMPTY = Path(__file__).resolve().parents[1] / "fixtures" / "prompty"
QUESTION = {"question": "Where is the parcel with my copy of Dune?", "customer": "Ada"}


def write_prompty_deployment(folder: Path) -> str:
    """``desk``: warm.prompty (its ${env:...} endpoint replaced by the llmsim connection) and
    terse.prompty (naming open_ai_connection itself), 50/50; returns its key."""
    key, record = new_api_key_record("desk-key")
    body = {
        "name": "desk",
        "flow": str(PROMPTY / "warm.prompty"),
        "variants": [
            {"id": "warm", "weight": 1, "init": {"model": {"configuration": {"connection": "llmsim"}}}},
            {"id": "terse", "weight": 1, "flow": str(PROMPTY / "terse.prompty")},
        ],
        "allow_forced_variant": True,
        "api_keys": [record.model_dump(mode="json", exclude_none=True)],
    }
    (folder / "desk.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    return key


def _system_prompt(body: dict[str, Any]) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "system")


async def test_variants_run_their_own_prompty_file_and_usage_reaches_the_response_event(
    settings: ServiceSettings, tmp_path: Path,
) -> None:
    async with llmsim_server() as sim, LlmTap(sim.url) as tap:
        write_deployments(tmp_path / "deployments", tap.url)
        key = write_prompty_deployment(tmp_path / "deployments")
        kafka = kafka_for(settings.kafka.bootstrap_servers)
        async with running_gateway(tmp_path / "deployments", kafka, tmp_path / "spool") as gateway:
            assert gateway.deployments.current.failures == {}
            answers: dict[str, dict[str, Any]] = {}
            for variant in ("warm", "terse"):
                async with gateway.session.post(gateway.score_url("desk"), json=QUESTION, headers={
                        "api-key": key, "x-promptpulse-variant": variant}) as resp:
                    assert resp.status == 200, await resp.text()
                    answers[variant] = {**await resp.json(), "request_id": resp.headers["x-request-id"]}
            # prompt flow's /score answers a prompty with its text itself, not a mapping.
            async with gateway.session.post(f"{gateway.url}/score", json=QUESTION, headers={
                    "Authorization": f"Bearer {key}", "azureml-model-deployment": "terse"}) as resp:
                assert resp.status == 200, await resp.text()
                scored_answer = await resp.json()
            await gateway.publisher.wait_delivered()
            inference = events_by_request(await read_topic(gateway.settings.kafka, gateway.topics.inference, 6))
    warm, terse, scored = tap.exchanges
    assert scored_answer == json.loads(bytes(scored.answer))["choices"][0]["message"]["content"]
    # Each variant sent its own file's prompt, model and parameters.
    assert "Greet Ada by name" in _system_prompt(warm.body) and warm.body["model"] == "gpt-4o"
    assert warm.body["max_tokens"] == 200 and warm.body["temperature"] == 0.7
    assert _system_prompt(terse.body) == "Answer in one short sentence. No greeting."
    assert terse.body["model"] == "gpt-4o-mini" and terse.body["max_tokens"] == 60
    assert terse.body["messages"][-1] == {"role": "user", "content": QUESTION["question"]}
    for variant, exchange in (("warm", warm), ("terse", terse)):
        answer = answers[variant]
        assert answer["variant"] == variant
        text = json.loads(bytes(exchange.answer))["choices"][0]["message"]["content"]
        assert answer["output"] == text
        _, response = inference[answer["request_id"]]
        assert isinstance(response, InferenceResponse)
        assert response.status == InferenceStatus.INFERENCE_STATUS_OK
        assert struct_to_dict(response.outputs) == {"output": text}
        sent = exchange.usage()
        assert [(u.prompt_tokens, u.completion_tokens, u.total_tokens) for u in response.usage] == [
            (sent["prompt_tokens"], sent["completion_tokens"], sent["total_tokens"])]


async def test_a_prompty_streams_in_our_format_and_in_prompt_flows(settings: ServiceSettings, tmp_path: Path) -> None:
    async with llmsim_server() as sim, LlmTap(sim.url) as tap:
        write_deployments(tmp_path / "deployments", tap.url)
        key = write_prompty_deployment(tmp_path / "deployments")
        kafka = kafka_for(settings.kafka.bootstrap_servers)
        async with running_gateway(tmp_path / "deployments", kafka, tmp_path / "spool") as gateway:
            headers = {"api-key": key, "Accept": "text/event-stream", "x-promptpulse-variant": "warm"}
            async with gateway.session.post(gateway.score_url("desk"), json=QUESTION, headers=headers) as resp:
                assert resp.status == 200
                request_id = resp.headers["x-request-id"]
                events = [e async for e in sse_events(resp)]
            headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream",
                       "azureml-model-deployment": "terse"}
            async with gateway.session.post(f"{gateway.url}/score", json=QUESTION, headers=headers) as resp:
                assert resp.status == 200 and resp.headers["azureml-model-deployment"] == "terse"
                pf_events = [e async for e in sse_events(resp)]
            await gateway.publisher.wait_delivered()
            inference = events_by_request(await read_topic(gateway.settings.kafka, gateway.topics.inference, 4))
    ours, theirs = tap.exchanges
    assert ours.streamed and theirs.streamed
    deltas = [data["delta"] for name, data in events if name == "delta"]
    name, done = events[-1]
    assert name == "done" and len(deltas) == ours.content_chunks() > 1
    assert done["outputs"] == {"output": "".join(deltas)} and done["variant"] == "warm"
    sent = ours.usage()
    [usage] = done["usage"]
    assert {k: usage[k] for k in sent} == sent
    _, response = inference[request_id]
    assert [(u.prompt_tokens, u.total_tokens) for u in response.usage] == [(sent["prompt_tokens"], sent["total_tokens"])]
    # prompt flow's stream: one {"output": delta} object per chunk, nothing else once all was streamed.
    assert [name for name, _ in pf_events] == ["message"] * len(pf_events)
    assert len(pf_events) == theirs.content_chunks() > 1
    assert all(list(data) == ["output"] for _, data in pf_events)


async def test_a_prompty_deployment_naming_no_connection_does_not_load_and_says_how_to_fix_it(
    settings: ServiceSettings, tmp_path: Path,
) -> None:
    async with llmsim_server() as sim:
        write_deployments(tmp_path / "deployments", sim.url)
        write_prompty_deployment(tmp_path / "deployments")
        deployment = tmp_path / "deployments" / "desk.yaml"
        body = yaml.safe_load(deployment.read_text())
        del body["variants"][0]["init"]  # warm.prompty alone names only ${env:...} settings
        deployment.write_text(yaml.safe_dump(body))
        kafka = kafka_for(settings.kafka.bootstrap_servers)
        async with running_gateway(tmp_path / "deployments", kafka, tmp_path / "spool") as gateway:
            failure = gateway.deployments.current.unavailable("desk")
            async with gateway.session.post(gateway.score_url("chat"), json={"question": "still up?"},
                                            headers={"api-key": "x"}) as resp:
                assert resp.status == 401  # the other deployments serve
    assert failure is not None
    [problem] = failure.problems
    assert problem.startswith("flow 'warm.prompty': model.configuration.connection: names no connection")
    assert "init: {model: {configuration: {connection: NAME}}}" in problem
