"""Flex evaluation flows (``kind: flex``) judge live traffic: the processor on a real broker,
llmsim as the judge endpoint, the fixtures tests/fixtures/flex_flows/eval_answer_quality (a class
built with a model configuration, calling the model with its own openai client) and
eval_keyword_recall (an async function), written the way prompt flow's examples/flex-flows/eval-*
are."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.llmsim.judge import JudgeRequest, judge
from shared.events.messages import EvaluationErrorType
from tests.integration.test_processor_flow_evaluators import (
    ANSWER,
    by_request_and_metric,
    with_evaluators,
)
from tests.integration.test_processor_harness import (
    QA,
    Producer,
    read_evaluations,
    request_event,
    response_event,
    stage,
    wait_for,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "flex_flows"
QUALITY = {
    "name": "quality",
    "kind": "flex",
    "flow": str(FIXTURES / "eval_answer_quality"),
    # open_ai_connection is not in connections.yaml: the judge's connection stands in for it.
    "init": {"model_config": {"connection": "open_ai_connection", "model": "gpt-4o-mini"}, "max_words": 12},
    "columns": {"question": "${data.question}", "context": "${data.context}", "answer": "${run.outputs.answer}"},
    "outputs": {"groundedness": {"scale": "1-5"}, "concise": {"scale": "float", "pass": {"at_least": 1}}},
}
RECALL = {
    "name": "recall",
    "kind": "flex",
    "flow": str(FIXTURES / "eval_keyword_recall"),
    "columns": {"answer": "${run.outputs.answer}", "ground_truth": "${data.truth}"},
    "scale": "float",
    "pass": {"at_least": 0.6},
}


async def test_fixture_flex_eval_flows_score_live_traffic(tmp_path: Path) -> None:
    async with stage(tmp_path, {"shop": {}}) as st:
        evaluation = with_evaluators(st, [QUALITY, RECALL], metrics=["relevance"])
        versions = {e.name: e.version for e in evaluation.all_evaluators()}
        async with st.processor() as service, Producer(st.kafka) as producer:
            short = request_event("r-short", "shop", {**QA, "truth": "refunds within 30 days"})
            long = request_event("r-long", "shop", {**QA, "truth": "refunds within 30 days"})
            await producer.send(st.topics.inference, [
                short, response_event(short, {"answer": "Refunds are accepted within 30 days."}),
                long, response_event(long, {"answer": ANSWER + " " + ANSWER}),
            ])
            found = by_request_and_metric(await read_evaluations(st.kafka, st.topics, 8))
            judge_prompt_tokens = service.stats.judge_prompt_tokens["shop"]
    assert set(found) == {(r, m) for r in ("r-short", "r-long")
                          for m in ("relevance", "quality.groundedness", "quality.concise", "recall")}
    for request_id, answer in (("r-short", "Refunds are accepted within 30 days."), ("r-long", ANSWER + " " + ANSWER)):
        # The entry's own openai call reached llmsim with exactly the mapped texts; its JSON
        # verdict (returned as text inside a dataclass) is read as the score with its reason.
        expected = judge(JudgeRequest(metric="groundedness", answer=answer, question=QA["question"],
                                      context=QA["context"], ground_truth=""))
        event = found[(request_id, "quality.groundedness")]
        assert event.WhichOneof("outcome") == "scored", event
        assert (event.evaluator, event.evaluator_version) == ("quality", versions["quality"])
        assert event.scored.value == float(expected.score)
        assert event.scored.reason == expected.reason
        assert event.judge.model == "gpt-4o-mini" and event.judge.prompt_version == versions["quality"]
        assert event.judge.prompt_tokens > 0
    concise = {r: found[(r, "quality.concise")].scored for r in ("r-short", "r-long")}
    assert {r: (s.label, s.value) for r, s in concise.items()} == {"r-short": ("true", 1.0), "r-long": ("false", 0.0)}
    recall = {r: found[(r, "recall")] for r in ("r-short", "r-long")}
    assert {r: e.scored.value for r, e in recall.items()} == {"r-short": 1.0, "r-long": 1.0}
    assert all((e.evaluator, e.evaluator_version) == ("recall", versions["recall"]) for e in recall.values())
    assert not any(e.HasField("judge") for e in recall.values())  # no model call, no judge usage
    # The entry's LLM tokens are judge tokens, beside the built-in judge's.
    assert judge_prompt_tokens == sum(e.judge.prompt_tokens for e in found.values() if e.HasField("judge"))


RAISES_PY = """\
class Strict:
    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold

    def __call__(self, answer: str) -> dict:
        raise RuntimeError("the checklist is empty")
