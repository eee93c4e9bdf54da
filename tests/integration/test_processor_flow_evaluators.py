"""Evaluation flows in prompt flow's format judge live traffic: the processor on a real broker,
llmsim as the judge endpoint, the fixture flows tests/fixtures/flows/eval_groundedness and
eval_classification_accuracy (our own, written the way prompt flow's examples are)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from services.llmsim.judge import JudgeRequest, judge
from shared.deployments import Scale, load_deployments
from shared.events.messages import Evaluation, EvaluationErrorType
from tests.integration.test_processor_harness import (
    QA,
    Producer,
    Stage,
    read_evaluations,
    request_event,
    response_event,
    stage,
    wait_for,
)
from tests.support.flow_fakes import write_flow

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "flows"
ANSWER = "Refunds are accepted within 30 days of purchase. Our office is in Lyon and opens at nine."
GROUNDED = {
    "name": "grounded",
    "kind": "flow",
    "flow": str(FIXTURES / "eval_groundedness"),
    # prompt flow's mapping syntax, as `pf run create --column-mapping` takes it
    "columns": {"question": "${data.question}", "context": "${data.context}", "answer": "${run.outputs.answer}"},
    "outputs": {"groundedness": {"scale": "1-10", "pass": {"at_least": 6}}},
}
ACCURACY = {
    "name": "accuracy",
    "kind": "flow",
    "flow": str(FIXTURES / "eval_classification_accuracy"),
    "columns": {"groundtruth": "inputs.truth_category", "prediction": "outputs.category"},
    "outputs": {"grade": {"scale": {"labels": {"Correct": 1, "Incorrect": 0}}}},
}


def with_evaluators(st: Stage, evaluators: list[dict[str, Any]], metrics: list[str] | None = None) -> Any:
    """The stage's deployment ``shop`` with ``evaluators`` (and built-in ``metrics``) added."""
    path = st.deployments_dir / "shop.yaml"
    document = yaml.safe_load(path.read_text())
    document["evaluation"]["metrics"] = metrics or []
    document["evaluation"]["evaluators"] = evaluators
    path.write_text(yaml.safe_dump(document))
    evaluation = load_deployments(st.deployments_dir, check_flow=False)["shop"].evaluation
    assert evaluation is not None
    return evaluation


def by_request_and_metric(found: list[Evaluation]) -> dict[tuple[str, str], Evaluation]:
    keyed = {(e.meta.request_id, e.metric): e for e in found}
    assert len(keyed) == len(found), "one outcome per (request, metric)"
    return keyed


async def test_both_fixture_eval_flows_score_live_traffic(tmp_path: Path) -> None:
    async with stage(tmp_path, {"shop": {}}) as st:
        evaluation = with_evaluators(st, [GROUNDED, ACCURACY], metrics=["relevance"])
        versions = {e.name: e.version for e in evaluation.all_evaluators()}
        async with st.processor() as service, Producer(st.kafka) as producer:
            right = request_event("r-right", "shop", {**QA, "truth_category": "Billing"})
            wrong = request_event("r-wrong", "shop", {**QA, "truth_category": "Billing"})
            await producer.send(st.topics.inference, [
                right, response_event(right, {"answer": ANSWER, "category": " billing"}),
                wrong, response_event(wrong, {"answer": ANSWER, "category": "Shipping"}),
            ])
            found = by_request_and_metric(await read_evaluations(st.kafka, st.topics, 6))
            judge_prompt_tokens = service.stats.judge_prompt_tokens["shop"]
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{service.ops.port}/healthz") as response:
                    health = await response.json()
    assert set(found) == {(r, m) for r in ("r-right", "r-wrong")
                          for m in ("relevance", "grounded.groundedness", "accuracy.grade")}

    # The llm node's verdict is llmsim's for exactly the texts the columns map, parsed from the
    # reply text by the flow's own Python node.
    expected = judge(JudgeRequest(metric="groundedness", answer=ANSWER, question=QA["question"],
                                  context=QA["context"], ground_truth="")).score
    for request_id in ("r-right", "r-wrong"):
        event = found[(request_id, "grounded.groundedness")]
        assert event.WhichOneof("outcome") == "scored", event
        assert (event.evaluator, event.evaluator_version) == ("grounded", versions["grounded"])
        assert event.scored.value == float(expected)
        assert event.scored.score == Scale(type="integer", min=1, max=10).compat_score(expected)
        assert event.judge.model == "gpt-4"  # the flow's own model, as its llm node names it
        assert event.judge.prompt_version == versions["grounded"]
        assert event.judge.prompt_tokens > 0 and event.judge.completion_tokens > 0

    grades = {r: found[(r, "accuracy.grade")] for r in ("r-right", "r-wrong")}
    assert {r: (e.scored.label, e.scored.value) for r, e in grades.items()} == {
        "r-right": ("Correct", 1.0), "r-wrong": ("Incorrect", 0.0)}
    assert all((e.evaluator, e.evaluator_version) == ("accuracy", versions["accuracy"]) for e in grades.values())
    assert not any(e.HasField("judge") for e in grades.values())  # a Python-only flow calls no judge

    # The built-in judge ran beside them, and the flows' LLM tokens are judge tokens.
    assert all(found[(r, "relevance")].WhichOneof("outcome") == "scored" for r in ("r-right", "r-wrong"))
    assert judge_prompt_tokens == sum(e.judge.prompt_tokens for e in found.values() if e.HasField("judge"))
    # The flows' aggregation nodes are reported as not run, with the reason.
    assert [(row["evaluator"], row["nodes"]) for row in health["aggregation_nodes_not_run"]] == [
        ("grounded", ["average_groundedness"]), ("accuracy", ["calculate_accuracy"])]
    assert all("batch" in row["reason"] for row in health["aggregation_nodes_not_run"])


