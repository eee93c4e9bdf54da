"""An evaluator whose scale changes keeps each version's figures on that version's own scale.

A rubric on 1-5 (pass at 3) judges a minute of traffic; its deployment file then moves it to 0-10
(pass at 7), a new version, and a new aggregator judges the next minute. Through the real ingest,
query API, monitors and Prometheus route (Kafka, PostgreSQL, HTTP on loopback), the old version's
histogram, pass rate, compare figures, agreement with people, monitor window and Prometheus pass
rate are read on 1-5, the new one's on 0-10. Before migration 0015 the old version was read on
the file's current 0-10 scale: a histogram of 0..10 and a pass rate of 0 under "at least 7".
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
import pytest
import yaml

from services.aggregator.agreement.stats import Pair, weighted_kappa
from services.aggregator.api.quality_metrics import QUALITY
from services.aggregator.api.settings import ApiSection
from services.aggregator.app import QUERY_API
from services.aggregator.db.pool import create_pool
from services.aggregator.monitors.service import MonitorService
from shared.deployments import load_deployment_folder
from shared.events.builders import new_meta
from shared.events.codec import encode, event_key
from shared.events.messages import Feedback
from tests.integration.test_aggregator_evaluator_versions import outcome
from tests.integration.test_aggregator_monitors import (
    minute_base,
    monitor_settings,
    step,
    write_deployments,
)
from tests.support.aggregator import (
    Message,
    produce,
    serving_aggregator,
    topics_with_alerts,
    wait_caught_up,
)
from tests.support.prometheus_text import value

pytestmark = pytest.mark.integration

READ_KEY = "read-" + uuid4().hex
READ = {"Authorization": f"Bearer {READ_KEY}"}
PASS_MONITOR = {"id": "helpful-pass", "statistic": "pass_rate", "metric": "helpfulness", "threshold": 0.4,
                "window": "1m", "min_samples": 3}
# Old version (1-5, pass at 3): variant a 5, 4 and variant b 2, 1 -> pass 2 of 4, a 1.0, b 0.0.
OLD_SCORES = {"a": (5.0, 4.0), "b": (2.0, 1.0)}
# New version (0-10, pass at 7): 9, 7 and 3, 2 -> pass 2 of 4.
NEW_SCORES = {"a": (9.0, 7.0), "b": (3.0, 2.0)}
PEOPLE = {5.0: 5, 4.0: 3, 2.0: 2, 1.0: 2}  # a person's label for each old judge score


def write_file(folder: Path, scale: str, at_least: float) -> str:
    """The demo deployment with a helpfulness rubric on ``scale``; returns its version."""
    write_deployments(folder, [PASS_MONITOR])
    path = folder / "demo.yaml"
    document = yaml.safe_load(path.read_text())
    document["evaluation"]["evaluators"] = [{
        "name": "helpfulness", "kind": "rubric", "prompt": "How helpful is {{ answer }}?",
        "scale": scale, "pass": {"at_least": at_least}}]
    path.write_text(yaml.safe_dump(document))
    loaded = load_deployment_folder(folder, check_flow=False)
    assert not loaded.broken_names, loaded.problems
    return loaded.deployments["demo"].evaluation.evaluator("helpfulness").version


@asynccontextmanager
async def aggregator(settings: Any, clock: datetime) -> AsyncIterator[str]:
    """The aggregator served, its Prometheus quality window ending at ``clock``; yields its URL."""
    async with serving_aggregator(settings) as (app, url):
        app[QUERY_API][QUALITY].clock = lambda: clock
        yield url


def scored(start: datetime, rng: random.Random, version: str, variant: str, score: float) -> tuple[Message, str]:
    compat = max(1, min(5, round(score)))  # the 1-5 score older readers know; the value is what counts
    return outcome(start, rng, metric="helpfulness", score=compat, value=score, evaluator="helpfulness",
                   version=version, prompt_version=None, variant=variant)


def labelled(request_id: str, start: datetime, label: float) -> Message:
    meta = new_meta(request_id=request_id, deployment="demo", request_start_time=start)
    event = Feedback(meta=meta, labels={"helpfulness": label})
    record = encode(event)
    return Message("feedback", event_key(event), record.value, record.headers)


async def get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url, headers=READ) as response:
        body = await response.json(content_type=None) if "prometheus" not in url else await response.text()
        assert response.status == 200, body
        return body


async def test_each_version_is_read_on_its_own_scale(fresh_database: str, tmp_path: Path) -> None:
    folder = tmp_path / "deployments"
    new = write_file(tmp_path / "next", "0-10", 7)  # the version the file will move to
    old = write_file(folder, "1-5", 3)
    base = minute_base()
    rng = random.Random(23)
    settings = monitor_settings(fresh_database, folder, read_key=READ_KEY,
                                api=ApiSection(quality_window_seconds=60, quality_cache_seconds=0))
    pairs = []
    async with topics_with_alerts(settings):
        # The 1-5 version judges the first minute, and people label its requests.
        async with aggregator(settings, step(base, 1)):
            messages, feedback = [], []
            for variant, scores in OLD_SCORES.items():
                for score in scores:
                    message, request_id = scored(base + timedelta(seconds=5), rng, old, variant, score)
                    messages.append(message)
                    feedback.append(labelled(request_id, base + timedelta(seconds=5), PEOPLE[score]))
                    pairs.append(Pair(request_id, PEOPLE[score], score))
            # A processor already on the next file judges before this aggregator has loaded it:
            # a 9 of the 0-10 version is stored, not dead-lettered as off the loaded 1-5.
            early = scored(base + timedelta(minutes=2, seconds=5), rng, new, "a", 9.0)[0]
            await produce(settings, messages + feedback + [early])
            await wait_caught_up(settings)
        # The file moves the rubric to 0-10: a new version, judged by the next aggregator.
        assert write_file(folder, "0-10", 7) == new != old
        async with aggregator(settings, step(base, 1)) as url, aiohttp.ClientSession() as http:
            await produce(settings, [scored(base + timedelta(minutes=1, seconds=5), rng, new, variant, score)[0]
                                     for variant, scores in NEW_SCORES.items() for score in scores])
            await wait_caught_up(settings)
            window = f"from={iso(base)}&to={iso(base + timedelta(minutes=2))}"
            metrics = f"{url}/v1/deployments/demo/metrics?{window}"
            current = (await get(http, metrics))["overview"]["quality"]["helpfulness"]
            older = (await get(http, f"{metrics}&version={old}"))["overview"]["quality"]["helpfulness"]
            compared = await get(http, f"{url}/v1/deployments/demo/compare?{window}&baseline=a&candidate=b"
                                       f"&version={old}")
            agreement = (await get(http, f"{url}/v1/deployments/demo/agreement?{window}&min_labels=2"))["agreement"]
            scraped = await get(http, f"{url}/v1/prometheus/quality")  # the window [base, base + 1m): old only

        pool = await create_pool(settings)
        service = MonitorService(settings, pool)
        try:
            await service.open()
            await service.sync_files()
            await service.once(step(base, 1))  # the old version's minute
            await service.once(step(base, 2))  # the new version's
            windows = [dict(r) for r in await pool.fetch(
                "SELECT evaluator_version, value, violated FROM monitor_windows ORDER BY window_end")]
            recorded = {r["evaluator_version"]: r["scale"] for r in await pool.fetch(
                "SELECT evaluator_version, scale::text AS scale FROM evaluator_version_scales "
                "WHERE metric = 'helpfulness'")}
            stored = await pool.fetchval("SELECT count(*) FROM evaluations WHERE evaluator_version = $1", new)
            letters = await pool.fetch("SELECT reason, detail FROM dead_letters")
        finally:
            await service.close()
            await pool.close()

    # The new version on 0-10, pass at 7.
    assert current["version"] == new
    assert current["scale"] == {"type": "integer", "min": 0.0, "max": 10.0}
    assert current["pass_rule"] == {"at_least": 7.0}
    assert current["scores"] == {str(v): {9: 1, 7: 1, 3: 1, 2: 1}.get(v, 0) for v in range(11)}
    assert current["pass_rate"] == 0.5
    # Every version seen in the range, each with its own scale and rule.
    assert {v["version"]: (v["scale"]["max"], v["pass_rule"]) for v in current["versions"]} == {
        new: (10.0, {"at_least": 7.0}), old: (5.0, {"at_least": 3.0})}
    # The old version on its own 1-5, pass at 3 (the current file would give 0..10 and 0.0).
    assert older["version"] == old
    assert older["scale"] == {"type": "integer", "min": 1.0, "max": 5.0}
    assert older["pass_rule"] == {"at_least": 3.0}
    assert older["scores"] == {"1": 1, "2": 1, "3": 0, "4": 1, "5": 1}
    assert older["pass_rate"] == 0.5
    assert 1.0 <= older["average_interval"][0] and older["average_interval"][1] <= 5.0
    assert compared["versions"]["helpfulness"] == old
    assert compared["figures"]["a"]["quality"]["helpfulness"]["pass_rate"] == 1.0
    assert compared["figures"]["b"]["quality"]["helpfulness"]["pass_rate"] == 0.0
    # People against the old version: weighted kappa over 1-5's five categories, not 0-10's eleven.
    (row,) = [r for r in agreement if r["evaluator_version"] == old]
    assert row["labelled"] == 4 and row["categories"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert row["weighted_kappa"] == pytest.approx(weighted_kappa(pairs, [1.0, 2.0, 3.0, 4.0, 5.0]))
    # Prometheus over the old minute: 2 of 4 pass at 3 (0 of 4 at 7).
    where = {"deployment": "demo", "metric": "helpfulness"}
    assert value(scraped, "promptpulse_quality_pass_rate", variant="a", **where) == 1.0
    assert value(scraped, "promptpulse_quality_pass_rate", variant="b", **where) == 0.0
    # The pass-rate monitor: each window on its version's rule, 0.5 both times, never violated.
    assert [(w["evaluator_version"], w["value"], w["violated"]) for w in windows] == [
        (old, 0.5, False), (new, 0.5, False)]
    assert set(recorded) == {old, new}  # each version's scale, recorded when an aggregator loaded it
    assert stored == 5 and [dict(r) for r in letters] == []


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
