"""Evaluators on scales of their own through the real ingest, query API and monitors (Kafka,
Postgres, HTTP on loopback): a 0-10 rubric, a 0-1 one and a labels one, declared in the
deployment file as a user writes them. Averages, pass rates and histograms are checked against
values worked out by hand from the events below; a value off its scale is dead-lettered; a
monitor on a custom-scale metric fires; a threshold off the scale is refused."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
import pytest
import yaml
from aiohttp import web

from services.aggregator.api.quality_metrics import QUALITY
from services.aggregator.api.settings import ApiSection
from services.aggregator.app import QUERY_API, create_app
from services.aggregator.db.pool import create_pool
from services.aggregator.monitors.service import MonitorService
from shared.deployments import load_deployment_folder
from shared.topics import Topics, delete_topics, ensure_topics
from tests.integration.test_aggregator_evaluator_versions import outcome
from tests.integration.test_aggregator_monitors import (
    minute_base,
    monitor_settings,
    step,
    write_deployments,
)
from tests.support.aggregator import CONSUMED, create_topics, produce, wait_caught_up
from tests.support.prometheus_text import value

READ_KEY, ADMIN_KEY = "read-" + uuid4().hex, "admin-" + uuid4().hex
READ = {"Authorization": f"Bearer {READ_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}

EVALUATORS = [
    {"name": "helpfulness", "kind": "rubric", "prompt": "How helpful is {{ answer }}? 0 to 10.",
     "scale": "0-10", "pass": {"at_least": 7}},
    {"name": "grounded_share", "kind": "rubric", "prompt": "Share of {{ answer }} grounded in {{ context }}.",
     "scale": "float", "pass": {"at_least": 0.8}},
    {"name": "verdict", "kind": "rubric", "prompt": "Is {{ answer }} right?",
     "scale": {"labels": {"correct": 1, "partial": 0.5, "wrong": 0}}, "pass": {"labels": ["correct"]}},
]
HELPFUL_AVERAGE = {"id": "helpful-avg", "statistic": "average", "metric": "helpfulness", "threshold": 6,
                   "window": "1m", "min_samples": 3}
VERDICT_PASS = {"id": "verdict-pass", "statistic": "pass_rate", "metric": "verdict", "threshold": 0.5,
                "window": "1m", "min_samples": 3}


def deployments_with_evaluators(folder: Path) -> Path:
    write_deployments(folder, [HELPFUL_AVERAGE, VERDICT_PASS])
    path = folder / "demo.yaml"
    document = yaml.safe_load(path.read_text())
    document["evaluation"]["evaluators"] = EVALUATORS
    path.write_text(yaml.safe_dump(document))
    return folder


def custom_scale_messages(evaluation: Any, base: datetime, rng: random.Random) -> list:
    """The scored events the tests below work their figures out from (see the comments)."""
    old, new = base + timedelta(seconds=5), base + timedelta(minutes=1, seconds=5)

    def scored(metric: str, start: datetime, value: float, label: str = "", *, at: str | None = None):
        compat = evaluation.evaluator(metric).scale_of(metric).compat_score(value)
        return outcome(start, rng, metric=metric, score=compat, value=value, label=label, evaluator=metric,
                       version=at or evaluation.evaluator(metric).version, prompt_version=None)[0]

    return [
        # An older helpfulness version a minute before: kept apart from the current one.
        *(scored("helpfulness", old, v, at="helpfulness-old") for v in (10.0, 10.0)),
        # 0-10, pass at 7: average (9 + 7 + 3 + 2) / 4 = 5.25, pass 2 of 4.
        *(scored("helpfulness", new, v) for v in (9.0, 7.0, 3.0, 2.0)),
        # 0-1, pass at 0.8: average 2.54 / 4 = 0.635, pass 2 of 4 (0.8 itself passes).
        *(scored("grounded_share", new, v) for v in (0.95, 0.8, 0.5, 0.29)),
        # labels, pass [correct]: average (1 + 1 + 0.5 + 0 + 0) / 5 = 0.5, pass 2 of 5.
        *(scored("verdict", new, v, label) for v, label in
          ((1.0, "correct"), (1.0, "correct"), (0.5, "partial"), (0.0, "wrong"), (0.0, "wrong"))),
        # Off their scales: dead-lettered, naming the field.
        scored("helpfulness", new, 11.0),
        scored("grounded_share", new, 1.2),
        scored("verdict", new, 0.7, "partial"),
    ]


async def test_custom_scales_averages_pass_rates_histograms_and_a_monitor(fresh_database, tmp_path) -> None:
    folder = deployments_with_evaluators(tmp_path / "deployments")
    loaded = load_deployment_folder(folder, check_flow=False)
    assert not loaded.broken_names, loaded.problems
    evaluation = loaded.deployments["demo"].evaluation
    version = {name: evaluation.evaluator(name).version for name in ("helpfulness", "grounded_share", "verdict")}
    assert all(version.values())
    api = ApiSection(quality_window_seconds=60, quality_cache_seconds=0)
    settings = monitor_settings(fresh_database, folder, api=api, read_key=READ_KEY, admin_key=ADMIN_KEY)
    base = minute_base()
    messages = custom_scale_messages(evaluation, base, random.Random(17))
    topics = await create_topics(settings)
    await ensure_topics(settings, [Topics.from_settings(settings).alerts])
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    app[QUERY_API][QUALITY].clock = lambda: step(base, 2)  # [base + 1m, base + 2m): the current versions
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    pool = await create_pool(settings)
    try:
        await produce(settings, messages)
        await wait_caught_up(settings)
        async with aiohttp.ClientSession() as http:
            start = base.isoformat().replace("+00:00", "Z")
            end = (base + timedelta(minutes=3)).isoformat().replace("+00:00", "Z")
            async with http.get(f"{url}/v1/deployments/demo/metrics?from={start}&to={end}", headers=READ) as r:
                body = await r.json()
                assert r.status == 200, body
            quality = body["overview"]["quality"]
            helpful = quality["helpfulness"]
            assert helpful["version"] == version["helpfulness"]
            assert {v["version"] for v in helpful["versions"]} == {version["helpfulness"], "helpfulness-old"}
            assert (helpful["samples"], helpful["average"], helpful["pass_rate"]) == (4, 5.25, 0.5)
            assert helpful["scale"] == {"type": "integer", "min": 0.0, "max": 10.0}
            assert helpful["pass_rule"] == {"at_least": 7.0} and helpful["pass_score"] is None
            assert helpful["scores"] == {str(v): {9: 1, 7: 1, 3: 1, 2: 1}.get(v, 0) for v in range(11)}
            assert 0 <= helpful["average_interval"][0] < 5.25 < helpful["average_interval"][1] <= 10
            grounded = quality["grounded_share"]
            assert grounded["samples"] == 4 and grounded["average"] == pytest.approx(0.635)
            assert grounded["pass_rate"] == 0.5
            assert grounded["scores"] == {f"{i / 10:.1f}": {9: 1, 8: 1, 5: 1, 2: 1}.get(i, 0) for i in range(10)}
            verdict = quality["verdict"]
            assert (verdict["samples"], verdict["average"], verdict["pass_rate"]) == (5, 0.5, 0.4)
            assert verdict["scores"] == {"correct": 2, "partial": 1, "wrong": 2}
            assert verdict["pass_rule"] == {"labels": ["correct"]}
            # The older version on request: its own figures only.
            async with http.get(f"{url}/v1/deployments/demo/metrics?from={start}&to={end}&version=helpfulness-old",
                                headers=READ) as r:
                older = (await r.json())["overview"]["quality"]["helpfulness"]
            assert (older["samples"], older["average"], older["pass_rate"]) == (2, 10.0, 1.0)
            async with http.get(f"{url}/v1/deployments", headers=READ) as r:
                listed = {d["name"]: d for d in (await r.json())["deployments"]}["demo"]
            assert {"helpfulness", "grounded_share", "verdict", "relevance"} <= set(listed["metrics"])
            assert listed["scales"]["verdict"]["type"] == "labels"
            # A monitor threshold off the metric's scale is refused, naming the field.
            bad = {**VERDICT_PASS, "statistic": "average", "threshold": 3}
            async with http.put(f"{url}/v1/deployments/demo/monitors", headers=ADMIN,
                                data=json.dumps({"monitors": [bad]})) as r:
                refused = await r.json()
                assert r.status == 400, refused
            assert "threshold" in json.dumps(refused)
            # The Prometheus quality series: on each metric's scale, under its pass rule.
            async with http.get(f"{url}/v1/prometheus/quality", headers=READ) as r:
                scraped = await r.text()
            where = {"deployment": "demo", "variant": "a"}
            assert value(scraped, "promptpulse_quality_average_score", **where, metric="helpfulness") == 5.25
            assert value(scraped, "promptpulse_quality_pass_rate", **where, metric="helpfulness") == 0.5
            assert value(scraped, "promptpulse_quality_pass_rate", **where, metric="grounded_share") == 0.5
            assert value(scraped, "promptpulse_quality_pass_rate", **where, metric="verdict") == 0.4
            assert value(scraped, "promptpulse_quality_samples", **where, metric="verdict") == 5
        letters = {r["detail"].split(",")[0] for r in await pool.fetch("SELECT reason, detail FROM dead_letters")
                   if r["reason"] == "implausible-value"}
        assert letters == {"scored.value is 11.0", "scored.value is 1.2", "scored.value is 0.7"}

        service = MonitorService(settings, pool)
        await service.open()
        try:
            await service.sync_files()
            tick = await service.once(step(base, 2))
        finally:
            await service.close()
        assert tick.windows == 2 and tick.alerts == 2
        windows = {r["monitor_id"]: r for r in await pool.fetch("SELECT * FROM monitor_windows")}
        assert windows["helpful-avg"]["value"] == 5.25 and windows["helpful-avg"]["violated"]
        assert windows["helpful-avg"]["evaluator_version"] == version["helpfulness"]
        assert windows["helpful-avg"]["ci_high"] <= 10.0
        assert windows["verdict-pass"]["value"] == 0.4 and windows["verdict-pass"]["violated"]
        states = {r["monitor_id"]: r["state"] for r in await pool.fetch("SELECT * FROM monitor_states")}
        assert states == {"helpful-avg": "firing", "verdict-pass": "firing"}
    finally:
        await pool.close()
        await runner.cleanup()
        await delete_topics(settings, [*(getattr(topics, r) for r in CONSUMED), topics.alerts])