STRINGS_DAG = """\
$schema: https://azuremlschemas.azureedge.net/promptflow/latest/Flow.schema.json
inputs:
  answer:
    type: string
outputs:
  plain:
    type: string
    reference: ${score_as_text.output.plain}
  padded:
    type: string
    reference: ${score_as_text.output.padded}
  judged:
    type: string
    reference: ${score_as_text.output.judged}
  missing:
    type: string
    reference: ${score_as_text.output.missing}
nodes:
- name: score_as_text
  type: python
  source:
    type: code
    path: score_as_text.py
  inputs:
    answer: ${inputs.answer}
"""
STRINGS_PY = """\
from promptflow.core import tool


@tool
def score_as_text(answer: str) -> dict:
    return {"plain": "4", "padded": " 4.0 ", "judged": '{"score": "3", "reason": "one claim unsupported"}',
            "missing": None}
"""
RAISES_DAG = """\
inputs:
  answer:
    type: string
outputs:
  score:
    type: string
    reference: ${check.output}
nodes:
- name: check
  type: python
  source:
    type: code
    path: check.py
  inputs:
    answer: ${inputs.answer}
"""
RAISES_PY = """\
from promptflow.core import tool


@tool
def check(answer: str) -> float:
    raise RuntimeError("the rubric table is empty")
"""
HANGS_PY = """\
import asyncio
import shutil

from promptflow.core import tool


@tool
async def check(answer: str) -> float:
    await asyncio.sleep(60)
    return 1.0
"""


def flow_folder(root: Path, name: str, dag: str, files: dict[str, str]) -> str:
    return str(write_flow(root / name, dag, files))


