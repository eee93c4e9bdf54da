"""Conformance of PromptPulse's flow runtime over prompt flow's public example flows.

    python bench/flow_conformance.py PATH/TO/promptflow/examples/flows [--markdown OUT.md]
    python bench/flow_conformance.py --flex-flows PATH/TO/promptflow/examples/flex-flows

PATH is a local copy of the ``examples/flows`` folder of prompt flow's public repository (never
committed here). For every flow in ``standard/``, ``chat/`` and ``evaluation/`` that needs no
internet and no Azure-only tool, it reports whether the flow loads, runs, streams and shows its
LLM calls, with the reason when not; the others are listed with why they were left out. Models
are llmsim (in this process, on 127.0.0.1), so it runs offline. Flows whose requirements are
missing say so: `promptpulse flows install FLOW_FOLDER` installs them, constrained to our pins.
The table in docs/flows.md ("Conformance") is this script's output.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import sys
import tempfile
import threading
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiohttp import web  # noqa: E402

from services.llmsim.app import create_app  # noqa: E402
from services.llmsim.settings import LatencyModel, LlmsimSection  # noqa: E402
from shared.deployments.connections import load_connections_file  # noqa: E402
from shared.flow import FlowExecutor, load_flow  # noqa: E402
from shared.flow.clients import build_clients, close_clients  # noqa: E402
from shared.flow.loader import flow_connections  # noqa: E402

GROUPS = ("standard", "chat", "evaluation")
# Read in each flow's code: what it needs that an offline machine cannot give it. These are
# loaded (that needs nothing from outside) but not run.
NOT_RUN = {
    "standard/web-classification": "fetches the web page it classifies (internet)",
    "standard/autonomous-agent": "tiktoken downloads its encoding file on first use (internet)",
    "standard/flow-with-additional-includes": "its included web-classification nodes fetch a web page (internet)",
    "standard/flow-with-symlinks": "web-classification's nodes through symlinks (internet); run its create_symlinks.py first",
    "chat/chat-with-wikipedia": "searches and fetches Wikipedia (internet)",
    "chat/chat-with-pdf": "downloads the PDF it answers from (internet) and builds a FAISS index",
}
# Not even loaded: a tool only Azure has.
LEFT_OUT = {
    "chat/promptflow-copilot": "looks documents up with promptflow_vectordb (an Azure AI Search index)",
}
# Inputs the sample data gives as a web address, replaced by the same kind of value offline.
PNG_1X1 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5E"
           "rkJggg==")
OFFLINE_INPUTS = {"standard/describe-image": {"input_image": {"data:image/png;base64": PNG_1X1}}}
INSTANT = LatencyModel(ttft_ms=0, tokens_per_second=1_000_000, jitter=0)


@dataclass
class Row:
    flow: str
    loads: str = "-"
    runs: str = "-"
    streams: str = "-"
    llm_calls: str = "-"
    reason: str = ""


def _connections_yaml(base_url: str) -> str:
    # Every connection name the examples use, pointed at llmsim.
    openai_like = ("open_ai_connection", "azure_open_ai_connection", "aoai_gpt4v_connection", "gpt4v_connection")
    lines = ["connections:"]
    for name in openai_like:
        lines += [f"  {name}:", "    type: openai_compatible", f"    base_url: {base_url}/v1", "    api_key: none"]
    # The examples' custom connections hold an Azure OpenAI endpoint (its root, no /v1) in api_base.
    for name in ("basic_custom_connection", "custom_connection"):
        lines += [f"  {name}:", "    type: custom", "    configs: {api_base: " + base_url + "}",
                  "    secrets_env: {api_key: PROMPTPULSE_CONFORMANCE_KEY}"]
    return "\n".join(lines) + "\n"


def _first_row(folder: Path, flow: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    data = folder / "data.jsonl"
    if data.is_file():
        for line in data.read_text(encoding="utf-8").splitlines():
            if line.strip():
                values = json.loads(line)
                break
    inputs: dict[str, Any] = {}
    for name, spec in flow.inputs.items():
        if name in values:
            inputs[name] = values[name]
        elif getattr(spec, "default", None) is None or repr(spec.default) == "MISSING":
            inputs[name] = [] if spec.type == "list" else {} if spec.type == "object" else "sample"
    return inputs


def _calls_a_model(folder: Path, flow: Any) -> bool:
    if flow_connections(flow):
        return True
    return any("openai" in path.read_text(encoding="utf-8", errors="replace").lower() for path in folder.glob("*.py"))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__)[:300]


async def _check(folder: Path, name: str, connections: dict[str, Any], row: Row) -> None:
    try:
        flow = load_flow(folder, connections=set(connections))
    except Exception as exc:  # a conformance report lists every failure and goes on
        row.loads, row.reason = "no", _short(exc)
        return
    row.loads = "yes"
    if name in NOT_RUN:
        row.runs = row.streams = row.llm_calls = "not run"
        row.reason = "not run: " + NOT_RUN[name]
        return
    clients = build_clients(connections, flow_connections(flow))
    try:
        kwargs: dict[str, Any] = {}
        if "connections" in inspect.signature(FlowExecutor).parameters:
            kwargs["connections"] = connections
        try:
            executor = FlowExecutor(flow, clients, **kwargs)
        except Exception as exc:  # e.g. a Python node's connection of another type than its parameter
            row.runs, row.reason = "no", _short(exc)
            return
        inputs = {**_first_row(folder, flow), **OFFLINE_INPUTS.get(name, {})}
        try:
            result = await executor.run(inputs)
        except Exception as exc:
            row.runs, row.reason = "no", _short(exc)
            return
        row.runs = "yes"
        models = _calls_a_model(folder, flow)
        row.llm_calls = f"yes ({len(result.llm_calls)})" if result.llm_calls else ("no" if models else "n/a (no model)")
        if models and not result.llm_calls:
            row.reason = "the flow calls a model but no LLM call was seen"
        try:
            stream = executor.stream(inputs)
            deltas = 0
            async for _ in stream:
                deltas += 1
            row.streams = f"yes ({deltas} chunks)" if deltas > 1 else "n/a (no streamed output)"
        except Exception as exc:
            row.streams, row.reason = "no", row.reason or _short(exc)
    finally:
        await close_clients(clients)


@asynccontextmanager
async def _llmsim() -> AsyncIterator[tuple[str, int]]:
    """llmsim in this process on 127.0.0.1, on an event loop of its own thread: (host, port).

    Its own loop because example code may make a blocking call from async code (flex-flows'
    chat-async-stream calls a sync Prompty inside an async entry, as prompt flow lets it): on the
    bench's loop, llmsim could then never answer.
    """
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="llmsim", daemon=True)
    thread.start()

    async def start() -> web.AppRunner:
        runner = web.AppRunner(create_app(LlmsimSection(port=0, seed=7, latency=INSTANT)))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    runner = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(start(), loop))
    try:
        yield runner.addresses[0][:2]
    finally:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(runner.cleanup(), loop))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


async def _main(examples: Path) -> list[Row]:
    rows: list[Row] = []
    async with _llmsim() as (host, port):
        with tempfile.TemporaryDirectory() as scratch:
            file = Path(scratch) / "connections.yaml"
            file.write_text(_connections_yaml(f"http://{host}:{port}"))
            import os

            # Examples that read model settings from the environment (standard/basic) get llmsim's.
            for variable, value in {
                "PROMPTPULSE_CONFORMANCE_KEY": "not-a-real-key",
                "AZURE_OPENAI_API_KEY": "not-a-real-key",
                "AZURE_OPENAI_API_BASE": f"http://{host}:{port}",
                "OPENAI_API_KEY": "not-a-real-key",
                "OPENAI_BASE_URL": f"http://{host}:{port}/v1",
            }.items():
                os.environ.setdefault(variable, value)
            try:
                connections = load_connections_file(file)
            except Exception:  # a runtime without the custom type: the openai ones only
                file.write_text(_connections_yaml(f"http://{host}:{port}").split("  basic_custom_connection")[0])
                connections = load_connections_file(file)
            for group in GROUPS:
                for folder in sorted((examples / group).iterdir()):
                    if not (folder / "flow.dag.yaml").is_file():
                        continue  # the -maf folders are Agent Framework ports, not flows
                    name = f"{group}/{folder.name}"
                    row = Row(name)
                    rows.append(row)
                    if name in LEFT_OUT:
                        row.reason = "left out: " + LEFT_OUT[name]
                        continue
                    try:
                        await _check(folder, name, connections, row)
                    except Exception as exc:
                        row.reason = "checker failed: " + _short(exc)
                        traceback.print_exc()
    return rows


def markdown(rows: list[Row]) -> str:
    lines = ["| flow | loads | runs | streams | LLM calls seen | reason when not |", "|---|---|---|---|---|---|"]
    def cell(text: str) -> str:  # a reason quotes paths and errors: keep the table a table
        text = text.replace("|", "\\|").replace(str(Path.home()), "~")
        return text if len(text) <= 220 else text[:219] + "…"

    lines += [f"| {r.flow} | {r.loads} | {r.runs} | {r.streams} | {r.llm_calls} | {cell(r.reason)} |" for r in rows]
    checked = [r for r in rows if r.flow not in NOT_RUN and r.flow not in LEFT_OUT]
    passing = [r for r in checked if r.loads == r.runs == "yes" and not r.streams.startswith("no")
               and not r.llm_calls.startswith("no")]
    load_only = [r for r in rows if r.flow in NOT_RUN]
    lines.append("")
    lines.append(
        f"{len(passing)} of {len(checked)} runnable flows pass; {sum(r.loads == 'yes' for r in load_only)} of "
        f"{len(load_only)} that need the internet load; {len(rows) - len(checked) - len(load_only)} left out."
    )
    return "\n".join(lines)


async def _flex(examples: Path) -> list[Row]:
    from bench.flex_conformance import flex_rows

    async with _llmsim() as (host, port):
        return await flex_rows(examples, host, port, Row)


async def _prompty(examples: Path) -> list[Row]:
    from bench.prompty_conformance import prompty_rows

    async with _llmsim() as (host, port):
        return await prompty_rows(examples, host, port, Row)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("examples", type=Path, nargs="?", help="a local copy of prompt flow's examples/flows folder")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--flex-flows", type=Path, help="a local copy of examples/flex-flows: its own table")
    parser.add_argument("--prompty", type=Path, help="a local copy of examples/prompty: its own table")
    args = parser.parse_args()
    if args.prompty is not None:
        from bench.prompty_conformance import prompty_markdown

        print(prompty_markdown(asyncio.run(_prompty(args.prompty))))
    if args.flex_flows is not None:
        from bench.flex_conformance import flex_markdown

        flex = asyncio.run(_flex(args.flex_flows))
        for row in flex:  # named by their place in examples/, not this machine's path
            row.reason = row.reason.replace(f"{args.flex_flows.resolve()}/", "").replace(str(Path.home()), "~")
        print(flex_markdown(flex))
    if args.examples is None:
        return 0
    rows = asyncio.run(_main(args.examples))
    for row in rows:  # the table names flows by their place in examples/flows, not this machine's path
        row.reason = row.reason.replace(f"{args.examples.resolve()}/", "").replace(f"{args.examples}/", "")
    table = markdown(rows)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
