"""The judge cap serves live judging before re-judging (PrioritySlots in judge/calls.py), and how
full it was is measured exactly (JudgeCalls.occupied_seconds)."""

from __future__ import annotations

import asyncio

from services.processor.evaluation.judge import calls
from services.processor.evaluation.judge.calls import (
    LIVE,
    REJUDGE,
    REJUDGE_PRIORITY,
    JudgeCalls,
    PrioritySlots,
)
from services.processor.settings import ProcessorSection
from services.processor.stats import ProcessorStats


async def test_a_freed_place_goes_to_a_live_waiter_before_earlier_rejudge_waiters() -> None:
    slots = PrioritySlots(1)
    order: list[str] = []
    await slots.acquire(LIVE)  # the one place is taken

    async def wait(name: str, priority: int) -> None:
        await slots.acquire(priority)
        order.append(name)
        slots.release()

    rejudges = [asyncio.create_task(wait(f"rejudge-{i}", REJUDGE)) for i in range(2)]
    await asyncio.sleep(0)
    live = asyncio.create_task(wait("live", LIVE))  # arrives last, served first
    await asyncio.sleep(0)
    assert (slots.waiting(LIVE), slots.waiting(REJUDGE)) == (1, 2)
    slots.release()
    await asyncio.gather(live, *rejudges)
    assert order == ["live", "rejudge-0", "rejudge-1"]


async def test_a_cancelled_waiter_gives_its_place_on_and_the_priority_follows_the_task() -> None:
    slots = PrioritySlots(1)
    await slots.acquire(LIVE)
    cancelled = asyncio.create_task(slots.acquire(REJUDGE))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    slots.release()
    # The place was not lost to the cancelled waiter: it can be taken at once.
    await asyncio.wait_for(slots.acquire(LIVE), 1)

    async def priority_in_a_child_task() -> int:
        REJUDGE_PRIORITY.set(REJUDGE)
        return await asyncio.create_task(_read_priority())

    assert await asyncio.create_task(priority_in_a_child_task()) == REJUDGE
    assert REJUDGE_PRIORITY.get() == LIVE


async def _read_priority() -> int:
    return REJUDGE_PRIORITY.get()


async def test_the_time_integral_of_calls_in_flight_is_exact_between_changes(monkeypatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(calls.time, "monotonic", lambda: clock[0])
    judge_calls = JudgeCalls(ProcessorSection(judge_concurrency=4), ProcessorStats())
    first, second = judge_calls.slot(), judge_calls.slot()
    await first.__aenter__()
    clock[0] += 2.0  # one call for 2 s
    await second.__aenter__()
    clock[0] += 0.5  # two calls for 0.5 s
    await first.__aexit__(None, None, None)
    clock[0] += 1.0  # one call for 1 s, read while it is still in flight
    assert judge_calls.occupied_seconds == 2.0 + 2 * 0.5 + 1.0
    await second.__aexit__(None, None, None)
    clock[0] += 5.0  # none in flight
    assert judge_calls.occupied_seconds == 4.0 and judge_calls.calls_in_flight == 0


async def test_the_free_places_integral_counts_only_places_nobody_asked_for(monkeypatch) -> None:
    clock = [10.0]
    monkeypatch.setattr(calls.time, "monotonic", lambda: clock[0])
    slots = PrioritySlots(2)
    clock[0] += 1.0  # two free for 1 s
    await slots.acquire(REJUDGE)
    await slots.acquire(REJUDGE)
    waiter = asyncio.create_task(slots.acquire(REJUDGE))
    await asyncio.sleep(0)
    clock[0] += 3.0  # none free
    slots.release()  # handed straight to the waiter: never free
    clock[0] += 1.0
    await waiter
    slots.release()
    clock[0] += 0.5  # one free for 0.5 s
    assert slots.free_seconds == 2 * 1.0 + 0.5
