"""Prompty files read as prompt flow writes them: front matter problems named by field, overrides,
references, the deployment's flow of one llm node, and ``estimate_token_count`` offline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shared.deployments import DeploymentConfigError, load_deployment
from shared.deployments.connections import Connection
from shared.flow import FlowError
from shared.flow.prompty import Prompty, load_prompty, load_prompty_flow
from shared.flow.prompty.deployment import InvalidOutputKeyError, json_answer

PROMPTY = Path(__file__).resolve().parents[1] / "fixtures" / "prompty"
LLMSIM = Connection(name="llmsim", type="openai_compatible", base_url="http://127.0.0.1:9/v1", api_key="none")
CONNECTIONS = {"llmsim": LLMSIM, "open_ai_connection": LLMSIM.model_copy(update={"name": "open_ai_connection"})}
USE_LLMSIM = {"model": {"configuration": {"connection": "llmsim"}}}


def test_bad_front_matter_is_one_load_error_naming_each_field() -> None:
    with pytest.raises(FlowError) as caught:
        load_prompty(PROMPTY / "bad_front_matter.prompty")
    fields = {(p.flow, p.field) for p in caught.value.problems}
    assert fields == {("bad_front_matter.prompty", "model.api"), ("bad_front_matter.prompty", "inputs.question.type")}
    assert "'chat-completions' is not one of chat, completion" in str(caught.value)


@pytest.mark.parametrize(("text", "field", "reason"), [
    ("system:\nno front matter at all\n", "front matter", "must start with a YAML front matter"),
    ("---\nmodel: [chat]\n---\nuser:\nhi\n", "model", "must be a mapping"),
    ("---\nmodel: {parameters: 3}\n---\nuser:\nhi\n", "model.parameters", "must be a mapping"),
    ("---\nmodel: {response: some}\n---\nuser:\nhi\n", "model.response", "'some' is not one of first, all"),
    ("---\ninputs: {q: {type: int, default: many}}\n---\nuser:\n{{q}}\n", "inputs.q.default", "many"),
    ("---\noutputs: {score: {type: string}}\n---\nuser:\nhi\n", "outputs", "response_format"),
    ("---\nname: x\n---\nuser:\n{% for a in b %}\n", "template", "template error on line"),
    ("---\nmodel: {configuration: {connection: c, api_key: k}}\n---\nuser:\nhi\n", "model.configuration.connection",
     "exclusive"),
])
def test_each_kind_of_bad_front_matter_names_its_field(tmp_path: Path, text: str, field: str, reason: str) -> None:
    path = tmp_path / "broken.prompty"
    path.write_text(text)
    with pytest.raises(FlowError) as caught:
        load_prompty(path)
    [problem] = caught.value.problems
    assert problem.field == field and reason in problem.reason


def test_a_connection_override_replaces_the_files_env_endpoint_and_keeps_the_rest() -> None:
    environ = {"AZURE_OPENAI_ENDPOINT": "https://example.openai.azure.com", "AZURE_OPENAI_API_KEY": "secret"}
    plain = load_prompty(PROMPTY / "warm.prompty", environ=environ)
    assert plain.model.config_value("azure_endpoint") == "https://example.openai.azure.com"
    assert plain.model.config_value("api_version") == "${env:AZURE_OPENAI_API_VERSION}"  # unset: as written
    overridden = load_prompty(PROMPTY / "warm.prompty", {"model": {"configuration": {"connection": "llmsim"},
                                                                   "parameters": {"max_tokens": 5}}},
                              environ=environ)
    assert dict(overridden.model.configuration) == {"type": "azure_openai", "azure_deployment": "gpt-4o",
                                                    "connection": "llmsim"}
    assert dict(overridden.model.parameters) == {"max_tokens": 5, "temperature": 0.7}


def test_sample_from_a_file_and_inputs_typed_with_defaults() -> None:
    terse = load_prompty(PROMPTY / "terse.prompty")
    assert terse.sample is not None and terse.sample["question"].startswith("Can I return")
    assert terse.inputs["question"].required and terse.inputs["chat_history"].default == []
    assert terse.model.model_name == "gpt-4o-mini" and not terse.model.is_azure


def test_a_deployment_flow_is_one_llm_node_with_a_variant_per_prompty_file() -> None:
    flow = load_prompty_flow({"warm": (PROMPTY / "warm.prompty", USE_LLMSIM), "terse": (PROMPTY / "terse.prompty", None)},
                             connections=CONNECTIONS)
    assert flow.node_order == ("warm",) and flow.single_output
    group = flow.variants["warm"]
    assert group.default_variant_id == "warm"
    assert {v: n.llm.connection for v, n in group.variants.items() if n.llm} == {
        "warm": "llmsim", "terse": "open_ai_connection"}
    assert group.variants["terse"].llm is not None and group.variants["terse"].llm.params == {
        "max_tokens": 60, "temperature": 0.0}
    # A request is checked against every variant's inputs: required where any variant requires one.
    assert {n: i.required for n, i in flow.inputs.items()} == {
        "customer": False, "question": True, "notes": False, "chat_history": False}
    assert flow.outputs["output"].is_chat_output


def test_response_all_answers_the_whole_completion_from_a_python_node() -> None:
    flow = load_prompty_flow({"default": (PROMPTY / "terse.prompty", {"model": {"response": "all"}})},
                             connections=CONNECTIONS)
    node = flow.nodes["terse"]
    assert node.type == "python" and node.tool is not None and flow.single_output


def test_a_json_prompty_picks_its_declared_outputs() -> None:
    flow = load_prompty_flow({"default": (PROMPTY / "verdict.prompty", None)}, connections=CONNECTIONS)
    assert flow.node_order == ("verdict", "parse_json_answer") and list(flow.outputs) == ["answer"]
    assert not flow.single_output
    assert json_answer('{"answer": "yes", "extra": 1}', ("answer",)) == {"answer": "yes"}
    with pytest.raises(InvalidOutputKeyError, match="cannot find 'answer'"):
        json_answer('{"verdict": "yes"}', ("answer",))


def test_what_a_deployment_cannot_serve_is_named_with_its_field() -> None:
    with pytest.raises(FlowError) as caught:
        load_prompty_flow({"warm": (PROMPTY / "warm.prompty", None),
                           "terse": (PROMPTY / "terse.prompty", {"model": {"configuration": {"connection": "nope"},
                                                                           "parameters": {"max_tokens": "x"}}})},
                          connections=CONNECTIONS)
    found = {(p.flow, p.field): p.reason for p in caught.value.problems}
    assert set(found) == {("warm.prompty", "model.configuration.connection"),
                          ("terse.prompty", "model.configuration.connection"),
                          ("terse.prompty", "model.parameters.max_tokens")}
    assert "names no connection" in found[("warm.prompty", "model.configuration.connection")]
    assert "'nope' is not a known connection" in found[("terse.prompty", "model.configuration.connection")]
    with pytest.raises(FlowError, match="same outputs"):
        load_prompty_flow({"a": (PROMPTY / "verdict.prompty", None), "b": (PROMPTY / "terse.prompty", None)},
                          connections=CONNECTIONS)


def _deployment_folder(tmp_path: Path, variants: list[dict[str, object]], flow: str = "warm.prompty") -> Path:
    folder = tmp_path / "deployments"
    folder.mkdir(parents=True)
    for name in ("warm.prompty", "terse.prompty", "terse_sample.json"):
        shutil.copy(PROMPTY / name, folder)
    path = folder / "desk.yaml"
    path.write_text(yaml.safe_dump({"flow": flow, "variants": variants,
                                    "column_mapping": {"question": "inputs.question", "answer": "outputs.output"}}))
    return path


def test_the_deployment_file_checks_each_variants_prompty_and_the_column_mapping(tmp_path: Path) -> None:
    good = load_deployment(_deployment_folder(tmp_path / "a", [{"id": "warm"}, {"id": "terse", "flow": "terse.prompty"}]))
    assert good.flow_of(good.variants[1]).name == "terse.prompty"
    with pytest.raises(DeploymentConfigError) as caught:
        load_deployment(_deployment_folder(tmp_path / "b", [{"id": "warm"}, {"id": "gone", "flow": "gone.prompty"},
                                                             {"id": "dag", "flow": "flows/x"}]))
    shown = str(caught.value)
    assert "variants[1].flow" in shown and "gone.prompty does not exist" in shown
    assert "variants[2].flow" in shown and "is not a .prompty file" in shown


def test_prompty_overrides_merge_the_variants_into_the_deployments_at_every_depth(tmp_path: Path) -> None:
    path = _deployment_folder(tmp_path, [{"id": "warm", "init": {"model": {"parameters": {"max_tokens": 9}}}}])
    body = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**body, "init": {"model": {"configuration": {"connection": "llmsim"}}}}))
    deployment = load_deployment(path)
    assert deployment.prompty_overrides(deployment.variants[0]) == {
        "model": {"configuration": {"connection": "llmsim"}, "parameters": {"max_tokens": 9}}}


ESTIMATE = """\
from pathlib import Path
from shared.flow.prompty import Prompty

