"""Which windows of a monitor are due. Pure code.

Windows end on multiples of the cadence since the Unix epoch (UTC), so every replica, and the
same replica after a restart, cuts the same windows: a 1h cadence ends windows on the hour, 1d
at midnight UTC. A window ``[end - window, end)`` is due once ``end + grace`` has passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def latest_closed_end(now: datetime, cadence_seconds: int, grace_seconds: float) -> datetime:
    """The end of the newest window that closed at least ``grace_seconds`` before ``now``."""
    elapsed = (now - _EPOCH).total_seconds() - grace_seconds
    return _EPOCH + timedelta(seconds=(elapsed // cadence_seconds) * cadence_seconds)


@dataclass(frozen=True)
class DueWindows:
    ends: list[datetime]
    skipped: int  # windows older than the catch-up limit, never evaluated


def due_window_ends(
    evaluated_through: datetime | None,
    now: datetime,
    *,
    cadence_seconds: int,
    grace_seconds: float,
    max_catch_up: int,
) -> DueWindows:
    """Window ends to evaluate, oldest first.

    A monitor never evaluated starts at the newest closed window (no backfill of history it
    did not watch); afterwards every window after ``evaluated_through`` is due, at most
    ``max_catch_up`` of them (the newest) after a long outage.
    """
    latest = latest_closed_end(now, cadence_seconds, grace_seconds)
    if evaluated_through is None:
        return DueWindows([latest], 0)
    step = timedelta(seconds=cadence_seconds)
    # The first cadence boundary after the last evaluated end (the cadence may have changed).
    since = (evaluated_through - _EPOCH).total_seconds()
    first = _EPOCH + timedelta(seconds=(since // cadence_seconds + 1) * cadence_seconds)
    if first > latest:
        return DueWindows([], 0)
    count = int((latest - first) / step) + 1
    skipped = max(0, count - max_catch_up)
    start = first + skipped * step
    return DueWindows([start + i * step for i in range(count - skipped)], skipped)
