"""A mergeable log-bucket histogram for durations (latency, time to first token).

DDSketch's mapping (Masson et al., VLDB 2019): with relative accuracy ``a``, bucket ``i`` holds
the values in ``(gamma**(i-1), gamma**i]`` where ``gamma = (1 + a) / (1 - a)``, and reports
them as ``2 * gamma**i / (gamma + 1)``, which is within ``a`` of any value in the bucket.
Buckets are plain counts, so two histograms merge by adding counts bucket by bucket: a minute's
histogram is a set of ``(bucket, count)`` rows, and any window is the sum of its minutes' rows.

The stated error is :data:`RELATIVE_ACCURACY` (1%), inside the 2% the product promises, so the
choice of rank convention (nearest rank, interpolation) cannot push a percentile over it.
``bucket_of`` must stay the same function for ever: stored rows carry bucket numbers, not
values. The SQL twin of it, for checks written in plain SQL, is
``ceil(ln(x) / ln(1.01::float8 / 0.99::float8))`` for ``x`` clamped to [MIN_VALUE, MAX_VALUE].
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(GAMMA)
# Milliseconds. Below 1 us everything is "instant"; above ~2.8 hours is one overflow bucket.
# Both ends keep bucket numbers within a smallint.
MIN_VALUE = 0.001
MAX_VALUE = 1e7


def bucket_of(value: float) -> int:
    """The bucket of a duration in milliseconds (clamped to [MIN_VALUE, MAX_VALUE])."""
    if not value > MIN_VALUE:  # also catches NaN, which callers reject before this point
        value = MIN_VALUE
    elif value > MAX_VALUE:
        value = MAX_VALUE
    return math.ceil(math.log(value) / _LOG_GAMMA)


MIN_BUCKET = bucket_of(MIN_VALUE)
MAX_BUCKET = bucket_of(MAX_VALUE)


def bucket_value(bucket: int) -> float:
    """The value a bucket reports: within RELATIVE_ACCURACY of every value it holds."""
    return 2 * GAMMA**bucket / (GAMMA + 1)


class LogHistogram:
    """Counts per bucket; add values, merge histograms, read quantiles."""

    __slots__ = ("counts", "total")

    def __init__(self, counts: Mapping[int, int] | None = None) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        if counts:
            self.merge_counts(counts.items())

    def add(self, value: float, count: int = 1) -> None:
        bucket = bucket_of(value)
        self.counts[bucket] = self.counts.get(bucket, 0) + count
        self.total += count

    def merge_counts(self, rows: Iterable[tuple[int, int]]) -> LogHistogram:
        """Add ``(bucket, count)`` rows, e.g. the rows of many minutes read from a rollup."""
        for bucket, count in rows:
            self.counts[bucket] = self.counts.get(bucket, 0) + count
            self.total += count
        return self

    def merge(self, other: LogHistogram) -> LogHistogram:
        return self.merge_counts(other.counts.items())

    def quantile(self, q: float) -> float | None:
        """The value at quantile ``q`` in [0, 1] (None for an empty histogram).

        The value reported for the order statistic at rank ``floor(q * (n - 1))`` (0-based),
        so it is within RELATIVE_ACCURACY of that sample.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q!r}")
        if self.total == 0:
            return None
        rank = q * (self.total - 1)
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen > rank:
                return bucket_value(bucket)
        return bucket_value(max(self.counts))

    def quantiles(self, qs: Iterable[float]) -> dict[float, float | None]:
        return {q: self.quantile(q) for q in qs}
