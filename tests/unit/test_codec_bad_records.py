"""The event codec on records that are not valid events: any of them (bad headers, bad bodies,
random bytes, truncated or bit-flipped records) raises EventDecodeError, naming why, and nothing
else."""

from __future__ import annotations

import random

import pytest

from shared.events.codec import decode, encode
from shared.events.errors import EventDecodeError
from shared.events.headers import header
from shared.events.messages import Feedback
from tests.unit.test_codec import SAMPLES, meta


def headers_for(kind: str, version: bytes = b"1") -> list[tuple[str, bytes]]:
    return [("pp-event-type", kind.encode()), ("pp-schema-version", version)]


VALID = encode(SAMPLES["request"])


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (VALID.value, [], "missing-event-type"),
        (VALID.value, None, "missing-event-type"),
        (VALID.value, headers_for("inference.requests"), "unknown-event-type"),
        (VALID.value, [("pp-event-type", b"inference.request")], "missing-schema-version"),
        (VALID.value, headers_for("inference.request", b"2"), "unsupported-schema-version"),
        (VALID.value, headers_for("inference.request", b"01"), "unsupported-schema-version"),
        (VALID.value, [("pp-event-type", b"\xff\xfe")], "malformed-header"),
        (VALID.value, [("pp-event-type", "inference.request")], "malformed-header"),
        (VALID.value, [("pp-event-type",)], "malformed-header"),
        (VALID.value, 42, "malformed-header"),
        (b"", VALID.headers, "empty-body"),
        (None, VALID.headers, "empty-body"),
        (b"", headers_for("alert"), "empty-body"),
        ("text, not bytes", VALID.headers, "malformed-body"),
        (VALID.value[:5], VALID.headers, "malformed-body"),  # cut inside meta
        (b"\xff" * 32, VALID.headers, "malformed-body"),
        (b"not json", headers_for("alert"), "malformed-body"),
        (b"[1, 2]", headers_for("alert"), "malformed-body"),
        (b'{"eventId": 5}', headers_for("alert"), "malformed-body"),
        (b"\xff\xfe{}", headers_for("alert"), "malformed-body"),
        (b"[" * 10_000, headers_for("alert"), "malformed-body"),
        (VALID.value, headers_for("alert"), "malformed-body"),
        (encode(SAMPLES["alert"]).value, VALID.headers, "malformed-body"),
        # Wrong type header: field 2 is a varint in Feedback, a string in Evaluation.
        (encode(SAMPLES["feedback"]).value, headers_for("evaluation"), "malformed-body"),
        # Wrong type header, wire-compatible bytes: parses, but is no evaluation (no metric).
        (Feedback(meta=meta()).SerializeToString(), headers_for("evaluation"), "invalid-event"),
        (b'{"monitorId": "m"}', headers_for("alert"), "invalid-event"),
        (Feedback(comment="x").SerializeToString(), headers_for("feedback"), "invalid-event"),
    ],
)
def test_bad_records_raise_one_typed_error(value, headers, reason):
    with pytest.raises(EventDecodeError) as caught:
        decode(value, headers)
    assert caught.value.reason == reason


def test_header_helpers_accept_mappings_and_take_the_last_repeat():
    assert header({"pp-deployment": b"a"}, "pp-deployment") == "a"
    assert header([("x", b"1"), ("x", b"2")], "x") == "2"
    assert header([("x", None)], "x") is None  # Kafka allows null header values
    assert header(None, "x") is None
    assert header((), "x") is None


def test_decode_reads_headers_given_as_a_one_shot_iterator():
    record = encode(SAMPLES["feedback"])
    assert decode(record.value, iter(record.headers)) == SAMPLES["feedback"]


@pytest.mark.parametrize("kind", SAMPLES)
def test_random_bytes_never_escape_as_another_exception(kind):
    headers = encode(SAMPLES[kind]).headers
    rng = random.Random(kind)
    for _ in range(300):
        garbage = rng.randbytes(rng.randrange(1, 200))
        with pytest.raises(EventDecodeError):
            decode(garbage, headers)


@pytest.mark.parametrize("kind", SAMPLES)
def test_truncated_and_bit_flipped_records_decode_or_raise_the_typed_error(kind):
    # A cut on a field boundary or a flip inside a string can still be a valid event: the
    # contract is only that nothing but EventDecodeError ever comes out.
    record = encode(SAMPLES[kind])
    rng = random.Random(kind)
    corrupted = [record.value[:cut] for cut in range(len(record.value))]
    for _ in range(300):
        flipped = bytearray(record.value)
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        corrupted.append(bytes(flipped))
    failures = 0
    for value in corrupted:
        try:
            decode(value, record.headers)
        except EventDecodeError:
            failures += 1
    assert failures > 0, "the corruption never hit anything the decoder checks"
