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


# As prompt flow's evaluation examples write the embedding tool (eval-qna-non-rag's ada_similarity).
EMBEDDING_DAG = """\
inputs:
  answer:
    type: string
  ground_truth:
    type: string
outputs:
  similarity:
    type: double
    reference: ${similarity.output}
  answer_vector:
    type: list
    reference: ${embeded_answer.output}
nodes:
- name: embeded_answer
  type: python
  source:
    type: package
    tool: promptflow.tools.embedding.embedding
  inputs:
    connection: open_ai_connection
    deployment_name: text-embedding-ada-002
    input: ${inputs.answer}
  use_variants: false
- name: embeded_ground_truth
  type: python
  source:
    type: package
    tool: promptflow.tools.embedding.embedding
  inputs:
    connection: open_ai_connection
    deployment_name: text-embedding-ada-002
    input: ${inputs.ground_truth}
  use_variants: false
- name: similarity
  type: python
  source:
    type: code
    path: similarity.py
  inputs:
    a: ${embeded_answer.output}
    b: ${embeded_ground_truth.output}
"""

SIMILARITY = """\
import math

from promptflow import tool


@tool
def similarity(a: list, b: list) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))
"""


async def test_embedding_tool_node_sends_its_input_and_outputs_the_vector(tmp_path: Path) -> None:
    from services.llmsim.text_api import embed

    folder = write_flow(tmp_path / "ada", EMBEDDING_DAG, similarity__py=SIMILARITY)
    async with llmsim() as sim:
        client, transport = recording_client(sim)
        executor = FlowExecutor(load_flow(folder), {"open_ai_connection": client})
        result = await executor.run({"answer": "Sampling hashes the request id.", "ground_truth": "A hash."})
        await client.close()
    assert sim.state.counters["embedding_requests"] == 2
    sent = sorted(transport.requests, key=lambda body: body["input"])
    assert sent == [
        {"model": "text-embedding-ada-002", "input": "A hash."},
        {"model": "text-embedding-ada-002", "input": "Sampling hashes the request id."},
    ]
    assert result.outputs["answer_vector"] == embed("Sampling hashes the request id.")
    assert 0 < result.outputs["similarity"] < 1
    calls = {call.node: call for call in result.llm_calls}
    assert set(calls) == {"embeded_answer", "embeded_ground_truth"}
    answer_index = [i for i, body in enumerate(transport.requests) if body["input"].startswith("Sampling")][0]
    usage = transport.usage(answer_index)
    call = calls["embeded_answer"]
    assert call.usage_reported and call.prompt_tokens == usage["prompt_tokens"] > 0
    assert call.total_tokens == usage["total_tokens"] and call.completion_tokens == 0


async def test_llmsim_embeddings_answer_the_openai_package_in_base64_and_float() -> None:
    from services.llmsim.text_api import embed

    async with llmsim() as sim:
        client, transport = recording_client(sim)
        packed = await client.embeddings.create(model="text-embedding-3-small", input=["one", "two"])
        plain = await client.embeddings.create(model="text-embedding-3-small", input="one", encoding_format="float",
                                               dimensions=8)
        await client.close()
    assert transport.requests[0]["encoding_format"] == "base64"  # the package's default, decoded by it
    # float32 on the wire: equal to the vector within float32 precision
    assert all(abs(a - b) < 1e-6 for a, b in zip(packed.data[1].embedding, embed("two"), strict=True))
    assert plain.data[0].embedding == embed("one", 8) and plain.usage.prompt_tokens == 1


# As prompt flow writes a vision chat flow (its chat-with-image and describe-image examples).
IMAGE_DAG = """\
inputs:
  chat_history:
    type: list
    is_chat_history: true
    default: []
  question:
    type: list
    is_chat_input: true
  photo:
    type: image
outputs:
  answer:
    type: string
    reference: ${chat.output}
    is_chat_output: true
  described:
    type: string
    reference: ${describe.output}
nodes:
- name: chat
  type: custom_llm
  source:
    type: package_with_prompt
    tool: promptflow.tools.aoai_gpt4v.AzureOpenAI.chat
    path: chat.jinja2
  inputs:
    connection: aoai_gpt4v_connection
    deployment_name: gpt-4v
    max_tokens: 512
    chat_history: ${inputs.chat_history}
    question: ${inputs.question}
- name: describe
  type: custom_llm
  source:
    type: package_with_prompt
    tool: promptflow.tools.openai_gpt4v.OpenAI.chat
    path: describe.jinja2
  inputs:
    connection: aoai_gpt4v_connection
    model: gpt-4o
    photo: ${inputs.photo}
"""

CHAT_TEMPLATE = """\
# system:
You are a helpful assistant.

{% for item in chat_history %}
# user:
{{item.inputs.question}}
# assistant:
{{item.outputs.answer}}
{% endfor %}

# user:
{{question}}
"""

DESCRIBE_TEMPLATE = """\
# system:
Describe images.

# user:
What is in this picture?
![image]({{photo}})
"""

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
PHOTO_URL = "https://example.com/logo.png"


