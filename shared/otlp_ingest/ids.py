"""Request and event ids derived from a root span, the same every time the span is sent.

An exporter re-sends an export it thinks failed, and a span of one trace may reach different
gateway processes: counting each request once needs ids that depend only on the span. The
request id is UUIDv7-shaped (its first 48 bits are the root span's start in Unix milliseconds,
as the gateway's own ids are, so storage partitions it by time the same way); the other 74 bits
come from a BLAKE2b hash of the trace id, the root span id, the exact start time and a counter.

The counter makes the id fall on the same side of the sample as its trace: the gateway decides
whether a trace keeps its texts from the trace id (it cannot know the request yet), and the
processor judges by request id (shared.sampling), so a derived id is the first candidate whose
sampling decision matches the trace's. Expected tries: 1/rate for a sampled trace, 1/(1-rate)
otherwise (a hash costs about a microsecond).
"""

from __future__ import annotations

import uuid
from hashlib import blake2b

from shared.sampling import is_sampled

_TIME_BITS = (1 << 48) - 1
_MAX_TRIES = 1_000_000


def _uuid7_shaped(millis: int, digest: bytes) -> str:
    random_a = int.from_bytes(digest[:2], "big") & 0xFFF
    random_b = int.from_bytes(digest[2:10], "big") & ((1 << 62) - 1)
    value = ((millis & _TIME_BITS) << 80) | (0x7 << 76) | (random_a << 64) | (0b10 << 62) | random_b
    return str(uuid.UUID(int=value))


def trace_sampled(trace_id: str, rate: float) -> bool:
    """Whether a trace received over OTLP keeps its texts (and its requests are judged)."""
    return is_sampled(trace_id, rate)


def derived_request_id(trace_id: str, span_id: str, start_ns: int, rate: float = 0.0) -> str:
    wanted = trace_sampled(trace_id, rate)
    millis = start_ns // 1_000_000
    candidate = ""
    for attempt in range(_MAX_TRIES):
        seed = f"{trace_id}:{span_id}:{start_ns}:{attempt}".encode()
        candidate = _uuid7_shaped(
            millis, blake2b(seed, digest_size=10, person=b"pp-otlp-req-v1").digest()
        )
        if is_sampled(candidate, rate) == wanted:
            return candidate
    return candidate  # a rate below one in a million: the texts may be missing, nothing else


def derived_event_id(request_id: str, kind: str, event_time_ns: int) -> str:
    """The id of the ``kind`` event ("request", "response") about a derived request."""
    digest = blake2b(
        f"{request_id}:{kind}".encode(), digest_size=10, person=b"pp-otlp-evt-v1"
    ).digest()
    return _uuid7_shaped(event_time_ns // 1_000_000, digest)
