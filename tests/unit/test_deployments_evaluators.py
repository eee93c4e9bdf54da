"""evaluation.evaluators in the deployment file: kinds, columns, scales, pass rules, versions,
the label lock, and monitors on evaluator metrics (docs/deployments.md, docs/evaluation.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.deployments import DeploymentConfigError, Scale, load_deployment
from shared.deployments.lock import main as lock_main
from shared.deployments.lockfile import lock_path, read_lock

RUBRIC = {"name": "cites", "kind": "rubric", "prompt": "Does it cite?\n{{ context }}\n{{ answer }}"}


def write(folder: Path, evaluators: list[dict[str, Any]], monitors: list[dict[str, Any]] | None = None,
          metrics: list[str] | None = None) -> Path:
    flow = folder / "flow"
    flow.mkdir(parents=True, exist_ok=True)
    (flow / "flow.dag.yaml").write_text(yaml.safe_dump({
        "inputs": {"question": {"type": "string"}, "context": {"type": "string"}},
        "outputs": {"answer": {"type": "string"}}, "nodes": [],
    }))
    document = {
        "name": "shop", "flow": "flow",
        "column_mapping": {"question": "inputs.question", "context": "inputs.context", "answer": "outputs.answer"},
        "evaluation": {"metrics": ["relevance"] if metrics is None else metrics,
                       "judge": {"connection": "judge", "model": "m"}, "evaluators": evaluators},
        "monitors": monitors or [],
    }
    path = folder / "shop.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def problems(tmp_path: Path, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(DeploymentConfigError) as caught:
        load_deployment(write(tmp_path, *args, **kwargs))
    return str(caught.value)


def test_each_kind_loads_with_its_scale_pass_rule_columns_and_metrics(tmp_path: Path) -> None:
    (tmp_path / "checks.py").write_text("def valid(answer):\n    return 1.0\n")
    deployment = load_deployment(write(tmp_path, [
        {**RUBRIC, "scale": "0-10", "pass": {"at_least": 7}, "judge": {"model": "big"}},
        {"name": "tone", "kind": "rubric", "prompt": "{{ reply }}", "columns": {"reply": "${run.outputs.answer}",
                                                                              "asked": "${data.question}"},
         "scale": {"labels": {"good": 1, "bad": 0}}},
        {"name": "valid", "kind": "code", "code": "checks.py:valid", "timeout_seconds": 2},
        {"name": "fluency", "kind": "builtin"},
    ], metrics=["relevance"]))
    evaluation = deployment.evaluation
    assert evaluation is not None
    assert evaluation.metric_names() == ["relevance", "cites", "tone", "valid", "fluency"]
    by_name = {e.name: e for e in evaluation.all_evaluators()}
    cites, tone, valid = by_name["cites"], by_name["tone"], by_name["valid"]
    assert (cites.effective_scale.low, cites.effective_scale.high, cites.effective_pass.at_least) == (0, 10, 7)
    assert tone.effective_pass.labels == ["good"] and tone.scale_of("tone").label_value("GOOD") == ("good", 1.0)
    assert valid.effective_scale.type == "float" and valid.effective_pass.at_least == 0.5 and valid.timeout == 2
    assert deployment.evaluator_columns(tone) == {
        "question": "inputs.question", "context": "inputs.context", "answer": "outputs.answer",
        "reply": "outputs.answer", "asked": "inputs.question",
    }
    assert by_name["relevance"].version == "relevance-v1" and by_name["relevance"].effective_pass.at_least == 3
    assert len(cites.version) == 12 and cites.version != tone.version
    assert valid.code_path == (tmp_path / "checks.py").resolve() and valid.code_function == "valid"
    assert evaluation.evaluator_of("tone") is tone


def test_default_pass_rules_follow_the_scale() -> None:
    from shared.deployments.evaluators import default_pass_rule

    assert default_pass_rule(Scale(type="integer", min=0, max=10)).at_least == 5
    assert default_pass_rule(Scale(type="integer", min=1, max=5)).at_least == 3
    assert default_pass_rule(Scale(type="float")).at_least == 0.5
    assert default_pass_rule(Scale(type="labels", labels={"yes": 1, "maybe": 1, "no": 0})).labels == ["yes", "maybe"]


def test_compatible_scores_place_each_scale_on_one_to_five() -> None:
    assert [Scale(type="integer", min=1, max=5).compat_score(v) for v in (1, 2, 3, 4, 5)] == [1, 2, 3, 4, 5]
    assert [Scale(type="integer", min=0, max=10).compat_score(v) for v in (0, 5, 7, 10)] == [1, 3, 4, 5]
    assert [Scale(type="float").compat_score(v) for v in (0.0, 0.1, 0.125, 0.7, 1.0)] == [1, 1, 2, 4, 5]
    assert Scale(type="labels", labels={"correct": 1, "incorrect": 0}).compat_score(0) == 1


@pytest.mark.parametrize(("evaluator", "where", "message"), [
    ({**RUBRIC, "code": "x.py:f"}, "evaluation.evaluators[0].code", "does not apply to kind rubric"),
    ({"name": "cites", "kind": "rubric"}, "evaluation.evaluators[0].prompt", "give exactly one of prompt or prompt_file"),
    ({"name": "c", "kind": "code"}, "evaluation.evaluators[0].code", "required"),
    ({"name": "c", "kind": "code", "code": "missing.py:f"}, "evaluation.evaluators[0].code", "cannot read"),
    ({**RUBRIC, "scale": {"min": 5, "max": 1}}, "evaluation.evaluators[0].scale.max", "must be greater than min"),
    ({**RUBRIC, "scale": "float", "pass": {"at_least": 3}}, "evaluation.evaluators[0].pass.at_least", "on the scale"),
    ({**RUBRIC, "pass": {"labels": ["good"]}}, "evaluation.evaluators[0].pass.labels", "needs a labels scale"),
    ({**RUBRIC, "scale": {"labels": {"a": 1, "b": 0}}, "pass": {"labels": ["c"]}}, "evaluation.evaluators[0].pass.labels[0]",
     "not a label of the scale"),
    ({**RUBRIC, "scale": {"labels": {"only": 1}}}, "evaluation.evaluators[0].scale.labels", "at least two labels"),
    ({**RUBRIC, "columns": {"answer": "${data}"}}, "evaluation.evaluators[0].columns.answer", "must match"),
    ({**RUBRIC, "columns": {"answer": "outputs.missing"}}, "evaluation.evaluators[0].columns.answer", "the flow has no output 'missing'"),
    ({"name": "toxicity", "kind": "builtin"}, "evaluation.evaluators[0].name", "is not a built-in metric"),
    ({"name": "groundedness", "kind": "builtin", "columns": {"a": "inputs.question"}}, "evaluation.evaluators[0].columns",
     "read the deployment's column_mapping"),
    ({**RUBRIC, "name": "relevance"}, "evaluation.evaluators[0].name", "relevance is listed twice"),
    ({**RUBRIC, "kind": "prompty"}, "evaluation.evaluators[0].prompt", "does not apply to kind prompty"),
    ({**RUBRIC, "prompt": "{{ answer }} {{ tone }}"}, "evaluation.evaluators[0].prompt",
     "reads tone, which neither columns nor column_mapping maps"),
    ({**RUBRIC, "prompt": "{{ answer "}, "evaluation.evaluators[0].prompt", "is not a valid Jinja2 template"),
    ({**RUBRIC, "prompt": "Is it good?"}, "evaluation.evaluators[0].prompt", "reads no input"),
    ({**RUBRIC, "name": "Has-Caps"}, "evaluation.evaluators[0].name", "must match"),
])
def test_bad_evaluators_name_the_field(tmp_path: Path, evaluator: dict[str, Any], where: str, message: str) -> None:
    text = problems(tmp_path, [evaluator])
    assert f"{where}: " in text and message in text, text


def test_evaluators_alone_are_enough_and_nothing_at_all_is_not(tmp_path: Path) -> None:
    assert load_deployment(write(tmp_path, [RUBRIC], metrics=[])).evaluation.metric_names() == ["cites"]  # type: ignore[union-attr]
    text = problems(tmp_path, [], metrics=[])
    assert "evaluation.metrics: needs at least 1 item(s) here or in evaluators" in text


def test_monitors_may_watch_evaluator_metrics_on_their_own_scale(tmp_path: Path) -> None:
    ten = {**RUBRIC, "scale": "0-10"}
    ok = load_deployment(write(tmp_path, [ten], [
        {"id": "a", "statistic": "average", "metric": "cites", "threshold": 6.5, "window": "5m"},
        {"id": "p", "statistic": "pass_rate", "metric": "cites", "threshold": 0.8, "window": "5m"},
    ]))
    assert [m.metric for m in ok.monitors] == ["cites", "cites"]
    text = problems(tmp_path, [ten], [
        {"id": "a", "statistic": "average", "metric": "cites", "threshold": 11, "window": "5m"},
        {"id": "p", "statistic": "pass_rate", "metric": "cites", "threshold": 0.8, "score_threshold": 3, "window": "5m"},
        {"id": "n", "statistic": "average", "metric": "nobody", "threshold": 3, "window": "5m"},
        {"id": "b", "statistic": "average", "metric": "relevance", "threshold": 6, "window": "5m"},
    ])
    assert "monitors[0].threshold: must be on cites's scale (0 to 10)" in text
    assert "monitors[1].score_threshold: cites passes by its evaluator's pass rule" in text
    assert "monitors[2].metric: nobody is not in evaluation.metrics nor a metric of evaluation.evaluators" in text
    assert "monitors[3].threshold: must be between 1 and 5" in text  # built-ins keep their 1-5 rule


def test_the_version_follows_the_content_not_the_wiring(tmp_path: Path) -> None:
    def version(evaluator: dict[str, Any]) -> str:
        evaluation = load_deployment(write(tmp_path, [evaluator])).evaluation
        assert evaluation is not None
        return evaluation.evaluators[0].version

    base = version(RUBRIC)
    assert version(dict(RUBRIC)) == base  # stable
    assert version({**RUBRIC, "prompt": RUBRIC["prompt"] + " Be strict."}) != base
    assert version({**RUBRIC, "scale": "0-10"}) != base
    assert version({**RUBRIC, "pass": {"at_least": 4}}) != base
    assert version({**RUBRIC, "columns": {"context": "inputs.question"}, "judge": {"model": "x"}}) == base
    (tmp_path / "prompt.txt").write_text(RUBRIC["prompt"])
    from_file = {"name": "cites", "kind": "rubric", "prompt_file": "prompt.txt"}
    assert version(from_file) == base  # the prompt's text counts, not where it is written
    (tmp_path / "checks.py").write_text("def f(answer):\n    return 1\n")
    code = {"name": "c", "kind": "code", "code": "checks.py:f"}
    before = version(code)
    (tmp_path / "checks.py").write_text("def f(answer):\n    return 0\n")
    assert version(code) != before
    (tmp_path / "checks.py").write_text("def f(answer):\n    return 1\n")
    assert version(code) == before


def test_a_locked_label_with_changed_content_does_not_load(tmp_path: Path) -> None:
    labelled = {**RUBRIC, "label": "v1"}
    path = write(tmp_path, [labelled])
    assert lock_main([str(tmp_path)]) == 0
    locked = read_lock(lock_path(path))["cites"]["v1"]
    assert locked == load_deployment(path).evaluation.evaluators[0].version  # type: ignore[union-attr]
    write(tmp_path, [{**labelled, "prompt": "Does it cite? Be strict.\n{{ context }}\n{{ answer }}"}])
    with pytest.raises(DeploymentConfigError) as caught:
        load_deployment(path)
    message = str(caught.value)
    assert "evaluation.evaluators[0].label: evaluator 'cites' changed under label 'v1'" in message
    assert f"locked as version {locked}" in message and "give the new content a new label" in message
    assert lock_main([str(tmp_path)]) == 1  # the lock is never rewritten
    assert read_lock(lock_path(path))["cites"] == {"v1": locked}
    # A new label for the new content loads and is recorded beside the old one.
    write(tmp_path, [{**labelled, "label": "v2", "prompt": "Does it cite? Be strict.\n{{ context }}\n{{ answer }}"}])
    assert lock_main([str(tmp_path)]) == 0
    assert set(read_lock(lock_path(path))["cites"]) == {"v1", "v2"}
    assert load_deployment(path).evaluation.evaluators[0].label == "v2"  # type: ignore[union-attr]


def test_a_rubrics_own_judge_connection_must_exist(tmp_path: Path) -> None:
    from shared.deployments import load_connections_file

    (tmp_path / "connections.yaml").write_text(yaml.safe_dump({"connections": {
        "judge": {"type": "openai_compatible", "base_url": "http://127.0.0.1:9/v1", "api_key": "none"}}}))
    connections = load_connections_file(tmp_path / "connections.yaml")
    path = write(tmp_path, [{**RUBRIC, "judge": {"connection": "elsewhere", "model": "big"}}])
    with pytest.raises(DeploymentConfigError) as caught:
        load_deployment(path, connections)
    assert "evaluation.evaluators[0].judge.connection: 'elsewhere' is not in connections.yaml (known: judge)" in str(caught.value)
    write(tmp_path, [{**RUBRIC, "judge": {"connection": "judge", "model": "big"}}])
    assert load_deployment(path, connections).evaluation is not None
