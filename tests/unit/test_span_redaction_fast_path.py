"""The span redaction's cheap checks never let a secret through.

``might_hold_secret`` (and the batch check on texts joined by newlines) may raise a false alarm,
which the exact check settles, but must never say "clean" where shared.logs.redact would mask
something. Checked over generated text built from the patterns' own words in any case, with
non-ASCII look-alikes ("ſ" is "s" to a case-insensitive pattern).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from shared.logs import redact
from shared.telemetry import redaction
from shared.telemetry.redaction import RedactingSpanExporter, might_hold_secret

pytestmark = pytest.mark.timeout(120)

PIECES = ["pp_", "sk-", "bearer ", "Basic ", "BEARER\t", "://user:", "@host", "api_key=", "ApiKey: ", "passwd=",
          "PASSWORD", "client-secret:", "secret", "\"", "'", "=", ":", " ", "\n", ",", "ſ", "K", "İ", "é",
          "abcdefghijklmnopqrstuvwxyz0123", "ABCDEFGH", "hunter2", "/", "x"]
texts = st.lists(st.sampled_from(PIECES) | st.text(max_size=6), max_size=12).map("".join)


def test_the_cheap_words_apply_to_the_current_patterns() -> None:
    # If shared.logs changes its patterns, the word list is ignored (still correct, only
    # slower); this test says so, so that the list gets read again.
    assert redaction._WORDS_APPLY
    assert redaction._ANY_SECRET is not None


@settings(max_examples=2000, deadline=None)
@given(texts)
def test_no_false_negatives(text: str) -> None:
    if redact(text) != text:
        assert might_hold_secret(text)


@settings(max_examples=500, deadline=None)
@given(st.lists(texts, min_size=1, max_size=5))
def test_joined_texts_keep_every_alarm(parts: list[str]) -> None:
    joined = redaction._joined(parts)
    if any(redact(p) != p for p in parts):
        assert might_hold_secret(joined)
        assert not redaction._ruled_out(joined)


class _Keep(SpanExporter):
    def __init__(self) -> None:
        self.batches: list[list] = []

    def export(self, spans):  # type: ignore[no-untyped-def]
        self.batches.append(list(spans))
        return SpanExportResult.SUCCESS


def test_exporter_passes_clean_batches_through_and_masks_a_secret_among_them() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    for _ in range(3):
        with tracer.start_as_current_span("chat gpt-4o") as span:
            span.set_attributes({"server.address": "api.openai.com", "gen_ai.response.finish_reasons": ["stop"]})
    clean = list(memory.get_finished_spans())
    with tracer.start_as_current_span("chat gpt-4o") as span:
        span.set_status(StatusCode.ERROR, "Incorrect API key provided: sk-abcdefghijklmnopqrstuvwx")
        span.set_attribute("tags", ["ok", "Bearer pp_abcdefghijklmnopqrstuvwxyz"])
    dirty = memory.get_finished_spans()[-1]

    inner = _Keep()
    exporter = RedactingSpanExporter(inner)
    exporter.export(clean)
    assert all(a is b for a, b in zip(inner.batches[-1], clean, strict=True))
    exporter.export([*clean, dirty])
    out = inner.batches[-1]
    assert all(a is b for a, b in zip(out[:3], clean, strict=True))
    assert out[3] is not dirty
    assert out[3].status.description == "Incorrect API key provided: [REDACTED]"
    assert out[3].attributes["tags"] == ("ok", "Bearer [REDACTED]")
