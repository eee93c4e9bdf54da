"""One OpenTelemetry set-up for every service.

``setup_telemetry("gateway", settings)`` at start-up, ``shutdown_telemetry()`` last at
shutdown (after producers are flushed and offsets committed, so the spans of that work are
exported too). In between, ``trace.get_tracer(__name__)`` works anywhere.

What it configures:

- a TracerProvider whose resource names the service (``service.name``, ``service.version``,
  ``service.namespace=promptpulse``, a random ``service.instance.id``), merged with
  ``OTEL_RESOURCE_ATTRIBUTES``; sampling follows ``OTEL_TRACES_SAMPLER`` (default: always on,
  parent-based);
- W3C TraceContext as the global propagator (HTTP); Kafka headers use the same format
  (shared.telemetry.propagation);
- a BatchSpanProcessor feeding :class:`KafkaSpanExporter` (spans topic), unless
  ``PROMPTPULSE_TELEMETRY__SPANS_TO_KAFKA=false``; given the service's event ``loop``, a
  :class:`LoopSpanProcessor` feeding :class:`LoopKafkaSpanExporter` instead, which exports from that loop
  in short slices with no thread of its own (the gateway: a request never waits for an export
  thread's hold on the GIL; shared/telemetry/loop_exporter.py);
- a BatchSpanProcessor feeding OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set; the exporter reads its other
  ``OTEL_EXPORTER_OTLP_*`` variables itself.

Credential-looking values never leave the process in a span: the batch exporters sit behind
:class:`RedactingSpanExporter`; the loop exporter redacts each chunk itself, in its slices.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata

from opentelemetry import trace
from opentelemetry.propagate import set_global_textmap
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.settings import ServiceSettings
from shared.telemetry.kafka_exporter import KafkaSpanExporter
from shared.telemetry.loop_exporter import LoopKafkaSpanExporter, LoopSpanProcessor
from shared.telemetry.redaction import RedactingSpanExporter
from shared.telemetry.sampling import sampler_from_env
from shared.topics import Topics

log = logging.getLogger(__name__)

OTLP_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def _package_version() -> str:
    try:
        return metadata.version("promptpulse")
    except metadata.PackageNotFoundError:  # running from a bare source tree
        return "0.0.0"


@dataclass
class Telemetry:
    """What setup_telemetry built; keep it to shut down exactly this provider."""

    service_name: str
    provider: TracerProvider
    kafka_exporter: KafkaSpanExporter | LoopKafkaSpanExporter | None
    otlp_enabled: bool
    is_global: bool
    closed: bool = False

    def tracer(self, name: str = "promptpulse") -> Tracer:
        return self.provider.get_tracer(name)

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        """Export every finished span, then close the exporters. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.provider.force_flush(timeout_millis)
        self.provider.shutdown()


_current: Telemetry | None = None


def otlp_endpoint_configured() -> bool:
    return any(os.environ.get(name, "").strip() for name in OTLP_ENDPOINT_VARIABLES)


def make_resource(service_name: str, service_version: str | None = None) -> Resource:
    return Resource.create(
        {
            "service.name": service_name,
            "service.namespace": "promptpulse",
            "service.version": service_version or _package_version(),
            "service.instance.id": str(uuid.uuid4()),
        }
    )


def setup_telemetry(
    service_name: str,
    settings: ServiceSettings,
    *,
    service_version: str | None = None,
    spans_to_kafka: bool | None = None,
    span_processors: Sequence[SpanProcessor] = (),
    set_global: bool = True,
    loop: asyncio.AbstractEventLoop | None = None,
) -> Telemetry:
    """Configure tracing for ``service_name`` and return the handle.

    ``spans_to_kafka`` overrides ``settings.telemetry.spans_to_kafka``; ``span_processors``
    are added as they are (tests add an in-memory exporter). With ``set_global`` the provider
    becomes OpenTelemetry's global one; the SDK allows that once per process, so a second
    call gets a working provider that is not global (``is_global`` says which). ``loop``: export
    the Kafka spans from this running event loop (shut down from another thread then, e.g.
    ``await asyncio.to_thread(shutdown_telemetry, telemetry)``, so the loop can flush).
    """
    global _current
    # sampler None: the SDK reads OTEL_TRACES_SAMPLER itself; ours (by request id) it does not know.
    provider = TracerProvider(resource=make_resource(service_name, service_version), sampler=sampler_from_env())
    kafka_exporter: KafkaSpanExporter | LoopKafkaSpanExporter | None = None
    if settings.telemetry.spans_to_kafka if spans_to_kafka is None else spans_to_kafka:
        topic, client_id = Topics.from_settings(settings).spans, f"{service_name}-spans"
        if loop is not None:  # redacts by itself, in its slices
            kafka_exporter = LoopKafkaSpanExporter(settings, topic, loop, client_id=client_id)
            provider.add_span_processor(LoopSpanProcessor(kafka_exporter))
        else:
            kafka_exporter = KafkaSpanExporter(settings, topic, client_id=client_id)
            provider.add_span_processor(BatchSpanProcessor(RedactingSpanExporter(kafka_exporter)))
    otlp = otlp_endpoint_configured()
    if otlp:
        # Imported only when used: it pulls in requests.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(RedactingSpanExporter(OTLPSpanExporter())))
    for processor in span_processors:
        provider.add_span_processor(processor)
    is_global = False
    if set_global:
        set_global_textmap(TraceContextTextMapPropagator())
        trace.set_tracer_provider(provider)
        is_global = trace.get_tracer_provider() is provider
        if not is_global:
            log.warning("a global tracer provider was already set; %s's is not global", service_name)
    telemetry = Telemetry(service_name, provider, kafka_exporter, otlp, is_global)
    _current = telemetry
    return telemetry


def shutdown_telemetry(telemetry: Telemetry | None = None, timeout_millis: int = 30_000) -> None:
    """Flush and close ``telemetry`` (default: the last one set up). Safe to call twice."""
    global _current
    target = telemetry or _current
    if target is None:
        return
    target.shutdown(timeout_millis)
    if target is _current:
        _current = None
