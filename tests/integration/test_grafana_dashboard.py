"""deploy/grafana/promptpulse.json and deploy/prometheus/ against what the services really expose
(issue 16.4).

Every series a dashboard query or an alerting rule names must be one that the gateway, the
processor or the aggregator (``/metrics`` and ``/v1/prometheus/quality``) serves: each is
started here on real Kafka and Postgres as its own integration tests start it, and the names are
read from its exposition. Every dashboard query must also parse as PromQL (promtool checks them
as recording rules), and the shipped rules and scrape configuration pass promtool.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from uuid import uuid4

import aiohttp
import pytest
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from services.aggregator.app import create_app
from shared.settings import ServiceSettings
from shared.topics import Topics, delete_topics, ensure_topics
from tests.integration.test_aggregator_monitors import AVERAGE, monitor_settings, write_deployments
from tests.integration.test_processor_harness import (
    ANSWER,
    QA,
    Producer,
    read_evaluations,
    request_event,
    response_event,
    stage,
)
from tests.support.aggregator import CONSUMED, create_topics
from tests.support.gateway_stack import kafka_for, llmsim_server, running_gateway
from tests.support.gateway_stack import write_deployments as write_gateway_deployments

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "promptpulse.json"
RULES = DEPLOY / "prometheus" / "rules.yml"
SERIES = re.compile(r"\bpromptpulse_[a-z0-9_]+\b")
# The suffixes a family's samples carry, by type (prometheus_client's parser drops _total).
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("", "_count", "_sum"),
            "gauge": ("",), "info": ("_info",), "unknown": ("",)}


def exposed(text: str) -> set[str]:
    """Every series name the exposition can hold, families without samples included."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    found += [v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)]
    return found


def rule_queries() -> list[str]:
    return [rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def used_names() -> set[str]:
    return {name for expr in queries() + rule_queries() for name in SERIES.findall(expr)}


async def _get(url: str, headers: dict[str, str] | None = None) -> str:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers or {}) as response:
        assert response.status == 200, (url, response.status)
        return await response.text()


async def _aggregator_names(dsn: str, tmp_path: Path) -> set[str]:
    read_key = "read-" + uuid4().hex
    settings = monitor_settings(dsn, write_deployments(tmp_path / "aggregator", [AVERAGE]), read_key=read_key)
    topics = await create_topics(settings)
    await ensure_topics(settings, [Topics.from_settings(settings).alerts])
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        operational = await _get(url + "/metrics")
        quality = await _get(url + "/v1/prometheus/quality", {"Authorization": f"Bearer {read_key}"})
    finally:
        await runner.cleanup()
        await delete_topics(settings, [*(getattr(topics, r) for r in CONSUMED), topics.alerts])
    return exposed(operational) | exposed(quality)


async def _gateway_names(settings: ServiceSettings, tmp_path: Path) -> set[str]:
    async with llmsim_server() as sim:
        keys = write_gateway_deployments(tmp_path / "gateway", sim.url)
        async with running_gateway(tmp_path / "gateway", kafka_for(settings.kafka.bootstrap_servers),
                                   tmp_path / "spool") as gateway:
            # One request, so the per-deployment series carry samples as in production.
            async with gateway.session.post(gateway.score_url("demo"), json={},
                                            headers={"api-key": keys["demo"]}) as response:
                assert response.status == 200
            return exposed(await _get(gateway.url + "/metrics"))


async def _processor_names(tmp_path: Path) -> set[str]:
    async with stage(tmp_path / "processor", {"shop": {"metrics": ["relevance"]}}) as st:
        async with st.processor() as service, Producer(st.kafka) as producer:
            request = request_event("req-1", "shop", QA)
            await producer.send(st.topics.inference, [request, response_event(request, {"answer": ANSWER})])
            await read_evaluations(st.kafka, st.topics, 1)
            return exposed(await _get(f"http://127.0.0.1:{service.ops.port}/metrics"))


async def test_every_series_the_dashboard_queries_is_exposed_by_a_service(
    fresh_database: str, settings: ServiceSettings, tmp_path: Path
) -> None:
    used = used_names()
    # The dashboard covers quality and each service's own series.
    for prefix in ("promptpulse_quality_", "promptpulse_gateway_", "promptpulse_processor_", "promptpulse_aggregator_"):
        assert any(name.startswith(prefix) for name in used), prefix
    names = (await _aggregator_names(fresh_database, tmp_path) | await _gateway_names(settings, tmp_path)
             | await _processor_names(tmp_path))
    assert not used - names, f"the dashboard queries series no service exposes: {sorted(used - names)}"


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: apt-get install prometheus"
    # Grafana's variables replaced by what Grafana would put there.
    exprs = [e.replace("$__rate_interval", "5m").replace("$deployment", "demo") for e in queries()]
    exprs = [e for e in exprs if not e.startswith("label_values(")]  # Grafana's, not PromQL
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, timeout=30)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert len(exprs) >= 20


def test_the_shipped_rules_and_scrape_configuration_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: apt-get install prometheus"
    for command in (["check", "rules", str(RULES)],
                    # Syntax only: the read key's credentials file exists on the Prometheus host, not here.
                    ["check", "config", "--syntax-only", str(DEPLOY / "prometheus" / "prometheus.yml")]):
        result = subprocess.run([promtool, *command], capture_output=True, timeout=30)
        assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert len(rule_queries()) >= 4
