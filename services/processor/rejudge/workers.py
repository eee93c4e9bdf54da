"""Judging a re-judge's chosen requests with workers that keep their places under the judge cap.

Each of ``workers`` tasks takes the next request of the re-judge's order, judges it, hands its
outcomes to a delivery task and takes the next request at once, never waiting for the broker.
A worker therefore releases its place under the judge cap and asks for one again within the same
step of the event loop: when nobody else waits, the place is its own again at once
(judge/calls.py, PrioritySlots). A task per request waiting in line for a place would get it only
when the event loop next ran that task, and the place stood idle until then: on a busy loop that
was 2.5 to 5% of the cap (bench/rejudge.py). Live judge calls still come first: a place released
while a live call waits goes to the live call.

Outcomes awaiting the broker's acknowledgement are bounded (``unacknowledged``). ``prefix`` is
the length of the run of requests, from the start of the order, whose outcomes the broker has
all acknowledged: what a resumed re-judge skips.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

Judge = Callable[[int], Awaitable[Sequence[Any]]]
Publish = Callable[[Sequence[Any]], Awaitable[None]]
Report = Callable[["WindowJudging"], Awaitable[None]]


class WindowJudging:
    def __init__(self, total: int, start: int, judge: Judge, publish: Publish, *, workers: int,
                 unacknowledged: int) -> None:
        self.total = total
        self.prefix = start
        self.published = 0  # outcomes the broker acknowledged in this run
        self._next = start
        self._judge, self._publish = judge, publish
        self._workers = max(1, workers)
        self._acknowledged: set[int] = set()  # past the prefix
        self._room = asyncio.Semaphore(max(1, unacknowledged))
        self._deliveries: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self._running: set[asyncio.Task[None]] = set()  # workers with requests left
        self._over = asyncio.Event()  # every outcome acknowledged, or a failure

    async def run(self, report: Report, every_seconds: float) -> None:
        """Judge and publish every request from ``start``; ``report`` is awaited about once per
        ``every_seconds`` meanwhile. Raises the first error of a worker or a delivery."""
        workers = {asyncio.create_task(self._work(), name=f"rejudge-worker-{n}")
                   for n in range(min(self._workers, self.total - self._next))}
        self._running = set(workers)
        for worker in workers:
            worker.add_done_callback(self._worker_done)
        self._check_over()
        try:
            while not self._over.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._over.wait(), every_seconds)
                if self._failure is not None:
                    raise self._failure
                if not self._over.is_set():
                    await report(self)
        finally:
            pending = (*workers, *self._deliveries)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _work(self) -> None:
        while self._next < self.total:
            index = self._next
            self._next += 1
            events = await self._judge(index)
            await self._room.acquire()  # returns at once while there is room: no step of the loop lost
            delivery = asyncio.create_task(self._deliver(index, events))
            self._deliveries.add(delivery)
            delivery.add_done_callback(self._delivered)

    async def _deliver(self, index: int, events: Sequence[Any]) -> None:
        try:
            await self._publish(events)
        finally:
            self._room.release()
        self.published += len(events)
        self._acknowledged.add(index)
        while self.prefix in self._acknowledged:
            self._acknowledged.discard(self.prefix)
            self.prefix += 1

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._failed(task)
        self._check_over()

    def _delivered(self, task: asyncio.Task[None]) -> None:
        self._deliveries.discard(task)
        self._failed(task)
        self._check_over()

    def _failed(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()
            self._over.set()

    def _check_over(self) -> None:
        if not self._running and not self._deliveries:
            self._over.set()
