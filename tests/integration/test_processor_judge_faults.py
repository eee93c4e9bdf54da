"""Judge failures against llmsim's fault injection: retries, then typed error outcomes, and no
partition stalls; an open circuit breaker makes calls wait instead of failing."""

from __future__ import annotations

from pathlib import Path

from services.llmsim.settings import FaultRates
from tests.integration.test_processor_harness import (
    ANSWER,
    QA,
    Producer,
    committed_to_end,
    read_evaluations,
    request_event,
    response_event,
    stage,
)

# llmsim fails every call whose model name carries a fault marker (docs/llmsim.md), so each
# deployment below meets exactly one kind of failure, whatever order the calls run in.
FAULTY = {
    "limited": ("429", "rate_limited"),
    "broken": ("500", "endpoint_error"),
    "silent": ("hang", "timeout"),
    "garbled": ("malformed", "endpoint_error"),
    "rambling": ("unparseable", "unparseable"),
}
ATTEMPTS = 3


async def test_judge_faults_end_in_retries_then_typed_errors_and_nothing_stalls(tmp_path: Path) -> None:
    deployments = {name: {"model": f"llmsim-judge+fault={fault}"} for name, (fault, _) in FAULTY.items()}
    deployments["healthy"] = {}
    async with stage(tmp_path, deployments, faults=FaultRates(retry_after_seconds=1)) as st:
        settings = dict(
            judge_max_attempts=ATTEMPTS, judge_timeout_seconds=0.5, breaker_failure_threshold=1000,
        )
        async with st.processor(**settings) as service, Producer(st.kafka) as producer:
            events = []
            for name in deployments:
                request = request_event(f"req-{name}", name, QA)
                events += [request, response_event(request, {"answer": ANSWER})]
            await producer.send(st.topics.inference, events)
            found = await read_evaluations(st.kafka, st.topics, len(deployments), settle=0.5)
            # Every partition's commit reaches the end of the log: no failure held one back.
            await committed_to_end(st.kafka, service.settings.group_id(), st.topics.inference)

    by_deployment = {e.meta.deployment: e for e in found}
    assert len(found) == len(deployments)  # one outcome each, none lost, none doubled
    assert by_deployment["healthy"].WhichOneof("outcome") == "scored"
    for name, (_, error_name) in FAULTY.items():
        event = by_deployment[name]
        assert event.WhichOneof("outcome") == "error", name
        assert event.error.type == _error_type(error_name), (name, event.error)
        assert event.judge.prompt_version  # the failed call is recorded with its prompt version
    # Retried up to the limit before giving up: ATTEMPTS attempts per failing call, by kind.
    attempts = service.stats.judge_attempts
    assert attempts[("llmsim", "rate_limited")] == ATTEMPTS
    assert attempts[("llmsim", "timeout")] == ATTEMPTS
    assert attempts[("llmsim", "unparseable")] == ATTEMPTS
    assert attempts[("llmsim", "endpoint_error")] == 2 * ATTEMPTS  # 500 and malformed
    # Unparseable answers were paid for: their tokens are on the outcome.
    assert by_deployment["rambling"].judge.prompt_tokens > 0


def _error_type(name: str) -> int:
    from shared.events.messages import EvaluationErrorType

    return EvaluationErrorType.Value(f"EVALUATION_ERROR_TYPE_{name.upper()}")


async def test_an_open_breaker_makes_calls_wait_and_none_are_lost(tmp_path: Path) -> None:
    async with stage(tmp_path, {"shop": {"metrics": ["relevance", "fluency"]}}) as st:
        # The next 6 judge calls fail with 500, whichever they are.
        await st.sim.control("POST", "/control/faults", {"fault": "500", "count": 6, "target": "judge"})
        settings = dict(
            judge_max_attempts=10, breaker_failure_threshold=2, breaker_open_seconds=0.3,
            judge_concurrency=4,
        )
        async with st.processor(**settings) as service, Producer(st.kafka) as producer:
            events = []
            for i in range(10):
                request = request_event(f"req-{i}", "shop", QA)
                events += [request, response_event(request, {"answer": ANSWER})]
            await producer.send(st.topics.inference, events)
            found = await read_evaluations(st.kafka, st.topics, 20, settle=0.5)
            breaker = service.judging["shop"].judge.breaker
    assert breaker.times_opened >= 1 and breaker.state == "closed"
    assert service.stats.judge_attempts[("llmsim", "endpoint_error")] == 6
    assert len(found) == 20
    assert all(e.WhichOneof("outcome") == "scored" for e in found)  # delayed, not failed
