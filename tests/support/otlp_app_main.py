"""An application PromptPulse did not write, exporting its traces to a PromptPulse gateway.

It calls an OpenAI-compatible endpoint with the official ``openai`` SDK, instrumented by
OpenTelemetry's maintained instrumentation (opentelemetry-instrumentation-openai-v2) with
message contents on spans, and exports with OpenTelemetry's OTLP/HTTP exporter: exactly what a
team adds to an existing app. Run as its own process (the instrumentation patches the SDK
process-wide):

    python -m tests.support.otlp_app_main --gateway URL --key KEY --llm URL --calls 3 [--twice]
        [--http-spans] [--agent]

``--twice`` sends every export twice, as an exporter retrying a lost acknowledgement would.
``--http-spans`` adds OpenTelemetry's httpx/httpx2 instrumentation, which injects ``traceparent`` into
the SDK's calls (what links a call made through the PromptPulse proxy to the app's spans);
point ``--llm`` at the gateway and ``--key`` at a proxy deployment's key for that. ``--agent``
makes the calls inside one ``invoke_agent`` span. Prints one JSON line: the trace ids of the
calls, and per call the ``x-request-id`` and the trace its answer named (through the proxy: its
request id and the app's trace).
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from collections.abc import Sequence

# Message contents on spans, in the current GenAI conventions (set before the SDKs load; set,
# not defaulted: a test process may carry "false" from the flow runtime, which forces it off).
os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"
os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "SPAN_ONLY"

import openai  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult  # noqa: E402
from opentelemetry.trace import NoOpTracer  # noqa: E402

CONTEXT = "Parcels ship within two days."


class Twice(SpanExporter):
    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.trace_ids: set[str] = set()
        self.spans: Counter[str] = Counter()  # trace id -> spans exported (once each)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.trace_ids.update(format(s.context.trace_id, "032x") for s in spans)
        self.spans.update(format(s.context.trace_id, "032x") for s in spans)
        first = self.inner.export(spans)
        return self.inner.export(spans) if self.twice else first

    twice = False

    def shutdown(self) -> None:
        self.inner.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--llm", required=True)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--model", default="llmsim-chat")
    parser.add_argument("--twice", action="store_true")
    parser.add_argument("--http-spans", action="store_true")
    parser.add_argument("--agent", action="store_true")
    args = parser.parse_args()

    exporter = Twice(
        OTLPSpanExporter(endpoint=f"{args.gateway}/v1/traces", headers={"authorization": f"Bearer {args.key}"})
    )
    exporter.twice = args.twice
    provider = TracerProvider(resource=Resource.create({"service.name": "parcel-support"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    OpenAIInstrumentor().instrument(tracer_provider=provider)
    if args.http_spans:
        # The openai SDK of 3.x calls through httpx2 (2.x: httpx); the package instruments both.
        from opentelemetry.instrumentation.httpx import (
            HTTPX2ClientInstrumentor,
            HTTPXClientInstrumentor,
        )

        HTTPXClientInstrumentor().instrument(tracer_provider=provider)
        HTTPX2ClientInstrumentor().instrument(tracer_provider=provider)
    client = openai.OpenAI(base_url=f"{args.llm}/v1", api_key=args.key if args.http_spans else "none")
    tracer = provider.get_tracer("parcel-support") if args.agent else NoOpTracer()
    calls: list[dict[str, str]] = []
    with tracer.start_as_current_span("invoke_agent ParcelAgent") as agent:
        agent.set_attributes({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "ParcelAgent"})
        for index in range(args.calls):
            raw = client.chat.completions.with_raw_response.create(
                model=args.model,
                messages=[
                    {"role": "system", "content": CONTEXT},
                    {"role": "user", "content": f"When does parcel {index} arrive?"},
                ],
            )
            raw.parse()
            # the gateway's traceresponse names the trace the call joined
            trace_id = raw.headers.get("traceresponse", "---").split("-")[1]
            calls.append({"request_id": raw.headers.get("x-request-id", ""), "trace_id": trace_id})
    provider.force_flush()
    provider.shutdown()
    print(json.dumps({"trace_ids": sorted(exporter.trace_ids), "calls": calls, "spans": exporter.spans}))


if __name__ == "__main__":
    main()
