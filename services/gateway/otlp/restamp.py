"""An accepted export, re-cut into one spans-topic record per trace, stamped with its deployment.

What a sender may not decide is removed, what PromptPulse decides is added:

- every ``promptpulse.*`` attribute the sender set (on spans or resources) is dropped: the key
  decides the deployment, never an attribute, or one deployment's key could write spans into
  another's traces;
- each span gets ``promptpulse.deployment``, ``promptpulse.variant`` and
  ``promptpulse.ingest = "otlp"`` (what the aggregator's assembler looks for);
- a trace outside the sample loses its conversation texts (shared/otlp_ingest/texts.py), and
  any text that looks like a credential is masked as in our own spans.

One record per trace, keyed by the trace id, is what the spans topic holds (see
shared/telemetry/kafka_exporter.py): a trace's records stay in order on one partition. A trace
too big for one record is cut into parts of whole spans.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from shared.logs import redact
from shared.otlp_ingest.texts import TEXT_EVENTS, is_text_attribute
from shared.telemetry.redaction import might_hold_secret

DEPLOYMENT = "promptpulse.deployment"
VARIANT = "promptpulse.variant"
INGEST = "promptpulse.ingest"
_OURS = "promptpulse."


@dataclass(frozen=True)
class TraceRecord:
    trace_id: str
    value: bytes
    spans: int


def _clean_value(value: AnyValue) -> None:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        if might_hold_secret(value.string_value):
            value.string_value = redact(value.string_value)
    elif kind == "array_value":
        for item in value.array_value.values:
            _clean_value(item)
    elif kind == "kvlist_value":
        for pair in value.kvlist_value.values:
            _clean_value(pair.value)


def _clean(pairs: list[KeyValue], *, keep_texts: bool) -> list[KeyValue]:
    kept = []
    for pair in pairs:
        if pair.key.startswith(_OURS) or (not keep_texts and is_text_attribute(pair.key)):
            continue
        _clean_value(pair.value)
        kept.append(pair)
    return kept


def _string(key: str, text: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=text))


def _restamped(span: Span, deployment: str, variant: str, keep_texts: bool) -> Span:
    out = Span()
    out.CopyFrom(span)
    del out.attributes[:]
    out.attributes.extend(_clean(list(span.attributes), keep_texts=keep_texts))
    out.attributes.extend(
        [_string(DEPLOYMENT, deployment), _string(VARIANT, variant), _string(INGEST, "otlp")]
    )
    for event in out.events:
        kept = (
            []
            if (not keep_texts and event.name in TEXT_EVENTS)
            else _clean(list(event.attributes), keep_texts=keep_texts)
        )
        del event.attributes[:]
        event.attributes.extend(kept)
    if might_hold_secret(out.status.message):
        out.status.message = redact(out.status.message)
    return out


def per_trace_records(
    export: ExportTraceServiceRequest,
    *,
    deployment: str,
    variant_of: Callable[[Mapping[str, str]], str],
    keeps_texts: Callable[[str], bool],
    max_record_bytes: int,
) -> list[TraceRecord]:
    """The export's spans, one record (or a few, when large) per trace, ready for the spans topic."""
    # trace id -> list of (resource key, ResourceSpans copy without spans, scope, span)
    grouped: dict[str, list[tuple[int, ResourceSpans, ScopeSpans, Span]]] = {}
    for index, resource_spans in enumerate(export.resource_spans):
        resource = ResourceSpans()
        resource.resource.CopyFrom(resource_spans.resource)
        del resource.resource.attributes[:]
        resource.resource.attributes.extend(
            _clean(list(resource_spans.resource.attributes), keep_texts=True)
        )
        resource.schema_url = resource_spans.schema_url
        strings = {
            pair.key: pair.value.string_value
            for pair in resource_spans.resource.attributes
            if pair.value.WhichOneof("value") == "string_value"
        }
        variant = variant_of(strings)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                trace_id = span.trace_id.hex()
                stamped = _restamped(span, deployment, variant, keeps_texts(trace_id))
                grouped.setdefault(trace_id, []).append((index, resource, scope_spans, stamped))
    records: list[TraceRecord] = []
    for trace_id, items in grouped.items():
        for part in _parts(items, max_record_bytes):
            records.append(
                TraceRecord(
                    trace_id,
                    part.SerializeToString(),
                    sum(len(s.spans) for r in part.resource_spans for s in r.scope_spans),
                )
            )
    return records


def _build(items: list[tuple[int, ResourceSpans, ScopeSpans, Span]]) -> ExportTraceServiceRequest:
    export = ExportTraceServiceRequest()
    resources: dict[int, ResourceSpans] = {}
    scopes: dict[tuple[int, int], ScopeSpans] = {}
    for index, resource, scope_spans, span in items:
        holder = resources.get(index)
        if holder is None:
            holder = export.resource_spans.add()
            holder.CopyFrom(resource)
            resources[index] = holder
        scope = scopes.get((index, id(scope_spans)))
        if scope is None:
            scope = holder.scope_spans.add()
            scope.scope.CopyFrom(scope_spans.scope)
            scope.schema_url = scope_spans.schema_url
            scopes[(index, id(scope_spans))] = scope
        scope.spans.append(span)
    return export


def _parts(
    items: list[tuple[int, ResourceSpans, ScopeSpans, Span]], limit: int
) -> list[ExportTraceServiceRequest]:
    whole = _build(items)
    if whole.ByteSize() <= limit or len(items) == 1:
        return [whole]  # one span over the limit is refused by the publisher, named in the 413
    middle = len(items) // 2
    return _parts(items[:middle], limit) + _parts(items[middle:], limit)
