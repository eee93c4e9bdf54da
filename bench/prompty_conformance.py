"""Conformance over prompt flow's example prompty files (``examples/prompty``), for
bench/flow_conformance.py (``--prompty PATH``).

Each ``.prompty`` file is run two ways:

- as a deployment runs it (prompty/deployment.py): its flow built, run with the folder's
  ``sample.json`` (else the front matter's ``sample``, else the first row of ``data.jsonl``), then
  streamed. The examples name ``open_ai_connection`` (here an OpenAI-compatible connection to
  llmsim); one that names none (its endpoint is ``${env:...}``) gets it from the deployment's
  ``init``, as docs/flows.md tells a deployment to;
- from code, as flex flows call it: ``Prompty.load(source)`` with the same environment the
  examples' ``.env`` / ``run.yml`` give (pointed at llmsim), called with the same inputs in a
  worker thread; a streaming prompty's generator is read to its end.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from shared.deployments.connections import load_connections_file
from shared.flow import FlowExecutor, build_clients, flow_connections
from shared.flow.clients import close_clients
from shared.flow.prompty import Prompty, load_prompty, load_prompty_flow, provide_connections

CONNECTION = "open_ai_connection"
NAMES_A_CONNECTION = {"model": {"configuration": {"connection": CONNECTION}}}


def _connections_yaml(root: str) -> str:
    return yaml.safe_dump({"connections": {
        CONNECTION: {"type": "openai_compatible", "base_url": f"{root}/v1", "api_key": "none"}}})


def _environment(root: str) -> dict[str, str]:
    """What the examples' .env and run.yml give, pointed at llmsim (its Azure-style paths)."""
    return {"AZURE_OPENAI_API_KEY": "not-a-real-key", "AZURE_OPENAI_ENDPOINT": root,
            "OPENAI_API_VERSION": "2024-10-21"}


def _inputs(path: Path) -> dict[str, Any]:
    sample = path.parent / "sample.json"
    if sample.is_file():
        return dict(json.loads(sample.read_text(encoding="utf-8")))
    front = load_prompty(path).sample
    if front:
        return dict(front)
    rows = path.parent / "data.jsonl"
    for line in rows.read_text(encoding="utf-8").splitlines() if rows.is_file() else []:
        if line.strip():
            return dict(json.loads(line))
    return {}


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__)[:300]


async def _as_deployment(path: Path, connections: dict[str, Any], inputs: dict[str, Any], row: Any) -> None:
    try:
        names = load_prompty(path).model.config_value("connection")
        flow = load_prompty_flow({"default": (path, None if names else NAMES_A_CONNECTION)}, connections=connections)
    except Exception as exc:  # a conformance report lists every failure and goes on
        row.loads, row.reason = "no", _short(exc)
        return
    row.loads = "yes"
    clients = build_clients(connections, flow_connections(flow))
    try:
        executor = FlowExecutor(flow, clients, connections=connections)
        wanted = {k: v for k, v in inputs.items() if k in flow.inputs}  # as a client sends them
        try:
            result = await executor.run(wanted)
        except Exception as exc:
            row.runs, row.reason = "no", _short(exc)
            return
        row.runs = "yes"
        row.llm_calls = f"yes ({len(result.llm_calls)})" if result.llm_calls else "no"
        if not result.llm_calls:
            row.reason = "the prompty calls a model but no LLM call was seen"
        try:
            deltas = 0
            async with executor.stream(wanted) as stream:
                async for _ in stream:
                    deltas += 1
            row.streams = f"yes ({deltas} chunks)" if deltas > 1 else "n/a (a JSON or whole answer)"
        except Exception as exc:
            row.streams, row.reason = "no", row.reason or _short(exc)
    finally:
        await close_clients(clients)


def _from_code(path: Path, inputs: dict[str, Any]) -> str:
    try:
        prompty = Prompty.load(source=path)
        answer = prompty(**inputs)
        if hasattr(answer, "__next__"):
            return f"yes (a stream of {len(list(answer))} chunks)"
        kind = "the whole completion" if not isinstance(answer, str | dict) else type(answer).__name__
        return f"yes ({kind})"
    except Exception as exc:  # reported in the table
        return "no: " + _short(exc)


async def prompty_rows(examples: Path, host: str, port: int, row_type: Any) -> list[Any]:
    """One row per ``.prompty`` file under ``examples`` (a copy of examples/prompty)."""
    root = f"http://{host}:{port}"
    files = sorted(examples.glob("*/*.prompty"))  # noqa: ASYNC240 - a bench, once
    rows: list[Any] = []
    with tempfile.TemporaryDirectory() as scratch:
        file = Path(scratch) / "connections.yaml"
        file.write_text(_connections_yaml(root))
        connections = load_connections_file(file)
        saved = {k: os.environ.get(k) for k in _environment(root)}
        os.environ.update(_environment(root))
        provide_connections(connections)
        try:
            for path in files:
                row = row_type(f"prompty/{path.parent.name}/{path.name}")
                rows.append(row)
                try:
                    inputs = _inputs(path)
                except Exception as exc:
                    row.reason = "no inputs: " + _short(exc)
                    continue
                await _as_deployment(path, connections, inputs, row)
                row.from_code = await asyncio.to_thread(_from_code, path, inputs)
        finally:
            provide_connections(None)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    return rows


def prompty_markdown(rows: list[Any]) -> str:
    lines = ["| prompty | loads | runs | streams | LLM calls seen | from code (`Prompty.load`) | reason when not |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.flow} | {r.loads} | {r.runs} | {r.streams} | {r.llm_calls} | {getattr(r, 'from_code', '-')} | "
              f"{r.reason.replace('|', chr(92) + '|')[:220]} |" for r in rows]
    passing = [r for r in rows if r.loads == r.runs == "yes" and not r.streams.startswith("no")
               and not r.llm_calls.startswith("no") and getattr(r, "from_code", "").startswith("yes")]
    lines += ["", f"{len(passing)} of {len(rows)} example prompty files pass both ways."]
    return "\n".join(lines)
