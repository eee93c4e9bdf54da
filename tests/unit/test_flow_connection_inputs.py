"""Connection inputs of Python nodes, filled from connections.yaml with secrets from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.deployments import DeploymentConfigError, load_connections_file
from shared.flow import FlowError, FlowExecutor, load_flow
from tests.support.flow_fakes import span_recorder, write_flow

SECRET = "sk-test-secret-0123456789"
CONNECTIONS = """\
connections:
  basic_custom_connection:
    type: custom
    configs: {api_base: "http://127.0.0.1:9/v1", api_version: "2024-06-01"}
    secrets_env: {api_key: FLOW_TEST_CUSTOM_KEY}
  open_ai_connection:
    type: openai_compatible
    base_url: http://127.0.0.1:9/v1
    api_key_env: FLOW_TEST_OPENAI_KEY
  azure_open_ai_connection:
    type: azure_openai
    azure_endpoint: https://example.openai.azure.com
    api_version: "2024-10-21"
    api_key_env: FLOW_TEST_OPENAI_KEY
"""

# As prompt flow's examples write them: the node input is the connection's name.
DAG = """\
inputs:
  text:
    type: string
outputs:
  result:
    type: object
    reference: ${use.output}
nodes:
- name: use
  type: python
  source:
    type: code
    path: use.py
  inputs:
    text: ${inputs.text}
    custom: basic_custom_connection
    llm: open_ai_connection
    azure: azure_open_ai_connection
"""

CODE = """\
from typing import Union

from promptflow.core import tool
from promptflow.connections import AzureOpenAIConnection, CustomConnection, OpenAIConnection


@tool
def use(text: str, custom: CustomConnection, llm: Union[AzureOpenAIConnection, OpenAIConnection],
        azure: AzureOpenAIConnection) -> dict:
    as_dict = dict(custom)
    return {
        "custom": [type(custom).__name__, custom.api_base, custom["api_version"], as_dict["api_key"] == custom.api_key,
                   sorted(custom.secrets), sorted(custom.configs), len(custom.api_key)],
        "llm": [type(llm).__name__, isinstance(llm, OpenAIConnection), llm.base_url, llm.api_type, len(llm.api_key)],
        "azure": [type(azure).__name__, azure.api_base, azure.api_type, azure.api_version],
        "repr": repr(custom) + repr(llm) + repr(azure),
    }
"""


@pytest.fixture
def connections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("FLOW_TEST_CUSTOM_KEY", SECRET)
    monkeypatch.setenv("FLOW_TEST_OPENAI_KEY", SECRET + "-openai")
    file = tmp_path / "connections.yaml"
    file.write_text(CONNECTIONS)
    return load_connections_file(file)


def flow(tmp_path: Path, dag: str = DAG, code: str = CODE) -> Path:
    return write_flow(tmp_path / "conn", dag, {"use.py": code})


async def test_python_node_gets_connection_objects_and_secrets_stay_out_of_spans(tmp_path: Path, connections) -> None:
    provider, exporter = span_recorder()
    executor = FlowExecutor(load_flow(flow(tmp_path), connections=connections), {}, tracer_provider=provider,
                            connections=connections)
    result = await executor.run({"text": "hi"})
    out = result.outputs["result"]
    assert out["custom"] == ["CustomConnection", "http://127.0.0.1:9/v1", "2024-06-01", True, ["api_key"],
                             ["api_base", "api_version"], len(SECRET)]
    assert out["llm"] == ["OpenAIConnection", True, "http://127.0.0.1:9/v1", "openai", len(SECRET) + 7]
    assert out["azure"] == ["AzureOpenAIConnection", "https://example.openai.azure.com", "azure", "2024-10-21"]
    assert SECRET not in out["repr"] and "******" in out["repr"]
    spans = exporter.get_finished_spans()
    assert spans
    for span in spans:
        text = repr(dict(span.attributes or {})) + repr([e.attributes for e in span.events])
        assert SECRET not in text


def test_an_unknown_connection_is_a_load_problem_naming_node_and_parameter(tmp_path: Path, connections) -> None:
    with pytest.raises(FlowError) as caught:
        load_flow(flow(tmp_path, DAG.replace("custom: basic_custom_connection", "custom: nowhere")),
                  connections=connections)
    problem = caught.value.problems[0]
    assert (problem.node, problem.field) == ("use", "inputs.custom")
    assert "'nowhere' is not a known connection" in problem.reason


def test_a_connection_of_the_wrong_type_is_a_load_problem(tmp_path: Path, connections) -> None:
    dag = DAG.replace("azure: azure_open_ai_connection", "azure: basic_custom_connection")
    with pytest.raises(FlowError) as caught:
        load_flow(flow(tmp_path, dag), connections=connections)
    problem = caught.value.problems[0]
    assert (problem.node, problem.field) == ("use", "inputs.azure")
    assert "type custom" in problem.reason and "AzureOpenAIConnection" in problem.reason


def test_an_unset_secret_variable_fails_the_executor_naming_it(tmp_path: Path, connections, monkeypatch) -> None:
    monkeypatch.delenv("FLOW_TEST_CUSTOM_KEY")
    loaded = load_flow(flow(tmp_path), connections=connections)
    with pytest.raises(FlowError) as caught:
        FlowExecutor(loaded, {}, connections=connections)
    problem = caught.value.problems[0]
    assert (problem.node, problem.field) == ("use", "inputs.custom")
    assert "FLOW_TEST_CUSTOM_KEY" in problem.reason


def test_an_llm_node_cannot_use_a_custom_connection(tmp_path: Path, connections) -> None:
    dag = """\
inputs: {q: {type: string}}
outputs: {a: {type: string, reference: "${chat.output}"}}
nodes:
- name: chat
  type: llm
  source: {type: code, path: chat.jinja2}
  inputs: {model: m, q: "${inputs.q}"}
  connection: basic_custom_connection
  api: chat
"""
    with pytest.raises(FlowError) as caught:
        load_flow(write_flow(tmp_path / "llm", dag, {"chat.jinja2": "user:\n{{q}}\n"}), connections=connections)
    assert "custom connection, not an LLM endpoint" in caught.value.problems[0].reason


@pytest.mark.parametrize(
    ("entry", "field", "reason"),
    [
        ("{type: custom, configs: {api_key: abc}}", "configs.api_key", "looks like a secret"),
        ("{type: custom, api_key_env: X}", "api_key_env", "does not apply to type custom"),
        ("{type: custom, secrets_env: {api_key: 'not a variable'}}", "secrets_env.api_key", ""),
        ("{type: openai, api_key_env: X, configs: {a: b}}", "configs", "does not apply to type openai"),
    ],
)
def test_custom_connection_entries_are_validated(tmp_path: Path, entry: str, field: str, reason: str) -> None:
    file = tmp_path / "connections.yaml"
    file.write_text(f"connections:\n  c: {entry}\n")
    with pytest.raises(DeploymentConfigError) as caught:
        load_connections_file(file)
    text = "\n".join(str(p) for p in caught.value.problems)
    assert f"connections.c.{field}" in text and reason in text
