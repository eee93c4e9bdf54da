"""Scales, pass rules and versions in the aggregator (pure parts): value bins, pass rates under
any rule, histograms per scale, plausibility on a scale, the version choice, re-judged outcomes
routed apart, and the CLI's version flag and labels."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import pytest

from services.aggregator.api.metrics_query import NoSuchVersion, choose_versions
from services.aggregator.ingest.decode import RecordDecoder, SamplingPolicy, TimeWindow
from services.aggregator.ingest.rows import EVALUATIONS, REJUDGES
from services.aggregator.rollups.scales import (
    BUILTIN_SCALE,
    UNKNOWN_SCALE,
    MetricScale,
    plausible_scale,
    threshold_milli,
    value_milli,
)
from services.cli import formatting, metrics
from shared.events.builders import new_meta
from shared.events.codec import encode
from shared.events.messages import Evaluation, JudgeCall
from shared.plausibility import Implausible, Plausibility

TEN = MetricScale("integer", 0.0, 10.0, at_least=7.0)
FRACTION = MetricScale("float", 0.0, 1.0, at_least=0.8)
LABELS = MetricScale("labels", 0.0, 1.0, labels=(("correct", 1.0), ("partial", 0.5), ("wrong", 0.0)),
                     pass_labels=frozenset({"correct", "partial"}))


def counts(*values: float, label: str = "") -> dict[tuple[int, str], int]:
    out: dict[tuple[int, str], int] = {}
    for value in values:
        key = (value_milli(value), label)
        out[key] = out.get(key, 0) + 1
    return out


def test_values_fall_in_their_own_bin_and_thresholds_are_exact() -> None:
    assert [value_milli(v) for v in (0.29, 0.57, 0.8, 7.0, 0.0, 1.0)] == [290, 570, 800, 7000, 0, 1000]
    computed = 1 - (1 - 0.059)  # 0.05899999999999994: a score a code evaluator worked out
    assert computed * 1000 < 59 and value_milli(computed) == 59  # why the epsilon is there
    assert threshold_milli(0.8) == 800 and threshold_milli(7) == 7000 and threshold_milli(0.8005) == 801
    assert FRACTION.passed(counts(0.79, 0.7999, 0.8, 0.95)) == 2
    assert TEN.passed(counts(6, 7, 10)) == 2


def test_label_rules_count_labels_in_any_case_or_by_number() -> None:
    by_label = {**counts(1.0, label="Correct"), **counts(0.0, label="wrong")}
    by_number = counts(0.5)  # a score that gave no label counts under its number's label
    assert LABELS.passed(by_label) == 1 and LABELS.passed(by_number) == 1
    assert LABELS.histogram({**by_label, **by_number}) == {"correct": 1, "partial": 1, "wrong": 1}


def test_histograms_follow_the_scale() -> None:
    assert TEN.histogram(counts(0, 10, 10)) == {str(v): (1 if v == 0 else 2 if v == 10 else 0) for v in range(11)}
    assert FRACTION.histogram(counts(0.0, 0.05, 0.95, 1.0)) == {
        f"{i / 10:.1f}": {0: 2, 9: 2}.get(i, 0) for i in range(10)}
    assert BUILTIN_SCALE.histogram(counts(3, 3)) == {"1": 0, "2": 0, "3": 2, "4": 0, "5": 0}
    assert UNKNOWN_SCALE.histogram(counts(7.5)) == {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0, "7.5": 1}
    assert BUILTIN_SCALE.with_pass_score(4).passed(counts(3, 4, 5)) == 2
    assert TEN.with_pass_score(4) == TEN  # a pass score is for the built-in scale only


def test_values_are_checked_on_their_scale() -> None:
    for scale, good, bad in ((TEN, 10.0, 10.5), (FRACTION, 0.37, 1.01), (LABELS, 0.5, 0.7),
                             (BUILTIN_SCALE, 5.0, 0.0), (UNKNOWN_SCALE, -3e8, 2e9)):
        check = plausible_scale(scale)
        check.check(good, "scored.value", "m")
        with pytest.raises(Implausible, match=r"^scored\.value is "):
            check.check(bad, "scored.value", "m")
        with pytest.raises(Implausible):
            check.check(float("nan"), "scored.value", "m")


def _evaluation(value: float | None = None, score: int = 4, rejudge_id: str = "", version: str = "") -> Evaluation:
    start = datetime.now(UTC) - timedelta(minutes=1)
    event = Evaluation(meta=new_meta(request_id="r-1", deployment="demo", request_start_time=start),
                       metric="relevance", evaluator_version=version, rejudge_id=rejudge_id)
    event.judge.CopyFrom(JudgeCall(model="j", prompt_version="relevance-v1"))
    event.scored.score = score
    if value is not None:
        event.scored.value = value
    return event


class _Record:
    def __init__(self, event: Evaluation) -> None:
        record = encode(event)
        self.topic, self.partition, self.offset, self.timestamp, self.key = "evaluations", 0, 1, 0, b"r-1"
        self.value, self.headers = record.value, record.headers


def test_old_events_are_the_builtin_at_their_prompt_version_and_rejudges_go_apart() -> None:
    decoder = RecordDecoder("spans", SamplingPolicy({}, 0.0), Plausibility())
    now = datetime.now(UTC)
    window = TimeWindow(now - timedelta(days=1), now + timedelta(minutes=5))
    decoded = decoder.decode_batch([_Record(_evaluation()), _Record(_evaluation(3.0, 3, "rj", "relevance-v2")),
                                    _Record(_evaluation(6.0, 5, version="relevance-v2"))], window)
    [old] = decoded.rows[EVALUATIONS]
    assert (old.evaluator, old.evaluator_version, old.value, old.label) == ("relevance", "relevance-v1", 4.0, "")
    [rejudged] = decoded.rows[REJUDGES]
    assert (rejudged.evaluator_version, rejudged.value, rejudged.rejudge_id) == ("relevance-v2", 3.0, "rj")
    [letter] = decoded.dead_letters
    assert letter.reason == "implausible-value" and letter.detail.startswith("scored.value is 6.0")


def test_the_latest_version_is_chosen_unless_one_is_asked() -> None:
    t0, t1 = datetime(2030, 1, 1, 12, tzinfo=UTC), datetime(2030, 1, 1, 12, 5, tzinfo=UTC)

    def row(metric: str, version: str, last: datetime, evaluations: int = 3) -> dict:
        return {"metric": metric, "evaluator_version": version, "first_minute": t0, "last_minute": last,
                "evaluations": evaluations, "scored": evaluations}

    rows = [row("m", "old", t1, 9), row("m", "new", t1, 10), row("m", "", t1, 50), row("n", "x", t0)]
    chosen, seen = choose_versions(rows)
    assert chosen == {"m": "new", "n": "x"} and [v["version"] for v in seen["m"]] == ["new", "old"]
    assert choose_versions(rows, "old")[0] == {"m": "old", "n": "x"}
    with pytest.raises(NoSuchVersion):
        choose_versions(rows, "nope")


def test_cli_passes_the_version_and_names_scales_and_rules() -> None:
    args = argparse.Namespace(last=None, start=None, end=None, variant=None, pass_score=None,
                              evaluator_version="abc123")
    assert metrics.query_params(args) == {"step": "3600", "version": "abc123"}
    quality = {"average": 0.5, "samples": 5, "pass_rate": 0.4, "pass_score": None,
               "pass_rule": {"labels": ["correct"]}, "scale": {"type": "labels", "labels": {"correct": 1, "wrong": 0}},
               "version": "v2", "versions": [{"version": "v2"}, {"version": "v1"}]}
    _, rows = formatting.metrics_rows({"overview": {"quality": {"verdict": quality}}, "by_variant": {}})
    labels = [r[0] for r in rows]
    assert "verdict@v2 average (correct=1, wrong=0)" in labels and "verdict@v2 pass rate (correct)" in labels
