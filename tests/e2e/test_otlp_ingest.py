"""An application instrumented with OpenTelemetry, exporting OTLP to PromptPulse, is watched
like a flow: its LLM calls become requests that are judged, counted and traced, once each.

The application (tests/support/otlp_app_main.py) is its own process using the official
``openai`` SDK, OpenTelemetry's openai-v2 instrumentation and its OTLP/HTTP exporter, against
the whole stack as real processes (gateway, processor, aggregator, llmsim, Kafka, PostgreSQL).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.live_stack import REPO, LiveStack, StackOptions, live_stack
from tests.support.otlp_apps import (
    QUESTION,
    App,
    agent_tree,
    export_bytes,
    export_json,
    flattened_chat,
    openinference_chat,
    prompt_events_chat,
)

pytestmark = pytest.mark.integration

CALLS = 3


async def run_app(stack: LiveStack, *, twice: bool) -> list[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.otlp_app_main", "--gateway", stack.gateway.url, "--key",
        stack.demo_key, "--llm", stack.llmsim.url, "--calls", str(CALLS), *(["--twice"] if twice else []),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()[-3000:]
    return json.loads(out.decode().strip().splitlines()[-1])["trace_ids"]


async def otlp_requests(stack: LiveStack, trace_ids: list[str]) -> list[dict[str, Any]]:
    since = int(time.time()) - 3600
    body = await stack.api(f"/v1/deployments/demo/requests?sampled=false&limit=100&from={since}")
    return [row for row in body["requests"] if row.get("trace_id") in trace_ids]


async def test_an_instrumented_app_s_calls_are_judged_counted_and_traced_once(tmp_path: Path) -> None:
    options = StackOptions(
        sampling_rate=1.0,
        monitors=[],
        env={"aggregator": {"PROMPTPULSE_AGGREGATOR__OTLP_SETTLE_SECONDS": "2"}},
    )
    async with live_stack(tmp_path, options) as stack:
        trace_ids = await run_app(stack, twice=True)  # every export sent twice
        assert len(trace_ids) == CALLS

        async def judged() -> list[dict[str, Any]] | None:
            rows = await otlp_requests(stack, trace_ids)
            done = [r for r in rows if r["response"] and r["evaluations"]]
            return rows if len(done) == CALLS else None

        rows = await stack.wait_for(judged, 120, "the app's calls derived, stored and judged")
        await asyncio.sleep(3)  # anything counted twice would have arrived by now
        rows = await otlp_requests(stack, trace_ids)
        assert len(rows) == CALLS  # once each, though every export came twice
        for row in rows:
            assert row["inputs"]["question"].startswith("When does parcel")
            assert row["inputs"]["context"] == "Parcels ship within two days."
            assert row["outputs"]["answer"]
            assert row["response"]["status"] == "ok"
            assert row["response"]["tokens"]["total"] > 0
            assert {e["metric"] for e in row["evaluations"]} >= {"relevance"}
            trace = await stack.api(f"/v1/traces/{row['trace_id']}")
            names = json.dumps(trace)
            assert "chat llmsim-chat" in names
            assert row["request_id"] in names  # the app's span is tied to its request

        metrics = await stack.api(f"/v1/deployments/demo/metrics?from={int(time.time()) - 3600}")
        assert metrics["overview"]["requests"] >= CALLS


async def post_export(stack: LiveStack, body: bytes, content_type: str = "application/x-protobuf") -> None:
    async with aiohttp.ClientSession() as session, session.post(
        f"{stack.gateway.url}/v1/traces", data=body,
        headers={"authorization": f"Bearer {stack.demo_key}", "content-type": content_type},
    ) as resp:
        assert resp.status == 200, await resp.text()


async def test_older_conventions_and_a_trace_split_children_first_count_once_each(tmp_path: Path) -> None:
    options = StackOptions(
        sampling_rate=1.0,
        monitors=[],
        env={"aggregator": {"PROMPTPULSE_AGGREGATOR__OTLP_SETTLE_SECONDS": "30"}},
    )
    async with live_stack(tmp_path, options) as stack:
        agent_app = App(service="agent-app")
        agent_tree(agent_app)
        spans = agent_app.spans()
        children = [span for span in spans if span.parent is not None]
        root = [span for span in spans if span.parent is None]
        await post_export(stack, export_bytes(children))  # the calls end first, exported first
        others = App(service="older-apps")
        prompt_events_chat(others)
        flattened_chat(others)
        openinference_chat(others)
        await post_export(stack, export_json(others.spans()), "application/json")
        await asyncio.sleep(3)  # the children alone must not become requests meanwhile
        await post_export(stack, export_bytes(root))
        await post_export(stack, export_bytes(root))  # re-sent

        trace_ids = sorted({format(s.context.trace_id, "032x") for s in spans + others.spans()})

        async def derived() -> list[dict[str, Any]] | None:
            rows = await otlp_requests(stack, trace_ids)
            return rows if len(rows) >= 4 and all(r["response"] for r in rows) else None

        rows = await stack.wait_for(derived, 90, "four requests derived")
        await asyncio.sleep(3)
        rows = await otlp_requests(stack, trace_ids)
        assert len(rows) == 4
        assert all(row["inputs"]["question"] == QUESTION for row in rows)
        agent_trace = format(spans[0].context.trace_id, "032x")
        [agent] = [row for row in rows if row["trace_id"] == agent_trace]
        # the agent's two chat calls (40+8, 30+12), not the agent's own total on top
        assert agent["response"]["tokens"]["total"] == 90
