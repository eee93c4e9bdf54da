"""``GET /v1/prometheus/quality``: each deployment's quality and monitor states for Prometheus.

Deployment data, so it sits under ``/v1`` behind the read key (Prometheus sends it as
``authorization: Bearer``), apart from the open operational ``/metrics``. It serves the newest
closed window of ``quality_window_seconds`` (closed at least the monitors' ``grace_seconds``
ago, as a monitor would see it): per deployment, variant and metric the average score on the
metric's scale, the pass rate (built-in metrics: scores >= 3; others: their evaluator's pass
rule) and the number of scores, of the metric's latest evaluator version in the window, from the
rollups; and each stored monitor's state.

Cardinality is bounded by configuration, never by the data: label values are the deployments,
variants and metrics of the deployments folder and of the stored monitors; anything else is
summed under ``other`` (an unknown deployment is ``other`` in all three labels). So a family
has at most (deployments + 1) x (variants + 1) x (metrics + 1) series, plus one per monitor.

One reading costs two queries (the window's rollup sums, the monitors with their states) and is
served again for ``quality_cache_seconds``, one reading at a time, so scrapers never stack up
queries. The figures are finished by figures.Quality, as for ``/v1/deployments/{d}/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from pydantic import ValidationError

from services.aggregator.api.figures import Quality
from services.aggregator.api.metrics_query import EVALUATOR_SUMS
from services.aggregator.api.state import API, ApiState
from services.aggregator.monitors.schedule import latest_closed_end
from services.aggregator.monitors.statistics import FIRING
from services.aggregator.monitors.store import monitor_from_json
from services.aggregator.rollups.scales import (
    BUILTIN_SCALE,
    MetricScale,
    configured_metrics,
    metric_scale,
)
from services.aggregator.rollups.version_scales import read_every_version
from shared.deployments import Deployment, Monitor
from shared.deployments.base import DEFAULT_SCORE_THRESHOLD
from shared.prometheus import CONTENT_TYPE, Families

log = logging.getLogger(__name__)

ROUTE = "/prometheus/quality"  # under /v1
PREFIX = "promptpulse_quality_"
OTHER = "other"
STATES = ("ok", "firing")  # a resolved monitor is ok again

# The deployments with rows in the window, from deployment_variants (written with the rollups,
# in the same transaction), so each is read through the primary key (deployment, minute, ...)
# instead of scanning the whole day's partition: 1.8 ms against 15 ms over a day of 10
# deployments x 3 variants x 5 metrics (216,000 rows, EXPLAIN ANALYZE, 2026-12-06).
_DEPLOYMENTS = "deployment = ANY(ARRAY(SELECT DISTINCT deployment FROM deployment_variants WHERE last_minute >= $1))"
_QUALITY_SQL = f"""
SELECT deployment, variant, metric, evaluator_version, max(minute) AS last_minute, {EVALUATOR_SUMS}
FROM rollup_evaluator_quality
WHERE {_DEPLOYMENTS} AND minute >= $1 AND minute < $2 AND run_id = '' GROUP BY 1, 2, 3, 4"""
_VALUES_SQL = f"""
SELECT deployment, variant, metric, evaluator_version, value_milli, label, sum(count)::bigint AS count
FROM rollup_evaluator_values
WHERE {_DEPLOYMENTS} AND minute >= $1 AND minute < $2 AND run_id = '' GROUP BY 1, 2, 3, 4, 5, 6"""

_MONITORS_SQL = """
SELECT m.deployment, m.definition, s.state FROM monitors m LEFT JOIN monitor_states s USING (monitor_id)
ORDER BY m.deployment, m.position, m.monitor_id"""

Key = tuple[str, str, str]  # deployment, variant, metric


@dataclass
class LabelBound:
    """The label values that may appear: deployment -> its variants and its metrics."""

    known: dict[str, tuple[set[str], set[str]]] = field(default_factory=dict)

    def allow(self, deployment: str, variants: Iterable[str] = (), metrics: Iterable[str] = ()) -> None:
        entry = self.known.setdefault(deployment, (set(), set()))
        entry[0].update(variants)
        entry[1].update(metrics)

    def key(self, deployment: str, variant: str, metric: str) -> Key:
        """The labels a row counts under: its own where configured, else ``other``."""
        entry = self.known.get(deployment)
        if entry is None:
            return OTHER, OTHER, OTHER
        return deployment, variant if variant in entry[0] else OTHER, metric if metric in entry[1] else OTHER

    def configured(self) -> Iterable[Key]:
        for deployment, (variants, metrics) in sorted(self.known.items()):
            for variant in sorted(variants):
                for metric in sorted(metrics):
                    yield deployment, variant, metric


def label_bound(deployments: Mapping[str, Deployment], monitors: Iterable[tuple[str, Monitor]]) -> LabelBound:
    """From the deployments folder and the stored monitors (which the API may have set)."""
    bound = LabelBound()
    for name, deployment in deployments.items():
        bound.allow(name, (v.id for v in deployment.variants), configured_metrics(deployment))
    for name, monitor in monitors:
        bound.allow(name, [monitor.variant] if monitor.variant else (), [monitor.metric] if monitor.metric else ())
    return bound


@dataclass
class QualityReading:
    window_start: datetime
    window_end: datetime
    quality: dict[Key, Quality]
    monitors: list[tuple[str, Monitor, str]]  # deployment, monitor, ok | firing
    scales: dict[Key, MetricScale] = field(default_factory=dict)  # missing: the built-in 1-5


async def read_quality(state: ApiState, now: datetime) -> QualityReading:
    section = state.section
    end = latest_closed_end(now, section.quality_window_seconds, state.settings.aggregator.monitors.grace_seconds)
    start = end - timedelta(seconds=section.quality_window_seconds)
    async with state.pool.acquire() as conn:
        monitor_rows = await conn.fetch(_MONITORS_SQL)
        quality_rows = await conn.fetch(_QUALITY_SQL, start, end)
        value_rows = await conn.fetch(_VALUES_SQL, start, end)
        recorded = await read_every_version(conn)
    monitors = []
    for row in monitor_rows:
        try:
            monitor = monitor_from_json(row["definition"])
        except (ValidationError, ValueError):
            continue  # the evaluator logs an unreadable stored monitor; it has no state to show
        monitors.append((row["deployment"], monitor, FIRING if row["state"] == FIRING else "ok"))
    bound = label_bound(state.deployments, ((d, m) for d, m, _ in monitors))
    quality: dict[Key, Quality] = {key: Quality() for key in bound.configured()}
    latest = _latest_versions(quality_rows)
    for row in quality_rows:
        if row["evaluator_version"] in ("", latest.get((row["deployment"], row["metric"]))):
            quality.setdefault(bound.key(row["deployment"], row["variant"], row["metric"]), Quality()).add(row)
    for row in value_rows:
        if row["evaluator_version"] in ("", latest.get((row["deployment"], row["metric"]))):
            quality.setdefault(bound.key(row["deployment"], row["variant"], row["metric"]), Quality()).add_values(row)
    # Each series on the scale of the version it counts, as recorded for it (version_scales.py).
    scales = {key: recorded.get((key[0], key[2], latest.get((key[0], key[2]), "")))
              or metric_scale(state.deployments.get(key[0]), key[2]) for key in quality}
    return QualityReading(start, end, quality, monitors, scales)


def _latest_versions(rows: Iterable[Any]) -> dict[tuple[str, str], str]:
    """(deployment, metric) -> the evaluator version of its newest minute in the window (as the
    metrics route's default: metrics_query.choose_versions)."""
    best: dict[tuple[str, str], tuple] = {}
    for row in rows:
        if row["evaluator_version"]:
            rank = (row["last_minute"], row["evaluations"], row["evaluator_version"])
            key = (row["deployment"], row["metric"])
            best[key] = max(best.get(key, rank), rank)
    return {key: rank[2] for key, rank in best.items()}


def render(reading: QualityReading, out: Families) -> None:
    labels = ("deployment", "variant", "metric")
    out.gauge("window_seconds", "Length of the window the quality series describe.").add(
        (reading.window_end - reading.window_start).total_seconds())
    out.gauge("window_end_timestamp_seconds", "End of the newest closed window the quality series describe "
              "(Unix time).").add(reading.window_end.timestamp())
    average = out.gauge("average_score", "Average score in the window, on the metric's scale (1-5 for the "
                        "built-in metrics), of its latest evaluator version; absent without scores.", labels)
    passed = out.gauge("pass_rate", f"Share of scores that pass (built-in metrics: >= {DEFAULT_SCORE_THRESHOLD}; "
                       "others: their evaluator's pass rule) in the window (0-1); absent without scores.", labels)
    samples = out.gauge("samples", "Scores in the window (the sample behind average and pass rate).", labels)
    for (deployment, variant, metric), figures in sorted(reading.quality.items()):
        scale = reading.scales.get((deployment, variant, metric), BUILTIN_SCALE)
        rendered = figures.render(DEFAULT_SCORE_THRESHOLD, 0.95, False, scale)
        where = {"deployment": deployment, "variant": variant, "metric": metric}
        samples.add(rendered["samples"], **where)
        if rendered["average"] is not None:
            average.add(rendered["average"], **where)
            if rendered["pass_rate"] is not None:
                passed.add(rendered["pass_rate"], **where)
    state = out.gauge("monitor_state", "1 for the monitor's current state (ok or firing), 0 for the other; "
                      "variant and metric are empty for a monitor over all variants or of an operational "
                      "statistic.", ["deployment", "variant", "monitor", "statistic", "metric", "state"])
    for deployment, monitor, current in reading.monitors:
        for name in STATES:
            state.add(name == current, deployment=deployment, variant=monitor.variant or "", monitor=monitor.id,
                      statistic=monitor.statistic, metric=monitor.metric or "", state=name)


class _ReadingCollector:
    """A prometheus_client custom collector over the reading the handler just made."""

    def __init__(self) -> None:
        self.reading: QualityReading | None = None

    def collect(self) -> Iterable[Metric]:
        if self.reading is None:
            return []
        families = Families(PREFIX)
        render(self.reading, families)
        return list(families)


class QualityExposition:
    """The route's registry (its own, apart from ``/metrics``'s) and its cached reading."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.clock = clock  # the tests pass theirs, as the monitor tests do
        self._collector = _ReadingCollector()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self._collector)
        self._read_at: float | None = None
        self._lock = asyncio.Lock()
        self.readings = 0  # how many times Postgres was read (tests check the cache with it)

    async def text(self, state: ApiState) -> bytes:
        async with self._lock:  # one reading at a time: concurrent scrapes share it
            fresh = self._read_at is not None and time.monotonic() - self._read_at < state.section.quality_cache_seconds
            if not fresh:
                self._collector.reading = await read_quality(state, self.clock())
                self._read_at = time.monotonic()
                self.readings += 1
            return generate_latest(self.registry)


QUALITY = web.AppKey("promptpulse_quality", QualityExposition)


async def quality_metrics(request: web.Request) -> web.Response:
    """``GET /v1/prometheus/quality`` (read key, by the query API's middleware)."""
    body = await request.app[QUALITY].text(request.app[API])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE, "X-Content-Type-Options": "nosniff"})


def setup(api: web.Application) -> None:
    """The route on the query API's sub-application (before it starts)."""
    api[QUALITY] = QualityExposition()
    api.router.add_get(ROUTE, quality_metrics)
