"""The judge token budget of each deployment: past it, sampling pauses until the hour rolls on.

Spend is counted over a rolling hour in one-minute buckets, so a budget frees up gradually
rather than all at once on the hour. It is checked when a sampled response arrives (the moment
a judge call would be made): a request that finds the budget spent is skipped and counted, not
judged. Calls already queued or in flight still finish, so the overshoot is bounded by the
judge queue, never by the traffic.

Workers do not talk to each other, so each enforces a share of the budget: the share of the
inference topic's partitions it owns (request ids spread evenly over partitions, so each
worker sees that share of the sampled traffic). A worker that owns every partition enforces the
whole budget.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

BUCKET_SECONDS = 60.0
WINDOW_SECONDS = 3600.0


class TokenBudget:
    def __init__(self, tokens_per_hour: int | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.tokens_per_hour = tokens_per_hour  # None: unlimited
        self.share = 1.0
        self._clock = clock
        self._buckets: deque[tuple[float, int]] = deque()  # (bucket start, tokens)
        self._spent = 0
        self.skipped = 0

    def _expire(self, now: float) -> None:
        while self._buckets and self._buckets[0][0] <= now - WINDOW_SECONDS:
            _, tokens = self._buckets.popleft()
            self._spent -= tokens

    def spend(self, tokens: int) -> None:
        if tokens <= 0:
            return
        now = self._clock()
        start = now - (now % BUCKET_SECONDS)
        if self._buckets and self._buckets[-1][0] == start:
            self._buckets[-1] = (start, self._buckets[-1][1] + tokens)
        else:
            self._buckets.append((start, tokens))
        self._spent += tokens
        self._expire(now)

    def spent(self) -> int:
        self._expire(self._clock())
        return self._spent

    def limit(self) -> float | None:
        if self.tokens_per_hour is None:
            return None
        return self.tokens_per_hour * self.share

    def exhausted(self) -> bool:
        limit = self.limit()
        return limit is not None and self.spent() >= limit
