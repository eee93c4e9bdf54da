"""shared/retry.py: the waits between tries (doubling, cap, jitter, Retry-After floor, reset)
and the pause that gives up when the service stops. Pure units: the draw is pinned, and no
test measures time (a pause that ought to end early is bounded by a generous timeout only so a
regression fails instead of hanging)."""

from __future__ import annotations

import asyncio

import pytest

from shared.retry import Backoff, Jitter, pause, retry_after_seconds

pytestmark = pytest.mark.timeout(30)

LOWEST = lambda low, high: low  # noqa: E731
HIGHEST = lambda low, high: high  # noqa: E731


def test_waits_double_from_initial_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 3.0)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert backoff.failures == 6


def test_reset_starts_again_from_initial() -> None:
    backoff = Backoff(1.0, 30.0)
    backoff.next(), backoff.next(), backoff.next()
    backoff.reset()
    assert backoff.next() == 1.0 and backoff.next() == 2.0


def test_delay_is_pure_for_schedules_kept_elsewhere() -> None:
    # The webhook outbox keeps the attempt count in PostgreSQL and asks for the n-th wait.
    backoff = Backoff(2.0, 300.0)
    assert [backoff.delay(n) for n in (1, 2, 3, 8, 9, 10_000)] == [2.0, 4.0, 8.0, 256.0, 300.0, 300.0]
    assert backoff.failures == 0
    with pytest.raises(ValueError):
        backoff.delay(0)


def test_full_jitter_draws_between_zero_and_the_exponential_wait() -> None:
    drawn: list[tuple[float, float]] = []

    def record(low: float, high: float) -> float:
        drawn.append((low, high))
        return high / 2

    backoff = Backoff(0.5, 3.0, Jitter.FULL, draw=record)
    assert [backoff.next() for _ in range(4)] == [0.25, 0.5, 1.0, 1.5]
    assert drawn == [(0.0, 0.5), (0.0, 1.0), (0.0, 2.0), (0.0, 3.0)]
    assert Backoff(0.0, 3.0, Jitter.FULL, draw=HIGHEST).next() == 0.0


def test_proportional_jitter_spreads_half_either_side_of_the_capped_wait() -> None:
    assert Backoff(0.2, 10.0, Jitter.PROPORTIONAL, draw=LOWEST).delay(1) == pytest.approx(0.1)
    assert Backoff(0.2, 10.0, Jitter.PROPORTIONAL, draw=HIGHEST).delay(1) == pytest.approx(0.3)
    # The cap bounds the exponential wait; the spread may go half beyond it (as before).
    assert Backoff(0.2, 10.0, Jitter.PROPORTIONAL, draw=HIGHEST).delay(20) == pytest.approx(15.0)


def test_jittered_waits_stay_in_their_bounds_with_the_real_draw() -> None:
    full = Backoff(1.0, 8.0, Jitter.FULL)
    proportional = Backoff(1.0, 8.0, Jitter.PROPORTIONAL)
    for n in range(1, 12):
        ceiling = min(8.0, 2.0 ** (n - 1))
        for _ in range(50):
            assert 0.0 <= full.delay(n) <= ceiling
            assert ceiling / 2 <= proportional.delay(n) <= ceiling * 1.5


def test_retry_after_is_a_floor_held_to_the_cap() -> None:
    backoff = Backoff(0.5, 30.0, Jitter.FULL, draw=HIGHEST)
    assert backoff.delay(1, at_least=4.0) == 4.0
    assert backoff.delay(7, at_least=4.0) == 30.0  # the exponential wait is already longer
    assert backoff.delay(1, at_least=3600.0) == 30.0  # a hostile Retry-After cannot park the caller
    assert backoff.next(at_least=2.0) == 2.0 and backoff.failures == 1


def test_huge_failure_counts_do_not_overflow() -> None:
    assert Backoff(1.0, 60.0).delay(5_000) == 60.0


def test_negative_waits_are_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(-1.0, 10.0)


async def test_pause_sleeps_and_returns_true_without_a_stop() -> None:
    assert await pause(0.01) is True
    assert await pause(0.01, asyncio.Event()) is True
    assert await pause(0, asyncio.Event()) is True


async def test_pause_gives_up_at_once_when_already_stopping() -> None:
    stop = asyncio.Event()
    stop.set()
    async with asyncio.timeout(5):
        assert await pause(3600, stop) is False


async def test_pause_ends_early_when_stop_is_set_meanwhile() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, stop.set)
    async with asyncio.timeout(5):
        assert await pause(3600, stop) is False


async def test_pause_of_zero_still_lets_other_tasks_run() -> None:
    # A loop that retries with no wait must not starve the event loop.
    ran = asyncio.Event()
    asyncio.get_running_loop().call_soon(ran.set)
    await pause(0, asyncio.Event())
    assert ran.is_set()


async def test_pause_is_cancellable() -> None:
    task = asyncio.create_task(pause(3600, asyncio.Event()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_retry_after_forms() -> None:
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0) == 10.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({"retry-after": "-3"}) is None
    assert retry_after_seconds(None) is None
