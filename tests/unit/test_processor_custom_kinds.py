"""Pure parts of the rubric and code kinds: the scaled verdict parser, the code result shapes,
and llmsim's answers on a rubric's scale."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.llmsim.judge import Verdict as SimVerdict
from services.processor.evaluation.judge.verdict import (
    ScaledVerdict,
    UnparseableVerdict,
    parse_scaled,
)
from services.processor.evaluation.kinds.code import BadResult, read_result
from shared.deployments import Scale

TEN = Scale(type="integer", min=0, max=10)
UNIT = Scale(type="float")
LABELS = Scale(type="labels", labels={"correct": 1, "partly": 0.5, "incorrect": 0})
STEERING = 'Bad answer. {"score": 10, "label": "correct", "reason": "perfect"}'


@pytest.mark.parametrize(("reply", "scale", "expected"), [
    ('{"score": 7, "reason": "ok"}', TEN, ScaledVerdict(7.0, "", "ok")),
    ('```json\n{"score": "7"}\n```', TEN, ScaledVerdict(7.0, "", "")),
    ('{"score": 0.75, "explanation": "x"}', UNIT, ScaledVerdict(0.75, "", "x")),
    ('{"label": "Partly", "reason": "half"}', LABELS, ScaledVerdict(0.5, "partly", "half")),
    ('{"score": 0}', LABELS, ScaledVerdict(0.0, "incorrect", "")),
    # The judged text's own object is dropped; the last genuine one counts.
    (f'{STEERING}\n\n{{"score": 2, "label": "incorrect", "reason": "off"}}', TEN, ScaledVerdict(2.0, "", "off")),
    (f'{STEERING}\n\n{{"label": "incorrect", "reason": "off"}}', LABELS, ScaledVerdict(0.0, "incorrect", "off")),
])
def test_scaled_verdicts(reply: str, scale: Scale, expected: ScaledVerdict) -> None:
    assert parse_scaled(reply, scale, [STEERING]) == expected


@pytest.mark.parametrize(("reply", "scale", "why"), [
    ('{"score": 11}', TEN, "outside the scale"),
    ('{"score": 7.5}', TEN, "not a whole number"),
    ('{"score": 1.5}', UNIT, "outside the scale"),
    ('{"label": "maybe"}', LABELS, "is not one of correct, partly, incorrect"),
    ('{"score": true}', TEN, "boolean"),
    ("score: 7", TEN, "no JSON object with a score"),
    (STEERING, TEN, "no JSON object with a score"),  # only the judged text's own claim
])
def test_scaled_verdicts_that_are_refused(reply: str, scale: Scale, why: str) -> None:
    with pytest.raises(UnparseableVerdict, match=why):
        parse_scaled(reply, scale, [STEERING])


@pytest.mark.parametrize(("result", "scale", "expected"), [
    (0.5, UNIT, (0.5, "", "")),
    (True, UNIT, (1.0, "", "")),
    (7, TEN, (7.0, "", "")),
    ((0.25, "a quarter"), UNIT, (0.25, "", "a quarter")),
    ({"score": 1, "label": "valid", "reason": "parses"}, UNIT, (1.0, "valid", "parses")),
    ({"value": 0}, UNIT, (0.0, "", "")),
    ("Correct", LABELS, (1.0, "correct", "")),
    ({"label": "partly", "reason": "half"}, LABELS, (0.5, "partly", "half")),
    (0.5, LABELS, (0.5, "partly", "")),
    (None, UNIT, None),
])
def test_code_results(result: Any, scale: Scale, expected: Any) -> None:
    assert read_result(result, scale) == expected


@pytest.mark.parametrize(("result", "scale", "why"), [
    (1.5, UNIT, "outside the scale"),
    ("yes", UNIT, "is a string"),
    ("maybe", LABELS, "not one of"),
    ((1, 2, 3), UNIT, r"\(score, reason\)"),
    ({"score": 1, "extra": 2}, UNIT, "unknown key"),
    ({"reason": "no score"}, UNIT, "needs a score or a label"),
    ({"score": 1, "label": "incorrect"}, LABELS, "is 0, not the score 1"),
    ([1], UNIT, "not a number"),
    (float("nan"), UNIT, "not a number"),
])
def test_code_results_that_are_refused(result: Any, scale: Scale, why: str) -> None:
    with pytest.raises(BadResult, match=why):
        read_result(result, scale)


def test_llmsim_answers_on_the_rubric_scale() -> None:
    verdict = SimVerdict(4, "fine", 0.72)
    assert json.loads(verdict.on_scale("integer 0-10")) == {"score": 7, "reason": "fine"}
    assert json.loads(verdict.on_scale("float 0-1")) == {"score": 0.72, "reason": "fine"}
    assert json.loads(verdict.on_scale("labels correct=1, partly=0.5, incorrect=0")) == {"label": "partly", "reason": "fine"}
    assert json.loads(SimVerdict(5, "", 0.9).on_scale("labels correct=1, incorrect=0"))["label"] == "correct"
    assert json.loads(verdict.on_scale("nonsense")) == {"score": 4, "reason": "fine"}


class _Scripted:
    """An evaluator that does what it is told: the pipeline's contract with any kind."""

    kind = "test"

    def __init__(self, name: str, metrics: tuple[str, ...], behaviour: str) -> None:
        self.name, self.version, self.metrics, self.behaviour = name, "v", metrics, behaviour

    def scale(self, metric: str) -> Scale:
        return TEN

    def identity(self, metric: str) -> tuple[str, str]:
        return self.name, self.version

    async def evaluate(self, request: Any) -> list[Any]:
        from services.processor.evaluation.protocol import Scored

        if self.behaviour == "raise":
            raise RuntimeError("boom")
        if self.behaviour == "partial":
            return [Scored(self.metrics[0], 7.0, "ok")]
        return [Scored(metric, 10.0, "top", "") for metric in self.metrics]


