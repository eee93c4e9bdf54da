"""``promptflow.core.Prompty`` / ``AsyncPrompty`` called from flow code: loaded with model overrides as
prompt flow allows them, answering text, JSON and streams, and seen as the node's LLM calls with
their usage. llmsim over real HTTP on 127.0.0.1 (through LlmTap, which records what was sent)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.flow import FlowExecutor, FlowInputError, load_flow
from shared.flow.pf_model_config import OpenAIModelConfiguration
from shared.flow.prompty import AsyncPrompty, Prompty
from tests.support.gateway_stack import LlmTap, llmsim_server

pytestmark = pytest.mark.integration

PROMPTY = Path(__file__).resolve().parents[1] / "fixtures" / "prompty"

FLOW = """\
inputs:
  question: {type: string}
outputs:
  answer: {type: string, reference: "${ask.output}"}
nodes:
- name: ask
  type: python
  source: {type: code, path: ask.py}
  inputs: {question: "${inputs.question}"}
"""

# A Python node as prompt flow users write one around a prompty (the prompty sits beside it).
ASK = """\
from pathlib import Path

from promptflow.core import Prompty
from promptflow.core import tool


@tool
def ask(question: str) -> str:
    prompty = Prompty.load(source=Path(__file__).parent / "terse.prompty", model={"parameters": {"max_tokens": 25}})
    return prompty(question=question)
"""


def _connection_overrides(base_url: str) -> dict[str, object]:
    return {"configuration": {"type": "openai", "base_url": base_url, "api_key": "sk-not-a-real-key",
                              "model": "gpt-4o-mini"}}


async def test_load_with_overrides_answers_text_json_and_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    async with llmsim_server() as sim, LlmTap(sim.url) as tap:
        base = f"{tap.url}/v1"
        monkeypatch.setenv("PROMPTY_TEST_BASE_URL", base)
        monkeypatch.setenv("PROMPTY_TEST_KEY", "sk-not-a-real-key")
        # A dict override: the endpoint of the file replaced, one parameter changed, the others kept.
        warm = Prompty.load(source=PROMPTY / "warm.prompty",
                            model={**_connection_overrides(base), "parameters": {"max_tokens": 12}})
        text = await asyncio.to_thread(warm, question="Where is my parcel?", customer="Ada")
        # A model configuration object as the configuration, as flex flows pass theirs.
        config = OpenAIModelConfiguration(model="gpt-4o", base_url=base, api_key="sk-not-a-real-key")
        verdict = AsyncPrompty.load(PROMPTY / "verdict.prompty", model={"configuration": config})
        decided = await verdict(question="Is the parcel late?")
        streamed = Prompty.load(PROMPTY / "streamed.prompty")  # its ${env:...} endpoint, read at load
        chunks = await asyncio.to_thread(lambda: list(streamed(question="What does the shop sell?")))
    first, second, third = tap.exchanges
    assert first.body["max_tokens"] == 12 and first.body["temperature"] == 0.7 and first.body["model"] == "gpt-4o"
    assert "Greet Ada by name" in first.body["messages"][0]["content"]
    assert text == json.loads(bytes(first.answer))["choices"][0]["message"]["content"]
    assert second.body["model"] == "gpt-4o" and second.body["response_format"] == {"type": "json_object"}
    sent = json.loads(json.loads(bytes(second.answer))["choices"][0]["message"]["content"])
    assert decided == {"answer": sent["answer"]}
    assert third.streamed and third.body["stream_options"] == {"include_usage": True}
    assert len(chunks) == third.content_chunks() > 1 and all(isinstance(c, str) for c in chunks)


async def test_inputs_follow_prompt_flows_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    async with llmsim_server() as sim, LlmTap(sim.url) as tap:
        prompty = Prompty.load(PROMPTY / "terse.prompty", model=_connection_overrides(f"{tap.url}/v1"))
        await asyncio.to_thread(prompty)  # no inputs: the sample's (${file:terse_sample.json})
        with pytest.raises(FlowInputError, match="Missing required inputs: \\['question'\\]"):
            await asyncio.to_thread(prompty, chat_history=[])
    [from_sample] = tap.exchanges
    sample = json.loads((PROMPTY / "terse_sample.json").read_text())
    assert from_sample.body["messages"][1:] == [*sample["chat_history"],
                                                {"role": "user", "content": sample["question"]}]


async def test_a_prompty_called_in_a_python_node_is_the_nodes_llm_call(tmp_path: Path) -> None:
    folder = tmp_path / "flow"
    folder.mkdir()
    (folder / "flow.dag.yaml").write_text(FLOW)
    (folder / "ask.py").write_text(ASK)
    shutil.copy(PROMPTY / "terse.prompty", folder)
    shutil.copy(PROMPTY / "terse_sample.json", folder)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with llmsim_server() as sim, LlmTap(sim.url) as tap:
        # terse.prompty names open_ai_connection: found in the deployments folder's connections.yaml.
        from shared.deployments.connections import Connection
        from shared.flow.prompty import provide_connections

        provide_connections({"open_ai_connection": Connection(name="open_ai_connection", type="openai_compatible",
                                                              base_url=f"{tap.url}/v1", api_key="none")})
        try:
            executor = FlowExecutor(load_flow(folder), {}, tracer_provider=provider)
            result = await executor.run({"question": "Can I pay by card?"})
        finally:
            provide_connections(None)
    [exchange] = tap.exchanges
    assert exchange.body["max_tokens"] == 25
    assert result.outputs["answer"] == json.loads(bytes(exchange.answer))["choices"][0]["message"]["content"]
    [call] = result.llm_calls
    sent = exchange.usage()
    assert call.node == "ask" and call.usage_reported
    assert (call.prompt_tokens, call.completion_tokens) == (sent["prompt_tokens"], sent["completion_tokens"])
    spans = {s.name: s for s in exporter.get_finished_spans()}
    # The call is a span of its own (prompt flow traces Prompty calls), between the node and the LLM call.
    assert spans["chat gpt-4o-mini"].parent.span_id == spans["Prompty.__call__"].context.span_id
    assert spans["Prompty.__call__"].parent.span_id == spans["execute_tool ask"].context.span_id


ENTRY = """\
from pathlib import Path

