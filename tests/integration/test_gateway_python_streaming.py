"""Through the gateway: a chat flow whose Python node returns a generator streams each item to
the SSE client as it is yielded, and what the node prints is in its span with the request id."""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path

import pytest

from shared.flow.node_output import EVENT
from shared.settings import ServiceSettings
from tests.integration.test_gateway_streaming import sse_events
from tests.support import node_gates
from tests.support.gateway_stack import kafka_for, llmsim_server, running_gateway, write_deployments

pytestmark = pytest.mark.integration

# As prompt flow writes a chat flow whose Python node streams its answer.
DAG = """\
inputs:
  question:
    type: string
    is_chat_input: true
  chat_history:
    type: list
    default: []
outputs:
  answer:
    type: string
    reference: ${stream_answer.output}
    is_chat_output: true
nodes:
- name: stream_answer
  type: python
  source:
    type: code
    path: stream_answer.py
  inputs:
    question: ${inputs.question}
"""

TOOL = """\
from promptflow.core import tool

from tests.support.node_gates import GIVE_UP_SECONDS, THREAD_GATES


@tool
def stream_answer(question: str):
    print(f"answering {question}")
    yield "first "
    if not THREAD_GATES[question].wait(GIVE_UP_SECONDS):
        yield "[the test never opened the gate] "
    yield "last"
"""


async def test_a_generator_nodes_items_reach_the_sse_client_as_yielded(settings: ServiceSettings,
                                                                       tmp_path: Path) -> None:
    flow = tmp_path / "generator-flow"
    flow.mkdir()
    (flow / "flow.dag.yaml").write_text(DAG)
    (flow / "stream_answer.py").write_text(TOOL)
    gate = f"gate {uuid.uuid4().hex[:8]}"  # short: a 32-character token would be redacted as key-like
    node_gates.THREAD_GATES[gate] = threading.Event()
    async with llmsim_server() as sim:
        keys = write_deployments(tmp_path / "deployments", sim.url, chat={"flow": str(flow)})
        kafka = kafka_for(settings.kafka.bootstrap_servers)
        async with running_gateway(tmp_path / "deployments", kafka, tmp_path / "spool") as gateway:
            # A batch run keeps its texts, so what the node prints may go into its span.
            headers = {"api-key": keys["chat"], "Accept": "text/event-stream", "x-promptpulse-run": "run-1"}
            deltas: list[str] = []
            async with gateway.session.post(gateway.score_url("chat"), json={"question": gate},
                                            headers=headers) as resp:
                assert resp.status == 200
                request_id = resp.headers["x-request-id"]
                async for name, data in sse_events(resp):
                    if name == "delta":
                        deltas.append(data["delta"])
                        if len(deltas) == 1:
                            # The generator is parked before its last item until this point.
                            await asyncio.to_thread(node_gates.THREAD_GATES[gate].set)
                    else:
                        assert name == "done", data
                        done = data
            spans = [s for s in gateway.spans.get_finished_spans() if s.name == "execute_tool stream_answer"]
    assert deltas == ["first ", "last"]
    assert done["outputs"] == {"answer": "first last"}
    [span] = spans
    [printed] = [e for e in span.events if e.name == EVENT]
    assert printed.attributes["promptpulse.output.text"] == f"answering {gate}"
    assert printed.attributes["promptpulse.request_id"] == request_id


async def test_a_request_whose_texts_are_not_kept_has_no_captured_prints(settings: ServiceSettings,
                                                                        tmp_path: Path) -> None:
    # The chat deployment samples nothing (no evaluation section): the aggregator keeps none of
    # this request's texts, so what the node prints (it quotes the question) stays out of spans.
    flow = tmp_path / "generator-flow"
    flow.mkdir()
    (flow / "flow.dag.yaml").write_text(DAG)
    (flow / "stream_answer.py").write_text(TOOL)
    gate = f"gate {uuid.uuid4().hex[:8]}"
    node_gates.THREAD_GATES[gate] = threading.Event()
    node_gates.THREAD_GATES[gate].set()  # nothing to wait for: the whole answer is read at once
    async with llmsim_server() as sim:
        keys = write_deployments(tmp_path / "deployments", sim.url, chat={"flow": str(flow)})
        kafka = kafka_for(settings.kafka.bootstrap_servers)
        async with running_gateway(tmp_path / "deployments", kafka, tmp_path / "spool") as gateway:
            async with gateway.session.post(gateway.score_url("chat"), json={"question": gate},
                                            headers={"api-key": keys["chat"]}) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["answer"] == "first last"
            spans = [s for s in gateway.spans.get_finished_spans() if s.name == "execute_tool stream_answer"]
    [span] = spans
    assert [e for e in span.events if e.name == EVENT] == []