prompty = Prompty.load(Path({path!r}))
print(prompty.estimate_token_count(question="hello world"))
"""


def test_estimate_token_count_works_offline(tmp_path: Path) -> None:
    path = tmp_path / "count.prompty"
    path.write_text("---\nmodel:\n  configuration: {type: openai, model: gpt-4o}\n  parameters: {max_tokens: 100}\n"
                    "inputs:\n  question: {type: string}\n---\nsystem:\nhello world\nuser:\n{{question}}\n")
    # No network: every proxy points at a closed port and tiktoken's download cache is empty,
    # so a download attempt would fail the count.
    closed = "http://127.0.0.1:9"
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path / "empty-cache"), "HTTP_PROXY": closed,
           "HTTPS_PROXY": closed, "https_proxy": closed, "http_proxy": closed, "NO_PROXY": ""}
    run = subprocess.run([sys.executable, "-c", ESTIMATE.format(path=str(path))], env=env, capture_output=True,
                         text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stderr
    # Two messages of 3 + role (1 token) + "hello world" (2 tokens), 3 to prime the reply, max_tokens.
    assert int(run.stdout.strip()) == 2 * (3 + 1 + 2) + 3 + 100


def test_estimate_token_count_refuses_a_max_tokens_prompt_flow_refuses() -> None:
    prompty = Prompty.load(PROMPTY / "terse.prompty", model={"parameters": {"max_tokens": 1}})
    with pytest.raises(ValueError, match="less than the minimum"):
        prompty.estimate_token_count(question="hi")
    grows = Prompty.load(PROMPTY / "terse.prompty")
    short, long = grows.estimate_token_count(question="hi"), grows.estimate_token_count(question="hi" + " hi" * 50)
    assert long - short == 50 and short > 60  # 50 more tokens of question; max_tokens (60) counted
