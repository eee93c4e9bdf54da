"""print and logging inside a Python node land in that node's span, with the request id, bounded
and redacted; two concurrent requests whose nodes print interleaved keep their lines apart."""

from __future__ import annotations

import asyncio
import logging
import textwrap
import threading
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.flow import FlowExecutor, load_flow
from shared.flow.node_output import DROPPED, EVENT, MAX_LINES
from tests.support import node_gates

# Two nodes per flow: a sync one (worker thread) and an async one, both printing and logging.
DAG = """\
inputs:
  who:
    type: string
  gate:
    type: string
outputs:
  sync_said:
    type: string
    reference: ${talk_sync.output}
  async_said:
    type: string
    reference: ${talk_async.output}
nodes:
- name: talk_sync
  type: python
  source:
    type: code
    path: talk_sync.py
  inputs:
    who: ${inputs.who}
    gate: ${inputs.gate}
- name: talk_async
  type: python
  source:
    type: code
    path: talk_async.py
  inputs:
    who: ${inputs.who}
"""

TALK_SYNC = """\
import logging
import sys

from promptflow import tool

from tests.support.node_gates import GIVE_UP_SECONDS, THREAD_GATES

log = logging.getLogger("flow.talk")


@tool
def talk(who: str, gate: str) -> str:
    print(f"hello from {who}")
    # Both requests are inside this node at once: each waits until the other has printed too.
    THREAD_GATES[f"{gate}-{who}"].set()
    other = "b" if who == "a" else "a"
    THREAD_GATES[f"{gate}-{other}"].wait(GIVE_UP_SECONDS)
    print(f"key sk-proj-abcdefghijklmnopqrstuvwxyz0123456789 seen by {who}", file=sys.stderr)
    log.warning("warned by %s with password=hunter2", who)
    return who
"""

TALK_ASYNC = """\
import asyncio

from promptflow import tool


@tool
async def talk(who: str) -> str:
    print(f"async {who} one")
    await asyncio.sleep(0)
    print(f"async {who} two", end="")
    return who
"""


def _executor(folder: Path, exporter: InMemorySpanExporter, **options: object) -> FlowExecutor:
    folder.mkdir()
    (folder / "flow.dag.yaml").write_text(DAG)
    (folder / "talk_sync.py").write_text(TALK_SYNC)
    (folder / "talk_async.py").write_text(TALK_ASYNC)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return FlowExecutor(load_flow(folder), {}, tracer_provider=provider, **options)  # type: ignore[arg-type]


def _lines(exporter: InMemorySpanExporter) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(node, request id) -> [(stream, text)] of every captured line."""
    found: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for span in exporter.get_finished_spans():
        for event in span.events:
            if event.name == EVENT:
                key = (span.name, event.attributes["promptpulse.request_id"])
                found.setdefault(key, []).append((event.attributes["promptpulse.output.stream"],
                                                  event.attributes["promptpulse.output.text"]))
    return found


async def test_two_concurrent_requests_prints_stay_in_their_own_node_spans(tmp_path: Path, capsys) -> None:
    gate = f"print-{tmp_path.name}"
    for who in ("a", "b"):
        node_gates.THREAD_GATES[f"{gate}-{who}"] = threading.Event()
    exporter = InMemorySpanExporter()
    executor = _executor(tmp_path / "flow", exporter)
    logging.getLogger("flow.talk").setLevel(logging.WARNING)
    await asyncio.gather(
        executor.run({"who": "a", "gate": gate}, request_id="req-a"),
        executor.run({"who": "b", "gate": gate}, request_id="req-b"),
    )
    lines = _lines(exporter)
    for who in ("a", "b"):
        assert lines[("execute_tool talk_sync", f"req-{who}")] == [
            ("stdout", f"hello from {who}"),
            ("stderr", f"key [REDACTED] seen by {who}"),
            ("log", f"warned by {who} with password=[REDACTED]"),
        ]
        assert lines[("execute_tool talk_async", f"req-{who}")] == [
            ("stdout", f"async {who} one"), ("stdout", f"async {who} two")]
    assert set(lines) == {(f"execute_tool {n}", f"req-{w}") for n in ("talk_sync", "talk_async") for w in "ab"}
    out, err = capsys.readouterr()
    assert "hello from" not in out and "seen by" not in err  # captured, not printed


async def test_captured_output_is_bounded_and_can_be_turned_off(tmp_path: Path, capsys) -> None:
    exporter = InMemorySpanExporter()
    folder = tmp_path / "loud"
    folder.mkdir()
    (folder / "flow.dag.yaml").write_text(
        "inputs: {}\noutputs:\n  o:\n    type: string\n    reference: ${loud.output}\n"
        "nodes:\n- name: loud\n  type: python\n  source: {type: code, path: loud.py}\n  inputs: {}\n")
    (folder / "loud.py").write_text(textwrap.dedent("""\
        from promptflow import tool


        @tool
        def loud() -> str:
            for i in range(500):
                print("line", i)
            return "done"
        """))
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    await FlowExecutor(load_flow(folder), {}, tracer_provider=provider).run({}, request_id="r1")
    [span] = [s for s in exporter.get_finished_spans() if s.name == "execute_tool loud"]
    assert len([e for e in span.events if e.name == EVENT]) == MAX_LINES
    assert span.attributes[DROPPED] == 500 - MAX_LINES
    exporter.clear()
    await FlowExecutor(load_flow(folder), {}, tracer_provider=provider, capture_output=False).run({})
    [span] = [s for s in exporter.get_finished_spans() if s.name == "execute_tool loud"]
    assert not [e for e in span.events if e.name == EVENT]
    assert "line 499" in capsys.readouterr().out
