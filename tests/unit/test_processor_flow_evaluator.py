"""The flow evaluator kind on the flow runtime: inputs bound from a request, outputs read as
scores on their scales, failures as error outcomes, LLM usage counted as judge usage, and LLM
calls waiting for a judge slot. (The processor with Kafka and llmsim:
tests/integration/test_processor_flow_evaluators.py.)"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.context import Context

from services.processor.evaluation.judge.breaker import CircuitBreaker
from services.processor.evaluation.judge.client import CallCost
from services.processor.evaluation.kinds.flow.evaluator import FlowEvaluator, gated
from services.processor.evaluation.protocol import (
    Failed,
    NotApplicable,
    RequestFields,
    Scored,
    StructFields,
)
from shared.deployments import EvaluatorConfig
from shared.events.builders import dict_to_struct, new_meta
from shared.events.messages import EvaluationErrorType
from shared.flow import FlowExecutor, load_flow
from shared.telemetry import extract_context
from tests.support.flow_fakes import FIXTURES, FakeChatClient, span_recorder, write_flow

ACCURACY = FIXTURES / "eval_classification_accuracy"
GROUNDEDNESS = FIXTURES / "eval_groundedness"
GRADE_LABELS = {"outputs": {"grade": {"scale": {"labels": {"Correct": 1, "Incorrect": 0}}}}}
Usage = list[tuple[CallCost, bool]]


def request(inputs: dict[str, Any], outputs: dict[str, Any]) -> RequestFields:
    meta = new_meta(request_id="r-1", deployment="shop", request_start_time=datetime.now(UTC))
    return RequestFields(StructFields(dict_to_struct(inputs)), StructFields(dict_to_struct(outputs)), meta)


def evaluator(
    folder: Path, columns: dict[str, str], *, clients: dict[str, Any] | None = None, timeout: float = 10.0,
    **config: Any,
) -> tuple[FlowEvaluator, Usage]:
    settings = EvaluatorConfig(name="judge", kind="flow", flow=folder, **config)
    flow = load_flow(folder)
    spent: Usage = []
    made = FlowEvaluator(
        settings, flow, FlowExecutor(flow, clients or {}), columns,
        on_usage=lambda cost, ok: spent.append((cost, ok)), timeout=timeout,
    )
    return made, spent


# -- inputs ---------------------------------------------------------------------------------------


async def test_classification_accuracy_grades_through_prompt_flow_mapping_and_labels_scale() -> None:
    judge, spent = evaluator(
        ACCURACY, {"groundtruth": "inputs.truth", "prediction": "outputs.category"}, **GRADE_LABELS
    )
    assert judge.metrics == ("judge.grade",)
    right = await judge.evaluate(request({"truth": "Billing"}, {"category": " billing "}))
    wrong = await judge.evaluate(request({"truth": "Billing"}, {"category": "Shipping"}))
    assert right == [Scored("judge.grade", 1.0, "", "Correct")]
    assert wrong == [Scored("judge.grade", 0.0, "", "Incorrect")]
    assert spent == []  # no llm node: no judge usage
    # The aggregation node is reported, not run.
    assert judge.aggregation_not_run == ("calculate_accuracy",)


async def test_an_unmapped_input_is_the_request_input_of_its_name_else_the_flows_default() -> None:
    # prompt flow's default for an input without a mapping: ${data.<name>}.
    judge, _ = evaluator(ACCURACY, {"prediction": "outputs.category"}, **GRADE_LABELS)
    found = await judge.evaluate(request({"groundtruth": "App"}, {"category": "app"}))
    assert found == [Scored("judge.grade", 1.0, "", "Correct")]
    # Neither mapped nor in the request: the flow's default (Billing).
    assert await judge.evaluate(request({}, {"category": "billing"})) == [Scored("judge.grade", 1.0, "", "Correct")]
    assert await judge.evaluate(request({}, {"category": "app"})) == [Scored("judge.grade", 0.0, "", "Incorrect")]


@pytest.mark.parametrize("truth", [None, "", "   "])
async def test_a_mapped_input_the_request_lacks_makes_every_metric_not_applicable(truth: str | None) -> None:
    # The flow file's default ground truth ("Billing", for pf flow test) never stands in for it.
    judge, _ = evaluator(ACCURACY, {"groundtruth": "inputs.truth", "prediction": "outputs.category"}, **GRADE_LABELS)
    inputs = {} if truth is None else {"truth": truth}
    found = await judge.evaluate(request(inputs, {"category": "app"}))
    assert found == [NotApplicable("judge.grade", "no groundtruth in this request")]


async def test_values_are_converted_to_the_inputs_types_as_prompt_flow_would(tmp_path: Path) -> None:
    folder = write_flow(tmp_path / "typed", """\
        inputs:
          count: {type: int}
          docs: {type: string}
          tags: {type: list}
        outputs:
          seen: {type: string, reference: "${show.output}"}
        nodes:
        - name: show
          type: python
          source: {type: code, path: show.py}
          inputs: {count: "${inputs.count}", docs: "${inputs.docs}", tags: "${inputs.tags}"}
        """, {"show.py": """\
        from promptflow.core import tool

        @tool
        def show(count: int, docs: str, tags: list) -> dict:
            ok = isinstance(count, int) and isinstance(docs, str) and isinstance(tags, list)
            return {"score": count if ok else -1, "reason": docs + "|" + ",".join(tags)}
        """})
    judge, _ = evaluator(folder, {"count": "inputs.count", "docs": "inputs.docs", "tags": "inputs.tags"},
                         outputs={"seen": {"scale": "0-10"}})
    found = await judge.evaluate(request({"count": "3", "docs": ["a", "b"], "tags": '["x", "y"]'}, {}))
    assert found == [Scored("judge.seen", 3.0, '["a", "b"]|x,y', "")]
    # A value that cannot be the input's type: a configuration error naming input and column.
    (failed,) = await judge.evaluate(request({"count": "three", "docs": "d", "tags": "[]"}, {}))
    assert isinstance(failed, Failed) and failed.error_type == EvaluationErrorType.EVALUATION_ERROR_TYPE_CONFIGURATION
    assert "'count' is int" in failed.message and "inputs.count" in failed.message


# -- outputs on their scales --------------------------------------------------------------------

SCORES_DAG = """\
inputs:
  answer: {type: string}
