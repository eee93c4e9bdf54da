"""The re-judge's workers (services/processor/rejudge/workers.py): places under the judge cap kept
busy while outcomes await the broker, and the resumable prefix only over acknowledged outcomes."""

from __future__ import annotations

import asyncio

import pytest

from services.processor.evaluation.judge.calls import LIVE, REJUDGE, REJUDGE_PRIORITY, PrioritySlots
from services.processor.rejudge.workers import WindowJudging


class Broker:
    """Publishing that waits until the test acknowledges each request's outcomes."""

    def __init__(self) -> None:
        self.waiting: dict[int, asyncio.Future[None]] = {}

    async def publish(self, events: list[int]) -> None:
        future = asyncio.get_running_loop().create_future()
        self.waiting[events[0]] = future
        await future

    def acknowledge(self, index: int) -> None:
        self.waiting.pop(index).set_result(None)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def never_report(work: WindowJudging) -> None:
    raise AssertionError("no report expected within the test")


async def test_workers_judge_on_while_the_broker_has_not_acknowledged_and_the_prefix_waits_for_it() -> None:
    broker, judged = Broker(), []

    async def judge(index: int) -> list[int]:
        judged.append(index)
        await asyncio.sleep(0)
        return [index]

    work = WindowJudging(10, 2, judge, broker.publish, workers=2, unacknowledged=20)
    running = asyncio.create_task(work.run(never_report, 60))
    await settle()
    # Every request judged though none is acknowledged: a worker never waits for the broker.
    assert sorted(judged) == list(range(2, 10)) and sorted(broker.waiting) == list(range(2, 10))
    assert (work.prefix, work.published) == (2, 0)
    for index in (9, 8, 3, 5, 4):  # out of order: the prefix covers only an unbroken run from 2
        broker.acknowledge(index)
    await settle()
    assert (work.prefix, work.published) == (2, 5)
    broker.acknowledge(2)
    await settle()
    assert work.prefix == 6 and not running.done()
    for index in (6, 7):
        broker.acknowledge(index)
    await asyncio.wait_for(running, 5)
    assert (work.prefix, work.published) == (10, 8)


async def test_outcomes_awaiting_the_broker_are_bounded() -> None:
    broker = Broker()

    async def judge(index: int) -> list[int]:
        return [index]

    work = WindowJudging(100, 0, judge, broker.publish, workers=4, unacknowledged=6)
    running = asyncio.create_task(work.run(never_report, 60))
    await settle()
    assert len(broker.waiting) == 6
    broker.acknowledge(0)
    await settle()
    assert sorted(broker.waiting) == [1, 2, 3, 4, 5, 6]
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert work.prefix == 1


async def test_a_worker_takes_its_place_again_without_waiting_for_the_event_loop() -> None:
    """With as many workers as places, a place a worker releases is its own again in the same
    step of the event loop: while the re-judge has work, no step sees a place idle."""
    assert set(await places_held_per_step(places=2, workers=2)) == {2}


async def places_held_per_step(places: int, workers: int, live: int = 0) -> list[int]:
    """The places held at each step of the event loop while a re-judge has work left, with
    ``live`` places held by live calls throughout."""
    slots, holding, seen = PrioritySlots(places), [0], []
    for _ in range(live):
        await slots.acquire(LIVE)
    holding[0] = live
    work: WindowJudging

    async def judge(index: int) -> list[int]:
        async with slots.place():
            holding[0] += 1
            await asyncio.sleep(0)  # the judge answering
            holding[0] -= 1
        return [index]

    async def publish(events: list[int]) -> None:
        await asyncio.sleep(0.001)  # the broker's acknowledgement, slower than the judge

    async def watch() -> None:  # one look per step of the event loop
        while True:
            if work._next < work.total and holding[0] == places or seen:
                seen.append(holding[0] if work._next < work.total else places)
            await asyncio.sleep(0)

    async def rejudge() -> None:
        REJUDGE_PRIORITY.set(REJUDGE)  # as the re-judge agent does; the workers inherit it
        await work.run(never_report, 60)

    work = WindowJudging(40, 0, judge, publish, workers=workers, unacknowledged=100)
    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(rejudge(), 5)
    watcher.cancel()
    assert work.prefix == 40 and len(seen) > 10
    return seen


@pytest.mark.parametrize("failing", ["judge", "publish"])
async def test_an_error_stops_the_run_and_cancels_the_rest(failing: str) -> None:
    started: list[int] = []

    async def judge(index: int) -> list[int]:
        started.append(index)
        if failing == "judge" and index == 3:
            raise RuntimeError("a bug")
        await asyncio.sleep(0.01)
        return [index]

    async def publish(events: list[int]) -> None:
        if failing == "publish" and events[0] == 3:
            raise RuntimeError("a bug")

    work = WindowJudging(1000, 0, judge, publish, workers=2, unacknowledged=10)
    with pytest.raises(RuntimeError, match="a bug"):
        await asyncio.wait_for(work.run(never_report, 60), 5)
    assert len(started) < 1000 and work.prefix <= 3
