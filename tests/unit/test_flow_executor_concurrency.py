"""Running flows with a fake LLM client, independent nodes at once: two python nodes (sync and
async) or two llm nodes that each wait for the other both finish, and a failing node cancels its
running siblings."""

from __future__ import annotations

import asyncio
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.flow import (
    FlowExecutor,
    NodeExecutionError,
    load_flow,
)
from tests.support.flow_fakes import (
    CHAT_TEMPLATE,
    FakeChatClient,
    last_user_message,
    write_flow,
)


def parallel_flow(tmp_path: Path, kind: str) -> Path:
    nodes = ""
    for name in ("left", "right"):
        if kind == "llm":
            nodes += (f"- name: {name}\n  type: llm\n  source:\n    type: code\n    path: chat.jinja2\n"
                      f"  inputs:\n    model: m\n    question: {name}\n  connection: c\n  api: chat\n")
        else:
            nodes += (f"- name: {name}\n  type: python\n  source:\n    type: code\n    path: {kind}_wait.py\n"
                      f"  inputs:\n    label: {name}\n")
    dag = ("inputs: {}\noutputs:\n  joined:\n    type: string\n    reference: ${join.output}\nnodes:\n" + nodes
           + "- name: join\n  type: python\n  source:\n    type: code\n    path: join.py\n"
             "  inputs:\n    left: ${left.output}\n    right: ${right.output}\n")
    files = {
        "chat.jinja2": CHAT_TEMPLATE,
        "join.py": "from promptflow import tool\n\n@tool\ndef join(left: str, right: str) -> str:\n"
                   "    return left + '+' + right\n",
        # Each waits until the other has started: run one after the other, they would never finish.
        "sync_wait.py": "from promptflow import tool\nimport pp_flow_test_rendezvous as r\n\n@tool\n"
                        "def wait(label: str) -> str:\n    r.events.append('start ' + label)\n"
                        "    r.barrier.wait()\n    r.events.append('end ' + label)\n    return label\n",
        "async_wait.py": "from promptflow import tool\nimport pp_flow_test_rendezvous as r\n\n@tool\n"
                         "async def wait(label: str) -> str:\n    r.events.append('start ' + label)\n"
                         "    await r.async_barrier.wait()\n    r.events.append('end ' + label)\n    return label\n",
    }
    return write_flow(tmp_path / f"parallel_{kind}", dag, files)


@pytest.fixture
def rendezvous() -> Iterator[types.ModuleType]:
    module = types.ModuleType("pp_flow_test_rendezvous")
    module.events = []  # type: ignore[attr-defined]
    # The timeout only turns a broken scheduler's deadlock into a failure; nothing is timed.
    module.barrier = threading.Barrier(2, timeout=10)  # type: ignore[attr-defined]
    module.async_barrier = asyncio.Barrier(2)  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_independent_python_nodes_overlap(tmp_path: Path, rendezvous: types.ModuleType, kind: str) -> None:
    executor = FlowExecutor(load_flow(parallel_flow(tmp_path, kind)), {})
    result = await asyncio.wait_for(executor.run({}), timeout=20)
    assert result.outputs == {"joined": "left+right"}
    events: list[str] = rendezvous.events  # type: ignore[attr-defined]
    assert sorted(events[:2]) == ["start left", "start right"], events


async def test_independent_llm_nodes_overlap(tmp_path: Path) -> None:
    events: list[str] = []
    barrier = asyncio.Barrier(2)

    async def both_in_flight(request: dict[str, Any]) -> None:
        label = last_user_message(request)
        events.append(f"start {label}")
        await barrier.wait()
        events.append(f"end {label}")

    client = FakeChatClient(last_user_message, before_answer=both_in_flight)
    executor = FlowExecutor(load_flow(parallel_flow(tmp_path, "llm")), {"c": client})
    result = await asyncio.wait_for(executor.run({}), timeout=20)
    assert result.outputs == {"joined": "left+right"}
    assert sorted(events[:2]) == ["start left", "start right"], events
    assert sorted(c.node for c in result.llm_calls) == ["left", "right"]


async def test_a_failing_node_cancels_its_running_siblings(tmp_path: Path, rendezvous: types.ModuleType) -> None:
    started = asyncio.Event()
    rendezvous.llm_started = started  # type: ignore[attr-defined]
    cancelled = asyncio.Event()

    async def hold(request: dict[str, Any]) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    dag = ("inputs: {}\noutputs:\n  a:\n    type: string\n    reference: ${slow.output}\nnodes:\n"
           "- name: slow\n  type: llm\n  source:\n    type: code\n    path: chat.jinja2\n"
           "  inputs:\n    model: m\n    question: q\n  connection: c\n  api: chat\n"
           "- name: broken\n  type: python\n  source:\n    type: code\n    path: broken.py\n  inputs: {}\n")
    # The failing node waits until the LLM call is in flight, so there is a call to cancel.
    files = {"chat.jinja2": CHAT_TEMPLATE,
             "broken.py": "from promptflow import tool\nimport pp_flow_test_rendezvous as r\n\n@tool\n"
                          "async def broken():\n    await r.llm_started.wait()\n    raise KeyError('missing')\n"}
    client = FakeChatClient(before_answer=hold)
    executor = FlowExecutor(load_flow(write_flow(tmp_path / "fail", dag, files)), {"c": client})
    with pytest.raises(NodeExecutionError) as caught:
        await asyncio.wait_for(executor.run({}), timeout=20)
    assert (caught.value.node, caught.value.error_type) == ("broken", "KeyError")
    assert cancelled.is_set()
