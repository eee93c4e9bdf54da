"""Spans as real applications send them: made with opentelemetry-sdk, encoded by its OTLP encoder.

Each builder records one application's trace with the SDK (an in-memory exporter collects the
finished spans) in one naming convention: the current GenAI conventions, the older
``gen_ai.prompt`` events and flattened attributes, OpenInference, and an Agent Framework style
``invoke_agent`` tree. ``export_bytes`` turns spans into the protobuf body an OTLP/HTTP exporter
posts; ``export_json`` into OTLP JSON with hex ids.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode


class App:
    """A tracer of one application and the spans it finished, oldest first."""

    def __init__(self, service: str = "support-app") -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create({"service.name": service}))
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests.otlp_apps")

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


def export_bytes(spans: Sequence[ReadableSpan]) -> bytes:
    return encode_spans(spans).SerializeToString()


def export_json(spans: Sequence[ReadableSpan]) -> bytes:
    """OTLP JSON: protobuf's JSON mapping, but trace and span ids in hex."""
    document = json_format.MessageToDict(encode_spans(spans))
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        import base64

                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(document).encode()


QUESTION = "When does my parcel arrive?"
CONTEXT = "Parcels ship in two days."
ANSWER = "It arrives in two days."


def current_chat(app: App, *, answer: str = ANSWER, model: str = "gpt-4o-mini") -> None:
    """The current conventions: gen_ai.input.messages / output.messages as JSON attributes."""
    with app.tracer.start_as_current_span(f"chat {model}") as span:
        span.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": model,
                "gen_ai.response.model": model + "-2024",
                "gen_ai.usage.input_tokens": 21,
                "gen_ai.usage.output_tokens": 7,
                "gen_ai.system_instructions": json.dumps([{"type": "text", "content": CONTEXT}]),
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": QUESTION}]}]
                ),
                "gen_ai.output.messages": json.dumps(
                    [
                        {
                            "role": "assistant",
                            "parts": [{"type": "text", "content": answer}],
                            "finish_reason": "stop",
                        }
                    ]
                ),
            }
        )


def prompt_events_chat(app: App) -> None:
    """Older conventions: gen_ai.system, prompt_tokens, gen_ai.content.prompt/completion events."""
    with app.tracer.start_as_current_span("chat gpt-35-turbo") as span:
        span.set_attributes(
            {
                "gen_ai.system": "openai",
                "gen_ai.request.model": "gpt-35-turbo",
                "gen_ai.usage.prompt_tokens": 30,
                "gen_ai.usage.completion_tokens": 9,
            }
        )
        span.add_event(
            "gen_ai.content.prompt",
            {
                "gen_ai.prompt": json.dumps(
                    [{"role": "system", "content": CONTEXT}, {"role": "user", "content": QUESTION}]
                )
            },
        )
        span.add_event(
            "gen_ai.content.completion",
            {"gen_ai.completion": json.dumps([{"role": "assistant", "content": ANSWER}])},
        )


def flattened_chat(app: App) -> None:
    """OpenLLMetry's flattened attributes: gen_ai.prompt.N.role / content."""
    with app.tracer.start_as_current_span("openai.chat") as span:
        span.set_attributes(
            {
                "gen_ai.system": "OpenAI",
                "llm.request.type": "chat",
                "gen_ai.request.model": "gpt-4",
                "gen_ai.usage.prompt_tokens": 12,
                "gen_ai.usage.completion_tokens": 4,
                "gen_ai.prompt.0.role": "system",
                "gen_ai.prompt.0.content": CONTEXT,
                "gen_ai.prompt.1.role": "user",
                "gen_ai.prompt.1.content": QUESTION,
                "gen_ai.completion.0.role": "assistant",
                "gen_ai.completion.0.content": ANSWER,
            }
        )


def openinference_chat(app: App) -> None:
    with app.tracer.start_as_current_span("ChatCompletion") as span:
        span.set_attributes(
            {
                "openinference.span.kind": "LLM",
                "llm.model_name": "gpt-4o",
                "llm.token_count.prompt": 15,
                "llm.token_count.completion": 6,
                "llm.input_messages.0.message.role": "system",
                "llm.input_messages.0.message.content": CONTEXT,
                "llm.input_messages.1.message.role": "user",
                "llm.input_messages.1.message.content": QUESTION,
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.content": ANSWER,
                "input.value": json.dumps({"messages": [{"role": "user", "content": QUESTION}]}),
                "output.value": ANSWER,
            }
        )


def agent_tree(app: App, *, fail: bool = False) -> None:
    """Agent Framework style: invoke_agent over two chat calls and a tool execution."""
    with app.tracer.start_as_current_span("invoke_agent ParcelAgent") as agent:
        agent.set_attributes(
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "ParcelAgent",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": 70,
                "gen_ai.usage.output_tokens": 20,
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": QUESTION}]}]
                ),
                "gen_ai.output.messages": json.dumps(
                    [{"role": "assistant", "parts": [{"type": "text", "content": ANSWER}]}]
                ),
            }
        )
        with app.tracer.start_as_current_span("chat gpt-4o-mini") as chat:
            chat.set_attributes(_chat_usage(40, 8, tool=True))
        with app.tracer.start_as_current_span("execute_tool lookup_parcel") as tool:
            tool.set_attributes(
                {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_parcel"}
            )
        with app.tracer.start_as_current_span("chat gpt-4o-mini") as chat:
            chat.set_attributes(_chat_usage(30, 12))
        if fail:
            agent.set_attribute("error.type", "TimeoutError")
            agent.set_status(Status(StatusCode.ERROR, "the agent timed out"))


def _chat_usage(prompt: int, completion: int, *, tool: bool = False) -> dict[str, Any]:
    output: dict[str, Any] = {"role": "assistant", "parts": [{"type": "text", "content": ANSWER}]}
    if tool:
        output["parts"] = [
            {"type": "tool_call", "id": "call_1", "name": "lookup_parcel", "arguments": {"id": 7}}
        ]
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": prompt,
        "gen_ai.usage.output_tokens": completion,
        "gen_ai.output.messages": json.dumps([output]),
    }


def http_call(app: App, url: str = "http://gateway:8080/v1/chat/completions") -> Any:
    """The span an HTTP client instrumentation (httpx's) records around a request: it injects the
    traceparent, so a PromptPulse proxy's server span becomes its child. Returns the span."""
    with app.tracer.start_as_current_span("POST", kind=SpanKind.CLIENT) as span:
        span.set_attributes({"http.request.method": "POST", "url.full": url, "http.response.status_code": 200})
    return span


def proxied_chat(app: App, *, prompt: int = 21, completion: int = 7) -> tuple[Any, Any]:
    """An openai-v2 style chat span whose HTTP call went to the proxy: (chat span, HTTP span)."""
    with app.tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT) as chat:
        chat.set_attributes(_chat_usage(prompt, completion))
        chat.set_attribute(
            "gen_ai.input.messages",
            json.dumps([{"role": "user", "parts": [{"type": "text", "content": QUESTION}]}]),
        )
        http = http_call(app)
    return chat, http
