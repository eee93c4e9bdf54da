"""Per-key rate limits: a token bucket per (deployment, key id), in one gateway process.

A key with ``rate_limit_per_minute: N`` may burst N requests, then gets one more every 60/N
seconds. A refused request learns when the next one will be allowed (``Retry-After``). The
buckets live in the process: with several gateways behind a load balancer each allows N, so
set N per gateway accordingly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float
    limit: int


class RateLimiter:
    """Token buckets keyed by (deployment, key id); call from one event loop."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def check(self, deployment: str, key_id: str, limit_per_minute: int | None) -> float | None:
        """Take one request from the key's bucket: None if allowed, else seconds to wait."""
        if limit_per_minute is None:
            return None
        if limit_per_minute < 1:
            raise ValueError("limit_per_minute must be at least 1")
        now = self._clock()
        key = (deployment, key_id)
        bucket = self._buckets.get(key)
        if bucket is None or bucket.limit != limit_per_minute:
            # A new key, or its limit changed on reload: start full at the new size.
            bucket = self._buckets[key] = _Bucket(float(limit_per_minute), now, limit_per_minute)
        rate = limit_per_minute / 60.0
        bucket.tokens = min(float(limit_per_minute), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / rate

    def forget_except(self, keep: set[tuple[str, str]]) -> None:
        """Drop buckets of keys that no longer exist (after a reload), so revoked keys free memory."""
        for key in [k for k in self._buckets if k not in keep]:
            del self._buckets[key]


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, rounded up so a client that obeys it is let in."""
    return str(max(1, math.ceil(seconds)))