@pytest.mark.parametrize("photo", [{"data:image/png;base64": PNG}, f"data:image/png;base64,{PNG}"])
async def test_images_reach_llmsim_as_image_url_parts(tmp_path: Path, photo: object) -> None:
    folder = write_flow(tmp_path / "vision", IMAGE_DAG, chat__jinja2=CHAT_TEMPLATE, describe__jinja2=DESCRIBE_TEMPLATE)
    async with llmsim() as sim:
        client, transport = recording_client(sim)
        executor = FlowExecutor(load_flow(folder), {"aoai_gpt4v_connection": client})
        question = [{"data:image/png;url": PHOTO_URL}, "How many colors can you see?"]
        result = await executor.run({"question": question, "photo": photo})
        await client.close()
    bodies = {body["model"]: body for body in transport.requests}
    assert bodies["gpt-4v"]["messages"][-1] == {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": PHOTO_URL}},
        {"type": "text", "text": "How many colors can you see?"},
    ]}
    assert bodies["gpt-4v"]["max_tokens"] == 512
    assert bodies["gpt-4o"]["messages"][-1] == {"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]}
    assert result.outputs["answer"] and result.outputs["described"]
    assert {call.node for call in result.llm_calls} == {"chat", "describe"}


async def test_a_bad_image_input_is_refused_naming_the_input(tmp_path: Path) -> None:
    from shared.flow import FlowInputError

    folder = write_flow(tmp_path / "vision", IMAGE_DAG, chat__jinja2=CHAT_TEMPLATE, describe__jinja2=DESCRIBE_TEMPLATE)
    executor = FlowExecutor(load_flow(folder), {"aoai_gpt4v_connection": object()})
    with pytest.raises(FlowInputError) as caught:
        await executor.run({"question": ["q"], "photo": "file:///etc/passwd"})
    assert caught.value.field == "photo" and "must be an image" in caught.value.reason


# As prompt flow's eval-multi-turn-metrics and question-simulation call promptflow.tools from code.
TOOLS_DAG = """\
inputs:
  question:
    type: string
outputs:
  answer:
    type: string
    reference: ${ask.output}
nodes:
- name: ask
  type: python
  source:
    type: code
    path: ask.py
  inputs:
    connection: sim
    question: ${inputs.question}
"""

ASK = '''\
from promptflow.connections import OpenAIConnection
from promptflow.core import tool
from promptflow.tools.common import parse_chat
from promptflow.tools.embedding import embedding
from promptflow.tools.openai import chat as openai_chat


@tool
def ask(connection: OpenAIConnection, question: str) -> str:
    assert parse_chat("system:\\nBe brief.\\nuser:\\nhi\\n")[1] == {"role": "user", "content": "hi"}
    vector = embedding(connection=connection, input=question, model="text-embedding-3-small")
    answer = openai_chat(connection=connection, prompt="system:\\nBe brief.\\nuser:\\n{{question}}\\n",
                         model="gpt-4o-mini", max_tokens="40", question=question)
    return f"{len(vector)} {answer}"
'''


async def test_promptflow_tools_called_from_python_code_use_the_nodes_connection(tmp_path: Path) -> None:
    from shared.deployments import Connection

    folder = write_flow(tmp_path / "tools", TOOLS_DAG, ask__py=ASK)
    async with llmsim() as sim:
        connections = {"sim": Connection(name="sim", type="openai_compatible", base_url=f"{sim.base_url}/v1",
                                         api_key="none")}
        executor = FlowExecutor(load_flow(folder, connections=connections), {}, connections=connections)
        result = await executor.run({"question": "How are requests sampled?"})
    assert sim.state.counters["embedding_requests"] == 1 and sim.state.counters["chat_requests"] == 1
    size, answer = result.outputs["answer"].split(" ", 1)
    assert size == "1536" and answer
    calls = sorted(result.llm_calls, key=lambda call: call.request_model)
    assert [(c.node, c.request_model, c.usage_reported) for c in calls] == [
        ("ask", "gpt-4o-mini", True), ("ask", "text-embedding-3-small", True)]
    assert calls[0].completion_tokens <= 40


async def test_llmsim_text_endpoints_refuse_bad_bodies_naming_the_field() -> None:
    import aiohttp

    async with llmsim() as sim, aiohttp.ClientSession() as session:
        cases = [
            ("/v1/completions", {"model": "m"}, "prompt"),
            ("/v1/embeddings", {"model": "m", "input": []}, "input"),
            ("/v1/embeddings", {"model": "m", "input": "x", "encoding_format": "int8"}, "encoding_format"),
            ("/openai/deployments/ada/embeddings", [1], None),
        ]
        for path, body, field in cases:
            async with session.post(f"{sim.base_url}{path}", json=body) as resp:
                error = (await resp.json())["error"]
                assert resp.status == 400, (path, body)
                assert error["param"] == field and (field is None or error["message"].startswith(field))
        async with session.post(f"{sim.base_url}/openai/deployments/ada/embeddings", json={"input": "x"}) as resp:
            assert resp.status == 200 and (await resp.json())["model"] == "ada"  # the deployment names the model
    assert sim.state.counters["bad_requests"] == 4
