"""The gateway's one walk over an accepted export: checks, stamps, the sampled-only rule, a
deployment's named-field redaction and credential masking (services/gateway/otlp/restamp.py).

Exports are opentelemetry-sdk spans encoded by its OTLP encoder (tests/support/otlp_apps.py).
"""

import json

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from services.gateway.otlp.restamp import NO_REDACTION, REDACTED, TextRedaction, per_trace_records
from shared.otlp_ingest.decode import BadExport, attributes, spans_of
from shared.otlp_ingest.genai import derive, find_roots
from tests.support.otlp_apps import (
    ANSWER,
    CONTEXT,
    QUESTION,
    App,
    agent_tree,
    current_chat,
    export_bytes,
    flattened_chat,
    openinference_chat,
    prompt_events_chat,
)


def restamp(app, *, keep=True, redaction=NO_REDACTION, limit=1 << 20):
    export = ExportTraceServiceRequest.FromString(export_bytes(app.spans()))
    return per_trace_records(export, deployment="demo", variant_of=lambda resource: "v1",
                             keeps_texts=lambda trace_id: keep, max_record_bytes=limit, redaction=redaction)


def stored(records):
    """The restamped spans as the aggregator reads them."""
    return [span for record in records for span in spans_of(ExportTraceServiceRequest.FromString(record.value))]


def texts_of(span):
    """Every string of a span's attributes and events, as one text."""
    return json.dumps([span.attributes, [event.attributes for event in span.events]])


def all_conventions():
    app = App()
    current_chat(app)
    prompt_events_chat(app)
    flattened_chat(app)
    openinference_chat(app)
    return app


def test_every_span_is_stamped_and_the_sender_s_own_stamps_dropped():
    app = App()
    with app.tracer.start_as_current_span("chat forged") as span:
        span.set_attributes({"gen_ai.operation.name": "chat", "promptpulse.deployment": "other"})
        span.add_event("note", {"promptpulse.request_id": "forged", "kept": 1})
    [span] = stored(restamp(app))
    assert {k: v for k, v in span.attributes.items() if k.startswith("promptpulse.")} == {
        "promptpulse.deployment": "demo", "promptpulse.variant": "v1", "promptpulse.ingest": "otlp"}
    assert span.events[0].attributes == {"kept": 1}


@pytest.mark.parametrize("side", ["inputs", "outputs"])
def test_a_named_field_redacts_the_texts_of_its_side_in_every_convention(side):
    app = all_conventions()
    plain = stored(restamp(app))
    redacted = stored(restamp(app, redaction=TextRedaction(**{side: True})))
    assert len(redacted) == len(plain) == 4
    for before, after in zip(plain, redacted, strict=True):
        text = texts_of(after)
        gone, kept = (QUESTION, ANSWER) if side == "inputs" else (ANSWER, QUESTION)
        assert gone in texts_of(before) and gone not in text, after.name
        assert REDACTED in text
        assert kept in text, after.name  # the other side stays
        # counts, models and the names of things stay
        for key, value in before.attributes.items():
            if "token" in key or "model" in key or key.endswith(".role"):
                assert after.attributes[key] == value
    # what the assembler derives then has no text of that side
    for span in redacted:
        request = derive(find_roots([span]).decided[0], [span])
        if side == "inputs":
            assert request.inputs.get("question") in (None, REDACTED)
            assert CONTEXT not in json.dumps(request.inputs)
            assert request.outputs.get("answer") == ANSWER
        else:
            assert request.outputs.get("answer") in (None, REDACTED)
            assert request.inputs["question"] == QUESTION


def test_message_events_keep_their_numbers_when_redacted():
    app = App()
    with app.tracer.start_as_current_span("chat") as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.add_event("gen_ai.choice", {"index": 0, "message": json.dumps({"content": ANSWER})})
    [after] = stored(restamp(app, redaction=TextRedaction(outputs=True)))
    assert after.events[0].attributes == {"index": 0, "message": REDACTED}


def test_an_unsampled_trace_loses_its_texts_whatever_the_redaction():
    app = all_conventions()
    for redaction in (TextRedaction(), TextRedaction(inputs=True, outputs=True)):
        for span in stored(restamp(app, keep=False, redaction=redaction)):
            text = texts_of(span)
            assert QUESTION not in text and ANSWER not in text and REDACTED not in text
            assert any("token" in key for key in span.attributes)


def test_a_credential_in_any_value_is_masked_and_other_values_are_untouched():
    app = App()
    with app.tracer.start_as_current_span("chat") as span:
        span.set_attributes({"gen_ai.operation.name": "chat", "note": "plain words",
                             "tool.args": ["x", "key sk-abcdefghijklmnopqrstuvwxyz123456"]})
        span.add_event("exception", {"exception.message": "Bearer abc.def.ghi refused"})
    [after] = stored(restamp(app))
    assert after.attributes["note"] == "plain words"
    assert "sk-abcdefghijklmnop" not in json.dumps(after.attributes)
    assert after.attributes["tool.args"][0] == "x"
    assert "abc.def.ghi" not in json.dumps(after.events[0].attributes)


