"""Each evaluator version's own scale: the record migration 0015 keeps, the scale book's choice of
it over the deployment file's current scale, the re-judge comparison of two versions on
different scales (each side's pass rule its own; no weighted kappa across two scales), and the
ingest's plausibility check of a value on its own version's scale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from services.aggregator.agreement.stats import Pair
from services.aggregator.rejudge.comparison import compare_metric
from services.aggregator.rollups.scales import BUILTIN_SCALE, MetricScale, ScaleBook, scale_lookup
from shared.deployments import load_deployment_folder
from shared.events.builders import new_meta
from shared.events.messages import Evaluation
from shared.plausibility import Implausible, Plausibility

REQUEST_ID = "01890a5d-ac96-774b-bcce-b302099a8057"

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


def _loaded(folder: Path, scale: str, at_least: int) -> dict:
    """A deployments folder whose helpfulness rubric is on ``scale``, loaded."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "connections.yaml").write_text(yaml.safe_dump({"connections": {"judge": {
        "type": "openai_compatible", "base_url": "http://127.0.0.1:9/v1", "api_key": "none"}}}))
    (folder / "demo.yaml").write_text(yaml.safe_dump({
        "name": "demo", "flow": "../flows/none", "variants": [{"id": "a", "weight": 1}],
        "column_mapping": {"question": "inputs.question", "answer": "outputs.answer"},
        "evaluation": {"metrics": ["relevance"], "judge": {"connection": "judge", "model": "judge-1"},
                       "evaluators": [{"name": "helpfulness", "kind": "rubric", "prompt": "Rate {{ answer }}.",
                                       "scale": scale, "pass": {"at_least": at_least}}]},
    }))
    loaded = load_deployment_folder(folder, check_flow=False)
    assert not loaded.broken_names, loaded.problems
    return loaded.deployments


def _version(deployments: dict) -> str:
    return deployments["demo"].evaluation.evaluator("helpfulness").version


def test_a_value_is_checked_on_its_own_versions_scale(tmp_path: Path) -> None:
    """The file is on 0-10; an older version recorded on 1-5; a newer one nobody loaded yet."""
    deployments = _loaded(tmp_path / "now", "0-10", 7)
    current, older = _version(deployments), _version(_loaded(tmp_path / "before", "1-5", 3))
    plausibility = Plausibility(scale_of=scale_lookup(deployments, {("demo", "helpfulness", older): FIVE}))

    def check(value: float, version: str, metric: str = "helpfulness") -> bool:
        event = Evaluation(meta=new_meta(request_id=REQUEST_ID, deployment="demo", request_start_time=None), metric=metric,
                           evaluator=metric, evaluator_version=version)
        event.scored.score = 3
        event.scored.value = value
        try:
            plausibility.check(event)
        except Implausible:
            return False
        return True

    assert check(9, current) and not check(11, current)
    assert check(9, "") and not check(11, "")  # no version named: the loaded file's
    assert check(5, older) and not check(9, older)  # the older version on its recorded 1-5
    assert check(11, "a-newer-version")  # not loaded here yet: bounded only, not the file's 0-10
    assert check(4, "relevance-v9", "relevance") and not check(6, "any", "relevance")  # built-in: 1-5
