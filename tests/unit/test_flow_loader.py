"""Loading flow.dag.yaml folders: the fixtures load; every kind of mistake names flow, node and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.flow import FlowError, load_flow
from shared.flow.model import MISSING
from shared.flow.references import Reference
from tests.support.flow_fakes import CHAT_FLOW, CHAT_TEMPLATE, STANDARD_FLOW, write_flow

REPO = Path(__file__).resolve().parents[2]

LLM_NODE = """\
- name: {name}
  type: llm
  source:
    type: code
    path: chat.jinja2
  inputs:
    model: gpt-4o
    question: {question}
  connection: open_ai_connection
  api: chat
"""


def simple_flow(tmp_path: Path, nodes: str, *, outputs: str | None = None, extra: str = "",
                files: dict[str, str] | None = None) -> Path:
    outputs = outputs or "  answer:\n    type: string\n    reference: ${a.output}\n"
    dag = (
        "inputs:\n  question:\n    type: string\n"
        f"outputs:\n{outputs}"
        f"nodes:\n{nodes}{extra}"
    )
    return write_flow(tmp_path / "myflow", dag, {"chat.jinja2": CHAT_TEMPLATE, **(files or {})})


def problem(error: FlowError, node: str | None, field: str) -> str:
    for found in error.problems:
        if found.node == node and found.field == field:
            assert found.flow == "myflow"
            return found.reason
    raise AssertionError(f"no problem at node={node} field={field}: {error}")


def test_standard_fixture_loads_with_every_node_kind() -> None:
    flow = load_flow(STANDARD_FLOW)
    assert flow.name == "standard"
    assert flow.node_order == ("select_facts", "format_facts", "answer", "refuse")
    assert flow.nodes["select_facts"].type == "python"
    assert flow.nodes["format_facts"].type == "prompt"
    assert flow.nodes["format_facts"].activate is not None
    assert flow.nodes["refuse"].tool is not None and flow.nodes["refuse"].tool.is_async
    assert flow.nodes["select_facts"].tool is not None and not flow.nodes["select_facts"].tool.is_async
    group = flow.variants["answer"]
    assert group.default_variant_id == "variant_0"
    assert set(group.variants) == {"variant_0", "variant_1"}
    variant_1 = group.variants["variant_1"]
    assert variant_1.llm is not None
    assert variant_1.llm.params == {"max_tokens": 64, "temperature": 0.7}
    assert variant_1.llm.model == "gpt-3.5-turbo" and variant_1.llm.deployment_name == "gpt-35-turbo"
    # Model parameters are not template variables.
    assert set(variant_1.inputs) == {"question", "facts"}
    assert flow.inputs["max_facts"].default == 3
    assert flow.outputs["facts"].reference == Reference("${select_facts.output.facts}", "select_facts",
                                                        "select_facts", ("facts",))


def test_chat_fixture_is_a_chat_flow_with_string_numbers_converted() -> None:
    flow = load_flow(CHAT_FLOW)
    assert flow.is_chat
    assert flow.chat_history_input is not None and flow.chat_history_input.name == "chat_history"
    assert flow.inputs["chat_history"].default == []
    assert flow.inputs["question"].is_chat_input
    assert flow.outputs["answer"].is_chat_output
    node = flow.nodes["chat"]
    assert node.llm is not None and node.llm.params == {"max_tokens": 256, "temperature": 0.7}


def test_the_demo_deployments_flow_loads() -> None:
    flow = load_flow(REPO / "deploy" / "local" / "flows" / "demo")
    assert set(flow.variant_ids()) == {"variant_0", "variant_1"}


def test_input_without_default_is_required_and_defaults_are_converted(tmp_path: Path) -> None:
    folder = simple_flow(tmp_path, LLM_NODE.format(name="a", question="${inputs.question}"))
    text = (folder / "flow.dag.yaml").read_text().replace(
        "inputs:\n  question:\n    type: string\n",
        "inputs:\n  question:\n    type: string\n  k:\n    type: int\n    default: '3'\n"
        "  on:\n    type: bool\n    default: 'true'\n  tags:\n    type: list\n    default: '[1, 2]'\n",
    )
    (folder / "flow.dag.yaml").write_text(text)
    flow = load_flow(folder)
    assert flow.inputs["question"].default is MISSING and flow.inputs["question"].required
    assert (flow.inputs["k"].default, flow.inputs["on"].default, flow.inputs["tags"].default) == (3, True, [1, 2])


def test_unknown_flow_input_reference_names_node_and_field(tmp_path: Path) -> None:
    folder = simple_flow(tmp_path, LLM_NODE.format(name="a", question="${inputs.nope}"))
    with pytest.raises(FlowError) as caught:
        load_flow(folder)
    assert "names no flow input" in problem(caught.value, "a", "inputs.question")
    assert "flow 'myflow': node 'a': inputs.question" in str(caught.value)


def test_unknown_node_reference_names_node_and_field(tmp_path: Path) -> None:
    folder = simple_flow(tmp_path, LLM_NODE.format(name="a", question="${ghost.output}"))
    with pytest.raises(FlowError) as caught:
        load_flow(folder)
    assert "names no node" in problem(caught.value, "a", "inputs.question")


def test_unknown_output_reference_names_the_output(tmp_path: Path) -> None:
    outputs = "  answer:\n    type: string\n    reference: ${b.output}\n"
    folder = simple_flow(tmp_path, LLM_NODE.format(name="a", question="${inputs.question}"), outputs=outputs)
    with pytest.raises(FlowError) as caught:
        load_flow(folder)
    assert "names no node" in problem(caught.value, None, "outputs.answer.reference")


def test_reference_to_a_section_other_than_output_is_an_error(tmp_path: Path) -> None:
    folder = simple_flow(tmp_path, LLM_NODE.format(name="a", question="${inputs.question}")
                         + LLM_NODE.format(name="b", question="${a.inputs.question}"))
    with pytest.raises(FlowError) as caught:
        load_flow(folder)
    assert "only the 'output'" in problem(caught.value, "b", "inputs.question")


def test_cycle_is_an_error_naming_the_closing_node_and_field(tmp_path: Path) -> None:
    nodes = LLM_NODE.format(name="a", question="${b.output}") + LLM_NODE.format(name="b", question="${a.output}")
    folder = simple_flow(tmp_path, nodes)
    with pytest.raises(FlowError) as caught:
        load_flow(folder)
    reason = problem(caught.value, "b", "inputs.question")
    assert "cycle: a -> b -> a" in reason


def test_self_reference_is_an_error(tmp_path: Path) -> None:
    folder = simple_flow(tmp_path, LLM_NODE.format(name="a", question="${a.output}"))
    with pytest.raises(FlowError) as caught:
        load_flow(folder)
    assert "its own output" in problem(caught.value, "a", "inputs.question")


def test_missing_template_file_names_source_path(tmp_path: Path) -> None:
    nodes = LLM_NODE.format(name="a", question="${inputs.question}").replace("chat.jinja2", "gone.jinja2")
    folder = simple_flow(tmp_path, nodes)
    with pytest.raises(FlowError) as caught:
        load_flow(folder)
    assert "'gone.jinja2' does not exist" in problem(caught.value, "a", "source.path")


def test_missing_python_file_names_source_path(tmp_path: Path) -> None:
    nodes = "- name: a\n  type: python\n  source:\n    type: code\n    path: tool.py\n  inputs: {}\n"
    folder = simple_flow(tmp_path, nodes)
    with pytest.raises(FlowError) as caught:
        load_flow(folder)
    assert "does not exist" in problem(caught.value, "a", "source.path")


def test_template_syntax_error_names_source_path_and_line(tmp_path: Path) -> None:
    folder = simple_flow(tmp_path, LLM_NODE.format(name="a", question="${inputs.question}"),
                         files={"chat.jinja2": "user:\n{{ question\n"})
    with pytest.raises(FlowError) as caught:
        load_flow(folder)
    assert "template error on line" in problem(caught.value, "a", "source.path")


def test_unknown_node_type_names_type(tmp_path: Path) -> None:
    nodes = LLM_NODE.format(name="a", question="${inputs.question}").replace("type: llm", "type: vector_search")
    folder = simple_flow(tmp_path, nodes)
    with pytest.raises(FlowError) as caught:
        load_flow(folder)
    assert "'vector_search' is not a supported node type" in problem(caught.value, "a", "type")


def test_a_package_tool_that_calls_no_model_is_an_error(tmp_path: Path) -> None:
    nodes = ("- name: a\n  type: python\n  source:\n    type: package\n    tool: promptflow.tools.serpapi.SerpAPI.search\n"
             "  inputs: {}\n")
    folder = simple_flow(tmp_path, nodes)
    with pytest.raises(FlowError) as caught:
        load_flow(folder)
    assert "'promptflow.tools.serpapi.SerpAPI.search' is not supported" in problem(caught.value, "a", "source.tool")


def test_the_embedding_package_tool_is_an_embedding_llm_node(tmp_path: Path) -> None:
    nodes = ("- name: a\n  type: python\n  source:\n    type: package\n    tool: promptflow.tools.embedding.embedding\n"
             "  inputs:\n    connection: open_ai_connection\n    deployment_name: text-embedding-ada-002\n"
             "    input: ${inputs.question}\n")
    flow = load_flow(simple_flow(tmp_path, nodes), connections={"open_ai_connection"})
    node = flow.nodes["a"]
    assert node.type == "llm" and node.llm is not None and node.template is None
    assert (node.llm.api, node.llm.connection, node.llm.deployment_name) == (
        "embedding", "open_ai_connection", "text-embedding-ada-002")
    assert set(node.inputs) == {"input"}


def test_unknown_api_and_bad_model_parameter_are_errors(tmp_path: Path) -> None:
    nodes = (LLM_NODE.format(name="a", question="${inputs.question}")
             .replace("api: chat", "api: embedding")
             .replace("model: gpt-4o", "model: gpt-4o\n    max_tokens: lots"))
    folder = simple_flow(tmp_path, nodes)
    with pytest.raises(FlowError) as caught:
        load_flow(folder)
    assert "'embedding' is not supported (chat, completion)" in problem(caught.value, "a", "api")
    assert "'lots' is not a number" in problem(caught.value, "a", "inputs.max_tokens")


def test_llm_node_needs_a_model_and_a_known_connection(tmp_path: Path) -> None:
    nodes = LLM_NODE.format(name="a", question="${inputs.question}").replace("    model: gpt-4o\n", "")
    folder = simple_flow(tmp_path, nodes)
    with pytest.raises(FlowError) as caught:
        load_flow(folder, connections={"llmsim"})
    assert "model or inputs.deployment_name" in problem(caught.value, "a", "inputs")
    assert "'open_ai_connection' is not a known connection" in problem(caught.value, "a", "connection")


def test_variant_problems_name_the_variant_in_the_field(tmp_path: Path) -> None:
    variants = """\
