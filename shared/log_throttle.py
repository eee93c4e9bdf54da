"""Keeping a warning that repeats per event (the gateway event pipeline's dropped token chunks, its failed
sends, the span exporter's full queue) from flooding the log."""

from __future__ import annotations

import time
from collections import Counter


class LogThrottle:
    """At most one log line per key and interval; says how many were held back."""

    def __init__(self, interval: float = 10.0) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def ready(self, key: str) -> int | None:
        now = time.monotonic()
        if key not in self._last or now - self._last[key] >= self._interval:
            self._last[key] = now
            return self._held.pop(key, 0)
        self._held[key] += 1
        return None