outputs:
  padded: {type: string, reference: "${scores.output.padded}"}
  judged: {type: string, reference: "${scores.output.judged}"}
  blank: {type: string, reference: "${scores.output.blank}"}
  wordy: {type: string, reference: "${scores.output.wordy}"}
  high: {type: string, reference: "${scores.output.high}"}
  verdict: {type: string, reference: "${scores.output.verdict}"}
nodes:
- name: scores
  type: python
  source: {type: code, path: scores.py}
  inputs: {answer: "${inputs.answer}"}
"""
SCORES_PY = """\
from promptflow.core import tool

@tool
def scores(answer: str) -> dict:
    return {"padded": " 4.0 ", "judged": '{"score": "7", "reason": "mostly supported"}', "blank": "",
            "wordy": "Score: 4", "high": 11, "verdict": "Correct"}
"""


async def test_each_output_is_read_on_its_own_scale(tmp_path: Path) -> None:
    folder = write_flow(tmp_path / "scores", SCORES_DAG, {"scores.py": SCORES_PY})
    judge, _ = evaluator(folder, {"answer": "outputs.answer"}, scale="1-10")
    found = {o.metric: o for o in await judge.evaluate(request({}, {"answer": "a"}))}
    assert found["judge.padded"] == Scored("judge.padded", 4.0)
    assert found["judge.judged"] == Scored("judge.judged", 7.0, "mostly supported")
    assert found["judge.blank"] == NotApplicable("judge.blank", "the evaluation flow gave no blank for this request")
    unparseable = EvaluationErrorType.EVALUATION_ERROR_TYPE_UNPARSEABLE
    for metric, words in (("judge.wordy", "'Score: 4' is not a number"), ("judge.high", "outside the scale"),
                          ("judge.verdict", "needs a labels scale")):
        outcome = found[metric]
        assert isinstance(outcome, Failed) and outcome.error_type == unparseable, outcome
        assert words in outcome.message, outcome.message


# -- failures ------------------------------------------------------------------------------------

FAILING_DAG = """\
inputs:
  answer: {type: string}
outputs:
  score: {type: string, reference: "${check.output}"}
