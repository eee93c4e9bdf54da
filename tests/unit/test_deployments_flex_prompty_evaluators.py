"""``kind: flex`` and ``kind: prompty`` in the deployment file: metrics, scales, checks and a
version that follows every file of the flex flow's folder and its init, or the .prompty file
(docs/evaluation.md, "Flex evaluation flow", "Prompty evaluator")."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from shared.deployments import DeploymentConfigError, load_deployment
from tests.unit.test_deployments_evaluators import write

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "flex_flows" / "eval_answer_quality"
INIT = {"model_config": {"connection": "judge", "model": "gpt-4o-mini"}}


def quality(flow: Path, **fields: Any) -> dict[str, Any]:
    return {"name": "quality", "kind": "flex", "flow": str(flow), "init": INIT, **fields}


def loaded(tmp_path: Path, evaluator: dict[str, Any]) -> Any:
    evaluation = load_deployment(write(tmp_path, [evaluator], metrics=[])).evaluation
    assert evaluation is not None
    return evaluation.all_evaluators()[0]


def test_a_flex_evaluator_has_one_metric_or_one_per_listed_output(tmp_path: Path) -> None:
    whole = loaded(tmp_path, quality(FIXTURE) | {"pass": {"at_least": 0.7}})
    assert whole.metrics() == ["quality"] and whole.effective_scale.type == "float"
    assert whole.pass_rule_of("quality").at_least == 0.7
    fields = loaded(tmp_path, quality(FIXTURE, outputs={"groundedness": {"scale": "1-5", "pass": {"at_least": 4}},
                                                        "concise": {}}))
    assert fields.metrics() == ["quality.groundedness", "quality.concise"]
    assert fields.scale_of("quality.groundedness").high == 5 and fields.pass_rule_of("quality.groundedness").at_least == 4
    assert fields.scale_of("quality.concise").type == "float"


@pytest.mark.parametrize(("evaluator", "where", "message"), [
    ({"name": "q", "kind": "flex"}, "evaluators[0].flow", "required"),
    ({"name": "q", "kind": "flex", "flow": "flow"}, "evaluators[0].flow", "has no flow.flex.yaml"),
    ({"name": "q", "kind": "flex", "flow": str(FIXTURE), "prompt": "{{ answer }}"}, "evaluators[0].prompt",
     "does not apply to kind flex"),
    ({"name": "q", "kind": "code", "code": "x.py:f", "init": {"a": 1}}, "evaluators[0].init", "does not apply"),
])
def test_bad_flex_evaluators_name_the_field(tmp_path: Path, evaluator: dict[str, Any], where: str, message: str) -> None:
    (tmp_path / "x.py").write_text("def f(answer):\n    return 1\n")
    with pytest.raises(DeploymentConfigError) as caught:
        load_deployment(write(tmp_path, [evaluator], metrics=[]))
    assert where in str(caught.value) and message in str(caught.value), str(caught.value)


def test_the_version_follows_every_file_of_the_folder_and_the_init(tmp_path: Path) -> None:
    folder = tmp_path / "evaluators" / "quality"
    shutil.copytree(FIXTURE, folder)
    first = loaded(tmp_path, quality(folder)).version
    assert len(first) == 12
    # Wiring is not content: moving a column keeps the version.
    assert loaded(tmp_path, quality(folder, columns={"answer": "${run.outputs.answer}"})).version == first
    # A cache the run writes is not content either.
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "quality.cpython-311.pyc").write_bytes(b"\0")
    assert loaded(tmp_path, quality(folder)).version == first
    # The prompt file the entry renders is.
    prompt = folder / "rate_groundedness.md"
    prompt.write_text(prompt.read_text() + "\nBe strict.\n")
    edited = loaded(tmp_path, quality(folder)).version
    assert edited != first
    # So is a new file, and so is what the class is built with.
    (folder / "helpers.py").write_text("X = 1\n")
    added = loaded(tmp_path, quality(folder)).version
    assert added not in (first, edited)
    rebuilt = loaded(tmp_path, {**quality(folder), "init": {**INIT, "max_words": 10}}).version
    assert rebuilt not in (first, edited, added)


PROMPTY = Path(__file__).resolve().parents[1] / "fixtures" / "prompty" / "eval_basic_json.prompty"


def test_a_prompty_evaluator_is_judged_on_1_to_5_and_versioned_by_its_file(tmp_path: Path) -> None:
    copy = tmp_path / "evaluators" / "basic.prompty"
    copy.parent.mkdir()
    shutil.copy2(PROMPTY, copy)
    whole = loaded(tmp_path, {"name": "basic", "kind": "prompty", "prompty": "evaluators/basic.prompty"})
    assert whole.metrics() == ["basic"] and (whole.effective_scale.low, whole.effective_scale.high) == (1, 5)
    assert whole.prompty == copy.resolve()
    fields = loaded(tmp_path, {"name": "basic", "kind": "prompty", "prompty": str(copy), "outputs": {"score": {}}})
    assert fields.metrics() == ["basic.score"] and fields.version != whole.version
    copy.write_text(copy.read_text().replace("temperature: 0.1", "temperature: 0.2"))
    assert loaded(tmp_path, {"name": "basic", "kind": "prompty", "prompty": str(copy)}).version != whole.version


@pytest.mark.parametrize(("evaluator", "where", "message"), [
    ({"name": "q", "kind": "prompty"}, "evaluators[0].prompty", "required"),
    ({"name": "q", "kind": "prompty", "prompty": "x.py"}, "evaluators[0].prompty", "is not a .prompty file"),
    ({"name": "q", "kind": "prompty", "prompty": "missing.prompty"}, "evaluators[0].prompty", "cannot read"),
    ({"name": "q", "kind": "prompty", "prompty": str(PROMPTY), "init": {}}, "evaluators[0].init", "does not apply"),
])
def test_bad_prompty_evaluators_name_the_field(tmp_path: Path, evaluator: dict[str, Any], where: str,
                                               message: str) -> None:
    (tmp_path / "x.py").write_text("")
    with pytest.raises(DeploymentConfigError) as caught:
        load_deployment(write(tmp_path, [evaluator], metrics=[]))
    assert where in str(caught.value) and message in str(caught.value), str(caught.value)
