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
import asyncpg
import pytest

from services.aggregator.settings import AggregatorSection, AggregatorSettings
from tests.support.aggregator import wait_caught_up
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
from tests.support.prometheus_text import total

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


async def gateway_handed_everything_to_kafka(stack: LiveStack) -> bool:
    """Every event the gateway queued (span records here) is acknowledged by Kafka or counted
    as dropped: nothing it accepted is still on its way to the topic."""
    async with aiohttp.ClientSession() as session, session.get(f"{stack.gateway.url}/metrics") as resp:
        text = await resp.text()
    settled = sum(total(text, f"promptpulse_gateway_{name}")
                  for name in ("events_sent_total", "events_lost_total", "token_chunks_dropped_total"))
    return total(text, "promptpulse_gateway_events_queued_total") == settled


async def untied_or_unpublished(stack: LiveStack, trace_ids: list[str]) -> int:
    """Stored OTLP spans of ``trace_ids`` not yet tied to a request, plus derived events not yet
    on the inference topic: 0 once the assembler decided every stored span and sent the outbox."""
    conn = await asyncpg.connect(stack.database_url, timeout=10)
    try:
        return await conn.fetchval(
            "SELECT (SELECT count(*) FROM spans WHERE trace_id = ANY($1::text[])"
            "        AND attributes ? 'promptpulse.ingest' AND request_id IS NULL)"
            "     + (SELECT count(*) FROM otlp_outbox WHERE published_at IS NULL)",
            trace_ids,
        )
    finally:
        await conn.close()


async def pipeline_past(stack: LiveStack, trace_ids: list[str]) -> None:
    """Until the pipeline has moved past every span sent so far for ``trace_ids``: the gateway
    handed them to Kafka, the aggregator stored the topics up to their ends (a re-sent export
    included), the assembler tied every stored span to a request and sent the derived events,
    and the aggregator stored those too. A request counted twice would be in the database now."""
    await stack.wait_for(lambda: gateway_handed_everything_to_kafka(stack), 60, "the gateway's queue sent")
    settings = AggregatorSettings(
        database_url=stack.database_url, kafka=stack.kafka,
        aggregator=AggregatorSection(group_id=stack.aggregator.env["PROMPTPULSE_AGGREGATOR__GROUP_ID"]),
    )
    await wait_caught_up(settings)

    async def decided() -> bool:
        return await untied_or_unpublished(stack, trace_ids) == 0

    await stack.wait_for(decided, 90, "every stored span tied to a request and the outbox sent")
    await wait_caught_up(settings)


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

        await stack.wait_for(judged, 120, "the app's calls derived, stored and judged")
        await pipeline_past(stack, trace_ids)  # anything counted twice is stored by now
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


async def stored_spans(stack: LiveStack, trace_id: str, count: int) -> bool:
    conn = await asyncpg.connect(stack.database_url, timeout=10)
    try:
        return await conn.fetchval("SELECT count(*) FROM spans WHERE trace_id = $1", trace_id) == count
    finally:
        await conn.close()


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
        agent_trace = format(spans[0].context.trace_id, "032x")
        await post_export(stack, export_bytes(children))  # the calls end first, exported first
        await stack.wait_for(lambda: stored_spans(stack, agent_trace, len(children)), 60, "the children stored")
        # Exported after the children were stored, so the assembler pass that decides these
        # complete traces has the children's trace pending too, and reads it first (oldest).
        others = App(service="older-apps")
        prompt_events_chat(others)
        flattened_chat(others)
        openinference_chat(others)
        other_traces = sorted({format(s.context.trace_id, "032x") for s in others.spans()})
        await post_export(stack, export_json(others.spans()), "application/json")
        await pipeline_past(stack, other_traces)
        # The children alone, read by that pass at least, became no request.
        assert await untied_or_unpublished(stack, [agent_trace]) == len(children)
        await post_export(stack, export_bytes(root))
        await post_export(stack, export_bytes(root))  # re-sent

        trace_ids = sorted({agent_trace, *other_traces})
        await pipeline_past(stack, trace_ids)
        rows = await otlp_requests(stack, trace_ids)
        assert len(rows) == 4
        assert all(row["inputs"]["question"] == QUESTION for row in rows)
        [agent] = [row for row in rows if row["trace_id"] == agent_trace]
        # the agent's two chat calls (40+8, 30+12), not the agent's own total on top
        assert agent["response"]["tokens"]["total"] == 90
