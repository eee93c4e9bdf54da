"""How long to wait before retrying a judge call: exponential backoff with full jitter, never less
than what the endpoint asked for in ``Retry-After``, never more than the configured cap."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping


def retry_after_seconds(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """The wait the endpoint asked for: ``retry-after-ms`` (OpenAI, Azure), ``Retry-After`` as
    seconds or as an HTTP date. None when absent or unreadable."""
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


def backoff_seconds(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    draw: Callable[[float, float], float] = random.uniform,
) -> float:
    """Wait before attempt ``attempt + 1`` (``attempt`` >= 1 failed already).

    Full jitter (uniform in [0, base * 2**(attempt-1)]) spreads the retries of many calls that
    failed together, so they do not hit a recovering endpoint in one wave.
    """
    ceiling = min(cap, base * (2 ** min(attempt - 1, 30)))
    delay = draw(0.0, ceiling) if ceiling > 0 else 0.0
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, cap)
