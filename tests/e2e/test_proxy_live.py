"""An application on the official ``openai`` SDK, unchanged but for base URL and key, watched
through a proxy deployment on a live stack (llmsim, gateway, processor, aggregator as processes,
real Kafka and PostgreSQL): its requests appear in the query API with scores, tokens and traces,
and a monitor on its drifting variant fires.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import yaml

from services.demo.dataset import QUESTIONS
from shared.apikeys import new_api_key_record
from shared.events.messages import AlertState
from tests.e2e.test_demo import alerts_read
from tests.support.live_stack import LiveStack, StackOptions, live_stack

pytestmark = pytest.mark.integration

DRIFTING, HEALTHY = "drifting", "healthy"


def proxy_deployment(key_record: dict[str, Any]) -> str:
    return yaml.safe_dump({
        "name": "assistant", "type": "proxy", "proxy": {"connection": "llmsim"},
        "variants": [{"id": HEALTHY, "weight": 1}, {"id": DRIFTING, "weight": 1, "model": "llmsim-next"}],
        "api_keys": [key_record],
        "evaluation": {"metrics": ["relevance", "groundedness"], "sampling_rate": 1.0,
                       "judge": {"connection": "llmsim", "model": "llmsim-judge"}},
        "monitors": [{"id": f"assistant-relevance-{v}", "variant": v, "statistic": "average", "metric": "relevance",
                      "threshold": 3.5, "window": "1m", "cadence": "1m", "min_samples": 5}
                     for v in (HEALTHY, DRIFTING)],
    }, sort_keys=False)


async def stored(stack: LiveStack, request_id: str) -> dict[str, Any] | None:
    """The request as the query API has it, once ingested and judged (None before)."""
    async with aiohttp.ClientSession() as session, session.get(
            f"{stack.aggregator.url}/v1/requests/{request_id}",
            headers={"Authorization": f"Bearer {stack.read_key}"}) as resp:
        if resp.status == 404:
            return None
        assert resp.status == 200, await resp.text()
        found = await resp.json()
    return found if len(found.get("evaluations") or []) >= 2 else None


@pytest.mark.timeout(420)
async def test_an_openai_sdk_app_behind_the_proxy_is_judged_counted_traced_and_alerted(tmp_path: Path) -> None:
    key, record = new_api_key_record("assistant")
    options = StackOptions(
        monitors=[],  # the demo deployment stays quiet
        drift_schedule=[{"variant": DRIFTING, "level": 1.0, "after_seconds": 0}],
        files={"assistant.yaml": proxy_deployment(record.model_dump(mode="json", exclude_none=True))},
        env={"aggregator": {"PROMPTPULSE_AGGREGATOR__MONITORS__GRACE_SECONDS": "5",
                            "PROMPTPULSE_AGGREGATOR__MONITORS__TICK_SECONDS": "1"}},
    )
    async with live_stack(tmp_path, options) as stack, alerts_read(stack) as alerts:
        client = openai.AsyncOpenAI(base_url=f"{stack.gateway.url}/v1", api_key=key, max_retries=0)
        first: Any = None
        async with client:
            async def ask_for(seconds: float) -> None:
                nonlocal first
                loop = asyncio.get_running_loop()
                end, index = loop.time() + seconds, 0
                while loop.time() < end:
                    question = QUESTIONS[index % len(QUESTIONS)]
                    index += 1
                    messages = [{"role": "system", "content": question.context},
                                {"role": "user", "content": question.question}]
                    raw = await client.chat.completions.with_raw_response.create(
                        model="llmsim-chat", messages=messages, stream=index % 3 == 0)
                    if index % 3 == 0:
                        async for _ in raw.parse():
                            pass
                    elif first is None and raw.headers["x-promptpulse-variant"] == HEALTHY:
                        first = (raw.headers["x-request-id"], raw.parse())
                    await asyncio.sleep(0.2)

            async def drifting_alert() -> Any:
                fired = [a for a in alerts if a.state == AlertState.ALERT_STATE_FIRING and a.variant == DRIFTING]
                return fired[0] if fired else None

            sending = asyncio.create_task(ask_for(240))
            try:
                alert = await stack.wait_for(drifting_alert, within=240, every=1.0,
                                             what=f"the relevance monitor of {DRIFTING} to fire")
            finally:
                sending.cancel()
                await asyncio.gather(sending, return_exceptions=True)
        assert alert.deployment == "assistant" and alert.monitor_id == f"assistant-relevance-{DRIFTING}"
        assert not [a for a in alerts if a.variant == HEALTHY and a.state == AlertState.ALERT_STATE_FIRING]

        assert first is not None
        request_id, completion = first
        found = await stack.wait_for(lambda: stored(stack, request_id), within=60, what="the request judged")
        assert found["deployment"] == "assistant" and found["variant"] == HEALTHY
        assert found["inputs"]["question"] in {q.question for q in QUESTIONS}
        assert found["outputs"] == {"answer": completion.choices[0].message.content}
        scores = {e["metric"]: e for e in found["evaluations"]}
        assert scores["relevance"]["score"] >= 4 and scores["groundedness"]["score"] >= 4, scores
        assert found["response"]["usage"][0]["completion_tokens"] == completion.usage.completion_tokens
        trace = await stack.api(f"/v1/traces/{found['trace_id']}")
        assert "chat llmsim-chat" in str(trace)  # the proxy's client span, under the request's trace
