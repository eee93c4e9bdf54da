"""An application PromptPulse did not write, exporting its traces to a PromptPulse gateway.

It calls an OpenAI-compatible endpoint with the official ``openai`` SDK, instrumented by
OpenTelemetry's maintained instrumentation (opentelemetry-instrumentation-openai-v2) with
message contents on spans, and exports with OpenTelemetry's OTLP/HTTP exporter: exactly what a
team adds to an existing app. Run as its own process (the instrumentation patches the SDK
process-wide):

    python -m tests.support.otlp_app_main --gateway URL --key KEY --llm URL --calls 3 [--twice]

``--twice`` sends every export twice, as an exporter retrying a lost acknowledgement would.
Prints one JSON line: the trace ids of the calls.
"""

from __future__ import annotations

import argparse
import json
import os
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

CONTEXT = "Parcels ship within two days."


class Twice(SpanExporter):
    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.trace_ids: set[str] = set()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.trace_ids.update(format(s.context.trace_id, "032x") for s in spans)
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
    args = parser.parse_args()

    exporter = Twice(
        OTLPSpanExporter(endpoint=f"{args.gateway}/v1/traces", headers={"authorization": f"Bearer {args.key}"})
    )
    exporter.twice = args.twice
    provider = TracerProvider(resource=Resource.create({"service.name": "parcel-support"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    OpenAIInstrumentor().instrument(tracer_provider=provider)
    client = openai.OpenAI(base_url=f"{args.llm}/v1", api_key="none")
    for index in range(args.calls):
        client.chat.completions.create(
            model=args.model,
            messages=[
                {"role": "system", "content": CONTEXT},
                {"role": "user", "content": f"When does parcel {index} arrive?"},
            ],
        )
    provider.force_flush()
    provider.shutdown()
    print(json.dumps({"trace_ids": sorted(exporter.trace_ids)}))


if __name__ == "__main__":
    main()