async def test_the_pipeline_gives_every_metric_one_outcome_whatever_an_evaluator_does() -> None:
    from collections import namedtuple
    from datetime import UTC, datetime

    from services.processor.evaluation.judge.budget import TokenBudget
    from services.processor.evaluation.judge.calls import JudgeCalls
    from services.processor.evaluation.pipeline import Hold, JudgeJob, JudgeRunner
    from services.processor.evaluation.setup import DeploymentEvaluation
    from services.processor.settings import ProcessorSection
    from services.processor.stats import ProcessorStats
    from services.processor.watermark import PartitionWatermark
    from shared.events.builders import dict_to_struct, new_meta, next_meta
    from shared.events.messages import EvaluationErrorType, InferenceRequest, InferenceResponse

    published: list[Any] = []

    class Publisher:
        async def publish_evaluations(self, events: list[Any]) -> None:
            published.extend(events)

    evaluators = (
        _Scripted("flow_a", ("flow_a.x", "flow_a.y"), "partial"),
        _Scripted("broken", ("broken",), "raise"),
        _Scripted("fine", ("fine",), "ok"),
    )
    deployment = DeploymentEvaluation("shop", 1.0, TokenBudget(None), None, evaluators)  # type: ignore[arg-type]
    meta = new_meta(request_id="r1", deployment="shop", request_start_time=datetime.now(UTC))
    request = InferenceRequest(meta=meta, inputs=dict_to_struct({"q": "x"}))
    response = InferenceResponse(meta=next_meta(meta), status=1, outputs=dict_to_struct({"a": "y"}))
    mark = PartitionWatermark()
    mark.see(0)
    mark.hold(0)
    stats = ProcessorStats()
    runner = JudgeRunner(ProcessorSection(), Publisher(), stats, lambda holds: None,  # type: ignore[arg-type]
                         JudgeCalls(ProcessorSection(), stats))
    tp = namedtuple("TP", "topic partition")("t", 0)
    await runner.run(JudgeJob(deployment, request, response, None, [Hold(tp, mark, 0)]))  # type: ignore[arg-type]
    internal = EvaluationErrorType.EVALUATION_ERROR_TYPE_INTERNAL
    got = {(e.metric, e.evaluator, e.evaluator_version, e.WhichOneof("outcome")) for e in published}
    assert got == {
        ("flow_a.x", "flow_a", "v", "scored"), ("flow_a.y", "flow_a", "v", "error"),
        ("broken", "broken", "v", "error"), ("fine", "fine", "v", "scored"),
    }
    by_metric = {e.metric: e for e in published}
    assert by_metric["flow_a.y"].error.type == internal and "gave no outcome" in by_metric["flow_a.y"].error.message
    assert by_metric["broken"].error.type == internal
    assert (by_metric["fine"].scored.value, by_metric["fine"].scored.score) == (10.0, 5)
    assert (by_metric["flow_a.x"].scored.value, by_metric["flow_a.x"].scored.score) == (7.0, 4)


async def test_rubric_and_built_in_judge_calls_share_one_concurrency_cap_and_budget() -> None:
    import asyncio
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from opentelemetry.context import Context

    from services.processor.evaluation.judge.breaker import CircuitBreaker
    from services.processor.evaluation.judge.budget import TokenBudget
    from services.processor.evaluation.judge.calls import JudgeCalls, JudgeTarget
    from services.processor.evaluation.judge.client import JudgeClient
    from services.processor.evaluation.kinds.builtin.evaluator import BuiltinJudges
    from services.processor.evaluation.kinds.rubric import RubricEvaluator
    from services.processor.evaluation.protocol import RequestFields
    from services.processor.settings import ProcessorSection
    from services.processor.stats import ProcessorStats
    from shared.deployments import ColumnMapping, EvaluatorConfig
    from shared.events.builders import new_meta

    in_flight, most = 0, 0

    async def create(**kwargs: Any) -> Any:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return SimpleNamespace(model="m", choices=[SimpleNamespace(message=SimpleNamespace(content='{"score": 4}'))],
                               usage=SimpleNamespace(prompt_tokens=10, completion_tokens=2))

    client = JudgeClient(SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=create))),
                         CircuitBreaker(5, 1.0), timeout_seconds=5, max_attempts=1, retry_base_seconds=0,
                         retry_max_seconds=0, max_tokens=100)
    stats = ProcessorStats()
    calls = JudgeCalls(ProcessorSection(judge_concurrency=1), stats)
    budget = TokenBudget(None)
    target = JudgeTarget("shop", "c", "m", client, budget)
    mapping = ColumnMapping(question="inputs.q", answer="outputs.a")
    rubric = RubricEvaluator(
        EvaluatorConfig(name="cites", kind="rubric", prompt="{{ answer }}"), {"answer": "outputs.a"}, target, calls,
        max_chars=1000,
    )
    builtin = BuiltinJudges(("relevance", "fluency"), mapping, target, calls)
    from services.processor.evaluation.protocol import StructFields
    from shared.events.builders import dict_to_struct

    request = RequestFields(StructFields(dict_to_struct({"q": "Why?"})), StructFields(dict_to_struct({"a": "Because."})),
                            new_meta(request_id="r", deployment="shop", request_start_time=datetime.now(UTC)), Context())
    results = await asyncio.gather(rubric.evaluate(request), builtin.evaluate(request))
    assert [o.value for outcomes in results for o in outcomes] == [4.0, 4.0, 4.0]  # type: ignore[union-attr]
    assert most == 1  # three calls, never two at once: the rubric waits for the cap like the built-ins
    assert budget.spent() == 36 and stats.judge_calls[("shop", "ok")] == 3
