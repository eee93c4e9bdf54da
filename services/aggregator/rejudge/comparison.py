"""Old version against new on the same requests: the figures of ``GET /v1/rejudges/{id}``.

New: the re-judged outcomes (``rejudge_evaluations``) of the re-judge's evaluator version for
the deployment's requests that started in the window, whichever re-judge stored them first.
Old: per metric, the live outcomes (``evaluations``) of the same requests under the other
version of that evaluator with the most scored outcomes in the window. Only requests scored
under both count (a pair); not-applicable and errors are counted apart. The statistics are
agreement/stats.py's; pass or fail follows each version's own pass rule, as recorded for it
(rollups/version_scales.py; the deployment file's current rule for a version with no record).
Weighted kappa counts over one scale's categories, so it is left out when the two versions'
scales differ (the mean difference and the pass rates still compare them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.aggregator.agreement.stats import (
    Pair,
    cohen_kappa,
    exact_match_rate,
    mean_difference,
    most_moved,
    weighted_kappa,
)
from services.aggregator.db.pool import DbConnection
from services.aggregator.rollups.scales import MetricScale, ScaleBook, value_milli
from services.aggregator.rollups.version_scales import read_versions

MOST_MOVED = 10
_LEVEL = 0.95

_NEW = """
SELECT metric, request_id, outcome, value, label FROM rejudge_evaluations
WHERE deployment = $1 AND evaluator = $2 AND evaluator_version = $3
  AND request_start_time >= $4 AND request_start_time < $5
"""
_OLD_VERSIONS = """
SELECT metric, evaluator_version, count(*) FILTER (WHERE outcome = 'scored') AS scored FROM evaluations
WHERE deployment = $1 AND metric = ANY($2::text[]) AND evaluator_version <> $3
  AND request_start_time >= $4 AND request_start_time < $5
GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2
"""
_OLD = """
SELECT request_id, value, label FROM evaluations
WHERE deployment = $1 AND metric = $2 AND evaluator_version = $3 AND outcome = 'scored'
  AND request_id = ANY($4::text[]) AND request_start_time >= $5 AND request_start_time < $6
"""


def categories(scale: MetricScale) -> list[float]:
    """The ordered categories weighted kappa counts over: each integer of an integer scale, each
    label's number, tenths of a 0-1 scale, 1-5 for a scale nobody described."""
    if scale.kind == "integer" and scale.low is not None and scale.high is not None:
        return [float(v) for v in range(int(scale.low), int(scale.high) + 1)]
    if scale.kind == "labels":
        return sorted({number for _, number in scale.labels})
    if scale.kind == "float" and scale.low is not None and scale.high is not None:
        return [scale.low + (scale.high - scale.low) * i / 10 for i in range(11)]
    return [1.0, 2.0, 3.0, 4.0, 5.0]


def passes(scale: MetricScale, value: float, label: str) -> bool | None:
    passed = scale.passed({(value_milli(value), label): 1})
    return None if passed is None else passed == 1


def same_scale(first: MetricScale, second: MetricScale) -> bool:
    """Whether two versions score on one scale (their pass rules may differ)."""
    return (first.kind, first.low, first.high, first.labels) == (second.kind, second.low, second.high, second.labels)


def compare_metric(metric: str, scale: MetricScale, pairs: Sequence[Pair],
                   labels: dict[str, tuple[str, str]], old_scale: MetricScale | None = None) -> dict[str, Any]:
    """The figures of one metric from its pairs (``labels``: request id -> (old label, new));
    ``scale`` is the new version's, ``old_scale`` the old one's (default: the same)."""
    old_scale = old_scale or scale
    difference = mean_difference(pairs, _LEVEL)
    old_pass = [passes(old_scale, p.first, labels.get(p.request_id, ("", ""))[0]) for p in pairs]
    new_pass = [passes(scale, p.second, labels.get(p.request_id, ("", ""))[1]) for p in pairs]
    decided = None not in old_pass and None not in new_pass
    levels = categories(scale) if same_scale(scale, old_scale) else []
    return {
        "metric": metric,
        "pairs": len(pairs),
        "mean_difference": None if difference is None else {
            "mean": difference.mean, "confidence_interval": [difference.low, difference.high], "level": _LEVEL,
        },
        "pass_rate": {
            "old": sum(map(bool, old_pass)) / len(pairs) if pairs and decided else None,
            "new": sum(map(bool, new_pass)) / len(pairs) if pairs and decided else None,
        },
        "exact_match_rate": exact_match_rate(pairs),
        "cohen_kappa": cohen_kappa([bool(x) for x in old_pass], [bool(x) for x in new_pass]) if decided else None,
        "weighted_kappa": weighted_kappa(pairs, levels) if len(levels) >= 2 else None,
        "most_moved": [
            {"request_id": p.request_id, "old": p.first, "new": p.second, "difference": p.difference}
            for p in most_moved(pairs, MOST_MOVED) if p.difference != 0
        ],
    }


async def compare(conn: DbConnection, row: Any, deployment_file: Any | None) -> dict[str, Any]:
    """Per metric of the re-judge: the versions compared, the outcome counts, and the figures."""
    deployment, version = row["deployment"], row["evaluator_version"]
    start, end = row["window_start"], row["window_end"]
    new_rows = await conn.fetch(_NEW, deployment, row["evaluator"], version, start, end)
    by_metric: dict[str, dict[str, tuple[float, str]]] = {}
    counts: dict[str, dict[str, int]] = {}
    for r in new_rows:
        counts.setdefault(r["metric"], {"scored": 0, "not_applicable": 0, "error": 0})[r["outcome"]] += 1
        if r["outcome"] == "scored" and r["value"] is not None:
            by_metric.setdefault(r["metric"], {})[r["request_id"]] = (r["value"], r["label"])
    metrics = sorted(counts)
    old_versions: dict[str, str] = {}
    for r in await conn.fetch(_OLD_VERSIONS, deployment, metrics, version, start, end):
        old_versions.setdefault(r["metric"], r["evaluator_version"])
    book = ScaleBook(deployment_file, recorded=await read_versions(conn, deployment))
    out = []
    for metric in metrics:
        new = by_metric.get(metric, {})
        old_version = old_versions.get(metric)
        pairs: list[Pair] = []
        labels: dict[str, tuple[str, str]] = {}
        if old_version is not None and new:
            for r in await conn.fetch(_OLD, deployment, metric, old_version, list(new), start, end):
                if r["value"] is None:
                    continue
                value, label = new[r["request_id"]]
                pairs.append(Pair(r["request_id"], r["value"], value))
                labels[r["request_id"]] = (r["label"], label)
        pairs.sort(key=lambda p: p.request_id)
        figures = compare_metric(metric, book.of(metric, version), pairs, labels,
                                 book.of(metric, old_version) if old_version is not None else None)
        out.append({"old_version": old_version, "new_version": version, "new_outcomes": counts[metric], **figures})
    return {"metrics": out}

