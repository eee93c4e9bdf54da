"""OTLP exports from opentelemetry-sdk read back as the requests they describe."""

import json

import pytest

from shared.otlp_ingest.decode import BadExport, parse_export, spans_of
from shared.otlp_ingest.genai import CountedCall, derive, find_roots, proxied_calls
from tests.support.otlp_apps import (
    ANSWER,
    CONTEXT,
    QUESTION,
    App,
    agent_tree,
    current_chat,
    export_bytes,
    export_json,
    flattened_chat,
    openinference_chat,
    prompt_events_chat,
    proxied_chat,
)

PROTOBUF = "application/x-protobuf"


def ingest(spans, *, encoding="protobuf"):
    if encoding == "protobuf":
        return spans_of(parse_export(export_bytes(spans), PROTOBUF))
    return spans_of(parse_export(export_json(spans), "application/json; charset=utf-8"))


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_both_encodings_read_the_same_spans(encoding):
    app = App()
    agent_tree(app)
    spans = ingest(app.spans(), encoding=encoding)
    assert len(spans) == 4
    sdk = {format(s.context.span_id, "016x"): s for s in app.spans()}
    for span in spans:
        original = sdk[span.span_id]
        assert span.trace_id == format(original.context.trace_id, "032x")
        assert span.parent_span_id == (
            format(original.parent.span_id, "016x") if original.parent else ""
        )
        assert span.start_ns == original.start_time and span.end_ns == original.end_time
        assert span.resource["service.name"] == "support-app"
    assert ingest(app.spans(), encoding="json") == ingest(app.spans())


@pytest.mark.parametrize(
    "record, model, tokens",
    [
        (current_chat, "gpt-4o-mini-2024", (21, 7)),
        (prompt_events_chat, "gpt-35-turbo", (30, 9)),
        (flattened_chat, "gpt-4", (12, 4)),
        (openinference_chat, "gpt-4o", (15, 6)),
    ],
    ids=["current", "prompt-events", "flattened", "openinference"],
)
def test_each_convention_gives_question_context_answer_model_and_usage(record, model, tokens):
    app = App()
    record(app)
    spans = ingest(app.spans())
    roots = find_roots(spans)
    assert len(roots.decided) == 1 and roots.undecided == []
    request = derive(roots.decided[0], spans)
    assert request.inputs["question"] == QUESTION
    if record is not openinference_chat or "context" in request.inputs:
        assert request.inputs.get("context") == CONTEXT
    assert request.outputs == {"answer": ANSWER}
    assert request.model == model
    assert [(c.prompt_tokens, c.completion_tokens) for c in request.calls] == [tokens]
    assert request.ok and request.latency_ms >= 0


def test_an_agent_tree_is_one_request_counting_its_calls_once():
    app = App()
    agent_tree(app)
    spans = ingest(app.spans())
    roots = find_roots(spans)
    assert [root.name for root in roots.decided] == ["invoke_agent ParcelAgent"]
    request = derive(roots.decided[0], spans)
    # the two chat calls, not the agent's own total on top of them
    assert sum(c.prompt_tokens for c in request.calls) == 70
    assert sum(c.completion_tokens for c in request.calls) == 20
    assert len(request.calls) == 2
    assert request.operation == "invoke_agent"
    assert request.outputs["answer"] == ANSWER
    assert len(request.span_ids) == 4


def test_a_failed_agent_is_an_error_request_without_outputs():
    app = App()
    agent_tree(app, fail=True)
    spans = ingest(app.spans())
    request = derive(find_roots(spans).decided[0], spans)
    assert not request.ok
    assert request.error_type == "TimeoutError"
    assert request.error_message == "the agent timed out"
    assert request.outputs == {}


def test_children_first_stay_undecided_until_their_parent_comes():
    app = App()
    agent_tree(app)
    every = app.spans()
    children = [s for s in every if s.parent is not None]
    first_export = ingest(children)
    early = find_roots(first_export)
    # the chats' parent is in this process (not remote) but not here yet: no request so far
    assert early.decided == []
    assert {span.name for span in early.undecided} == {"chat gpt-4o-mini"}
    both = first_export + ingest([s for s in every if s.parent is None])
    later = find_roots(both)
    assert [root.name for root in later.decided] == ["invoke_agent ParcelAgent"]
    assert later.undecided == []
    # a trace that stays incomplete is decided with what is known once it has settled
    settled = find_roots(first_export, settled=True)
    assert len(settled.decided) == 2


def test_the_same_export_twice_derives_the_same_request_ids():
    app = App()
    agent_tree(app)
    current_chat(app)
    body = export_bytes(app.spans())
    once = [
        derive(root, spans).request_id
        for spans in [spans_of(parse_export(body, PROTOBUF))]
        for root in find_roots(spans).decided
    ]
    again = [
        derive(root, spans).request_id
        for spans in [spans_of(parse_export(body, PROTOBUF))]
        for root in find_roots(spans).decided
    ]
    assert once == again and len(set(once)) == 2
    # UUIDv7-shaped, its time the root's start in milliseconds
    spans = spans_of(parse_export(body, PROTOBUF))
    root = find_roots(spans).decided[0]
    request_id = derive(root, spans).request_id
    assert request_id[14] == "7"
    assert int(request_id.replace("-", "")[:12], 16) == root.start_ns // 1_000_000


def hex_id(span):
    return format(span.context.span_id, "016x")


def counted_below(span, request_id="proxy-req-1", start_ns=1):
    """The proxy's server span as the assembler reads it: a request hanging below ``span``."""
    return CountedCall(request_id, hex_id(span), start_ns)


