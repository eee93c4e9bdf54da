"""Each evaluator version's own scale: the record migration 0015 keeps, the scale book's choice of
it over the deployment file's current scale, and the re-judge comparison of two versions on
different scales (each side's pass rule its own; no weighted kappa across two scales)."""

from __future__ import annotations

import json

import pytest

from services.aggregator.agreement.stats import Pair
from services.aggregator.rejudge.comparison import compare_metric
from services.aggregator.rollups.scales import BUILTIN_SCALE, MetricScale, ScaleBook

FIVE = MetricScale("integer", 1.0, 5.0, at_least=3.0)
TEN = MetricScale("integer", 0.0, 10.0, at_least=7.0)
LABELS = MetricScale("labels", 0.0, 1.0, labels=(("wrong", 0.0), ("partial", 0.5), ("correct", 1.0)),
                     pass_labels=frozenset({"correct"}))


@pytest.mark.parametrize("scale", [FIVE, TEN, LABELS, MetricScale("float", 0.0, 1.0, at_least=0.8), BUILTIN_SCALE])
def test_a_recorded_scale_reads_back_the_same_through_json(scale: MetricScale) -> None:
    recorded, rule = scale.record()
    back = MetricScale.from_record(json.loads(json.dumps(recorded)), json.loads(json.dumps(rule)), scale.builtin)
    assert back == scale
    if scale.kind == "labels":  # the file's order, which a JSON object in jsonb would not keep
        assert [name for name, _ in back.labels] == ["wrong", "partial", "correct"]


def test_a_version_is_read_on_its_recorded_scale_and_an_unrecorded_one_on_the_file() -> None:
    # overrides: the scale the deployment file gives the metric now (0-10 after the change).
    book = ScaleBook(None, overrides={"helpfulness": TEN}, recorded={("helpfulness", "old"): FIVE},
                     versions={"helpfulness": "old"})
    assert book.of("helpfulness") == FIVE  # the version shown
    assert book.of("helpfulness", "old") == FIVE
    assert book.of("helpfulness", "new") == TEN  # no record: the file's current scale
    assert book.reading({}, {"helpfulness": "new"}).of("helpfulness") == TEN
    # The query's pass score still applies to a built-in metric's recorded version.
    builtin = ScaleBook(None, pass_score=4, recorded={("relevance", "v1"): BUILTIN_SCALE})
    assert builtin.of("relevance", "v1").at_least == 4.0


def test_a_rejudge_across_two_scales_reads_each_side_by_its_own_rule() -> None:
    pairs = [Pair("r1", 4.0, 8.0), Pair("r2", 2.0, 6.0), Pair("r3", 5.0, 9.0), Pair("r4", 3.0, 3.0)]
    figures = compare_metric("helpfulness", TEN, pairs, {}, FIVE)
    # Old on 1-5 at 3: 4, 5, 3 pass; new on 0-10 at 7: 8, 9 pass.
    assert figures["pass_rate"] == {"old": 0.75, "new": 0.5}
    assert figures["weighted_kappa"] is None  # no common categories to count over
    same = compare_metric("helpfulness", TEN, pairs, {}, TEN)
    assert same["pass_rate"] == {"old": 0.0, "new": 0.5} and same["weighted_kappa"] is not None
