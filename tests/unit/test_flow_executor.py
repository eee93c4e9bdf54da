"""Running flows with a fake LLM client: inputs, activate, variants, errors (independent nodes
running at once: test_flow_executor_concurrency.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.flow import (
    FlowError,
    FlowExecutor,
    FlowInputError,
    LlmCallError,
    NodeExecutionError,
    load_flow,
)
from tests.support.flow_fakes import (
    CHAT_FLOW,
    CHAT_TEMPLATE,
    STANDARD_FLOW,
    FakeChatClient,
    last_user_message,
    write_flow,
)

CONTEXT = "Sampling is a hash of the request id.\nThe default rate is 10 percent.\n"


def standard(client: FakeChatClient | None = None) -> tuple[FlowExecutor, FakeChatClient]:
    client = client or FakeChatClient("It is a hash [1].")
    return FlowExecutor(load_flow(STANDARD_FLOW), {"open_ai_connection": client}), client


async def test_standard_flow_runs_python_prompt_and_llm_nodes() -> None:
    executor, client = standard()
    result = await executor.run({"question": "How are requests sampled?", "context": CONTEXT})
    assert result.outputs == {
        "answer": "It is a hash [1].",
        "refusal": None,
        "facts": ["Sampling is a hash of the request id.", "The default rate is 10 percent."],
    }
    [request] = client.requests
    assert request["model"] == "gpt-3.5-turbo"  # an OpenAI client takes the model, not the deployment name
    assert (request["max_tokens"], request["temperature"]) == (256, 0.2)
    assert request["messages"][0]["role"] == "system"
    assert request["messages"][1] == {
        "role": "user",
        "content": "Facts:\n[1] Sampling is a hash of the request id.\n[2] The default rate is 10 percent.\n\n\n"
        "Question: How are requests sampled?",
    }
    [call] = result.llm_calls
    usage = client.usage_of(request)
    assert (call.node, call.model, call.request_model) == ("answer", "gpt-3.5-turbo-0613", "gpt-3.5-turbo")
    assert (call.prompt_tokens, call.completion_tokens, call.total_tokens) == (
        usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"])
    assert call.usage_reported and not call.streamed
    statuses = {n.name: n.status for n in result.nodes}
    assert statuses == {"select_facts": "completed", "format_facts": "completed", "answer": "completed",
                        "refuse": "bypassed"}
    assert result.node_variants == {"answer": "variant_0"}
    assert result.usage_by_model() == {"gpt-3.5-turbo-0613": {k: usage[k] for k in usage}}


async def test_activate_bypasses_the_node_and_what_depends_only_on_it() -> None:
    executor, client = standard()
    result = await executor.run({"question": "Anything?", "context": "   \n"})
    assert result.outputs == {"answer": None, "refusal": "I have no facts to answer: Anything?", "facts": []}
    assert client.requests == []  # the LLM node depended only on the bypassed prompt node
    statuses = {n.name: n.status for n in result.nodes}
    assert statuses == {"select_facts": "completed", "format_facts": "bypassed", "answer": "bypassed",
                        "refuse": "completed"}
    assert result.llm_calls == []


CONDITIONAL = """\
inputs:
  query:
    type: string
outputs:
  answer:
    type: string
    reference: ${generate_result.output}
nodes:
- name: content_safety_check
  type: python
  source:
    type: code
    path: check.py
  inputs:
    text: ${inputs.query}
- name: llm_result
  type: python
  source:
    type: code
    path: llm_result.py
  inputs:
    request: ${inputs.query}
  activate:
    when: ${content_safety_check.output}
    is: true
- name: default_result
  type: python
  source:
    type: code
    path: default_result.py
  inputs:
    request: ${inputs.query}
  activate:
    when: ${content_safety_check.output}
    is: false
- name: generate_result
  type: python
  source:
    type: code
    path: generate_result.py
  inputs:
    llm_result: ${llm_result.output}
    default_result: ${default_result.output}
- name: after_default
  type: python
  source:
    type: code
    path: after_default.py
  inputs:
    value: ${default_result.output}
"""

CONDITIONAL_FILES = {
    "check.py": "from promptflow import tool\n\n@tool\ndef check(text: str) -> bool:\n    return 'bad' not in text\n",
    "llm_result.py": "from promptflow import tool\n\n@tool\ndef llm_result(request: str) -> str:\n    return 'LLM: ' + request\n",
    "default_result.py": "from promptflow import tool\n\n@tool\ndef default_result(request: str) -> str:\n    return 'Refused'\n",
    # Prompt flow's rule: a bypassed input takes the parameter's default, else None.
    "generate_result.py": "from promptflow import tool\n\n@tool\ndef generate_result(llm_result='', default_result=None) -> str:\n"
                          "    return f'{llm_result!r}|{default_result!r}'\n",
    "after_default.py": "from promptflow import tool\n\n@tool\ndef after_default(value: str) -> str:\n    return value\n",
}


async def test_bypassed_inputs_take_defaults_and_all_bypassed_dependents_are_bypassed(tmp_path: Path) -> None:
    executor = FlowExecutor(load_flow(write_flow(tmp_path / "cond", CONDITIONAL, CONDITIONAL_FILES)), {})
    safe = await executor.run({"query": "hello"})
    assert safe.outputs == {"answer": "'LLM: hello'|None"}
    statuses = {n.name: n.status for n in safe.nodes}
    assert statuses["default_result"] == "bypassed" and statuses["after_default"] == "bypassed"
    unsafe = await executor.run({"query": "bad words"})
    assert unsafe.outputs == {"answer": "''|'Refused'"}
    assert {n.name: n.status for n in unsafe.nodes}["llm_result"] == "bypassed"
    assert {n.name: n.status for n in unsafe.nodes}["after_default"] == "completed"


async def test_activate_on_a_bypassed_node_bypasses_and_a_met_condition_runs_despite_bypassed_inputs(
    tmp_path: Path,
) -> None:
    dag = CONDITIONAL + """\