node_variants:
  a:
    default_variant_id: v9
    variants:
      v0:
        node:
          type: llm
          source:
            type: code
            path: chat.jinja2
          inputs:
            model: gpt-4o
          connection: c
          api: chat
      v1:
        node:
          type: llm
          source:
            type: code
            path: missing.jinja2
          inputs:
            model: gpt-4o
          connection: c
          api: chat
"""
    folder = simple_flow(tmp_path, "- name: a\n  use_variants: true\n", extra=variants)
    with pytest.raises(FlowError) as caught:
        load_flow(folder)
    assert "'v9' is not one of the variants" in problem(caught.value, "a", "node_variants.a.default_variant_id")
    assert "does not exist" in problem(caught.value, "a", "variants.v1.source.path")


def test_use_variants_without_node_variants_is_an_error(tmp_path: Path) -> None:
    folder = simple_flow(tmp_path, "- name: a\n  use_variants: true\n")
    with pytest.raises(FlowError) as caught:
        load_flow(folder)
    assert "node_variants has no entry" in problem(caught.value, "a", "use_variants")


def test_bad_input_type_and_bad_default_are_errors(tmp_path: Path) -> None:
    folder = simple_flow(tmp_path, LLM_NODE.format(name="a", question="${inputs.question}"))
    text = (folder / "flow.dag.yaml").read_text().replace(
        "inputs:\n  question:\n    type: string\n",
        "inputs:\n  question:\n    type: text\n  n:\n    type: int\n    default: many\n",
    )
    (folder / "flow.dag.yaml").write_text(text)
    with pytest.raises(FlowError) as caught:
        load_flow(folder)
    assert "'text' is not one of" in problem(caught.value, None, "inputs.question.type")
    assert "'many' is not an integer" in problem(caught.value, None, "inputs.n.default")


def test_activate_needs_when_and_is(tmp_path: Path) -> None:
    nodes = LLM_NODE.format(name="a", question="${inputs.question}") + "  activate:\n    when: ${inputs.question}\n"
    folder = simple_flow(tmp_path, nodes)
    with pytest.raises(FlowError) as caught:
        load_flow(folder)
    assert "when" in problem(caught.value, "a", "activate")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    nodes = (LLM_NODE.format(name="a", question="${inputs.question}").replace("type: llm", "type: mystery")
             + LLM_NODE.format(name="b", question="${inputs.question}").replace("chat.jinja2", "gone.jinja2"))
    folder = simple_flow(tmp_path, nodes)
    with pytest.raises(FlowError) as caught:
        load_flow(folder)
    assert {(p.node, p.field) for p in caught.value.problems} >= {("a", "type"), ("b", "source.path")}


def test_missing_flow_file_and_bad_yaml(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FlowError) as caught:
        load_flow(tmp_path / "empty")
    assert caught.value.field == "flow.dag.yaml" and "not found" in str(caught.value)
    write_flow(tmp_path / "broken", "inputs: [\n")
    with pytest.raises(FlowError, match="not valid YAML"):
        load_flow(tmp_path / "broken")


def test_duplicate_node_names_are_an_error(tmp_path: Path) -> None:
    nodes = LLM_NODE.format(name="a", question="${inputs.question}") * 2
    folder = simple_flow(tmp_path, nodes)
    with pytest.raises(FlowError) as caught:
        load_flow(folder)
    assert "same name" in problem(caught.value, "a", "name")


def test_skip_config_and_environment_variables_are_refused_not_ignored(tmp_path: Path) -> None:
    nodes = (LLM_NODE.format(name="a", question="${inputs.question}")
             + "  skip:\n    when: ${inputs.question}\n    is: x\n    return: ${inputs.question}\n")
    folder = simple_flow(tmp_path, nodes, extra="environment_variables:\n  PF_SETTING: '1'\n")
    with pytest.raises(FlowError) as caught:
        load_flow(folder)
    assert "use activate" in problem(caught.value, "a", "skip")
    assert "not supported" in problem(caught.value, None, "environment_variables")
