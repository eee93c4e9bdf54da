"""A Python node that returns a generator (sync or async) streams live when it feeds the streamed
output: its first item reaches the stream before the generator has produced its last."""

from __future__ import annotations

import asyncio
import textwrap
import threading
from pathlib import Path

import pytest

from shared.flow import FlowExecutor, load_flow
from tests.support import node_gates

# As prompt flow writes a chat flow whose Python node streams (its "stream" tool examples).
DAG = """\
inputs:
  question:
    type: string
    is_chat_input: true
  chat_history:
    type: list
    default: []
  gate:
    type: string
outputs:
  answer:
    type: string
    reference: ${echo.output}
    is_chat_output: true
nodes:
- name: echo
  type: python
  source:
    type: code
    path: echo.py
  inputs:
    question: ${inputs.question}
    gate: ${inputs.gate}
"""

SYNC_TOOL = """\
from promptflow.core import tool

from tests.support.node_gates import GIVE_UP_SECONDS, THREAD_GATES


@tool
def echo(question: str, gate: str):
    yield "first "
    if not THREAD_GATES[gate].wait(GIVE_UP_SECONDS):
        yield "[the test never opened the gate] "
    yield "last"
"""

ASYNC_TOOL = """\
import asyncio

from promptflow import tool

from tests.support.node_gates import ASYNC_GATES, GIVE_UP_SECONDS


@tool
async def echo(question: str, gate: str):
    yield "first "
    try:
        await asyncio.wait_for(ASYNC_GATES[gate].wait(), GIVE_UP_SECONDS)
    except TimeoutError:
        yield "[the test never opened the gate] "
    yield "last"
"""


def _flow(folder: Path, tool: str) -> Path:
    folder.mkdir()
    (folder / "flow.dag.yaml").write_text(DAG)
    (folder / "echo.py").write_text(textwrap.dedent(tool))
    return folder


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_generator_nodes_first_item_streams_before_its_last_is_made(tmp_path: Path, kind: str) -> None:
    gate = f"{kind}-{tmp_path.name}"
    opened: threading.Event | asyncio.Event
    if kind == "sync":
        opened = node_gates.THREAD_GATES[gate] = threading.Event()
    else:
        opened = node_gates.ASYNC_GATES[gate] = asyncio.Event()
    executor = FlowExecutor(load_flow(_flow(tmp_path / "flow", SYNC_TOOL if kind == "sync" else ASYNC_TOOL)), {})
    async with executor.stream({"question": "q", "gate": gate}) as stream:
        first = await anext(stream)
        opened.set()
        rest = [delta async for delta in stream]
        result = await stream.result()
    assert (first, rest) == ("first ", ["last"])
    assert result.outputs["answer"] == "first last"
    assert result.time_to_first_token_ms is not None


async def test_a_generator_node_not_streamed_gives_its_items_joined(tmp_path: Path) -> None:
    gate = f"joined-{tmp_path.name}"
    node_gates.THREAD_GATES[gate] = threading.Event()
    node_gates.THREAD_GATES[gate].set()
    executor = FlowExecutor(load_flow(_flow(tmp_path / "flow", SYNC_TOOL)), {})
    result = await executor.run({"question": "q", "gate": gate})
    assert result.outputs["answer"] == "first last"