from promptflow.core import AsyncPrompty


async def ask(question: str) -> str:
    prompty = AsyncPrompty.load(source=Path(__file__).parent / "terse.prompty")
    return await prompty(question=question)
"""


async def test_a_prompty_in_a_flex_flow_is_a_span_over_its_llm_call(tmp_path: Path) -> None:
    from shared.deployments.connections import Connection
    from shared.flow.flex_executor import FlexExecutor
    from shared.flow.prompty import provide_connections

    folder = tmp_path / "flex"
    folder.mkdir()
    (folder / "flow.flex.yaml").write_text("entry: flow:ask\n")
    (folder / "flow.py").write_text(ENTRY)
    shutil.copy(PROMPTY / "terse.prompty", folder)
    shutil.copy(PROMPTY / "terse_sample.json", folder)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with llmsim_server() as sim, LlmTap(sim.url) as tap:
        provide_connections({"open_ai_connection": Connection(name="open_ai_connection", type="openai_compatible",
                                                              base_url=f"{tap.url}/v1", api_key="none")})
        try:
            executor = FlexExecutor(load_flow(folder), tracer_provider=provider)
            result = await executor.run({"question": "Do you ship abroad?"})
        finally:
            provide_connections(None)
    [exchange] = tap.exchanges
    [call] = result.llm_calls
    assert call.prompt_tokens == exchange.usage()["prompt_tokens"]
    spans = {s.name: s for s in exporter.get_finished_spans()}
    prompty_span = spans["AsyncPrompty.__call__"]
    assert spans["chat gpt-4o-mini"].parent.span_id == prompty_span.context.span_id
    assert prompty_span.parent.span_id == spans["invoke_workflow flex"].context.span_id