"""
HANGS_PY = """\
import asyncio


async def slow(answer: str) -> float:
    await asyncio.sleep(60)
    return 1.0
"""
NOT_A_SCORE_PY = """\
def listing(answer: str) -> list:
    return answer.split()
"""


def flex_folder(root: Path, name: str, entry: str, code: str) -> str:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "flow.flex.yaml").write_text(f"entry: {entry}\n")
    (folder / f"{entry.partition(':')[0]}.py").write_text(code)
    return str(folder)


async def test_failing_flex_entries_give_error_outcomes_while_others_score(tmp_path: Path) -> None:
    flows = tmp_path / "flex"
    evaluators: list[dict[str, Any]] = [
        {"name": "broken", "kind": "flex", "flow": flex_folder(flows, "broken", "strict:Strict", RAISES_PY),
         "init": {"threshold": "0.7"}},
        {"name": "stuck", "kind": "flex", "flow": flex_folder(flows, "stuck", "slow:slow", HANGS_PY),
         "timeout_seconds": 1},
        {"name": "listed", "kind": "flex", "flow": flex_folder(flows, "listed", "listing:listing", NOT_A_SCORE_PY)},
        RECALL,
    ]
    async with stage(tmp_path, {"shop": {}}) as st:
        with_evaluators(st, evaluators, metrics=["relevance"])
        async with st.processor(), Producer(st.kafka) as producer:
            request = request_event("r-1", "shop", {**QA, "truth": "thirty days refunds"})
            await producer.send(st.topics.inference, [request, response_event(request, {"answer": ANSWER})])
            found = by_request_and_metric(await read_evaluations(st.kafka, st.topics, 5))
    outcome = {metric: event for (_, metric), event in found.items()}
    assert set(outcome) == {"broken", "stuck", "listed", "recall", "relevance"}
    broken, stuck, listed = outcome["broken"], outcome["stuck"], outcome["listed"]
    assert broken.WhichOneof("outcome") == "error" and broken.error.type == EvaluationErrorType.EVALUATION_ERROR_TYPE_INTERNAL
    assert "strict:Strict" in broken.error.message and "the checklist is empty" in broken.error.message
    assert stuck.WhichOneof("outcome") == "error" and stuck.error.type == EvaluationErrorType.EVALUATION_ERROR_TYPE_TIMEOUT
    assert listed.WhichOneof("outcome") == "error"
    assert listed.error.type == EvaluationErrorType.EVALUATION_ERROR_TYPE_UNPARSEABLE
    assert (broken.evaluator, stuck.evaluator, listed.evaluator) == ("broken", "stuck", "listed")
    # ...while the other evaluators of the deployment scored the request.
    assert outcome["recall"].scored.value == round(2 / 3, 4)
    assert outcome["relevance"].WhichOneof("outcome") == "scored"


async def test_the_entrys_own_openai_calls_wait_for_the_judge_slot(tmp_path: Path) -> None:
    # One judge slot; the first judge call to reach llmsim hangs until the call's timeout. The
    # built-in relevance judge and the entry's own (sync, in a worker thread) openai client each
    # make one call: the second must wait for the slot, not reach llmsim beside the first.
    quality = {**QUALITY, "timeout_seconds": 30}
    # A hang ends with a 504 after 3 s (openai and the judge client both retry it).
    async with stage(tmp_path, {"shop": {}}, faults={"hang_cap_seconds": 3.0}) as st:
        with_evaluators(st, [quality], metrics=["relevance"])
        await st.sim.control("POST", "/control/faults", {"fault": "hang", "count": 1, "target": "judge"})
        async with st.processor(judge_concurrency=1, judge_timeout_seconds=2.0) as service, Producer(st.kafka) as producer:
            request = request_event("r-1", "shop", QA)
            await producer.send(st.topics.inference, [request, response_event(request, {"answer": ANSWER})])

            async def requests_seen() -> int:
                state = await st.sim.control("GET", "/control/state")
                return int(state["counters"].get("requests", 0))

            for _ in range(400):
                if await requests_seen() >= 1:
                    break
                await asyncio.sleep(0.05)
            await wait_for(lambda: service.judge_calls.calls_in_flight == 1, 10, "the hung call in its slot")
            await asyncio.sleep(1.0)  # under the 2 s judge timeout: the other call still waits
            assert await requests_seen() == 1
            found = by_request_and_metric(await read_evaluations(st.kafka, st.topics, 3, within=90))
    # Whichever call hung was retried after its 504, in the slot again: all three are scored.
    assert {metric: e.WhichOneof("outcome") for (_, metric), e in found.items()} == {
        "relevance": "scored", "quality.groundedness": "scored", "quality.concise": "scored"}


async def test_a_checklist_flex_flow_calling_a_prompty_scores_each_statement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As prompt flow's eval-checklist: a class built with an AzureOpenAIModelConfiguration, each
    # statement judged by Prompty.load(..., model={"configuration": model_config}) (sync, in the
    # entry's worker thread), the returned mapping's values being the prompty's JSON verdicts.
    monkeypatch.setenv("PP_TEST_CHECKLIST_KEY", "test-key")
    checklist = {
        "name": "checklist",
        "kind": "flex",
        "flow": str(FIXTURES / "eval_checklist"),
        "init": {"model_config": {"connection": "azure-sim", "azure_deployment": "gpt-4o-mini"}},
        "columns": {"answer": "${run.outputs.answer}", "statements": "${data.statements}"},
        "outputs": {"refunds": {"scale": "1-5"}, "office": {"scale": "1-5"}},
    }
    statements = {"refunds": "How long are refunds accepted?", "office": "Where is the office?"}
    async with stage(tmp_path, {"shop": {}}) as st:
        connections = yaml.safe_load((st.deployments_dir / "connections.yaml").read_text())
        connections["connections"]["azure-sim"] = {"type": "azure_openai", "azure_endpoint": st.sim.url,
                                                   "api_version": "2024-10-21", "api_key_env": "PP_TEST_CHECKLIST_KEY"}
        (st.deployments_dir / "connections.yaml").write_text(yaml.safe_dump(connections))
        versions = {e.name: e.version for e in with_evaluators(st, [checklist]).all_evaluators()}
        async with st.processor() as service, Producer(st.kafka) as producer:
            request = request_event("r-1", "shop", {**QA, "statements": statements})
            await producer.send(st.topics.inference, [request, response_event(request, {"answer": ANSWER})])
            found = {e.metric: e for e in await read_evaluations(st.kafka, st.topics, 2)}
            judge_prompt_tokens = service.stats.judge_prompt_tokens["shop"]
    assert set(found) == {"checklist.refunds", "checklist.office"}
    for statement, event in (("refunds", found["checklist.refunds"]), ("office", found["checklist.office"])):
        verdict = judge(JudgeRequest(metric="relevance", answer=ANSWER, question=statements[statement],
                                     context="", ground_truth=""))
        assert event.WhichOneof("outcome") == "scored", event
        assert (event.scored.value, event.scored.reason) == (float(verdict.score), verdict.reason)
        assert (event.evaluator, event.evaluator_version) == ("checklist", versions["checklist"])
    # Two prompty calls, both counted as judge calls and split over the two outcomes.
    assert judge_prompt_tokens == sum(e.judge.prompt_tokens for e in found.values()) > 0
