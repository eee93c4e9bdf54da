"""OpenTelemetry for every PromptPulse service: set-up, Kafka propagation, span export.

See :mod:`shared.telemetry.setup` (what is configured), :mod:`shared.telemetry.propagation`
(trace context through Kafka headers, messaging spans) and
:mod:`shared.telemetry.kafka_exporter` (spans to the spans topic, encoded by
:mod:`shared.telemetry.otlp_wire`; :mod:`shared.telemetry.loop_exporter`: the same from the
service's event loop, no thread).
"""

from shared.telemetry.kafka_exporter import KafkaSpanExporter, encode_traces, trace_key
from shared.telemetry.loop_exporter import LoopKafkaSpanExporter
from shared.telemetry.propagation import (
    OutgoingMessage,
    consumer_span,
    extract_context,
    header_list,
    inject_headers,
    producer_span,
)
from shared.telemetry.redaction import RedactingSpanExporter, redact_span, redact_spans
from shared.telemetry.setup import (
    Telemetry,
    make_resource,
    otlp_endpoint_configured,
    setup_telemetry,
    shutdown_telemetry,
)

__all__ = [
    "KafkaSpanExporter",
    "LoopKafkaSpanExporter",
    "OutgoingMessage",
    "RedactingSpanExporter",
    "Telemetry",
    "consumer_span",
    "encode_traces",
    "extract_context",
    "header_list",
    "inject_headers",
    "make_resource",
    "otlp_endpoint_configured",
    "producer_span",
    "redact_span",
    "redact_spans",
    "setup_telemetry",
    "shutdown_telemetry",
    "trace_key",
]
