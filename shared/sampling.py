"""The one sampling decision: is this request judged (and are its inputs and outputs kept)?

The processor uses it to choose what to judge, the aggregator to know which requests keep
their payloads. Both must reach the same answer without talking, so the decision is a pure
function of the request id and the rate: a 64-bit BLAKE2b hash of the id, read as a fraction
of 2**64, is compared with the rate. Raising the rate keeps every request sampled before
(the sampled set only grows), which keeps figures comparable across a rate change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from hashlib import blake2b

# Changing the personalisation re-samples every request ever made, so it is versioned; a new
# version would need the processor and the aggregator to switch at the same moment.
_PERSON = b"pp-sample-v1"
_SPACE = float(2**64)


def _check_rate(rate: float) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise ValueError(f"sampling rate must be a number in [0, 1], got {type(rate).__name__}")
    if math.isnan(rate) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"sampling rate must be in [0, 1], got {rate!r}")


def sample_point(request_id: str) -> int:
    """Where a request id falls in [0, 2**64): the value the rate is compared against."""
    if not isinstance(request_id, str):
        raise TypeError(f"request id must be str, got {type(request_id).__name__}")
    digest = blake2b(
        request_id.encode("utf-8", "surrogatepass"), digest_size=8, person=_PERSON
    ).digest()
    return int.from_bytes(digest, "big")


def is_sampled(request_id: str, rate: float) -> bool:
    """True when ``request_id`` is in the sample at ``rate`` (0 never, 1 always)."""
    _check_rate(rate)
    # int < float compares exactly in Python, so rate 1.0 admits even the point 2**64 - 1
    # (dividing by 2**64 in floating point would round that point up to 1.0 and miss it).
    return sample_point(request_id) < rate * _SPACE


def sampler(rate: float) -> Callable[[bytes], bool]:
    """:func:`is_sampled` at a fixed ``rate`` for a request id given as its UTF-8 bytes (a Kafka
    record's key): the processor asks this once per event, so the rate is checked once, here,
    and the id is hashed as it came, without a round trip through str."""
    _check_rate(rate)
    threshold = rate * _SPACE

    def sampled(request_id: bytes) -> bool:
        digest = blake2b(request_id, digest_size=8, person=_PERSON).digest()
        return int.from_bytes(digest, "big") < threshold

    return sampled
