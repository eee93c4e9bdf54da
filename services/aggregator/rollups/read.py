"""Reading rollups back: any window is a sum of minutes, percentiles come from merged histograms.

Small building blocks for the query API and the monitors; they take a connection so callers
choose the pool and the transaction. Ranges are half-open ``[start, end)`` on the minute key,
and ``run_id=''`` means production traffic (a batch run's figures sit under its own id).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from services.aggregator.db.pool import DbConnection
from services.aggregator.rollups.histogram import LogHistogram

MEASURES = ("latency_ms", "ttft_ms")


async def histogram(
    conn: DbConnection,
    deployment: str,
    start: datetime,
    end: datetime,
    *,
    measure: str = "latency_ms",
    variant: str | None = None,
    run_id: str = "",
) -> LogHistogram:
    """The merged histogram of ``measure`` over the minutes in ``[start, end)``, for one variant
    or (``variant=None``) all of them."""
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {', '.join(MEASURES)}")
    rows = await conn.fetch(
        """
        SELECT bucket, sum(count)::bigint AS count FROM rollup_histograms
        WHERE deployment = $1 AND minute >= $2 AND minute < $3 AND measure = $4 AND run_id = $5
          AND ($6::text IS NULL OR variant = $6)
        GROUP BY bucket
        """,
        deployment,
        start,
        end,
        measure,
        run_id,
        variant,
    )
    return LogHistogram().merge_counts((r["bucket"], r["count"]) for r in rows)


async def quantiles(
    conn: DbConnection,
    deployment: str,
    start: datetime,
    end: datetime,
    qs: Iterable[float] = (0.5, 0.95, 0.99),
    *,
    measure: str = "latency_ms",
    variant: str | None = None,
    run_id: str = "",
) -> dict[float, float | None]:
    """Percentiles of a measure over a window, e.g. ``{0.95: 812.4}``: within 1% of the order
    statistic at rank ``floor(q * (n - 1))`` (0-based) of the values the window holds."""
    merged = await histogram(conn, deployment, start, end, measure=measure, variant=variant, run_id=run_id)
    return merged.quantiles(qs)


def pass_rate(score_counts: Iterable[int], pass_score: int) -> tuple[int, int]:
    """(passed, scored) from the score_1..score_5 counts, for any threshold 1..5."""
    counts = list(score_counts)
    if len(counts) != 5:
        raise ValueError("expected the five counts score_1..score_5")
    if not 1 <= pass_score <= 5:
        raise ValueError("pass_score must be 1..5")
    return sum(counts[pass_score - 1 :]), sum(counts)
