"""Flex flows without a network: loading flow.flex.yaml, inputs from the entry's signature, init
resolution (model configurations, connections), the entry's call and its outputs, @trace spans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.deployments import DeploymentConfigError, load_deployment
from shared.deployments.connections import Connection
from shared.flow import FlowError, FlowInputError, load_flow
from shared.flow.flex import FlexFlow
from shared.flow.flex_executor import FlexExecutor
from shared.flow.inputs import bind_inputs
from shared.flow.pf_model_config import AzureOpenAIModelConfiguration
from shared.flow.pf_tracing import INPUTS, OUTPUT, trace

CONNECTIONS = {
    "aoai": Connection(name="aoai", type="azure_openai", azure_endpoint="https://example.invalid",
                       api_version="2024-10-21", api_key_env="FLEX_TEST_KEY"),
    "compatible": Connection(name="compatible", type="openai_compatible", base_url="http://127.0.0.1:9/v1",
                             api_key="none"),
}


def write_flex(folder: Path, code: str, flow: str = "entry: flow:Entry\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flow.flex.yaml").write_text(flow)
    (folder / "flow.py").write_text(code)
    return folder


CLASS_ENTRY = """\
from promptflow.core import AzureOpenAIModelConfiguration
from promptflow.connections import CustomConnection


class Entry:
    def __init__(self, model_config: AzureOpenAIModelConfiguration, limit: int = 3, tools: CustomConnection = None):
        self.model_config = model_config
        self.limit = limit

    def __call__(self, question: str, history: list = None) -> dict:
        return {"deployment": self.model_config.azure_deployment, "endpoint": self.model_config.azure_endpoint,
                "limit": self.limit, "question": question}
