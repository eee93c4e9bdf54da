"""An application that calls the PromptPulse proxy *and* exports its own spans over OTLP: each
call is counted once, its tokens once, and the app's spans and the proxy's share one trace.

The application (tests/support/otlp_app_main.py) is its own process: the official ``openai``
SDK pointed at the proxy, OpenTelemetry's openai-v2 instrumentation, its httpx instrumentation
(which injects ``traceparent``, so the gateway's server span is a child of the app's HTTP span)
and the OTLP/HTTP exporter to the same gateway with the same key; against the whole stack as
real processes (gateway, processor, aggregator, llmsim, Kafka, PostgreSQL).
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
import yaml

from shared.apikeys import new_api_key_record
from tests.support.live_stack import REPO, LiveStack, StackOptions, live_stack

pytestmark = pytest.mark.integration

CALLS = 3
SETTLE_SECONDS = 4
DEPLOYMENT = "assistant"


def proxy_deployment(key_record: dict[str, Any]) -> str:
    return yaml.safe_dump({
        "name": DEPLOYMENT, "type": "proxy", "proxy": {"connection": "llmsim"},
        "api_keys": [key_record],
        "evaluation": {"metrics": ["relevance"], "sampling_rate": 1.0,
                       "judge": {"connection": "llmsim", "model": "llmsim-judge"}},
        "monitors": [],
    }, sort_keys=False)


async def run_app(stack: LiveStack, key: str, *extra: str) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.otlp_app_main", "--gateway", stack.gateway.url, "--key", key,
        "--llm", stack.gateway.url, "--http-spans", *extra,
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()[-3000:]
    return json.loads(out.decode().strip().splitlines()[-1])


async def requests_of(stack: LiveStack, trace_ids: list[str]) -> list[dict[str, Any]]:
    since = int(time.time()) - 3600
    body = await stack.api(f"/v1/deployments/{DEPLOYMENT}/requests?sampled=false&limit=100&from={since}")
    return [row for row in body["requests"] if row.get("trace_id") in trace_ids]


def app_spans(trace: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def walk(span: dict[str, Any]) -> None:
        out.append(span)
        for child in span["children"]:
            walk(child)

    for root in trace["roots"]:
        walk(root)
    return out


async def trace_of(stack: LiveStack, trace_id: str) -> dict[str, Any] | None:
    async with aiohttp.ClientSession() as session, session.get(
        f"{stack.aggregator.url}/v1/traces/{trace_id}", headers={"Authorization": f"Bearer {stack.read_key}"}
    ) as resp:
        if resp.status == 404:
            return None
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def settled_traces(stack: LiveStack, trace_ids: list[str], expected_spans: int,
                         exported: dict[str, int]) -> list[dict[str, Any]] | None:
    """The traces once every span the app exported (``exported``: per trace) is stored and was
    decided by the assembler (tied to a request): nothing of them is left to derive."""
    traces = [await trace_of(stack, trace_id) for trace_id in trace_ids]
    for trace in traces:
        if trace is None:
            return None
        spans = app_spans(trace)
        ours = [s for s in spans if s["attributes"].get("promptpulse.ingest") == "otlp"]
        if (len(spans) < expected_spans or len(ours) != exported[trace["trace_id"]]
                or any(s["request_id"] is None for s in ours)):
            return None
    return traces


@pytest.mark.timeout(300)
async def test_calls_through_the_proxy_exported_by_the_app_count_once_in_one_trace(tmp_path: Path) -> None:
    key, record = new_api_key_record(DEPLOYMENT)
    options = StackOptions(
        monitors=[],
        files={f"{DEPLOYMENT}.yaml": proxy_deployment(record.model_dump(mode="json", exclude_none=True))},
        env={"aggregator": {"PROMPTPULSE_AGGREGATOR__OTLP_SETTLE_SECONDS": str(SETTLE_SECONDS)}},
    )
    async with live_stack(tmp_path, options) as stack:
        # One trace per call: the openai-v2 chat span, httpx's POST span below it, and the
        # gateway's server and client spans below that.
        plain = await run_app(stack, key, "--calls", str(CALLS))
        assert len(plain["trace_ids"]) == CALLS
        # the proxy's answer named the app's trace: the proxy continued it
        assert sorted(call["trace_id"] for call in plain["calls"]) == plain["trace_ids"]
        # One trace: an invoke_agent span around two proxied calls.
        agent = await run_app(stack, key, "--calls", "2", "--agent")
        [agent_trace] = agent["trace_ids"]
        trace_ids = plain["trace_ids"] + [agent_trace]
        proxy_ids = [call["request_id"] for call in plain["calls"] + agent["calls"]]
        assert all(proxy_ids)

        exported = plain["spans"] | agent["spans"]
        traces = await stack.wait_for(lambda: settled_traces(stack, trace_ids, 4, exported), 90,
                                      "the app's spans stored beside the proxy's and decided")
        # Every app span is tied to a request: every root is decided, and what the assembler
        # derived is in otlp_requests (written with its events), whatever the ingest's lag.
        conn = await asyncpg.connect(stack.database_url, timeout=10)
        try:
            derived_ids = [row["request_id"] for row in await conn.fetch(
                "SELECT request_id FROM otlp_requests WHERE trace_id = ANY($1::text[])", trace_ids)]
        finally:
            await conn.close()
        assert len(derived_ids) == 1, derived_ids  # the agent run only: no call counted a second time

        async def stored() -> list[dict[str, Any]] | None:
            rows = await requests_of(stack, trace_ids)
            seen = {row["request_id"] for row in rows}
            return rows if seen >= {*proxy_ids, *derived_ids} else None

        rows = await stack.wait_for(stored, 60, "the proxy's requests and the derived one stored")
        proxied = [row for row in rows if row["request_id"] in proxy_ids]
        derived = [row for row in rows if row not in proxied]
        # exactly one request per call: the proxy's; and the agent run as a request of its own
        assert sorted(row["request_id"] for row in proxied) == sorted(proxy_ids)
        assert [row["trace_id"] for row in derived] == [agent_trace], derived
        [agent_request] = derived
        assert agent_request["response"]["status"] == "ok"
        # its calls went through the proxy: their tokens are the proxy requests', not again the agent's
        assert agent_request["response"]["tokens"]["total"] == 0
        assert all(row["response"]["tokens"]["total"] > 0 for row in proxied)

        tokens = sum(row["response"]["tokens"]["total"] for row in rows)

        async def rolled_up() -> dict[str, Any] | None:
            metrics = await stack.api(f"/v1/deployments/{DEPLOYMENT}/metrics?from={int(time.time()) - 3600}")
            return metrics if metrics["overview"]["requests"] >= CALLS + 2 + 1 else None

        metrics = await stack.wait_for(rolled_up, 60, "every stored request in the rollups")
        assert metrics["overview"]["requests"] == CALLS + 2 + 1
        assert metrics["overview"]["tokens"]["total"] == tokens  # each call's tokens counted once

        request_of = {call["trace_id"]: call["request_id"] for call in plain["calls"]}
        for trace in traces[:CALLS]:
            request_id = request_of[trace["trace_id"]]
            # app + proxy spans in one tree: the gateway's server span under the app's HTTP span
            [root] = trace["roots"]
            assert root["name"] == "chat llmsim-chat" and root["service"] == "parcel-support"
            spans = app_spans(trace)
            [server] = [s for s in spans if s["kind"] == "server"]
            [http] = [s for s in spans if s["span_id"] == server["parent_span_id"]]
            assert http["service"] == "parcel-support" and http["kind"] == "client"
            assert server["request_id"] == request_id and not server.get("orphan")
            # the app's spans show under the proxy's request
            ours = [s for s in spans if s["attributes"].get("promptpulse.ingest") == "otlp"]
            assert len(ours) == 2 and {s["request_id"] for s in ours} == {request_id}
