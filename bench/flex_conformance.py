"""Conformance over prompt flow's example flex flows (``examples/flex-flows``), for
bench/flow_conformance.py (``--flex-flows PATH``).

Each example is run as a deployment runs it: loaded (flow.flex.yaml's entry imported), its class
built with the example's own ``init.json`` (else its ``sample.init``), called with its
``sample.json`` (else flow.flex.yaml's ``sample.inputs``, else the first row of ``data.jsonl``),
then streamed. The connection the examples name, ``open_ai_connection``, is an Azure OpenAI
connection to llmsim; examples that read the endpoint from the environment (as their ``run.yml``
maps it from that connection) get llmsim's.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from shared.deployments.connections import load_connections_file
from shared.flow import load_flow
from shared.flow.flex_executor import FlexExecutor

# No flow.flex.yaml: the entry its README tests (`pf flow test --flow flow:chat` writes the file).
ENTRY_WITHOUT_YAML = {"chat-with-functions": "flow:chat"}
API_VERSION = "2024-10-21"


def connections_yaml(root: str) -> str:
    return yaml.safe_dump({"connections": {
        "open_ai_connection": {"type": "azure_openai", "azure_endpoint": root, "api_version": API_VERSION,
                               "api_key_env": "PROMPTPULSE_CONFORMANCE_KEY"},
        "my_llm_connection": {"type": "custom", "configs": {"azure_endpoint": root},
                              "secrets_env": {"openai_api_key": "PROMPTPULSE_CONFORMANCE_KEY"}},
    }})


def environment(root: str) -> dict[str, str]:
    """What the examples' run.yml files map from open_ai_connection, pointed at llmsim."""
    return {"AZURE_OPENAI_API_KEY": "not-a-real-key", "AZURE_OPENAI_ENDPOINT": root,
            "OPENAI_API_VERSION": API_VERSION, "PROMPTPULSE_CONFORMANCE_KEY": "not-a-real-key"}


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _inputs(folder: Path) -> dict[str, Any]:
    sample = _read_json(folder / "sample.json")
    if isinstance(sample, dict):
        return sample
    flow_file = folder / "flow.flex.yaml"
    data = yaml.safe_load(flow_file.read_text(encoding="utf-8")) if flow_file.is_file() else None
    inputs = (data.get("sample") or {}).get("inputs") if isinstance(data, dict) else None
    if isinstance(inputs, dict):
        return inputs
    rows = folder / "data.jsonl"
    for line in rows.read_text(encoding="utf-8").splitlines() if rows.is_file() else []:
        if line.strip():
            return dict(json.loads(line))
    return {}


def _calls_a_model(folder: Path) -> bool:
    return any(word in path.read_text(encoding="utf-8", errors="replace")
               for path in folder.glob("*.py") for word in ("openai", "Prompty", "ChatOpenAI"))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__)[:300]


async def check_flex(folder: Path, connections: dict[str, Any], row: Any) -> None:
    """Fill ``row`` (loads, runs, streams, llm_calls, reason) for one example folder."""
    try:
        flow = load_flow(folder)
    except Exception as exc:  # a conformance report lists every failure and goes on
        row.loads, row.reason = "no", _short(exc)
        return
    row.loads = "yes"
    init = _read_json(folder / "init.json")
    try:
        executor = FlexExecutor(flow, {"default": init}, connections=connections)
    except Exception as exc:
        row.runs, row.reason = "no", _short(exc)
        return
    inputs = _inputs(folder)
    try:
        result = await executor.run(inputs)
    except Exception as exc:
        row.runs, row.reason = "no", _short(exc)
        return
    row.runs = "yes"
    models = _calls_a_model(folder)
    row.llm_calls = f"yes ({len(result.llm_calls)})" if result.llm_calls else ("no" if models else "n/a (no model)")
    if models and not result.llm_calls:
        row.reason = "the flow calls a model but no LLM call was seen"
    try:
        deltas = 0
        async with executor.stream(inputs) as stream:
            async for _ in stream:
                deltas += 1
        row.streams = f"yes ({deltas} chunks)" if deltas > 1 else "n/a (returns one value)"
    except Exception as exc:
        row.streams, row.reason = "no", row.reason or _short(exc)


async def flex_rows(examples: Path, host: str, port: int, row_type: Any) -> list[Any]:
    """One row per folder of ``examples`` (a copy of examples/flex-flows), llmsim at host:port."""
    root = f"http://{host}:{port}"
    folders = sorted(p for p in examples.iterdir() if p.is_dir())  # noqa: ASYNC240 - a bench, once
    rows: list[Any] = []
    with tempfile.TemporaryDirectory() as scratch:
        file = Path(scratch) / "connections.yaml"
        file.write_text(connections_yaml(root))
        saved = {k: os.environ.get(k) for k in environment(root)}
        os.environ.update(environment(root))
        try:
            connections = load_connections_file(file)
            for folder in folders:
                row = row_type(f"flex-flows/{folder.name}")
                rows.append(row)
                if folder.name in ENTRY_WITHOUT_YAML:
                    copy = Path(scratch) / folder.name
                    shutil.copytree(folder, copy)
                    (copy / "flow.flex.yaml").write_text(f"entry: {ENTRY_WITHOUT_YAML[folder.name]}\n")
                    folder = copy
                await check_flex(folder, connections, row)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    return rows


def flex_markdown(rows: list[Any]) -> str:
    lines = ["| flow | loads | runs | streams | LLM calls seen | reason when not |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.flow} | {r.loads} | {r.runs} | {r.streams} | {r.llm_calls} | "
              f"{r.reason.replace('|', chr(92) + '|')[:220]} |" for r in rows]
    passing = [r for r in rows if r.loads == r.runs == "yes" and not r.streams.startswith("no")
               and not r.llm_calls.startswith("no")]
    lines += ["", f"{len(passing)} of {len(rows)} example flex flows pass."]
    return "\n".join(lines)
