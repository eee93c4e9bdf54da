"""Request and event ids derived from a root span, the same every time the span is sent.

An exporter re-sends an export it thinks failed, and a span of one trace may reach different
gateway processes: counting each request once needs ids that depend only on the span. The
request id is UUIDv7-shaped (its first 48 bits are the root span's start in Unix milliseconds,
as the gateway's own ids are, so storage partitions it by time the same way); the other 74 bits
come from a BLAKE2b hash of the trace id, the root span id and the exact start time.
"""

from __future__ import annotations

import uuid
from hashlib import blake2b

_TIME_BITS = (1 << 48) - 1


def _uuid7_shaped(millis: int, digest: bytes) -> str:
    random_a = int.from_bytes(digest[:2], "big") & 0xFFF
    random_b = int.from_bytes(digest[2:10], "big") & ((1 << 62) - 1)
    value = ((millis & _TIME_BITS) << 80) | (0x7 << 76) | (random_a << 64) | (0b10 << 62) | random_b
    return str(uuid.UUID(int=value))


def derived_request_id(trace_id: str, span_id: str, start_ns: int) -> str:
    digest = blake2b(
        f"{trace_id}:{span_id}:{start_ns}".encode(), digest_size=10, person=b"pp-otlp-req-v1"
    ).digest()
    return _uuid7_shaped(start_ns // 1_000_000, digest)


def derived_event_id(request_id: str, kind: str, event_time_ns: int) -> str:
    """The id of the ``kind`` event ("request", "response") about a derived request."""
    digest = blake2b(
        f"{request_id}:{kind}".encode(), digest_size=10, person=b"pp-otlp-evt-v1"
    ).digest()
    return _uuid7_shaped(event_time_ns // 1_000_000, digest)