def test_a_chat_whose_http_call_has_no_child_yet_waits_for_the_proxy_s_span():
    app = App()
    _chat, http = proxied_chat(app)
    spans = ingest(app.spans())
    early = find_roots(spans)
    # complete (no parent) but its HTTP call may have gone through the proxy: not decided yet
    assert early.decided == [] and [s.name for s in early.undecided] == ["chat gpt-4o-mini"]
    linked = find_roots(spans, counted=[counted_below(http)])
    [root] = linked.decided
    assert [c.request_id for c in proxied_calls(root, spans, [counted_below(http)])] == ["proxy-req-1"]
    assert derive(root, spans, counted=[counted_below(http)]).proxied_request_ids == ("proxy-req-1",)
    # the proxy's spans never came (the call went elsewhere): decided once settled, not proxied
    [alone] = find_roots(spans, settled=True).decided
    assert derive(alone, spans).proxied_request_ids == ()
    assert derive(alone, spans).calls[0].prompt_tokens == 21


def test_an_http_call_answered_by_a_span_of_the_app_s_own_does_not_wait():
    app = App()
    with app.tracer.start_as_current_span("chat gpt-4o-mini") as chat:
        chat.set_attributes({"gen_ai.operation.name": "chat"})
        with app.tracer.start_as_current_span("POST") as http:
            http.set_attributes({"http.request.method": "POST"})  # kind INTERNAL: not a client call
    assert len(find_roots(ingest(app.spans())).decided) == 1
    other = App()  # a chat without HTTP spans never waits
    current_chat(other)
    assert len(find_roots(ingest(other.spans())).decided) == 1


def test_an_agent_s_usage_leaves_out_the_calls_that_went_through_the_proxy():
    app = App()
    with app.tracer.start_as_current_span("invoke_agent ParcelAgent") as agent:
        agent.set_attributes(
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.usage.input_tokens": 1000,  # its own total holds the proxied calls' too
                "gen_ai.usage.output_tokens": 100,
            }
        )
        _first, first_http = proxied_chat(app, prompt=40, completion=8)
        _second, second_http = proxied_chat(app, prompt=30, completion=12)
        with app.tracer.start_as_current_span("chat gpt-4o-mini") as direct:  # not through the proxy
            direct.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 5,
                                   "gen_ai.usage.output_tokens": 2})
    spans = ingest(app.spans())
    counted = [counted_below(first_http, "p1", 1), counted_below(second_http, "p2", 2)]
    [root] = find_roots(spans, counted=counted).decided
    request = derive(root, spans, counted=counted)
    assert request.operation == "invoke_agent"
    assert request.proxied_request_ids == ("p1", "p2")
    assert [(c.prompt_tokens, c.completion_tokens) for c in request.calls] == [(5, 2)]
    # every call through the proxy: no usage at all, not the agent's own total
    only_proxied = [s for s in spans if s.span_id != hex_id(direct)]
    assert derive(root, only_proxied, counted=counted).calls == ()
    # without the proxy's spans, the same tree counts all three calls
    settled = derive(find_roots(spans, settled=True).decided[0], spans)
    assert sum(c.prompt_tokens for c in settled.calls) == 75


def test_a_tool_call_only_answer_records_the_calls_without_an_answer():
    app = App()
    with app.tracer.start_as_current_span("chat gpt-4o") as span:
        span.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
                ),
                "gen_ai.output.messages": json.dumps(
                    [
                        {
                            "role": "assistant",
                            "parts": [
                                {"type": "tool_call", "id": "c1", "name": "f", "arguments": {}}
                            ],
                        }
                    ]
                ),
            }
        )
    spans = ingest(app.spans())
    request = derive(find_roots(spans).decided[0], spans)
    assert "answer" not in request.outputs
    assert request.outputs["tool_calls"] == [{"id": "c1", "name": "f", "arguments": {}}]


def test_spans_that_are_not_llm_operations_are_no_requests():
    app = App()
    with app.tracer.start_as_current_span("GET /health"):
        pass
    assert find_roots(ingest(app.spans())).decided == []


@pytest.mark.parametrize(
    "body, content_type, named",
    [
        (b"\xff\xff\xff\xff", PROTOBUF, "protobuf"),
        (b"{not json", "application/json", "not JSON"),
        (b"[]", "application/json", "JSON object"),
        (b'{"resourceSpans": 5}', "application/json", "resourceSpans must be a list"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
            "application/json",
            "traceId",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 7}]}]}]}',
            "application/json",
            "hex string",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5}]}]}]}',
            "application/json",
            "ExportTrace",
        ),
        (b"{}", "text/plain", "content type"),
    ],
)
def test_garbage_is_a_bad_export_naming_the_problem(body, content_type, named):
    with pytest.raises(BadExport, match=named):
        spans_of(parse_export(body, content_type))


def test_truncated_protobuf_and_bad_ids_are_bad_exports():
    app = App()
    current_chat(app)
    body = export_bytes(app.spans())
    with pytest.raises(BadExport):
        spans_of(parse_export(body[: len(body) // 2], PROTOBUF))
    document = json.loads(export_json(app.spans()))
    span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["traceId"] = "0" * 32
    with pytest.raises(BadExport, match="not all zero"):
        spans_of(parse_export(json.dumps(document).encode(), "application/json"))


def test_deeply_nested_attribute_values_are_refused():
    value: dict = {"stringValue": "x"}
    for _ in range(40):
        value = {"arrayValue": {"values": [value]}}
    document = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "1" * 32,
                                "spanId": "2" * 16,
                                "name": "chat",
                                "startTimeUnixNano": "1",
                                "endTimeUnixNano": "2",
                                "attributes": [{"key": "deep", "value": value}],
                            }
                        ]
                    }
                ]
            }
        ]
    }
    with pytest.raises(BadExport, match="nested"):
        spans_of(parse_export(json.dumps(document).encode(), "application/json"))