- name: when_on_bypassed
  type: python
  source:
    type: code
    path: after_default.py
  inputs:
    value: ${inputs.query}
  activate:
    when: ${default_result.output}
    is: Refused
- name: runs_anyway
  type: python
  source:
    type: code
    path: after_default.py
  inputs:
    value: ${default_result.output}
  activate:
    when: ${inputs.query}
    is: hello
"""
    dag = dag.replace("    reference: ${generate_result.output}",
                      "    reference: ${generate_result.output}\n  anyway:\n    type: string\n"
                      "    reference: ${runs_anyway.output}")
    executor = FlowExecutor(load_flow(write_flow(tmp_path / "cond", dag, CONDITIONAL_FILES)), {})
    result = await executor.run({"query": "hello"})
    statuses = {n.name: n.status for n in result.nodes}
    assert statuses["when_on_bypassed"] == "bypassed"
    assert statuses["runs_anyway"] == "completed"
    assert result.outputs["anyway"] is None  # its only input was bypassed, so it got None


async def test_variant_selects_that_variant_of_every_node_that_has_it() -> None:
    executor, client = standard()
    result = await executor.run({"question": "q", "context": CONTEXT}, variant="variant_1")
    assert result.node_variants == {"answer": "variant_1"}
    assert (client.requests[0]["max_tokens"], client.requests[0]["temperature"]) == (64, 0.7)
    assert client.requests[0]["messages"][0]["content"].startswith("You answer in one short sentence")
    assert {n.name: n.variant_id for n in result.nodes}["answer"] == "variant_1"


async def test_default_variant_and_per_node_choice() -> None:
    executor, client = standard()
    await executor.run({"context": CONTEXT}, variant="default")
    await executor.run({"context": CONTEXT}, node_variants={"answer": "variant_1"})
    assert [r["max_tokens"] for r in client.requests] == [256, 64]


async def test_unknown_variant_is_a_flow_error_naming_the_field() -> None:
    executor, _ = standard()
    with pytest.raises(FlowError) as caught:
        await executor.run({}, variant="variant_9")
    assert (caught.value.flow, caught.value.field) == ("standard", "variant")
    with pytest.raises(FlowError) as caught:
        await executor.run({}, node_variants={"answer": "variant_9"})
    assert (caught.value.node, caught.value.field) == ("answer", "variant")


async def test_llm_headers_reach_the_call() -> None:
    executor, client = standard()
    await executor.run({"context": CONTEXT}, llm_headers={"x-promptpulse-variant": "variant_0"})
    assert client.requests[0]["extra_headers"] == {"x-promptpulse-variant": "variant_0"}


async def test_missing_required_input_and_wrong_types_name_the_field(tmp_path: Path) -> None:
    dag = """\
    inputs:
      question:
        type: string
      k:
        type: int
        default: 2
      ratio:
        type: double
        default: 0.5
      flag:
        type: bool
        default: false
    outputs:
      answer:
        type: string
        reference: ${inputs.question}
    nodes:
    - name: a
      type: prompt
      source:
        type: code
        path: p.jinja2
      inputs:
        q: ${inputs.question}
    """
    executor = FlowExecutor(load_flow(write_flow(tmp_path / "typed", dag, {"p.jinja2": "{{q}}"})), {})
    for given, field, words in [
        ({}, "question", "is required"),
        ({"question": None}, "question", "must be a string, not null"),
        ({"question": 3}, "question", "must be a string, not a number"),
        ({"question": "q", "k": "2"}, "k", "must be an integer"),
        ({"question": "q", "k": True}, "k", "not a boolean"),
        ({"question": "q", "k": 2.5}, "k", "must be an integer"),
        ({"question": "q", "flag": "yes"}, "flag", "must be true or false"),
    ]:
        with pytest.raises(FlowInputError) as caught:
            await executor.run(given)
        assert caught.value.field == field, given
        assert words in str(caught.value), given
    with pytest.raises(FlowInputError, match="must be a JSON object"):
        await executor.run(["not", "an", "object"])
    ok = await executor.run({"question": "q", "k": 3.0, "ratio": 1, "unknown": "ignored"})
    assert ok.outputs == {"answer": "q"}


async def test_chat_history_turns_are_checked_and_rendered() -> None:
    client = FakeChatClient(last_user_message)
    executor = FlowExecutor(load_flow(CHAT_FLOW), {"open_ai_connection": client})
    with pytest.raises(FlowInputError) as caught:
        await executor.run({"question": "q", "chat_history": [{"inputs": {"question": "a"}, "outputs": "b"}]})
    assert caught.value.field == "chat_history[0].outputs"
    history = [{"inputs": {"question": "Hi"}, "outputs": {"answer": "Hello!"}}]
    result = await executor.run({"question": "How are you?", "chat_history": history})
    assert result.outputs == {"answer": "How are you?"}
    assert [m["role"] for m in client.requests[0]["messages"]] == ["system", "user", "assistant", "user"]
    assert client.requests[0]["max_tokens"] == 256  # written "256" in the flow file
    default_run = await executor.run({})
    assert default_run.outputs == {"answer": "What is ChatGPT?"}


async def test_llm_failure_is_an_llm_call_error_with_the_error_type() -> None:
    class RateLimitError(Exception):
        status_code = 429

    executor, _ = standard(FakeChatClient(error=RateLimitError("slow down; key sk-proj-abcdefghijklmnop")))
    with pytest.raises(LlmCallError) as caught:
        await executor.run({"context": CONTEXT})
    error = caught.value
    assert (error.node, error.error_type, error.status_code) == ("answer", "RateLimitError", 429)
    assert "sk-proj" not in error.message and "[redacted]" in error.message


async def test_missing_client_for_a_connection_is_a_flow_error() -> None:
    with pytest.raises(FlowError) as caught:
        FlowExecutor(load_flow(STANDARD_FLOW), {})
    assert (caught.value.node, caught.value.field) == ("answer", "connection")


async def test_reference_to_a_missing_property_fails_the_node(tmp_path: Path) -> None:
    dag = ("inputs: {}\noutputs:\n  a:\n    type: string\n    reference: ${second.output}\nnodes:\n"
           "- name: first\n  type: python\n  source:\n    type: code\n    path: first.py\n  inputs: {}\n"
           "- name: second\n  type: prompt\n  source:\n    type: code\n    path: p.jinja2\n"
           "  inputs:\n    x: ${first.output.nope}\n")
    files = {"first.py": "from promptflow import tool\n\n@tool\ndef first() -> dict:\n    return {'yes': 1}\n",
             "p.jinja2": "{{x}}"}
    executor = FlowExecutor(load_flow(write_flow(tmp_path / "prop", dag, files)), {})
    with pytest.raises(NodeExecutionError) as caught:
        await executor.run({})
    assert (caught.value.node, caught.value.field, caught.value.error_type) == ("second", "inputs.x", "InvalidReference")


async def test_model_parameter_from_an_input_is_converted_at_run_time(tmp_path: Path) -> None:
    dag = ("inputs:\n  temp:\n    type: string\noutputs:\n  a:\n    type: string\n    reference: ${n.output}\n"
           "nodes:\n- name: n\n  type: llm\n  source:\n    type: code\n    path: chat.jinja2\n"
           "  inputs:\n    model: m\n    temperature: ${inputs.temp}\n    question: q\n  connection: c\n  api: chat\n")
    client = FakeChatClient("ok")
    executor = FlowExecutor(load_flow(write_flow(tmp_path / "param", dag, {"chat.jinja2": CHAT_TEMPLATE})),
                            {"c": client})
    await executor.run({"temp": "0.25"})
    assert client.requests[0]["temperature"] == 0.25
    with pytest.raises(NodeExecutionError) as caught:
        await executor.run({"temp": "hot"})
    assert (caught.value.field, caught.value.error_type) == ("temperature", "InvalidParameter")


async def test_a_failed_run_still_reports_the_llm_calls_it_paid_for(tmp_path: Path) -> None:
    dag = ("inputs: {}\noutputs:\n  a:\n    type: string\n    reference: ${parse.output}\nnodes:\n"
           "- name: ask\n  type: llm\n  source:\n    type: code\n    path: chat.jinja2\n"
           "  inputs:\n    model: m\n    question: q\n  connection: c\n  api: chat\n"
           "- name: parse\n  type: python\n  source:\n    type: code\n    path: parse.py\n"
           "  inputs:\n    text: ${ask.output}\n")
    files = {"chat.jinja2": CHAT_TEMPLATE,
             "parse.py": "import json\nfrom promptflow import tool\n\n@tool\ndef parse(text: str):\n"
                         "    return json.loads(text)\n"}
    executor = FlowExecutor(load_flow(write_flow(tmp_path / "paid", dag, files)), {"c": FakeChatClient("not json")})
    with pytest.raises(NodeExecutionError) as caught:
        await executor.run({})
    assert (caught.value.node, caught.value.error_type) == ("parse", "JSONDecodeError")
    assert [c.node for c in caught.value.llm_calls] == ["ask"]
    assert caught.value.llm_calls[0].total_tokens > 0