nodes:
- name: check
  type: python
  source: {type: code, path: check.py}
  inputs: {answer: "${inputs.answer}"}
"""


async def test_a_node_that_raises_is_an_internal_error_naming_it(tmp_path: Path) -> None:
    folder = write_flow(tmp_path / "raises", FAILING_DAG, {"check.py": """\
        from promptflow.core import tool

        @tool
        def check(answer: str) -> float:
            raise KeyError("no score table")
        """})
    judge, _ = evaluator(folder, {"answer": "outputs.answer"})
    (failed,) = await judge.evaluate(request({}, {"answer": "a"}))
    assert isinstance(failed, Failed) and failed.error_type == EvaluationErrorType.EVALUATION_ERROR_TYPE_INTERNAL
    assert "node 'check'" in failed.message and "KeyError" in failed.message


async def test_a_flow_slower_than_its_timeout_is_a_timeout_error(tmp_path: Path) -> None:
    folder = write_flow(tmp_path / "slow", FAILING_DAG, {"check.py": """\
        import asyncio

        from promptflow.core import tool

        @tool
        async def check(answer: str) -> float:
            await asyncio.sleep(30)
            return 1.0
        """})
    judge, _ = evaluator(folder, {"answer": "outputs.answer"}, timeout=0.2)
    (failed,) = await judge.evaluate(request({}, {"answer": "a"}))
    assert failed == Failed("judge.score", EvaluationErrorType.EVALUATION_ERROR_TYPE_TIMEOUT,
                            "the evaluation flow did not finish within 0.2s")


# -- LLM usage as judge usage --------------------------------------------------------------------

TWO_OUTPUTS_DAG = """\
inputs:
  question: {type: string}
  answer: {type: string}
  context: {type: string}
outputs:
  groundedness: {type: string, reference: "${parse_score.output}"}
  echoed: {type: string, reference: "${parse_score.output}"}
nodes:
- name: rate_groundedness
  type: llm
  source: {type: code, path: rate_groundedness.md}
  inputs: {model: gpt-4, question: "${inputs.question}", answer: "${inputs.answer}", context: "${inputs.context}"}
  connection: open_ai_connection
  api: chat
- name: parse_score
  type: python
  source: {type: code, path: parse_score.py}
  inputs: {rating: "${rate_groundedness.output}"}
