"""Deployment files: the demo loads, and every kind of bad field is named with file and path."""

from __future__ import annotations

import copy
import math
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from shared.apikeys import hash_api_key, new_api_key_record
from shared.deployments import (
    DeploymentConfigError,
    Monitor,
    load_api_keys_file,
    load_deployment,
    load_deployments,
    parse_duration,
    save_api_keys_file,
)
from shared.deployments.errors import display_path
from shared.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[2]
DEMO_DIR = REPO / "deploy" / "local" / "deployments"

FLOW = {
    "inputs": {
        "question": {"type": "string"},
        "context": {"type": "string"},
        "truth": {"type": "string", "default": ""},
    },
    "outputs": {"answer": {"type": "string", "reference": "${answer.output}"}},
    "nodes": [{"name": "answer", "use_variants": True}],
    "node_variants": {
        "answer": {
            "default_variant_id": "variant_0",
            "variants": {
                "variant_0": {"node": {"type": "llm", "source": {"type": "code", "path": "a.jinja2"}}},
                "variant_1": {"node": {"type": "llm", "source": {"type": "code", "path": "b.jinja2"}}},
            },
        }
    },
}

BASE: dict[str, Any] = {
    "name": "shop",
    "flow": "flows/shop",
    "variants": [{"id": "variant_0", "weight": 3}, {"id": "variant_1", "weight": 1}],
    "column_mapping": {
        "question": "inputs.question",
        "context": "inputs.context",
        "answer": "outputs.answer",
        "ground_truth": "inputs.truth",
    },
    "evaluation": {
        "metrics": ["groundedness", "relevance", "similarity"],
        "sampling_rate": 0.2,
        "judge": {"connection": "judge", "model": "gpt-4o-mini"},
    },
    "monitors": [
        {
            "id": "shop-relevance",
            "variant": "variant_1",
            "statistic": "average",
            "metric": "relevance",
            "threshold": 3.5,
            "window": "5m",
            "min_samples": 10,
        }
    ],
}

CONNECTIONS = {"connections": {"judge": {"type": "openai_compatible", "base_url": "http://127.0.0.1:8082/v1", "api_key": "none"}}}


def make_folder(tmp_path: Path, deployment: dict[str, Any] | str, file_name: str = "shop.yaml") -> Path:
    folder = tmp_path / "deployments"
    (folder / "flows" / "shop").mkdir(parents=True, exist_ok=True)
    (folder / "flows" / "shop" / "flow.dag.yaml").write_text(yaml.safe_dump(FLOW))
    (folder / "connections.yaml").write_text(yaml.safe_dump(CONNECTIONS))
    text = deployment if isinstance(deployment, str) else yaml.safe_dump(deployment, sort_keys=False)
    (folder / file_name).write_text(text)
    return folder


