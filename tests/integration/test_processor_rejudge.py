"""Re-judging past traffic in the processor: real broker, llmsim as the judge.

A window of requests (sampled and unsampled) is judged live under a rubric's first version; the
rubric's prompt changes (a new version); a RejudgeCommand for the window is published as the
aggregator's API would. Every request of the window gets exactly one outcome under the new
version, marked with the re-judge's id, while live traffic sent meanwhile is judged as usual;
the progress topic ends with the re-judge done. A sampled re-judge judges the requests its
deterministic order puts first.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.llmsim.settings import LatencyModel
from services.processor.rejudge.window import Window, WindowRequest, chosen
from shared.deployments import load_deployment
from shared.events.messages import Evaluation, InferenceRequest, InferenceResponse
from shared.events.rejudge import RejudgeCommand, RejudgeProgress, decode_rejudge, encode_rejudge
from tests.integration.test_processor_harness import (
    QA,
    Producer,
    Stage,
    evaluations,
    read_topic,
    request_event,
    response_event,
    stage,
    wait_for,
    write_deployments,
)

ANSWER = "Refunds are accepted within 30 days of purchase."


def cites(prompt: str) -> dict:
    return {"name": "cites_context", "kind": "rubric", "prompt": prompt + "\n{{ context }}\n{{ answer }}\n",
            "scale": {"min": 0, "max": 10}, "pass": {"at_least": 7}}


V1 = "Rate how far the answer relies on the context it was given."
V2 = "Rate, strictly, whether every claim of the answer is backed by the context."


def spec(prompt: str) -> dict:
    return {"shop": {"metrics": [], "evaluators": [cites(prompt)], "sampling_rate": 0.5}}


def version(folder: Path) -> str:
    evaluation = load_deployment(folder / "shop.yaml", check_flow=False).evaluation
    assert evaluation is not None
    return evaluation.evaluator("cites_context").version  # type: ignore[union-attr]


def command(rejudge_id: str, evaluator_version: str, start: datetime, end: datetime, sample: int = 0,
            evaluator: str = "cites_context") -> RejudgeCommand:
    message = RejudgeCommand(rejudge_id=rejudge_id, deployment="shop", evaluator=evaluator,
                             evaluator_version=evaluator_version, sample=sample)
    message.requested_at.FromDatetime(datetime.now(UTC))
    message.window_start.FromDatetime(start)
    message.window_end.FromDatetime(end)
    return message


async def send_command(producer: Producer, topic: str, message: RejudgeCommand) -> None:
    record = encode_rejudge(message)
    await producer._producer.send_and_wait(topic, value=record.value, key=message.rejudge_id.encode(),
                                           headers=record.headers)


def answered(requests: list[InferenceRequest]) -> list[InferenceRequest | InferenceResponse]:
    """Each request followed by its response, the answer ANSWER."""
    return [e for r in requests for e in (r, response_event(r, {"answer": ANSWER}))]


async def past_window(st: Stage, ids: list[str]) -> tuple[list[InferenceRequest], datetime, datetime]:
    """The requests ``ids`` with their responses on the inference topic, and a window around them."""
    start = datetime.now(UTC) - timedelta(seconds=1)
    async with Producer(st.kafka) as producer:
        requests = [request_event(request_id, "shop", QA) for request_id in ids]
        await producer.send(st.topics.inference, answered(requests))
    await asyncio.sleep(0.05)
    return requests, start, datetime.now(UTC)


async def judged_window(st: Stage, ids: list[str], judged: int) -> tuple[list[Evaluation], datetime, datetime]:
    """The requests ``ids`` with their responses judged live by a processor, until ``judged``
    outcomes are out (and a moment more): those outcomes, and a window around the requests."""
    start = datetime.now(UTC) - timedelta(seconds=1)
    async with st.processor(), Producer(st.kafka) as producer:
        await producer.send(st.topics.inference, answered([request_event(i, "shop", QA) for i in ids]))
        live = evaluations(await read_topic(st.kafka, st.topics.evaluations, lambda rows: len(rows) >= judged,
                                            linger=2.0))
    return live, start, datetime.now(UTC)


async def test_a_window_is_rejudged_once_under_the_new_version_while_live_traffic_is_judged(tmp_path: Path) -> None:
    async with stage(tmp_path, spec(V1)) as st:
        old = version(st.deployments_dir)
        ids = [f"r-{i:02d}" for i in range(12)]
        live, start, end = await judged_window(st, ids, 1)
        sampled = {e.meta.request_id for e in live}
        assert sampled and sampled < set(ids), "the window needs sampled and unsampled requests"

        write_deployments(st.deployments_dir, st.sim.url, spec(V2))  # the prompt changed: a new version
        new = version(st.deployments_dir)
        assert new != old
        async with st.processor() as service, Producer(st.kafka) as producer:
            await send_command(producer, st.topics.rejudge_commands, command("rj-1", new, start, end))
            # Live traffic meanwhile, after the window.
            later = [request_event(f"live-{i}", "shop", QA) for i in range(6)]
            await producer.send(st.topics.inference, answered(later))
            found = evaluations(await read_topic(
                st.kafka, st.topics.evaluations,
                lambda rows: sum(1 for e in evaluations(rows) if e.rejudge_id == "rj-1") >= len(ids), within=60,
                linger=2.0))
            assert service.stats.rejudge_published == len(ids)
        rejudged = [e for e in found if e.rejudge_id == "rj-1"]
        assert Counter(e.meta.request_id for e in rejudged) == Counter(ids)  # each once, unsampled too
        assert {(e.evaluator, e.evaluator_version) for e in rejudged} == {("cites_context", new)}
        assert all(e.WhichOneof("outcome") == "scored" for e in rejudged)
        live_after = [e for e in found if not e.rejudge_id and e.meta.request_id.startswith("live-")]
        assert live_after and {e.evaluator_version for e in live_after} == {new}
        progress = [decode_rejudge(r.value, r.headers, RejudgeProgress)
                    for r in await read_topic(st.kafka, st.topics.rejudge_progress, lambda rows: False, within=1)]
        assert progress[-1].status == "done" and (progress[-1].total, progress[-1].judged) == (len(ids), len(ids))
        assert progress[-1].published == len(ids)


async def test_a_sampled_rejudge_takes_the_first_of_its_order_and_a_wrong_version_fails(tmp_path: Path) -> None:
    async with stage(tmp_path, spec(V1)) as st:
        current = version(st.deployments_dir)
        ids = [f"s-{i:02d}" for i in range(8)]
        requests, start, end = await past_window(st, ids)
        window = Window(requests=[WindowRequest(r, response_event(r, {}), None) for r in requests])
        expected = {item.request.meta.request_id for item in chosen(window, 3)}
        async with st.processor(rejudge_enabled=True), Producer(st.kafka) as producer:
            await send_command(producer, st.topics.rejudge_commands, command("rj-wrong", "000000000000", start, end))
            await send_command(producer, st.topics.rejudge_commands, command("rj-3", current, start, end, sample=3))
            found = evaluations(await read_topic(
                st.kafka, st.topics.evaluations,
                lambda rows: sum(1 for e in evaluations(rows) if e.rejudge_id == "rj-3") >= 3, within=60, linger=1.0))
        assert {e.meta.request_id for e in found if e.rejudge_id == "rj-3"} == expected
        assert not [e for e in found if e.rejudge_id == "rj-wrong"]
        progress = {}
        for record in await read_topic(st.kafka, st.topics.rejudge_progress, lambda rows: False, within=1):
            message = decode_rejudge(record.value, record.headers, RejudgeProgress)
            progress[message.rejudge_id] = message
        assert progress["rj-wrong"].status == "failed" and "versions it has loaded" in progress["rj-wrong"].message
        assert progress["rj-3"].status == "done" and progress["rj-3"].total == 3


async def test_stopping_the_processor_mid_rejudge_stops_the_rejudge_with_it(tmp_path: Path) -> None:
    slow = LatencyModel(ttft_ms=400, tokens_per_second=1_000_000, jitter=0)
    async with stage(tmp_path, spec(V1), latency=slow) as st:
        current = version(st.deployments_dir)
        ids = [f"t-{i:02d}" for i in range(20)]
        _, start, end = await past_window(st, ids)
        async with st.processor(judge_concurrency=2) as service, Producer(st.kafka) as producer:
            await send_command(producer, st.topics.rejudge_commands, command("rj-stop", current, start, end))
            await wait_for(lambda: service.stats.rejudge_published >= 1, 60, "the re-judge under way")
        # Stopped part-way (20 requests, 2 at a time, 0.4 s each): nothing of the re-judge runs on
        # after the processor has stopped; its command, uncommitted, resumes in the next one.
        assert service.stats.rejudge_published < len(ids)
        left = [task.get_name() for task in asyncio.all_tasks() if task.get_name().startswith("rejudge-")]
        assert left == []
