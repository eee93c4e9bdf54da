"""Code evaluators' synchronous functions, run in the worker pool's threads, many per hand-over.

What a call costs is not the call but the crossings. In the processor the loop's thread holds
the GIL nearly all the time and lets go of it only for a moment at each system call (a poll, a
socket read). A code thread that wants the GIL is woken at each of those moments and nearly
always loses the race to the loop's thread; CPython asks the holder to let go only after a whole
``sys.getswitchinterval()`` passes without a release, so it can keep losing until the loop
idles: measured, 4 to 39 voluntary context switches and 40-340 µs of the code thread's CPU per
call for a function of ~1 µs (docs/processor.md, "Code evaluators on the stream"). So:

- the crossings are paced by the loop, not by the calls: while calls are outstanding a timer on
  the loop ticks every :data:`LINGER_SECONDS`; at each tick the calls queued since the last one
  go to a thread in one wake-up (or at once when :data:`BATCH_CALLS` are waiting) and the results
  finished since go back to their callers. A thread never wakes the loop (no self-pipe write);
- a tick that woke a thread while none was running waits for it, up to
  :data:`HANDOVER_WAIT_SECONDS`, with the GIL released, so the thread takes the GIL at once
  instead of racing for it; usually the batch is done within it and its results go back in the
  same tick. A wait that runs out (slow functions, a busy machine) makes ticks go on without
  waiting for :data:`IMPATIENT_SECONDS`, so the loop loses at most that much, plus one switch
  interval, in that time: a batch still running when the wait ends holds the GIL, and the loop's
  thread gets it back only when the interpreter asks the code thread to let go (measured: ticks
  of 8.1-13.9 ms with functions of 1.5-3 ms each, the 2 ms wait plus the 5 ms switch interval
  and the rest of the call under way).

A call waits up to a tick or two longer than its own run; judging happens seconds after the
request anyway. So :meth:`CodeThreads.call` bounds the function's own run by the caller's timeout
and allows those ticks (:data:`SLACK_SECONDS`) on top for the whole call: a function that returned
within its timeout is never reported as timed out because the tick that starts it or hands back
its result came late (a result finished before the deadline is taken from the thread directly).

What stays as with ``run_in_executor``: at most the pool's threads run calls, a call cancelled
(timed out) before it started never runs, an exception is the caller's, and a call that hangs
keeps its thread. The calls behind a hung one move to another thread once it has not taken a new
call for :data:`STUCK_SECONDS` (checked at each tick, each early batch and each timeout), so one
hung function does not hold up the others while the pool has threads left.
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
# The loop's beat while calls are outstanding: calls gather for a thread, results for the loop.
# 5 ms carried 1-2 calls per hand-over at the bench's rate (one call per ~2.5 ms), 20 ms ~8.
LINGER_SECONDS = 0.02
# This many calls waiting go to a thread without waiting for the tick.
BATCH_CALLS = 64
# How long a tick that woke a thread waits for it to finish the batch, and, when that was not
# long enough (slow functions), for how long ticks stop waiting.
HANDOVER_WAIT_SECONDS = 0.002
IMPATIENT_SECONDS = 1.0
# What a call may take beyond its timeout, for the batching: up to a tick (and a hand-over wait)
# before a thread starts it, up to a tick after it finished before its result is handed back.
SLACK_SECONDS = 2 * LINGER_SECONDS + HANDOVER_WAIT_SECONDS


class _LoopCalls:
    """One event loop's calls: those not yet answered, and results waiting for the next tick."""

    __slots__ = ("finished", "loop", "outstanding", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.outstanding: list[_Call] = []  # the loop's thread only
        self.finished: list[tuple[_Call, bool, Any]] = []  # under CodeThreads._lock
        self.timer: asyncio.TimerHandle | None = None  # the loop's thread only


class _Call:
    __slots__ = ("function", "future", "home", "outcome")

    def __init__(self, function: Callable[[], Any], future: asyncio.Future[Any], home: _LoopCalls) -> None:
        self.function = function
        self.future = future
        self.home = home
        # (returned, result or exception, seconds the function ran), set by the thread under the lock
        self.outcome: tuple[bool, Any, float] | None = None


class CodeThreads:
    """Runs functions in ``pool``'s threads; :meth:`run` returns a future of the loop it is called on."""

    def __init__(self, pool: ThreadPoolExecutor, threads: int) -> None:
        self._pool = pool
        self._threads = threads
        self._waiting: deque[_Call] = deque()
        self._lock = threading.Lock()
        self._draining = 0  # threads draining the queue (under _lock)
        self._last_taken = 0.0  # monotonic time a thread last took a call
        self._loops: dict[asyncio.AbstractEventLoop, _LoopCalls] = {}
        self._idle = threading.Event()  # set while no thread drains
        self._idle.set()
        self._impatient_until = 0.0  # a hand-over wait ran out (slow functions): none until then

    async def call(self, function: Callable[[], Any], run_limit: float) -> Any:
        """``function()``'s result or exception, or TimeoutError if it ran longer than ``run_limit``
        or did not return within ``run_limit`` + :data:`SLACK_SECONDS` (not started by then: it never
        runs; hung: it keeps its thread, and the calls behind it move). Not ``asyncio.timeout``'s
        contract, hence not called ``timeout``: the limit is on the function's run, not the wait."""
        call = self._queue(function)
        try:
            # asyncio.timeout rather than wait_for: the future is cancelled at the deadline (so a
            # call not yet started never runs) without wait_for's extra waiter future per call.
            async with asyncio.timeout(run_limit + SLACK_SECONDS):
                try:
                    await call.future
                except Exception:  # the function's own: read from its outcome below
                    pass
        except TimeoutError:
            pass
        with self._lock:  # the thread may have finished it with its tick still to come
            outcome = call.outcome
        if outcome is None:
            if call.future.done() and not call.future.cancelled():
                call.future.result()  # the pool is shut down: its RuntimeError
            self.unstick()
            raise TimeoutError
        returned, result, seconds = outcome
        if seconds > run_limit:
            raise TimeoutError
        if not returned:
            raise result
        return result

    def run(self, function: Callable[[], Any]) -> asyncio.Future[Any]:
        """A future of ``function()`` with no time bound (:meth:`call` has one)."""
        return self._queue(function).future

    def _queue(self, function: Callable[[], Any]) -> _Call:
        loop = asyncio.get_running_loop()
        home = self._loops.get(loop)
        if home is None:
            home = self._loops[loop] = _LoopCalls(loop)
        future: asyncio.Future[Any] = loop.create_future()
        call = _Call(function, future, home)
        self._waiting.append(call)
        home.outstanding.append(call)
        if home.timer is None:
            home.timer = loop.call_later(LINGER_SECONDS, self._tick, home)
        if len(self._waiting) >= BATCH_CALLS:
            self._dispatch(home)
        return call

    def unstick(self) -> None:
        """A call timed out: if the threads are stuck, let another take the queue."""
        home = self._loops.get(asyncio.get_running_loop())
        if self._waiting and home is not None:
            self._dispatch(home)

    def _tick(self, home: _LoopCalls) -> None:
        home.timer = None
        if self._waiting and self._dispatch(home) and time.monotonic() >= self._impatient_until:
            # A thread was woken for this batch while none was running: wait for it here, GIL
            # released, instead of letting it fight the loop for the GIL (see the module's doc).
            if not self._idle.wait(HANDOVER_WAIT_SECONDS):
                self._impatient_until = time.monotonic() + IMPATIENT_SECONDS  # slow functions
        with self._lock:
            finished, home.finished = home.finished, []
        for call, ok, result in finished:
            if call.future.done():  # timed out meanwhile
                continue
            if ok:
                call.future.set_result(result)
            else:
                call.future.set_exception(result)
        home.outstanding = [call for call in home.outstanding if not call.future.done()]
        if home.outstanding:
            home.timer = home.loop.call_later(LINGER_SECONDS, self._tick, home)
        elif self._loops.get(home.loop) is home:
            del self._loops[home.loop]  # idle: a closed loop is not kept

    def _dispatch(self, home: _LoopCalls) -> bool:
        """Have a thread take the waiting calls; True if one was woken while none was draining."""
        try:
            return self._ensure_thread()
        except RuntimeError as exc:  # the pool is shut down (the processor is stopping)
            for call in home.outstanding:
                if not call.future.done():
                    call.future.set_exception(exc)
            return False

    def _ensure_thread(self) -> bool:
        with self._lock:
            if self._draining and (
                self._draining >= self._threads or time.monotonic() - self._last_taken < STUCK_SECONDS
            ):
                return False
            alone = not self._draining
            self._draining += 1
            self._last_taken = time.monotonic()
            self._idle.clear()
        try:
            self._pool.submit(self._drain)
        except RuntimeError:
            with self._lock:
                self._draining -= 1
                if not self._draining:
                    self._idle.set()
            raise
        return alone

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
                    if not self._draining:
                        self._idle.set()
                    return
            self._last_taken = started = time.monotonic()
            if call.future.done():  # cancelled (timed out) before it started: never runs
                continue
            try:
                result, ok = call.function(), True
            except BaseException as exc:  # as concurrent.futures does: the caller gets it
                result, ok = exc, False
            seconds = time.monotonic() - started
            with self._lock:  # the loop's next tick hands it over
                call.outcome = (ok, result, seconds)
                call.home.finished.append((call, ok, result))


__all__ = ["BATCH_CALLS", "HANDOVER_WAIT_SECONDS", "LINGER_SECONDS", "SLACK_SECONDS", "STUCK_SECONDS", "CodeThreads"]
