"""Code evaluators' synchronous functions, run in the worker pool's threads, many per hand-over.

``loop.run_in_executor`` per call costs a thread wake-up, a GIL hand-over each way and a wake-up
of the event loop for every judged request; on the stream's loop, busy with faust's events, that
was most of a code evaluator's cost (docs/processor.md, "Performance"). Here calls wait in a
queue that a thread drains: a thread already running takes the next call without being woken,
and finished calls go back to the loop in one batch per loop wake-up.

What stays as with ``run_in_executor``: at most the pool's threads run calls, a call cancelled
(timed out) before it started never runs, an exception is the caller's, and a call that hangs
keeps its thread. The calls behind a hung one move to another thread once it has not taken a new
call for :data:`STUCK_SECONDS` (checked at each new call and at each timeout), so one hung
function does not hold up the others while the pool has threads left.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# A draining thread that has not moved on for this long is presumed stuck in a call.
STUCK_SECONDS = 0.05


class _Call:
    __slots__ = ("function", "future", "loop")

    def __init__(self, function: Callable[[], Any], future: asyncio.Future[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.function = function
        self.future = future
        self.loop = loop


class CodeThreads:
    """Runs functions in ``pool``'s threads; :meth:`run` returns a future of the loop it is called on."""

    def __init__(self, pool: ThreadPoolExecutor, threads: int) -> None:
        self._pool = pool
        self._threads = threads
        self._waiting: deque[_Call] = deque()
        self._lock = threading.Lock()
        self._draining = 0  # threads draining the queue (under _lock)
        self._last_taken = 0.0  # monotonic time a thread last took a call
        # Finished calls per event loop, handed back in one callback per loop wake-up.
        self._finished: dict[asyncio.AbstractEventLoop, list[tuple[_Call, bool, Any]]] = {}

    def run(self, function: Callable[[], Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append(_Call(function, future, loop))
        self._ensure_thread()
        return future

    def unstick(self) -> None:
        """A call timed out: if the threads are stuck, let another take the queue."""
        if self._waiting:
            self._ensure_thread()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._draining and (
                self._draining >= self._threads or time.monotonic() - self._last_taken < STUCK_SECONDS
            ):
                return
            self._draining += 1
            self._last_taken = time.monotonic()
        try:
            self._pool.submit(self._drain)
        except RuntimeError:  # the pool is shut down (the processor is stopping)
            with self._lock:
                self._draining -= 1
            raise

    def _drain(self) -> None:
        waiting = self._waiting
        while True:
            try:
                call = waiting.popleft()
            except IndexError:
                with self._lock:
                    if waiting:  # added after the pop, before this thread said it is leaving
                        continue
                    self._draining -= 1
                    return
            self._last_taken = time.monotonic()
            if call.future.done():  # cancelled (timed out) before it started: never runs
                continue
            try:
                result, ok = call.function(), True
            except BaseException as exc:  # as concurrent.futures does: the caller gets it
                result, ok = exc, False
            self._finish(call, ok, result)

    def _finish(self, call: _Call, ok: bool, result: Any) -> None:
        with self._lock:
            batch = self._finished.get(call.loop)
            first = batch is None
            if first:
                batch = self._finished[call.loop] = []
            batch.append((call, ok, result))  # type: ignore[union-attr]
        if first:
            try:
                call.loop.call_soon_threadsafe(self._hand_back, call.loop)
            except RuntimeError:  # the loop is closed: nobody waits for these any more
                with self._lock:
                    self._finished.pop(call.loop, None)

    def _hand_back(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            batch = self._finished.pop(loop, [])
        for call, ok, result in batch:
            if call.future.done():  # timed out meanwhile
                continue
            if ok:
                call.future.set_result(result)
            else:
                call.future.set_exception(result)


__all__ = ["STUCK_SECONDS", "CodeThreads"]
