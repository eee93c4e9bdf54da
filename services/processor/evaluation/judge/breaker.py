"""A circuit breaker per judge connection: when the endpoint is down, calls wait instead of failing.

Closed: calls go through; ``threshold`` consecutive failures (timeouts, 5xx, connection errors)
open it. Open: calls wait in :meth:`acquire`, so an outage turns into delay and back-pressure
(the judge queue fills, the stream pauses, offsets stay uncommitted) rather than into a burst of
error outcomes or lost work. After ``open_seconds`` one probe call is let through (half-open):
success closes the breaker and releases everyone, failure opens it again for another period.
A rate-limit answer (429) proves the endpoint is up, so it neither trips nor closes the breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self,
        threshold: int,
        open_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.open_seconds = open_seconds
        self._clock = clock
        self.state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probe_out = False
        self._changed = asyncio.Event()
        self.times_opened = 0
        self.waiting = 0

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _open(self) -> None:
        self.state = "open"
        self._opened_at = self._clock()
        self._probe_out = False
        self.times_opened += 1
        self._notify()

    async def acquire(self) -> bool:
        """Return when a call may go ahead; True when this call is the half-open probe."""
        waited = False
        try:
            while True:
                if self.state == "closed":
                    return False
                if self.state == "open":
                    remaining = self._opened_at + self.open_seconds - self._clock()
                    if remaining > 0:
                        if not waited:
                            waited = True
                            self.waiting += 1
                        changed = self._changed
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(changed.wait(), remaining)
                        continue
                    self.state = "half_open"
                    self._probe_out = False
                if not self._probe_out:
                    self._probe_out = True
                    return True
                if not waited:
                    waited = True
                    self.waiting += 1
                await self._changed.wait()
        finally:
            if waited:
                self.waiting -= 1

    def record_success(self) -> None:
        self._failures = 0
        if self.state != "closed":
            self.state = "closed"
            self._probe_out = False
            self._notify()

    def record_failure(self) -> None:
        self._failures += 1
        if self.state == "half_open" or (self.state == "closed" and self._failures >= self.threshold):
            self._open()

    def record_neutral(self, was_probe: bool) -> None:
        """An answer that says nothing about the endpoint's health (429, a cancelled call)."""
        if was_probe and self.state == "half_open":
            self._probe_out = False
            self._notify()
