"""CodeThreads: code evaluators' synchronous calls in worker threads, handed over in batches
paced by the event loop (a tick every LINGER_SECONDS while calls are outstanding)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from services.processor.evaluation import code_threads
from services.processor.evaluation.code_threads import STUCK_SECONDS, CodeThreads


class CountingPool(ThreadPoolExecutor):
    """A pool that counts hand-overs (each ``submit`` is a thread wake-up)."""

    def __init__(self, threads: int) -> None:
        super().__init__(max_workers=threads)
        self.submits = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.submits += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def pool() -> Any:
    pool = CountingPool(4)
    yield pool
    pool.shutdown(wait=False, cancel_futures=True)


async def test_results_reach_their_callers_with_fewer_handovers_than_calls(pool: CountingPool) -> None:
    threads = CodeThreads(pool, 4)
    main = threading.get_ident()
    ran_on: set[int] = set()

    def square(n: int) -> int:
        ran_on.add(threading.get_ident())
        return n * n

    # Calls made in one loop iteration, as judge workers starting jobs together make them.
    futures = [threads.run(lambda n=n: square(n)) for n in range(200)]
    results = await asyncio.wait_for(asyncio.gather(*futures), 10)
    assert results == [n * n for n in range(200)]
    assert main not in ran_on  # never on the event loop's thread
    assert pool.submits < 20  # run_in_executor would hand over 200 times


async def test_an_exception_is_the_callers(pool: CountingPool) -> None:
    threads = CodeThreads(pool, 4)

    def broken() -> None:
        raise KeyError("nope")

    with pytest.raises(KeyError, match="nope"):
        await asyncio.wait_for(threads.run(broken), 5)
    assert await asyncio.wait_for(threads.run(lambda: "after"), 5) == "after"


async def test_a_call_that_timed_out_before_it_started_never_runs() -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    threads = CodeThreads(pool, 1)
    release = threading.Event()
    ran: list[str] = []
    try:
        hung = threads.run(lambda: release.wait(10))
        late = threads.run(lambda: ran.append("late"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(late, 0.1)  # its only thread is busy: it never started
        release.set()
        await asyncio.wait_for(hung, 5)
        await asyncio.wait_for(threads.run(lambda: None), 5)  # the queue has been drained past it
        assert ran == []
    finally:
        release.set()
        pool.shutdown(wait=True)


async def test_a_hung_call_does_not_hold_up_the_calls_behind_it(pool: CountingPool) -> None:
    threads = CodeThreads(pool, 4)
    release = threading.Event()
    try:
        hung = threads.run(lambda: release.wait(10))
        await asyncio.sleep(STUCK_SECONDS * 2)  # the draining thread is now stuck in it
        started = time.monotonic()
        # Another thread takes the queue (as run_in_executor would use another pool thread).
        assert await asyncio.wait_for(threads.run(lambda: "done"), 2) == "done"
        assert not hung.done()
        assert time.monotonic() - started < 2
    finally:
        release.set()


async def test_calls_from_two_event_loops_go_back_to_their_own() -> None:
    pool = ThreadPoolExecutor(max_workers=2)
    threads = CodeThreads(pool, 2)

    def in_other_loop() -> Any:
        async def call() -> Any:
            return await asyncio.wait_for(threads.run(lambda: "other"), 5)

        return asyncio.run(call())

    try:
        other = threading.Thread(target=lambda: results.append(in_other_loop()))
        results: list[Any] = []
        other.start()
        mine = await asyncio.wait_for(threads.run(lambda: "mine"), 5)
        await asyncio.to_thread(other.join, 5)
        assert (mine, results) == ("mine", ["other"])
    finally:
        pool.shutdown(wait=True)


async def test_calls_that_come_one_at_a_time_share_one_hand_over(
    pool: CountingPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on the stream: judge workers make their calls a few loop iterations apart, each waiting
    # for its own answer. A long beat (0.3 s) so that the test does not depend on the machine's
    # speed: the calls, made well within it, go to a thread at the first tick, together.
    monkeypatch.setattr(code_threads, "LINGER_SECONDS", 0.3, raising=False)
    threads = CodeThreads(pool, 4)

    async def judge(n: int) -> int:
        return await threads.run(lambda: n * n)

    calls = []
    for n in range(10):
        calls.append(asyncio.ensure_future(judge(n)))
        await asyncio.sleep(0.005)  # a thread that runs each call at once is long done with it
    assert await asyncio.wait_for(asyncio.gather(*calls), 10) == [n * n for n in range(10)]
    assert pool.submits == 1  # one wake-up per call before (10)


async def test_a_call_whose_caller_gave_up_while_it_lingered_never_runs(
    pool: CountingPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(code_threads, "LINGER_SECONDS", 0.3, raising=False)
    threads = CodeThreads(pool, 4)
    ran: list[str] = []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):  # as a code evaluator bounds its call
            await threads.run(lambda: ran.append("late"))
    assert await asyncio.wait_for(threads.run(lambda: "after"), 5) == "after"  # the next tick ran
    assert ran == []


async def test_calls_queued_behind_a_hung_one_still_run(pool: CountingPool) -> None:
    # The hung call and the others arrive together, so one thread takes them all and sticks in
    # the first: the loop's ticks see that it has not moved on and wake another thread, with no
    # new call or timeout needed to notice it.
    threads = CodeThreads(pool, 4)
    release = threading.Event()
    try:
        hung = threads.run(lambda: release.wait(10))
        quick = [threads.run(lambda n=n: n) for n in range(3)]
        assert await asyncio.wait_for(asyncio.gather(*quick), 3) == [0, 1, 2]
        assert not hung.done()
    finally:
        release.set()


async def test_a_pool_shut_down_fails_the_waiting_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    threads = CodeThreads(pool, 1)
    pool.shutdown()  # the processor stopping
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(threads.run(lambda: "never"), 5)


async def test_a_batch_done_at_once_comes_back_in_the_tick_that_sent_it(
    pool: CountingPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tick that wakes a thread waits for it (up to HANDOVER_WAIT_SECONDS) and hands back
    # what it finished: the answer comes at the first tick (0.3 s), not the second (0.6 s).
    monkeypatch.setattr(code_threads, "LINGER_SECONDS", 0.3, raising=False)
    threads = CodeThreads(pool, 4)
    answer = threads.run(lambda: "at once")
    await asyncio.sleep(0.45)
    assert answer.done() and answer.result() == "at once"


async def test_a_slow_batch_does_not_hold_the_loop(pool: CountingPool) -> None:
    # The function waits for the loop itself: were the tick to wait until the batch is done,
    # the loop could never release it and the function would give up (False).
    threads = CodeThreads(pool, 4)
    release = threading.Event()

    async def loop_goes_on() -> None:
        for _ in range(5):
            await asyncio.sleep(0.01)
        release.set()

    going = asyncio.ensure_future(loop_goes_on())
    assert await asyncio.wait_for(threads.run(lambda: release.wait(5)), 10) is True
    await going


async def test_a_result_finished_before_the_deadline_is_the_callers_even_before_the_tick(
    pool: CountingPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The thread starts it at once (a batch of one) but no tick comes to hand the result back
    # before the deadline: the caller takes it from the thread, not a timeout.
    monkeypatch.setattr(code_threads, "BATCH_CALLS", 1, raising=False)
    monkeypatch.setattr(code_threads, "LINGER_SECONDS", 10.0, raising=False)
    monkeypatch.setattr(code_threads, "SLACK_SECONDS", 0.0, raising=False)
    threads = CodeThreads(pool, 4)
    assert await asyncio.wait_for(threads.call(lambda: 42, 0.1), 5) == 42


async def test_a_call_that_ran_longer_than_its_timeout_times_out(pool: CountingPool) -> None:
    # Finished within the slack the batching allows, but its own run was over the timeout.
    threads = CodeThreads(pool, 4)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(threads.call(lambda: time.sleep(0.03), 0.01), 5)


async def test_a_hung_call_times_out_and_the_calls_behind_it_still_return(pool: CountingPool) -> None:
    threads = CodeThreads(pool, 4)
    release = threading.Event()
    hung = asyncio.ensure_future(threads.call(lambda: release.wait(30), 0.05))
    behind = [asyncio.ensure_future(threads.call(lambda n=n: n, 5)) for n in range(5)]
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(hung, 5)
        assert await asyncio.wait_for(asyncio.gather(*behind), 5) == list(range(5))
    finally:
        release.set()
