"""Reading one window's figures for a monitor from the per-minute rollups.

A window ``[start, end)`` is the sum of its minutes; production traffic only (``run_id = ''``),
so batch runs never move a monitor (nor do re-judged outcomes, which feed no rollup). Quality
statistics read the metric's latest evaluator version in the window, on that version's scale. A variant monitor reads its variant's rows, a deployment
monitor all of them. Percentiles come from the merged log-bucket histograms.
"""

from __future__ import annotations

from datetime import datetime

from services.aggregator.db.pool import DbConnection
from services.aggregator.monitors.statistics import WindowFigures
from services.aggregator.rollups.read import histogram
from services.aggregator.rollups.scales import ScaleBook
from shared.deployments import Monitor

# One evaluator version per window: the latest in it (as the query API's default), with the
# outcomes that record no version (metrics_query.choose_versions).
_QUALITY_SQL = """
SELECT evaluator_version, max(minute) AS last_minute, sum(evaluations)::bigint AS evaluations,
       sum(scored)::bigint AS scored, sum(value_sum)::float8 AS value_sum,
       sum(value_sum_squares)::float8 AS value_sum_squares
FROM rollup_evaluator_quality
WHERE deployment = $1 AND minute >= $2 AND minute < $3 AND run_id = '' AND metric = $4
  AND ($5::text IS NULL OR variant = $5)
GROUP BY 1
"""

_VALUES_SQL = """
SELECT value_milli, label, sum(count)::bigint AS count
FROM rollup_evaluator_values
WHERE deployment = $1 AND minute >= $2 AND minute < $3 AND run_id = '' AND metric = $4
  AND ($5::text IS NULL OR variant = $5) AND evaluator_version IN ('', $6)
GROUP BY 1, 2
"""

_OPERATIONS_SQL = """
SELECT coalesce(sum(responses), 0)::bigint AS responses, coalesce(sum(errors), 0)::bigint AS errors
FROM rollup_operations
WHERE deployment = $1 AND minute >= $2 AND minute < $3 AND run_id = ''
  AND ($4::text IS NULL OR variant = $4)
"""

_TOKENS_SQL = """
SELECT model, sum(total_tokens)::bigint AS total_tokens, sum(cost)::float8 AS cost,
       bool_or(cost IS NULL AND total_tokens > 0) AS unpriced
FROM rollup_token_costs
WHERE deployment = $1 AND minute >= $2 AND minute < $3 AND run_id = ''
GROUP BY model ORDER BY model
"""


async def quality_figures(
    conn: DbConnection, deployment: str, monitor: Monitor, start: datetime, end: datetime, scales: ScaleBook
) -> WindowFigures:
    """Average and pass-rate sums of the monitor's metric: on the scale of the version measured,
    under its pass rule (as recorded for that version, rollups/version_scales.py)."""
    rows = await conn.fetch(_QUALITY_SQL, deployment, start, end, monitor.metric, monitor.variant)
    versioned = [r for r in rows if r["evaluator_version"]]
    latest = max(versioned, key=lambda r: (r["last_minute"], r["evaluations"], r["evaluator_version"]), default=None)
    version = latest["evaluator_version"] if latest is not None else ""
    counted = [r for r in rows if r["evaluator_version"] in ("", version)]
    values = {(r["value_milli"], r["label"]): r["count"]
              for r in await conn.fetch(_VALUES_SQL, deployment, start, end, monitor.metric, monitor.variant, version)}
    scale = scales.of(monitor.metric or "", version).with_pass_score(monitor.effective_score_threshold)
    passed = scale.passed(values)
    return WindowFigures(
        scored=sum(r["scored"] for r in counted),
        score_sum=sum(r["value_sum"] for r in counted),
        score_sum_squares=sum(r["value_sum_squares"] for r in counted),
        passed=passed or 0,
        pass_rule_known=passed is not None,
        scale_low=scale.low,
        scale_high=scale.high,
        evaluator_version=version,
    )


async def window_figures(
    conn: DbConnection, deployment: str, monitor: Monitor, start: datetime, end: datetime,
    scales: ScaleBook | None = None,
) -> WindowFigures:
    """The sums the monitor's statistic needs over ``[start, end)`` (``scales``: the deployment's)."""
    variant = monitor.variant
    if monitor.statistic in ("average", "pass_rate"):
        return await quality_figures(conn, deployment, monitor, start, end, scales or ScaleBook())
    operations = await conn.fetchrow(_OPERATIONS_SQL, deployment, start, end, variant)
    assert operations is not None  # aggregates without GROUP BY: always one row
    figures = {"responses": operations["responses"], "errors": operations["errors"]}
    if monitor.statistic == "latency_p95":
        merged = await histogram(conn, deployment, start, end, variant=variant)
        figures["latency_p95_ms"] = merged.quantile(0.95)
    elif monitor.statistic in ("tokens_per_hour", "cost_per_hour"):
        rows = await conn.fetch(_TOKENS_SQL, deployment, start, end)
        figures["total_tokens"] = sum(r["total_tokens"] for r in rows)
        priced = [r["cost"] for r in rows if r["cost"] is not None]
        figures["cost"] = sum(priced) if priced else None
        figures["unpriced_models"] = tuple(r["model"] for r in rows if r["unpriced"])
    return WindowFigures(**figures)
