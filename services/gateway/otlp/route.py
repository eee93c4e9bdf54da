"""``POST /v1/traces``: OTLP/HTTP trace export from any application, with a deployment's key.

Point an OpenTelemetry exporter at the gateway (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=
http://gateway:8080/v1/traces``, ``OTEL_EXPORTER_OTLP_TRACES_HEADERS=authorization=Bearer%20<key>``):
the key decides the deployment, as for ``/score``. Protobuf and JSON bodies are accepted, gzip
or not. The spans go to the spans topic, one record per trace (services/gateway/otlp/restamp.py);
the aggregator stores them in the deployment's traces and derives the requests they describe
(docs/otlp.md), under the deployment's redaction (a named field redacts the texts of its side
of the conversation, shared/otlp_ingest/texts.py). The route itself is not traced: its own spans would land in the same topic as
what it receives, and a busy exporter would double the span volume.

Answers: 200 with an empty ``ExportTraceServiceResponse`` in the body's encoding; 400 naming
what does not parse; 401; 413 past ``otlp_max_body_bytes`` or ``otlp_max_spans``; 415 for
another content type; 429 (the key's rate limit, counted per export); 503 with Retry-After
when the publisher has no room (OTLP exporters retry 429 and 503 with back-off).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aiohttp import web

from services.gateway.appkeys import METRICS, PUBLISHER, SETTINGS
from services.gateway.events import EventTooLarge, PublisherError, PublisherFull
from services.gateway.otlp.restamp import TextRedaction, per_trace_records
from services.gateway.routes.common import authorize_any_by_key
from services.gateway.routes.errors import ApiError
from services.gateway.runtime import Runtime
from shared.otlp_ingest.decode import JSON, PROTOBUF, BadExport, parse_export
from shared.otlp_ingest.ids import trace_sampled

PATH = "/v1/traces"
VARIANT_ATTRIBUTE = "promptpulse.variant"


async def _read_limited(request: web.Request, limit: int) -> bytes:
    too_large = ApiError(
        413, "body_too_large", f"the export is larger than the limit of {limit} bytes"
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    # Read the stream ourselves: the app's client_max_size is the /score limit, and a gzip body
    # is inflated as it is read, so the limit counts inflated bytes (no decompression bomb).
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)


def _variant_chooser(runtime: Runtime) -> Callable[[Mapping[str, str]], str]:
    configured = {variant.id for variant in runtime.deployment.variants}

    def variant_of(resource: Mapping[str, str]) -> str:
        for key in (VARIANT_ATTRIBUTE, "service.name"):
            value = resource.get(key, "")
            if value in configured:
                return value
        return ""

    return variant_of


async def traces(request: web.Request) -> web.Response:
    runtime, _record = authorize_any_by_key(request)  # a proxy deployment's key too
    media = request.content_type.lower()
    if media not in (PROTOBUF, JSON):
        raise ApiError(
            415, "unsupported_media_type", f"send {PROTOBUF} or {JSON}, not {media or 'no type'}"
        )
    settings = request.app[SETTINGS].gateway
    body = await _read_limited(request, settings.otlp_max_body_bytes)
    try:
        export = parse_export(body, media)
    except BadExport as exc:
        raise ApiError(400, "invalid_otlp", str(exc)) from None
    count = sum(len(scope.spans) for resource in export.resource_spans for scope in resource.scope_spans)
    if count > settings.otlp_max_spans:
        raise ApiError(
            413,
            "too_many_spans",
            f"the export holds {count} spans, over the limit of {settings.otlp_max_spans}",
        )
    evaluation = runtime.deployment.evaluation
    rate = evaluation.sampling_rate if evaluation is not None else 0.0
    publisher = request.app[PUBLISHER]
    try:
        # One walk over the spans: checks every id, time and value (nothing is published before
        # the whole export passed), and cuts it into the records.
        records = per_trace_records(
            export,
            deployment=runtime.name,
            variant_of=_variant_chooser(runtime),
            keeps_texts=lambda trace_id: trace_sampled(trace_id, rate),
            max_record_bytes=publisher.max_record_bytes,
            # Any field named on a side redacts all of that side's texts: a span holds no field
            # apart (a question, a context or a flow's own input are parts of one message list).
            redaction=TextRedaction(
                inputs=bool(runtime.redacted_inputs), outputs=bool(runtime.redacted_outputs)
            ),
        )
    except BadExport as exc:
        raise ApiError(400, "invalid_otlp", str(exc)) from None
    metrics = request.app[METRICS]
    try:
        for record in records:
            publisher.publish_record("spans", record.trace_id.encode(), record.value)
    except EventTooLarge as exc:
        raise ApiError(413, "span_too_large", f"one span is too large to store: {exc}") from None
    except PublisherFull:
        raise ApiError(
            503,
            "busy",
            "the gateway cannot take more spans now; retry later",
            headers={"Retry-After": "5"},
        ) from None
    except PublisherError:
        raise ApiError(
            503,
            "unavailable",
            "the gateway is shutting down; retry later",
            headers={"Retry-After": "5"},
        ) from None
    metrics.otlp_spans[runtime.name] += count
    if media == PROTOBUF:
        return web.Response(body=b"", content_type=PROTOBUF)  # an empty ExportTraceServiceResponse
    return web.Response(text="{}", content_type=JSON)
