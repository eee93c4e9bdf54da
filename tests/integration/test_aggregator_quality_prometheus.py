"""Quality in Prometheus (issue 16.4): ``GET /v1/prometheus/quality`` on a real aggregator (Kafka,
Postgres, HTTP on loopback), fed scripted evaluation events through the real ingest.

The route's clock is set by the test (as the monitor tests pass theirs), so "the newest closed
window" is the scripted minute whatever the machine's speed.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import uuid4

import aiohttp
import pytest
from aiohttp import web

from services.aggregator.api.quality_metrics import QUALITY
from services.aggregator.api.settings import ApiSection
from services.aggregator.api.state import API
from services.aggregator.app import MONITORS, QUERY_API, create_app
from shared.topics import Topics, delete_topics, ensure_topics
from tests.integration.test_aggregator_monitors import (
    AVERAGE,
    minute_base,
    monitor_settings,
    scored,
    step,
    write_deployments,
)
from tests.support.aggregator import CONSUMED, create_topics, produce, wait_caught_up
from tests.support.prometheus_text import assert_promtool_clean, samples, series, value

pytestmark = pytest.mark.integration

READ_KEY = "read-" + uuid4().hex
READ = {"Authorization": f"Bearer {READ_KEY}"}
ERRORS = {"id": "demo-errors", "statistic": "error_rate", "threshold": 0.5, "window": "5m"}
Q = "promptpulse_quality_"
# (deployment, variant, metric) -> scores in the scripted minute. demo has variants a and b and
# four metrics; zz is no variant of it, similarity not one of its metrics, ghost no deployment.
SCRIPT = {
    ("demo", "a", "relevance"): [5, 4, 1, 2],  # average 3.0 (below rel-avg's 3.5), pass rate 0.5
    ("demo", "b", "relevance"): [2, 2],
    ("demo", "zz", "relevance"): [5, 3],
    ("demo", "a", "similarity"): [4],
    ("ghost", "a", "relevance"): [1],
}


@dataclass
class Stack:
    url: str
    app: web.Application
    base: datetime
    http: aiohttp.ClientSession

    async def scrape(self, path: str = "/v1/prometheus/quality", headers: dict | None = None) -> tuple[int, str]:
        async with self.http.get(self.url + path, headers=READ if headers is None else headers) as response:
            if response.status == 200:
                assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return response.status, await response.text()


def messages(base: datetime) -> list:
    rng = random.Random(16)
    out = [scored(d, v, m, base + timedelta(seconds=5 + i), s, rng)
           for (d, v, m), scores in SCRIPT.items() for i, s in enumerate(scores)]
    # The next minute is not closed at the test's clock: it must not count.
    out += [scored("demo", "a", "relevance", base + timedelta(minutes=1, seconds=5 + i), 5, rng) for i in range(3)]
    return out


@pytest.fixture
async def stack(fresh_database, tmp_path) -> AsyncIterator[Stack]:
    folder = write_deployments(tmp_path / "deployments", [AVERAGE, ERRORS])
    api = ApiSection(quality_window_seconds=60, quality_cache_seconds=0)
    settings = monitor_settings(fresh_database, folder, api=api, read_key=READ_KEY)
    topics = await create_topics(settings)
    await ensure_topics(settings, [Topics.from_settings(settings).alerts])
    base = minute_base()
    await produce(settings, messages(base))
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    app[QUERY_API][QUALITY].clock = lambda: step(base, 1)  # the window [base, base + 1m) is the newest closed
    http = aiohttp.ClientSession()
    try:
        await wait_caught_up(settings)
        yield Stack(f"http://127.0.0.1:{port}", app, base, http)
    finally:
        await http.close()
        await runner.cleanup()
        await delete_topics(settings, [*(getattr(topics, r) for r in CONSUMED), topics.alerts])


async def test_quality_series_are_the_closed_windows_figures_behind_the_read_key(stack: Stack) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-key-wrong-key"}):
        status, body = await stack.scrape(headers=headers)
        assert status == 401 and '"unauthorized"' in body
    status, text = await stack.scrape()
    assert status == 200
    assert_promtool_clean(text)
    assert value(text, Q + "window_seconds") == 60
    assert value(text, Q + "window_end_timestamp_seconds") == (stack.base + timedelta(minutes=1)).timestamp()
    relevance_a = {"deployment": "demo", "variant": "a", "metric": "relevance"}
    assert value(text, Q + "samples", **relevance_a) == 4  # the next minute's three 5s are not in it
    assert value(text, Q + "average_score", **relevance_a) == 3.0
    assert value(text, Q + "pass_rate", **relevance_a) == 0.5
    relevance_b = {"deployment": "demo", "variant": "b", "metric": "relevance"}
    assert (value(text, Q + "samples", **relevance_b), value(text, Q + "average_score", **relevance_b),
            value(text, Q + "pass_rate", **relevance_b)) == (2, 2.0, 0.0)
    # A configured metric without scores: 0 samples, and no average or pass rate to show.
    fluency_b = {"deployment": "demo", "variant": "b", "metric": "fluency"}
    assert value(text, Q + "samples", **fluency_b) == 0
    assert value(text, Q + "average_score", **fluency_b) is None
    # Monitors: both ok before any evaluation.
    monitor = {"deployment": "demo", "variant": "a", "monitor": "rel-avg", "statistic": "average",
               "metric": "relevance"}
    assert value(text, Q + "monitor_state", **monitor, state="ok") == 1
    assert value(text, Q + "monitor_state", **monitor, state="firing") == 0
    errors = {"deployment": "demo", "variant": "", "monitor": "demo-errors", "statistic": "error_rate", "metric": ""}
    assert value(text, Q + "monitor_state", **errors, state="ok") == 1
    # The evaluator finds rel-avg's window at 3.0 < 3.5: the route shows it firing.
    service = stack.app[MONITORS]
    await service.open()  # monitors are disabled here (no loop): the test drives the pass
    assert (await service.once(step(stack.base, 1))).alerts == 1
    _, text = await stack.scrape()
    assert value(text, Q + "monitor_state", **monitor, state="firing") == 1
    assert value(text, Q + "monitor_state", **monitor, state="ok") == 0
    assert value(text, Q + "monitor_state", **errors, state="ok") == 1
    assert_promtool_clean(text)
    # The operational /metrics stays open and holds no deployment data.
    status, operational = await stack.scrape("/metrics", headers={})
    assert status == 200 and Q not in operational
    assert_promtool_clean(operational)
    assert value(operational, "promptpulse_aggregator_api_responses_total", route="/v1/prometheus/quality",
                 status=401) == 2


async def test_unknown_variants_metrics_and_deployments_count_under_other(stack: Stack) -> None:
    _, text = await stack.scrape()
    found = series(text, Q + "samples")
    variants, metrics = ("a", "b"), ("coherence", "fluency", "groundedness", "relevance")
    configured = [{"deployment": "demo", "variant": v, "metric": m} for v in variants for m in metrics]
    others = [{"deployment": "demo", "variant": "other", "metric": "relevance"},
              {"deployment": "demo", "variant": "a", "metric": "other"},
              {"deployment": "other", "variant": "other", "metric": "other"}]
    key = sorted
    assert sorted(found, key=lambda s: key(s.items())) == sorted(configured + others, key=lambda s: key(s.items()))
    assert value(text, Q + "average_score", **others[0]) == 4.0  # zz's 5 and 3
    assert value(text, Q + "samples", **others[1]) == 1 and value(text, Q + "pass_rate", **others[1]) == 1.0
    assert value(text, Q + "average_score", **others[2]) == 1.0  # ghost's one score
    names = {v for (_, labels) in samples(text) for _, v in labels}
    assert not names & {"zz", "ghost", "similarity"}


async def test_a_reading_is_served_again_within_the_cache_time(stack: Stack) -> None:
    exposition = stack.app[QUERY_API][QUALITY]
    stack.app[QUERY_API][API].section.quality_cache_seconds = 300
    before = exposition.readings
    texts = [(await stack.scrape())[1] for _ in range(3)]
    assert exposition.readings == before + 1 and texts[0] == texts[2]
