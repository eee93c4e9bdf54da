"""How far each judge agrees with people: human labels from feedback against judge scores.

Feedback may carry a person's score per metric (``labels``, on the metric's own scale). For
each (metric, evaluator version) the requests that have both a judge's score and a person's
label form pairs (the latest label per request and metric counts, as a person may correct
themselves); with at least ``min_labels`` pairs the judge's agreement with people is reported:
quadratic weighted kappa over the version's own scale (as recorded for it:
rollups/version_scales.py), the exact-match rate, and the mean difference (judge minus person)
with its t interval. Re-judged outcomes count for their version too, so a
new judge version can be checked against people before it goes live.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.aggregator.agreement.stats import (
    Pair,
    exact_match_rate,
    mean_difference,
    weighted_kappa,
)
from services.aggregator.db.pool import DbConnection
from services.aggregator.rollups.scales import MetricScale, ScaleBook

_PAIRS_SQL = """
WITH labelled AS (
    SELECT DISTINCT ON (f.request_id, l.key) f.request_id, l.key AS metric, l.value::float8 AS human
    FROM feedback f, jsonb_each_text(f.labels) AS l
    WHERE f.deployment = $1 AND f.request_start_time >= $2 AND f.request_start_time < $3
      AND f.labels <> '{}'::jsonb AND ($4::text IS NULL OR l.key = $4)
    ORDER BY f.request_id, l.key, f.event_time DESC, f.event_id DESC
), judged AS (
    SELECT request_id, metric, evaluator_version, value FROM evaluations
    WHERE deployment = $1 AND request_start_time >= $2 AND request_start_time < $3
      AND outcome = 'scored' AND value IS NOT NULL
    UNION ALL
    SELECT request_id, metric, evaluator_version, value FROM rejudge_evaluations
    WHERE deployment = $1 AND request_start_time >= $2 AND request_start_time < $3
      AND outcome = 'scored' AND value IS NOT NULL
)
SELECT DISTINCT ON (j.metric, j.evaluator_version, j.request_id)
       j.metric, j.evaluator_version, j.request_id, j.value AS judge, l.human
FROM labelled l JOIN judged j ON j.request_id = l.request_id AND j.metric = l.metric
ORDER BY j.metric, j.evaluator_version, j.request_id
LIMIT $5
"""
MAX_PAIRS = 200_000


def categories(scale: MetricScale) -> list[float]:
    """The ordered categories weighted kappa compares over, from the metric's scale."""
    if scale.kind == "labels" and scale.labels:
        return sorted({number for _, number in scale.labels})
    if scale.kind == "float":
        return [step / 10 for step in range(11)]
    low = scale.low if scale.low is not None else 1.0
    high = scale.high if scale.high is not None else 5.0
    return [float(value) for value in range(int(low), int(high) + 1)] if high > low else [low, low + 1]


@dataclass(frozen=True)
class Agreement:
    metric: str
    evaluator_version: str
    pairs: list[Pair]

    def render(self, scale: MetricScale, min_labels: int, level: float) -> dict[str, Any]:
        count = len(self.pairs)
        out: dict[str, Any] = {
            "metric": self.metric,
            "evaluator_version": self.evaluator_version,
            "labelled": count,
            "enough": count >= min_labels,
        }
        if count < min_labels:
            out["note"] = f"needs at least {min_labels} requests with both a label and a score"
            return out
        difference = mean_difference(self.pairs, level)
        kinds = categories(scale)
        out.update({
            "weighted_kappa": weighted_kappa(self.pairs, kinds),
            "exact_match_rate": exact_match_rate(self.pairs),
            # judge minus person: positive when the judge is more generous than people
            "mean_difference": None if difference is None else {
                "value": difference.mean, "low": difference.low, "high": difference.high},
            "categories": kinds,
        })
        return out


async def read_agreement(
    conn: DbConnection, deployment: str, start: datetime, end: datetime, metric: str | None
) -> list[Agreement]:
    rows = await conn.fetch(_PAIRS_SQL, deployment, start, end, metric, MAX_PAIRS)
    grouped: dict[tuple[str, str], list[Pair]] = defaultdict(list)
    for row in rows:
        grouped[(row["metric"], row["evaluator_version"])].append(
            Pair(row["request_id"], float(row["human"]), float(row["judge"])))
    return [Agreement(metric, version, pairs) for (metric, version), pairs in sorted(grouped.items())]


def render_all(agreements: list[Agreement], scales: ScaleBook, min_labels: int, level: float) -> list[dict[str, Any]]:
    # Each version on its own scale: its categories for weighted kappa (version_scales.py).
    return [item.render(scales.of(item.metric, item.evaluator_version), min_labels, level) for item in agreements]