def broken(mutate):
    app = App()
    agent_tree(app)
    export = ExportTraceServiceRequest.FromString(export_bytes(app.spans()))
    mutate(export.resource_spans[0].scope_spans[0].spans[-1])
    return export


def deep(levels):
    document = {"string_value": "x"}
    for _ in range(levels):
        document = {"array_value": {"values": [document]}}
    return document


@pytest.mark.parametrize(
    "mutate, named",
    [
        (lambda span: setattr(span, "trace_id", bytes(16)), "traceId"),
        (lambda span: setattr(span, "span_id", b"\x01" * 5), "spanId"),
        (lambda span: setattr(span, "parent_span_id", b"\x01" * 3), "parentSpanId"),
        (lambda span: setattr(span, "end_time_unix_nano", span.start_time_unix_nano - 1), "ends before"),
        (lambda span: setattr(span, "start_time_unix_nano", 0) or setattr(span, "end_time_unix_nano", 0),
         "no start time"),
    ],
    ids=["zero-trace-id", "short-span-id", "short-parent", "ends-before-start", "no-start"],
)
def test_a_bad_span_anywhere_refuses_the_whole_export(mutate, named):
    with pytest.raises(BadExport, match=named):
        per_trace_records(broken(mutate), deployment="demo", variant_of=lambda r: "", keeps_texts=lambda t: True,
                          max_record_bytes=1 << 20)


@pytest.mark.parametrize("key", ["custom", "promptpulse.deployment", "gen_ai.input.messages"])
def test_a_value_nested_too_deeply_is_refused_even_where_it_would_be_dropped(key):
    from google.protobuf import json_format
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue

    def add_deep(span):
        span.attributes.append(json_format.ParseDict({"key": key, "value": deep(40)}, KeyValue()))

    for keep in (True, False):
        with pytest.raises(BadExport, match="nested"):
            per_trace_records(broken(add_deep), deployment="demo", variant_of=lambda r: "",
                              keeps_texts=lambda t, keep=keep: keep, max_record_bytes=1 << 20)
    ok = broken(lambda span: span.attributes.append(json_format.ParseDict({"key": key, "value": deep(10)},
                                                                           KeyValue())))
    assert per_trace_records(ok, deployment="demo", variant_of=lambda r: "", keeps_texts=lambda t: True,
                             max_record_bytes=1 << 20)


def test_a_large_trace_is_cut_into_records_of_whole_spans():
    app = App()
    for _ in range(6):
        agent_tree(app)
    records = restamp(app, limit=1500)
    assert len(records) > 6
    assert sum(record.spans for record in records) == len(app.spans())
    assert all(attributes(s.attributes) for r in records
               for s in ExportTraceServiceRequest.FromString(r.value).resource_spans[0].scope_spans[0].spans)


def test_links_and_scopes_follow_the_same_rules_as_spans():
    """A link's or a scope's attributes are the sender's too: ours dropped, texts of an unsampled
    trace dropped, credentials masked; otherwise they would carry onto the spans topic what a
    span's own attributes may not."""
    from opentelemetry import trace

    app = App()
    scoped = app.provider.get_tracer(
        "scoped", attributes={"promptpulse.deployment": "other", "note": "Bearer abc.def.ghi"}
    )
    with app.tracer.start_as_current_span("earlier") as earlier:
        pass
    link = trace.Link(earlier.get_span_context(), {
        "promptpulse.request_id": "forged",
        "input.value": QUESTION,
        "reason": "key sk-abcdefghijklmnopqrstuvwxyz123456",
    })
    with scoped.start_as_current_span("chat", links=[link]) as span:
        span.set_attribute("gen_ai.operation.name", "chat")
    for keep in (True, False):
        exports = [ExportTraceServiceRequest.FromString(r.value) for r in restamp(app, keep=keep)]
        [scope_spans] = [ss for export in exports for rs in export.resource_spans
                         for ss in rs.scope_spans if ss.scope.name == "scoped"]
        scope_keys = {pair.key: pair.value.string_value for pair in scope_spans.scope.attributes}
        assert "promptpulse.deployment" not in scope_keys
        assert "abc.def.ghi" not in scope_keys["note"]
        [chat] = scope_spans.spans
        [stored_link] = chat.links
        link_keys = {pair.key: pair.value.string_value for pair in stored_link.attributes}
        assert "promptpulse.request_id" not in link_keys
        assert "sk-abcdefghijklmnop" not in link_keys["reason"]
        assert (link_keys.get("input.value") == QUESTION) is keep