"""


async def test_a_class_entry_gets_its_model_config_from_the_connection(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEX_TEST_KEY", "sk-flex-secret-value-123")
    flow = load_flow(write_flex(tmp_path / "f", CLASS_ENTRY))
    assert isinstance(flow, FlexFlow) and flow.is_class
    executor = FlexExecutor(flow, {"a": {"model_config": {"connection": "aoai", "azure_deployment": "gpt"},
                                         "limit": "5"}}, connections=CONNECTIONS)
    result = await executor.run({"question": "q"}, variant="a")
    assert result.outputs == {"deployment": "gpt", "endpoint": "https://example.invalid", "limit": 5, "question": "q"}
    assert not result.single_output


def test_init_problems_name_the_variant_and_the_parameter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEX_TEST_KEY", raising=False)
    flow = load_flow(write_flex(tmp_path / "f", CLASS_ENTRY))
    with pytest.raises(FlowError) as caught:
        FlexExecutor(flow, {
            "wrong_type": {"model_config": {"connection": "compatible", "azure_deployment": "gpt"}},
            "no_key": {"model_config": {"connection": "aoai", "azure_deployment": "gpt"}},
            "key_in_file": {"model_config": {"azure_deployment": "gpt", "api_key": "sk-x", "connection": "aoai"}},
            "unknown": {"model_config": {"connection": "aoai", "azure_deployment": "g"}, "colour": "red"},
            "missing": {"limit": 1},
        }, connections=CONNECTIONS)
    found = {p.field: p.reason for p in caught.value.problems}
    assert "a AzureOpenAIModelConfiguration takes azure_openai" in found["variants.wrong_type.init.model_config"]
    assert "FLEX_TEST_KEY" in found["variants.no_key.init.model_config"]
    assert "must not be written in a deployment file" in found["variants.key_in_file.init.model_config"]
    assert "no parameter 'colour'" in found["variants.unknown.init.colour"]
    assert "needs it" in found["variants.missing.init.model_config"]


def test_model_configuration_repr_hides_the_key() -> None:
    config = AzureOpenAIModelConfiguration(azure_deployment="gpt", azure_endpoint="https://e", api_key="sk-secret")
    assert "sk-secret" not in repr(config) and "******" in repr(config)
    with pytest.raises(ValueError, match="at the same time"):
        AzureOpenAIModelConfiguration(azure_deployment="gpt", api_key="k", connection="c")


@pytest.mark.parametrize(("code", "entry", "field", "reason"), [
    ("def other():\n    pass\n", "flow:Entry", "entry", "has no function or class 'Entry'"),
    ("class Entry:\n    pass\n", "flow:Entry", "entry", "no __call__"),
    ("import not_installed_anywhere\n", "flow:Entry", "entry", "'not_installed_anywhere' is not installed"),
    ("def f():\n    pass\n", "flow.f", "entry", "is not <module>:<function or class>"),
    ("def f():\n    pass\n", "missing:f", "entry", "module 'missing' is not a file"),
    ("class Thing:\n    pass\n\ndef f(x: Thing):\n    pass\n", "flow:f", "inputs.x", "complex Python type (Thing)"),
])
def test_load_problems_name_the_field(tmp_path: Path, code: str, entry: str, field: str, reason: str) -> None:
    with pytest.raises(FlowError) as caught:
        load_flow(write_flex(tmp_path / "f", code, f"entry: {entry}\n"))
    [problem] = caught.value.problems
    assert problem.field == field and reason in problem.reason


def test_inputs_follow_the_signature_and_the_yaml_may_type_them(tmp_path: Path) -> None:
    code = "def f(a, b: int = 1, c=None, d: 'list[str] | None' = None, e: str = 'x'):\n    return a\n"
    flow = load_flow(write_flex(tmp_path / "f", code, "entry: flow:f\ninputs:\n  a:\n    type: double\n"))
    assert {n: (i.type, i.required) for n, i in flow.inputs.items()} == {
        "a": ("double", True), "b": ("int", False), "c": ("any", False), "d": ("list", False), "e": ("string", False)}
    assert bind_inputs(flow, {"a": 2, "c": {"any": "thing"}, "ignored": 1}) == {
        "a": 2.0, "b": 1, "c": {"any": "thing"}, "d": None, "e": "x"}
    with pytest.raises(FlowInputError, match="'e': must be a string, not null"):
        bind_inputs(flow, {"a": 1, "e": None})


async def test_a_function_entry_returning_a_value_is_output_and_takes_no_init(tmp_path: Path) -> None:
    flow = load_flow(write_flex(tmp_path / "f", "async def f(q: str) -> str:\n    return q.upper()\n", "entry: flow:f\n"))
    result = await FlexExecutor(flow).run({"q": "hi"})
    assert result.outputs == {"output": "HI"} and result.single_output
    with pytest.raises(FlowError, match="init values are for a class entry"):
        FlexExecutor(flow, {"v": {"x": 1}})


async def test_trace_spans_nest_and_values_follow_the_capture_rule(tmp_path: Path) -> None:
    code = (
        "from promptflow.tracing import trace\n\n"
        "@trace\ndef inner(x):\n    return x * 2\n\n"
        "@trace\ndef words(n):\n    for i in range(n):\n        yield f'w{i} '\n\n"
        "@trace\ndef f(n: int):\n    return words(inner(n))\n"
    )
    flow = load_flow(write_flex(tmp_path / "f", code, "entry: flow:f\n"))
    for capture in (True, False):
        spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(spans))
        executor = FlexExecutor(flow, tracer_provider=provider, capture_output=capture)
        result = await executor.run({"n": 1})
        assert result.outputs == {"output": "w0 w1 "}
        by_name = {s.name: s for s in spans.get_finished_spans()}
        workflow, entry, inner, words = (by_name[n] for n in ("invoke_workflow f", "f", "inner", "words"))
        assert entry.parent.span_id == workflow.context.span_id
        assert inner.parent.span_id == entry.context.span_id
        # The generator's span is started while f runs (from f's context) and lasts while it is read.
        assert words.parent.span_id == entry.context.span_id and words.end_time >= entry.end_time
        if capture:
            assert json.loads(inner.attributes[INPUTS]) == {"x": 1} and json.loads(inner.attributes[OUTPUT]) == 2
            assert json.loads(words.attributes[OUTPUT]) == "w0 w1 "
        else:
            assert all(INPUTS not in s.attributes and OUTPUT not in s.attributes for s in spans.get_finished_spans())


def test_trace_outside_a_run_changes_nothing() -> None:
    @trace
    def double(x: int) -> int:
        return x * 2

    assert double(2) == 4 and double.__wrapped__(3) == 6


def _deployment(tmp_path: Path, body: dict[str, object]) -> Path:
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump({"name": "d", **body}))
    return path


def test_the_deployment_file_gives_init_to_flex_flows_only(tmp_path: Path) -> None:
    flex = write_flex(tmp_path / "flex", CLASS_ENTRY)
    deployment = load_deployment(_deployment(tmp_path, {
        "flow": str(flex), "init": {"limit": 1}, "variants": [{"id": "a", "init": {"limit": 2}}, {"id": "b"}]}))
    assert [deployment.init_values(v) for v in deployment.variants] == [{"limit": 2}, {"limit": 1}]
    with pytest.raises(DeploymentConfigError, match="a flex flow has no nodes"):
        load_deployment(_deployment(tmp_path, {"flow": str(flex), "variants": [{"id": "a", "nodes": {"x": "y"}}]}))
    dag = tmp_path / "dag"
    dag.mkdir()
    (dag / "flow.dag.yaml").write_text("inputs: {}\noutputs: {}\nnodes: []\n")
    with pytest.raises(DeploymentConfigError, match="init values are for a flex flow"):
        load_deployment(_deployment(tmp_path, {"flow": str(dag), "init": {"limit": 1}}))


async def test_trace_inside_a_dag_python_node_is_a_child_of_its_span(tmp_path: Path) -> None:
    folder = tmp_path / "dag"
    folder.mkdir()
    (folder / "flow.dag.yaml").write_text(
        "inputs:\n  text:\n    type: string\noutputs:\n  out:\n    type: string\n    reference: ${shout.output}\n"
        "nodes:\n- name: shout\n  type: python\n  source:\n    type: code\n    path: shout.py\n"
        "  inputs:\n    text: ${inputs.text}\n")
    (folder / "shout.py").write_text(
        "from promptflow.core import tool\nfrom promptflow.tracing import trace\n\n"
        "@trace\ndef upper(text):\n    return text.upper()\n\n"
        "@tool\ndef shout(text: str) -> str:\n    return upper(text) + '!'\n")
    from shared.flow import FlowExecutor

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    result = await FlowExecutor(load_flow(folder), {}, tracer_provider=provider).run({"text": "hi"})
    assert result.outputs == {"out": "HI!"}
    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert by_name["upper"].parent.span_id == by_name["execute_tool shout"].context.span_id
    assert json.loads(by_name["upper"].attributes[OUTPUT]) == "HI"


async def test_a_traced_call_given_the_model_config_never_records_its_key(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEX_TEST_KEY", "flexsecret")  # short: not caught as a key-like token by length
    code = CLASS_ENTRY.replace("    def __call__", "    @trace\n    def __call__").replace(
        "from promptflow.core import", "from promptflow.tracing import trace\nfrom promptflow.core import")
    code += "\n\n@trace\ndef check(answer: str, model_config: AzureOpenAIModelConfiguration):\n    return answer\n"
    code = code.replace('"question": question}', '"question": check(question, self.model_config)}')
    flow = load_flow(write_flex(tmp_path / "f", code))
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    executor = FlexExecutor(flow, {"a": {"model_config": {"connection": "aoai", "azure_deployment": "gpt"}}},
                            connections=CONNECTIONS, tracer_provider=provider)
    await executor.run({"question": "q"})
    recorded = {s.name: dict(s.attributes or {}) for s in spans.get_finished_spans()}
    assert "azure_deployment='gpt'" in recorded["check"][INPUTS]
    assert all("flexsecret" not in json.dumps(a) for a in recorded.values())


async def test_a_reload_runs_the_edited_entry(tmp_path: Path) -> None:
    folder = write_flex(tmp_path / "f", "def f(q: str) -> str:\n    return 'old ' + q\n", "entry: flow:f\n")
    old = FlexExecutor(load_flow(folder))
    (folder / "flow.py").write_text("def f(q: str) -> str:\n    return 'new ' + q\n")
    new = FlexExecutor(load_flow(folder))
    assert (await new.run({"q": "x"})).outputs == {"output": "new x"}
    assert (await old.run({"q": "x"})).outputs == {"output": "old x"}  # the serving version until swapped