"""


async def test_the_flows_llm_tokens_are_judge_tokens_split_over_its_metrics(tmp_path: Path) -> None:
    folder = write_flow(tmp_path / "two", TWO_OUTPUTS_DAG, {
        "rate_groundedness.md": (GROUNDEDNESS / "rate_groundedness.md").read_text(),
        "parse_score.py": (GROUNDEDNESS / "parse_score.py").read_text(),
    })
    fake = FakeChatClient("Score: 8 of 10, every claim is in the context")
    judge, spent = evaluator(folder, {}, clients={"open_ai_connection": fake}, scale="1-10")
    qa = {"question": "Where is the office?", "context": "The office is in Lyon.", "answer": "In Lyon."}
    found = await judge.evaluate(request(qa, {}))
    assert sorted((o.metric, o.value) for o in found if isinstance(o, Scored)) == [
        ("judge.echoed", 8.0), ("judge.groundedness", 8.0)]
    usage = fake.usage_of(fake.requests[0])
    assert [(cost.prompt_tokens, cost.completion_tokens, ok) for cost, ok in spent] == [
        (usage["prompt_tokens"], usage["completion_tokens"], True)]
    shares = [o.judge.share for o in found if isinstance(o, Scored) and o.judge is not None]
    assert len(shares) == 2
    assert sum(s[0] for s in shares if s) == usage["prompt_tokens"]
    assert sum(s[1] for s in shares if s) == usage["completion_tokens"]
    assert {o.judge.cost.model for o in found if isinstance(o, Scored) and o.judge} == {"gpt-4-0613"}
    # The judged texts reached the flow's prompt.
    assert "The office is in Lyon." in str(fake.requests[0]["messages"])


async def test_a_failed_llm_call_is_an_endpoint_error_counted_as_a_failed_judge_call(tmp_path: Path) -> None:
    folder = write_flow(tmp_path / "two", TWO_OUTPUTS_DAG, {
        "rate_groundedness.md": (GROUNDEDNESS / "rate_groundedness.md").read_text(),
        "parse_score.py": (GROUNDEDNESS / "parse_score.py").read_text(),
    })
    fake = FakeChatClient(error=ConnectionError("endpoint gone"))
    judge, spent = evaluator(folder, {}, clients={"open_ai_connection": fake}, scale="1-10")
    found = await judge.evaluate(request({"question": "q", "context": "c", "answer": "a"}, {}))
    endpoint = EvaluationErrorType.EVALUATION_ERROR_TYPE_ENDPOINT_ERROR
    assert sorted((o.metric, o.error_type) for o in found if isinstance(o, Failed)) == [
        ("judge.echoed", endpoint), ("judge.groundedness", endpoint)]
    assert all("rate_groundedness" in o.message for o in found if isinstance(o, Failed))
    assert [ok for _, ok in spent] == [False]


# -- the judge slot --------------------------------------------------------------------------------


async def test_every_post_of_a_gated_client_waits_for_a_slot() -> None:
    slots = asyncio.Semaphore(1)
    running: list[int] = []
    peak = 0

    class Client:
        async def post(self, path: str, **kwargs: Any) -> str:
            nonlocal peak
            running.append(1)
            peak = max(peak, len(running))
            await asyncio.sleep(0.01)
            running.pop()
            return path

    def slot() -> Any:
        return slots

    client = gated(Client(), slot)
    held = asyncio.Event()

    async def hold_the_slot() -> None:
        async with slots:
            held.set()
            await asyncio.sleep(0.05)

    holder = asyncio.create_task(hold_the_slot())
    await held.wait()
    post = asyncio.create_task(client.post("/chat/completions"))
    await asyncio.sleep(0.02)
    assert not post.done()  # the slot is taken: the call waits
    results = await asyncio.gather(post, *(client.post(f"/{i}") for i in range(4)))
    await holder
    assert results == ["/chat/completions", "/0", "/1", "/2", "/3"]
    assert peak == 1


# -- tracing ---------------------------------------------------------------------------------------


async def test_the_flows_spans_are_in_the_judged_requests_trace() -> None:
    provider, exporter = span_recorder()
    trace_id, gateway_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    parent = extract_context([("traceparent", f"00-{trace_id}-{gateway_span}-01".encode())], context=Context())
    settings = EvaluatorConfig(name="judge", kind="flow", flow=ACCURACY, **GRADE_LABELS)
    flow = load_flow(ACCURACY)
    judge = FlowEvaluator(settings, flow, FlowExecutor(flow, {}, tracer_provider=provider),
                          {"groundtruth": "inputs.truth", "prediction": "outputs.category"},
                          on_usage=lambda cost, ok: None, timeout=10.0)
    traced = request({"truth": "App"}, {"category": "App"})
    traced.trace_parent = parent
    assert await judge.evaluate(traced) == [Scored("judge.grade", 1.0, "", "Correct")]
    spans = exporter.get_finished_spans()
    (workflow,) = [s for s in spans if s.name.startswith("invoke_workflow")]
    assert {format(s.context.trace_id, "032x") for s in spans} == {trace_id}
    assert workflow.parent is not None and format(workflow.parent.span_id, "016x") == gateway_span


async def test_a_gated_client_waits_for_its_connections_breaker_and_reports_to_it() -> None:
    breaker = CircuitBreaker(threshold=1, open_seconds=1.0)
    answers: list[Any] = [openai.APIConnectionError(request=httpx.Request("POST", "http://judge/v1")), "ok"]

    class Client:
        async def post(self, path: str, **kwargs: Any) -> Any:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    client = gated(Client(), contextlib.nullcontext, breaker)
    with pytest.raises(openai.APIConnectionError):
        await client.post("/chat/completions")
    assert breaker.state == "open"  # an unreachable endpoint trips the judge connection's breaker
    waiting = asyncio.create_task(client.post("/chat/completions"))
    await asyncio.sleep(0.05)
    assert not waiting.done() and breaker.waiting == 1  # the next call waits, as judge calls do
    assert await waiting == "ok"  # once the open period is over it goes as the probe, and succeeds
    assert breaker.state == "closed"