async def test_numbers_in_strings_and_failing_flows_beside_working_evaluators(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    evaluators = [
        {"name": "texts", "kind": "flow", "flow": flow_folder(flows, "texts", STRINGS_DAG, {"score_as_text.py": STRINGS_PY}),
         "scale": "1-5"},
        {"name": "broken", "kind": "flow", "flow": flow_folder(flows, "broken", RAISES_DAG, {"check.py": RAISES_PY})},
        {"name": "stuck", "kind": "flow", "flow": flow_folder(flows, "stuck", RAISES_DAG, {"check.py": HANGS_PY}),
         "timeout_seconds": 1},
        ACCURACY,
    ]
    async with stage(tmp_path, {"shop": {}}) as st:
        with_evaluators(st, evaluators, metrics=["relevance"])
        async with st.processor(), Producer(st.kafka) as producer:
            request = request_event("r-1", "shop", {**QA, "truth_category": "App"})
            await producer.send(st.topics.inference, [request, response_event(request, {"answer": ANSWER, "category": "app"})])
            found = by_request_and_metric(await read_evaluations(st.kafka, st.topics, 8))
    outcome = {metric: event for (_, metric), event in found.items()}
    assert set(outcome) == {"texts.plain", "texts.padded", "texts.judged", "texts.missing", "broken.score",
                            "stuck.score", "accuracy.grade", "relevance"}
    # Numbers in strings are scores, as prompt flow users expect.
    assert [(outcome[m].WhichOneof("outcome"), outcome[m].scored.value) for m in ("texts.plain", "texts.padded")] == [
        ("scored", 4.0), ("scored", 4.0)]
    assert (outcome["texts.judged"].scored.value, outcome["texts.judged"].scored.reason) == (3.0, "one claim unsupported")
    assert outcome["texts.missing"].WhichOneof("outcome") == "not_applicable"
    # A flow that raises, and one that outlives its timeout: error outcomes of their own...
    broken, stuck = outcome["broken.score"], outcome["stuck.score"]
    assert broken.WhichOneof("outcome") == "error" and broken.error.type == EvaluationErrorType.EVALUATION_ERROR_TYPE_INTERNAL
    assert "node 'check'" in broken.error.message and "the rubric table is empty" in broken.error.message
    assert stuck.WhichOneof("outcome") == "error" and stuck.error.type == EvaluationErrorType.EVALUATION_ERROR_TYPE_TIMEOUT
    assert broken.evaluator == "broken" and stuck.evaluator == "stuck"
    # ...while every other evaluator of the deployment scored the request.
    assert outcome["accuracy.grade"].scored.label == "Correct"
    assert outcome["relevance"].WhichOneof("outcome") == "scored"


async def test_the_flows_llm_calls_wait_for_the_judge_slot_like_every_judge_call(tmp_path: Path) -> None:
    # One judge slot; the first judge call to reach llmsim hangs until the call's timeout. Built-in
    # relevance and the flow's llm node each need a judge call: the second must wait for the slot.
    async with stage(tmp_path, {"shop": {}}) as st:
        with_evaluators(st, [GROUNDED], metrics=["relevance"])
        await st.sim.control("POST", "/control/faults", {"fault": "hang", "count": 1, "target": "judge"})
        async with st.processor(judge_concurrency=1, judge_timeout_seconds=2.0) as service, Producer(st.kafka) as producer:
            request = request_event("r-1", "shop", QA)
            await producer.send(st.topics.inference, [request, response_event(request, {"answer": ANSWER})])

            async def requests_seen() -> int:
                state = await st.sim.control("GET", "/control/state")
                return int(state["counters"].get("requests", 0))

            for _ in range(400):  # up to 20 s for the first call to arrive
                if await requests_seen() >= 1:
                    break
                await asyncio.sleep(0.05)
            await wait_for(lambda: service.judge_calls.calls_in_flight == 1, 10, "the hung call in its slot")
            await asyncio.sleep(1.0)  # well under the 2 s timeout: the other call is still waiting
            assert await requests_seen() == 1
            found = by_request_and_metric(await read_evaluations(st.kafka, st.topics, 2, within=60))
    # Once the hung call timed out and was retried, both were judged.
    assert {metric: e.WhichOneof("outcome") for (_, metric), e in found.items()} == {
        "relevance": "scored", "grounded.groundedness": "scored"}


DEMO_DEPLOYMENTS = Path(__file__).resolve().parents[2] / "deploy" / "local" / "deployments"


async def test_the_demo_deployments_evaluation_flow_judges_its_answers(tmp_path: Path) -> None:
    # deploy/local/deployments/demo.yaml as shipped (its evaluators folder and lock file beside
    # it), every request sampled, judged by its evaluation flow alone.
    async with stage(tmp_path, {}) as st:
        shutil.copytree(DEMO_DEPLOYMENTS / "evaluators", st.deployments_dir / "evaluators")
        shutil.copy2(DEMO_DEPLOYMENTS / "demo.evaluators.lock", st.deployments_dir)
        demo = yaml.safe_load((DEMO_DEPLOYMENTS / "demo.yaml").read_text())
        demo.pop("api_keys_file")
        demo["flow"] = "flows/unused"  # the processor never reads the deployment's own flow
        demo["evaluation"]["sampling_rate"] = 1.0
        demo["evaluation"]["metrics"] = []
        demo["monitors"] = []  # they watch the built-in metrics left out here
        demo["evaluation"]["evaluators"] = [e for e in demo["evaluation"]["evaluators"] if e["kind"] == "flow"]
        (st.deployments_dir / "demo.yaml").write_text(yaml.safe_dump(demo))
        async with st.processor(), Producer(st.kafka) as producer:
            cited = request_event("r-cited", "demo", {"question": QA["question"], "context": QA["context"]})
            drifted = request_event("r-drifted", "demo", {"question": QA["question"], "context": QA["context"]})
            await producer.send(st.topics.inference, [
                cited, response_event(cited, {"answer": "Refunds are accepted within 30 days of purchase [1]."}),
                drifted, response_event(drifted, {"answer": "Penguin carrot volcano, within seven weeks."}),
            ])
            found = by_request_and_metric(await read_evaluations(st.kafka, st.topics, 4))
    assert {key: (e.scored.value, e.scored.label) for key, e in found.items() if e.metric.endswith(".citation")} == {
        ("r-cited", "eval_groundedness.citation"): (1.0, "cited"),
        ("r-drifted", "eval_groundedness.citation"): (0.0, "uncited")}
    rated = {r: found[(r, "eval_groundedness.groundedness")].scored.value for r in ("r-cited", "r-drifted")}
    # On the flow's 1-10 scale (llmsim answers on the <scale> the prompt names): the grounded
    # answer rates high, the drifted one low.
    assert rated["r-cited"] >= 7 > rated["r-drifted"] >= 1, rated
    assert {e.evaluator_version for e in found.values()} == {"d68bbeeec349"}  # locked as v1
