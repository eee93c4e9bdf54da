"""Reading one window's figures for a monitor from the per-minute rollups.

A window ``[start, end)`` is the sum of its minutes; production traffic only (``run_id = ''``),
so batch runs never move a monitor. A variant monitor reads its variant's rows, a deployment
monitor all of them. Percentiles come from the merged log-bucket histograms.
"""

from __future__ import annotations

from datetime import datetime

from services.aggregator.db.pool import DbConnection
from services.aggregator.monitors.statistics import WindowFigures
from services.aggregator.rollups.read import histogram
from shared.deployments import Monitor

_QUALITY_SQL = """
SELECT coalesce(sum(scored), 0)::bigint AS scored,
       coalesce(sum(score_sum), 0)::bigint AS score_sum,
       coalesce(sum(score_sum_squares), 0)::bigint AS score_sum_squares,
       coalesce(sum(score_1), 0)::bigint AS s1, coalesce(sum(score_2), 0)::bigint AS s2,
       coalesce(sum(score_3), 0)::bigint AS s3, coalesce(sum(score_4), 0)::bigint AS s4,
       coalesce(sum(score_5), 0)::bigint AS s5
FROM rollup_quality
WHERE deployment = $1 AND minute >= $2 AND minute < $3 AND run_id = '' AND metric = $4
  AND ($5::text IS NULL OR variant = $5)
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


async def window_figures(
    conn: DbConnection, deployment: str, monitor: Monitor, start: datetime, end: datetime
) -> WindowFigures:
    """The sums the monitor's statistic needs over ``[start, end)``."""
    variant = monitor.variant
    if monitor.statistic in ("average", "pass_rate"):
        row = await conn.fetchrow(_QUALITY_SQL, deployment, start, end, monitor.metric, variant)
        assert row is not None  # aggregates without GROUP BY: always one row
        return WindowFigures(
            scored=row["scored"],
            score_sum=row["score_sum"],
            score_sum_squares=row["score_sum_squares"],
            score_counts=(row["s1"], row["s2"], row["s3"], row["s4"], row["s5"]),
        )
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
