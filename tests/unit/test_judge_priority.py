"""The judge cap serves live judging before re-judging (PrioritySlots in judge/calls.py)."""

from __future__ import annotations

import asyncio

from services.processor.evaluation.judge.calls import LIVE, REJUDGE, REJUDGE_PRIORITY, PrioritySlots


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
