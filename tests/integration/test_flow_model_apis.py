"""llm nodes with ``api: completion``, the promptflow-tools embedding and LLM tools, and images in
chat prompts, against llmsim over real HTTP; the request bodies llmsim received are asserted."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.flow import FlowExecutor, load_flow
from tests.integration.test_flow_llm import assert_usage_matches, llmsim, recording_client

pytestmark = pytest.mark.integration


def write_flow(folder: Path, dag: str, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flow.dag.yaml").write_text(textwrap.dedent(dag))
    for name, text in files.items():
        (folder / name.replace("__", ".")).write_text(textwrap.dedent(text))
    return folder


# As prompt flow writes a completion-API llm node (its "joke" / basic examples).
COMPLETION_DAG = """\
inputs:
  topic:
    type: string
    default: sampling
outputs:
  joke:
    type: string
    reference: ${joke.output}
nodes:
- name: joke
  type: llm
  source:
    type: code
    path: joke.jinja2
  inputs:
    deployment_name: gpt-35-turbo-instruct
    model: gpt-3.5-turbo-instruct
    max_tokens: '64'
    temperature: '0.7'
    echo: 'False'
    topic: ${inputs.topic}
  connection: open_ai_connection
  api: completion
"""


@pytest.mark.parametrize("streamed", [False, True])
async def test_completion_api_node_sends_the_rendered_prompt_to_completions(tmp_path: Path, streamed: bool) -> None:
    folder = write_flow(tmp_path / "joke", COMPLETION_DAG, joke__jinja2="Tell me a joke about {{topic}}.\n")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with llmsim() as sim:
        client, transport = recording_client(sim)
        executor = FlowExecutor(load_flow(folder), {"open_ai_connection": client}, tracer_provider=provider)
        if streamed:
            async with executor.stream({"topic": "request sampling"}) as stream:
                deltas = [d async for d in stream]
                result = await stream.result()
            assert len(deltas) > 1 and "".join(deltas) == result.outputs["joke"]
        else:
            result = await executor.run({"topic": "request sampling"})
        await client.close()
    assert sim.state.counters["completion_requests"] == 1
    sent = transport.requests[0]
    assert sent["prompt"] == "Tell me a joke about request sampling.\n" and "messages" not in sent
    assert sent["model"] == "gpt-3.5-turbo-instruct" and sent["max_tokens"] == 64 and sent["echo"] is False
    assert sent.get("stream", False) is streamed
    assert isinstance(result.outputs["joke"], str) and result.outputs["joke"]
    [call] = result.llm_calls
    assert call.streamed is streamed
    assert_usage_matches(call, transport.usage(0))
    [span] = [s for s in exporter.get_finished_spans() if s.name == "text_completion gpt-3.5-turbo-instruct"]
    assert span.attributes["gen_ai.operation.name"] == "text_completion"
    assert span.attributes["gen_ai.usage.output_tokens"] == call.completion_tokens
