"""Retrying with exponential backoff: the one implementation of the waits between tries.

Every retry in PromptPulse is a loop that keeps its own state (a spool drained batch by
batch, a listener that reconnects, a consumer that is rebuilt, a webhook attempt scheduled in
PostgreSQL), so what is shared is the part each of them computed by hand: the wait after the
n-th consecutive failure, its jitter, its cap, a server's ``Retry-After`` as a floor, and a
pause that ends early when the service is stopping. Which failures are retried, when to give
up and what is logged stay at the call site, where they mean something.

::

    backoff = Backoff(initial=0.5, cap=10.0)
    while not stopping.is_set():
        try:
            ...
            backoff.reset()            # success: the next failure waits ``initial`` again
        except SomeError:
            if not await pause(backoff.next(), stopping):
                return                 # stopping: give up at once
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import enum
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# 2**30 times any sane initial wait is beyond every cap; past it the float would overflow.
_MAX_EXPONENT = 30


class Jitter(enum.Enum):
    NONE = "none"
    # Uniform in [0, wait]: spreads the retries of many callers that failed together, so they
    # do not hit a recovering endpoint in one wave (AWS's "full jitter").
    FULL = "full"
    # Uniform in [wait/2, 3*wait/2]: spread, but never much shorter than the exponential wait.
    PROPORTIONAL = "proportional"


@dataclass
class Backoff:
    """The waits between tries: ``initial`` after the first failure, doubling after each
    further one, the doubling stopped at ``cap``; then the jitter (proportional jitter may
    reach 1.5 times the cap, the others never pass it)."""

    initial: float
    cap: float
    jitter: Jitter = Jitter.NONE
    # (low, high) -> a number in [low, high]; injectable so tests can pin the draw.
    draw: Callable[[float, float], float] = random.uniform
    failures: int = 0  # consecutive, since the last reset

    def __post_init__(self) -> None:
        if self.initial < 0 or self.cap < 0:
            raise ValueError(f"backoff waits cannot be negative (initial {self.initial}, cap {self.cap})")

    def delay(self, failures: int, *, at_least: float | None = None) -> float:
        """The wait after ``failures`` (>= 1) consecutive failures, without changing the state.
        ``at_least`` (a server's Retry-After) is a floor, itself held to the cap."""
        if failures < 1:
            raise ValueError(f"a wait follows at least one failure, not {failures}")
        ceiling = min(self.cap, self.initial * 2 ** min(failures - 1, _MAX_EXPONENT))
        if self.jitter is Jitter.FULL:
            wait = self.draw(0.0, ceiling) if ceiling > 0 else 0.0
        elif self.jitter is Jitter.PROPORTIONAL:
            wait = self.draw(ceiling / 2, ceiling * 1.5)
        else:
            wait = ceiling
        if at_least is not None:
            wait = min(max(wait, at_least), self.cap)
        return wait

    def next(self, *, at_least: float | None = None) -> float:
        """Count one more failure and return the wait before the next try."""
        self.failures += 1
        return self.delay(self.failures, at_least=at_least)

    def reset(self) -> None:
        """A try succeeded: the next failure starts from ``initial`` again."""
        self.failures = 0


async def pause(seconds: float, stop: asyncio.Event | None = None) -> bool:
    """Wait ``seconds``; return False at once if ``stop`` is set or becomes set meanwhile
    (the service is stopping: give up rather than retry), True otherwise. Cancellable."""
    if stop is None:
        await asyncio.sleep(max(0.0, seconds))
        return True
    if stop.is_set():
        return False
    if seconds <= 0:
        await asyncio.sleep(0)  # still yield: a loop retrying with no wait must not starve the others
    else:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
    return not stop.is_set()


def retry_after_seconds(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """The wait an HTTP server asked for: ``retry-after-ms`` (OpenAI, Azure), ``Retry-After``
    as seconds or as an HTTP date. None when absent or unreadable."""
    if not headers:
        return None
    try:
        millis = headers.get("retry-after-ms")
        if millis is not None:
            value = float(millis) / 1000
            return value if value >= 0 else None
        raw = headers.get("retry-after")
        if raw is None:
            return None
        raw = raw.strip()
        try:
            value = float(raw)
        except ValueError:
            moment = email.utils.parsedate_to_datetime(raw)
            value = moment.timestamp() - (time.time() if now is None else now)
            return max(value, 0.0)
        return value if value >= 0 else None
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