def with_change(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    change(data)
    return data


def problems_of(folder: Path) -> str:
    with pytest.raises(DeploymentConfigError) as caught:
        load_deployments(folder)
    return str(caught.value)


def test_demo_deployment_loads_with_its_flow_and_connections():
    deployments = load_deployments(DEMO_DIR)
    demo = deployments["demo"]
    assert [v.id for v in demo.variants] == ["variant_0", "variant_1"]
    assert [v.weight for v in demo.variants] == [50, 50]
    assert demo.flow == (REPO / "deploy/local/flows/demo").resolve()
    assert demo.evaluation is not None
    assert demo.evaluation.metrics == ["groundedness", "relevance", "coherence", "fluency"]
    assert demo.evaluation.sampling_rate == 0.10
    assert demo.evaluation.judge.connection == "llmsim"
    relevance = [m for m in demo.monitors if m.metric == "relevance"]
    assert {m.variant for m in relevance} == {"variant_0", "variant_1"}
    assert all(m.window == 300 and m.min_samples == 10 and m.threshold == 3.5 for m in relevance)
    assert demo.source is not None and demo.source.name == "demo.yaml"


def test_settings_default_deployments_dir_is_the_demo_folder():
    # Services resolve the folder from their working directory, the repository root locally.
    assert (REPO / ServiceSettings().deployments_dir).resolve() == DEMO_DIR.resolve()


def test_valid_deployment_gets_defaults_and_resolved_paths(tmp_path):
    folder = make_folder(tmp_path, BASE)
    shop = load_deployments(folder)["shop"]
    assert shop.flow == (folder / "flows" / "shop").resolve()
    monitor = shop.monitors[0]
    assert monitor.cadence == monitor.window == 300  # tumbling unless a cadence is given
    assert monitor.scope == "variant" and monitor.violated_when == "below"
    assert monitor.is_violation(3.4) and not monitor.is_violation(3.5)
    assert shop.evaluation.judge.token_budget_per_hour == 1_000_000
    assert shop.evaluation.judge.combined_call is False
    assert shop.allow_forced_variant is False
    assert shop.api_keys == []


def test_name_defaults_to_the_file_stem(tmp_path):
    data = with_change(lambda d: d.pop("name"))
    folder = make_folder(tmp_path, data, "returns-bot.yaml")
    assert list(load_deployments(folder)) == ["returns-bot"]


def test_prompt_flow_reference_syntax_is_accepted_in_the_column_mapping(tmp_path):
    data = with_change(lambda d: d["column_mapping"].update(question="${inputs.question}"))
    shop = load_deployments(make_folder(tmp_path, data))["shop"]
    assert shop.column_mapping.question == "inputs.question"
    inputs, outputs = {"question": "q?", "context": "c"}, {"answer": "a"}
    assert shop.column_mapping.value("question", inputs, outputs) == "q?"
    assert shop.column_mapping.value("answer", inputs, outputs) == "a"
    assert shop.column_mapping.value("ground_truth", inputs, outputs) is None


def test_variant_pick_follows_the_weights(tmp_path):
    shop = load_deployments(make_folder(tmp_path, BASE))["shop"]
    picks = [shop.pick_variant(i / 1000).id for i in range(1000)]
    assert picks.count("variant_0") == 750 and picks.count("variant_1") == 250


def test_zero_weight_variant_is_never_picked_but_exists(tmp_path):
    data = with_change(lambda d: d["variants"][1].update(weight=0))
    shop = load_deployments(make_folder(tmp_path, data))["shop"]
    assert {shop.pick_variant(i / 100).id for i in range(100)} == {"variant_0"}
    assert shop.variant("variant_1") is not None


def test_variant_with_explicit_node_selection(tmp_path):
    data = with_change(lambda d: d["variants"].append({"id": "cheap", "weight": 1, "nodes": {"answer": "variant_1"}}))
    shop = load_deployments(make_folder(tmp_path, data))["shop"]
    assert shop.variant("cheap").nodes == {"answer": "variant_1"}


def test_windows_parse_to_seconds():
    assert [parse_duration(v) for v in ("5m", "1h", "1d", "90s", 120)] == [300, 3600, 86400, 90, 120]


def test_api_keys_file_is_merged_and_a_missing_one_holds_no_keys(tmp_path):
    data = with_change(lambda d: d.update(api_keys_file="../keys/shop.yaml"))
    folder = make_folder(tmp_path, data)
    assert load_deployments(folder)["shop"].api_keys == []
    key, record = new_api_key_record("ops", rate_limit_per_minute=60)
    save_api_keys_file(tmp_path / "keys" / "shop.yaml", [record])
    shop = load_deployments(folder)["shop"]
    assert shop.api_keys == [record]
    assert shop.api_keys[0].hash == hash_api_key(key)


def test_saved_api_keys_file_round_trips_owner_only_and_without_the_key(tmp_path):
    key, record = new_api_key_record()
    path = tmp_path / "k" / "keys.yaml"
    save_api_keys_file(path, [record])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key not in path.read_text()
    assert load_api_keys_file(path) == [record]


def test_monitor_checks_run_when_the_aggregator_validates_one_directly():
    good = {"id": "m", "statistic": "pass_rate", "metric": "coherence", "threshold": 0.9, "window": "1h"}
    assert Monitor.model_validate(good).effective_score_threshold == 3
    with pytest.raises(ValidationError, match="threshold: must be between 0 and 1"):
        Monitor.model_validate({**good, "threshold": 3})


def test_every_problem_in_every_file_is_reported_at_once(tmp_path):
    data = with_change(lambda d: (d["evaluation"].update(sampling_rate=2), d.update(colour="red")))
    folder = make_folder(tmp_path, data)
    (folder / "other.yaml").write_text(yaml.safe_dump(with_change(lambda d: d.update(name="Other"))))
    text = problems_of(folder)
    assert "shop.yaml: evaluation.sampling_rate: must be <= 1" in text
    assert "shop.yaml: colour: unknown field" in text
    assert "other.yaml: name:" in text


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = data
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = data
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        del target[last]

    return change


def _monitor(**fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["monitors"][0].update(fields)


BAD_FIELDS = [
    ("rate above 1", _set("evaluation.sampling_rate", 1.5), "evaluation.sampling_rate", "must be <= 1, got 1.5"),
    ("rate below 0", _set("evaluation.sampling_rate", -0.1), "evaluation.sampling_rate", "must be >= 0"),
    ("rate as yes", _set("evaluation.sampling_rate", True), "evaluation.sampling_rate", "not a boolean"),
    ("unknown top key", _set("evalution", {}), "evalution", "unknown field"),
    ("unknown nested key", _monitor(treshold=3), "monitors[0].treshold", "unknown field"),
    ("bad name", _set("name", "Shop Bot"), "name", "must match"),
    ("flow missing", _drop("flow"), "flow", "required for type flow"),
    ("flow without dag", _set("flow", "flows"), "flow", "has no flow.dag.yaml"),
    ("variant not in flow", _set("variants.1.id", "variant_9"), "variants[1].id", "not a variant id of the flow"),
    ("duplicate variant", _set("variants.1.id", "variant_0"), "variants[1].id", "listed twice"),
    ("negative weight", _set("variants.0.weight", -1), "variants[0].weight", "must be >= 0"),
    ("all weights zero", _set("variants", [{"id": "variant_0", "weight": 0}]), "variants", "weight > 0"),
    ("no variants", _set("variants", []), "variants", "at least 1 item(s)"),
    ("unknown node", _set("variants.0.nodes", {"nope": "variant_0"}), "variants[0].nodes.nope", "not a node"),
    ("unknown node variant", _set("variants.0.nodes", {"answer": "variant_7"}), "variants[0].nodes.answer", "not one of"),
    ("column not a reference", _set("column_mapping.question", "question"), "column_mapping.question", "must match"),
    ("column not in flow", _set("column_mapping.context", "inputs.ctx"), "column_mapping.context", "no input 'ctx'"),
    ("output not in flow", _set("column_mapping.answer", "outputs.reply"), "column_mapping.answer", "no output 'reply'"),
    ("unknown column role", _set("column_mapping.query", "inputs.question"), "column_mapping.query", "unknown field"),
    ("redaction not in flow", _set("redaction", {"outputs": ["secret"]}), "redaction.outputs[0]", "no output 'secret'"),
    ("unknown metric", _set("evaluation.metrics", ["toxicity"]), "evaluation.metrics[0]", "is not one of"),
    ("no metrics", _set("evaluation.metrics", []), "evaluation.metrics", "at least 1 item(s)"),
    ("duplicate metric", _set("evaluation.metrics", ["relevance", "relevance"]), "evaluation.metrics[1]", "listed twice"),
    ("metric column unmapped", _drop("column_mapping.ground_truth"), "evaluation.metrics[2]", "similarity needs column_mapping.ground_truth"),
    ("judge connection unknown", _set("evaluation.judge.connection", "gpt"), "evaluation.judge.connection", "'gpt' is not in connections.yaml"),
    ("judge missing", _drop("evaluation.judge"), "evaluation.judge", "required field is missing"),
    ("judge model empty", _set("evaluation.judge.model", ""), "evaluation.judge.model", "at least 1 character"),
    ("judge budget zero", _set("evaluation.judge.token_budget_per_hour", 0), "evaluation.judge.token_budget_per_hour", "must be >= 1"),
    ("window unparseable", _monitor(window="5x"), "monitors[0].window", "is not a duration"),
    ("window below a minute", _monitor(window="90s"), "monitors[0].window", "whole number of minutes"),
    ("window too long", _monitor(window="91d"), "monitors[0].window", "at most 90d"),
    ("unknown statistic", _monitor(statistic="median"), "monitors[0].statistic", "is not one of"),
    ("metric missing", _drop("monitors.0.metric"), "monitors[0].metric", "required for statistic average"),
    ("metric on error rate", _monitor(statistic="error_rate", threshold=0.1), "monitors[0].metric", "must be omitted"),
    ("average out of scale", _monitor(threshold=7), "monitors[0].threshold", "between 1 and 5"),
    ("pass rate above 1", _monitor(statistic="pass_rate", threshold=1.5), "monitors[0].threshold", "between 0 and 1"),
    ("latency not positive", _monitor(statistic="latency_p95", metric=None, threshold=0), "monitors[0].threshold", "> 0"),
    ("threshold nan", _monitor(threshold=math.nan), "monitors[0].threshold", "finite number"),
    ("score threshold on average", _monitor(score_threshold=4), "monitors[0].score_threshold", "only applies to statistic pass_rate"),
    ("score threshold off scale", _monitor(statistic="pass_rate", threshold=0.5, score_threshold=6), "monitors[0].score_threshold", "must be <= 5"),
    ("ci rule on latency", _monitor(statistic="latency_p95", metric=None, threshold=2, fire_only_when_ci_below=True), "monitors[0].fire_only_when_ci_below", "only applies"),
    ("tokens per variant", _monitor(statistic="tokens_per_hour", metric=None, threshold=1000), "monitors[0].variant", "omit variant"),
    ("unknown variant", _monitor(variant="variant_5"), "monitors[0].variant", "not one of variants"),
    ("metric not judged", _monitor(metric="fluency"), "monitors[0].metric", "not in evaluation.metrics"),
    ("cadence over window", _monitor(cadence="10m"), "monitors[0].cadence", "must not be longer than window"),
    ("no samples", _monitor(min_samples=0), "monitors[0].min_samples", "must be >= 1"),
    ("webhook not http", _monitor(notification={"webhook_url": "ftp://x"}), "monitors[0].notification.webhook_url", "http"),
    ("both webhooks", _monitor(notification={"webhook_url": "https://h/x", "webhook_url_env": "HOOK"}), "monitors[0].notification.webhook_url_env", "not both"),
    ("duplicate monitor", lambda d: d["monitors"].append(dict(d["monitors"][0])), "monitors[1].id", "listed twice"),
    ("monitor without evaluation", _drop("evaluation"), "monitors[0].metric", "there is no evaluation section"),
    ("bad key hash", _set("api_keys", [{"id": "a", "hash": "md5:00", "created": "2025-01-01T00:00:00Z"}]), "api_keys[0].hash", "must match"),
    ("key field unknown", _set("api_keys", [{"id": "a", "key": "pp_x", "hash": hash_api_key("k"), "created": "2025-01-01T00:00:00Z"}]), "api_keys[0].key", "unknown field"),
    ("key rate limit zero", _set("api_keys", [{"id": "a", "hash": hash_api_key("k"), "created": "2025-01-01T00:00:00Z", "rate_limit_per_minute": 0}]), "api_keys[0].rate_limit_per_minute", "must be >= 1"),
]


@pytest.mark.parametrize(("change", "field", "message"), [c[1:] for c in BAD_FIELDS], ids=[c[0] for c in BAD_FIELDS])
def test_bad_field_is_named_with_file_and_path(tmp_path, change, field, message):
    folder = make_folder(tmp_path, with_change(change))
    text = problems_of(folder)
    prefix = f"{display_path(folder / 'shop.yaml')}: {field}: "
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    assert lines, f"no problem for {field!r} in:\n{text}"
    assert any(message in line for line in lines), text


def test_invalid_file_stem_as_name_is_named(tmp_path):
    data = with_change(lambda d: d.pop("name"))
    text = problems_of(make_folder(tmp_path, data, "Shop Bot.yaml"))
    assert "Shop Bot.yaml: name: 'Shop Bot' must match" in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: shop\nflow: [unclosed\n", "invalid YAML: line 3"),
        ("name: shop\nflow: flows/shop\nname: again\n", "invalid YAML: line 3, column 1: duplicate key 'name'"),
        ("- just\n- a list\n", "deployment file must be a YAML mapping, got list"),
    ],
    ids=["syntax", "duplicate key", "not a mapping"],
)
def test_unreadable_yaml_is_named_with_the_file(tmp_path, text, message):
    folder = make_folder(tmp_path, text)
    assert f"{display_path(folder / 'shop.yaml')}: {message}" in problems_of(folder)


def test_two_files_with_one_name_clash(tmp_path):
    folder = make_folder(tmp_path, BASE)
    (folder / "shop2.yaml").write_text(yaml.safe_dump(with_change(lambda d: d.update(monitors=[]))))
    assert "shop2.yaml: name: 'shop' is also the name in" in problems_of(folder)


def test_monitor_ids_are_unique_across_deployments(tmp_path):
    folder = make_folder(tmp_path, BASE)
    (folder / "shop2.yaml").write_text(yaml.safe_dump(with_change(lambda d: d.update(name="shop2"))))
    assert "shop2.yaml: monitors[0].id: 'shop-relevance' is also a monitor of deployment 'shop'" in problems_of(folder)


def test_bad_api_keys_file_is_named(tmp_path):
    data = with_change(lambda d: d.update(api_keys_file="keys.yaml"))
    folder = make_folder(tmp_path, data)
    (folder / "keys.yaml").write_text("api_keys:\n  - id: a\n    hash: plain\n    created: 2025-01-01\n")
    # keys.yaml sits in the folder but is named by a deployment, so it must not be read as one.
    with pytest.raises(DeploymentConfigError) as caught:
        load_deployment(folder / "shop.yaml")
    assert f"{display_path(folder / 'keys.yaml')}: api_keys[0].hash: " in str(caught.value)


def test_missing_folder_is_named(tmp_path):
    text = problems_of(tmp_path / "nowhere")
    assert "nowhere: deployments folder does not exist" in text


def test_check_flow_off_skips_the_flow_for_services_that_never_run_it(tmp_path):
    data = with_change(lambda d: d.update(flow="not-mounted-here"))
    folder = make_folder(tmp_path, data)
    assert "flow: " in problems_of(folder)
    assert load_deployments(folder, check_flow=False)["shop"].evaluation.sampling_rate == 0.2


def test_variant_node_selection_follows_the_flow(tmp_path):
    data = with_change(lambda d: d["variants"].append({"id": "cheap", "nodes": {"answer": "variant_1"}}))
    shop = load_deployments(make_folder(tmp_path, data))["shop"]
    node_variants = {"answer": {"variant_0", "variant_1"}, "rewrite": {"variant_0", "terse"}}
    assert shop.variant("variant_1").node_selection(node_variants) == {"answer": "variant_1"}
    assert shop.variant("variant_0").node_selection(node_variants) == {"answer": "variant_0", "rewrite": "variant_0"}
    assert shop.variant("cheap").node_selection(node_variants) == {"answer": "variant_1"}


def test_column_mapping_rejects_an_unknown_role():
    from shared.deployments import ColumnMapping

    with pytest.raises(ValueError, match="'model_config' is not one of"):
        ColumnMapping().source("model_config")


def test_demo_flow_is_in_prompt_flow_format_with_two_template_variants():
    from shared.deployments import load_connections

    flow_dir = REPO / "deploy/local/flows/demo"
    flow = yaml.safe_load((flow_dir / "flow.dag.yaml").read_text())
    assert set(flow["inputs"]) == {"question", "context"}
    assert flow["outputs"]["answer"]["reference"] == "${answer.output}"
    nodes = {n["name"]: n for n in flow["nodes"]}
    assert nodes["format_context"]["type"] == "prompt"
    assert nodes["answer"] == {"name": "answer", "use_variants": True}
    answer = flow["node_variants"]["answer"]
    assert answer["default_variant_id"] == "variant_0"
    templates = set()
    for variant in ("variant_0", "variant_1"):
        node = answer["variants"][variant]["node"]
        assert (node["type"], node["api"], node["connection"]) == ("llm", "chat", "llmsim")
        assert node["inputs"]["question"] == "${inputs.question}"
        template = flow_dir / node["source"]["path"]
        assert template.read_text().startswith("# system:")
        templates.add(template.read_text())
    assert len(templates) == 2
    assert (flow_dir / nodes["format_context"]["source"]["path"]).is_file()
    assert "llmsim" in load_connections(DEMO_DIR)
