"""An export, checked and re-cut into one spans-topic record per trace, stamped with its deployment.

One walk over the spans does everything the route needs (the export is never converted to
Python values): every span's ids and times and every value's depth are checked (BadExport, a
400, before anything is published), and what a sender may not decide is removed, what
PromptPulse decides is added:

- every ``promptpulse.*`` attribute the sender set (on spans, events, links, scopes or resources)
  is dropped:
  the key decides the deployment, never an attribute, or one deployment's key could write spans
  into another's traces;
- each span gets ``promptpulse.deployment``, ``promptpulse.variant`` and
  ``promptpulse.ingest = "otlp"`` (what the aggregator's assembler looks for);
- a trace outside the sample loses its conversation texts (shared/otlp_ingest/texts.py); in a
  sampled one, the texts of a side the deployment's redaction names are replaced by
  ``[REDACTED]``; any text that looks like a credential is masked as in our own spans.

One record per trace, keyed by the trace id, is what the spans topic holds (see
shared/telemetry/kafka_exporter.py): a trace's records stay in order on one partition. A trace
too big for one record is cut into parts of whole spans.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from shared.logs import redact
from shared.otlp_ingest.decode import check_depth, checked_ids
from shared.otlp_ingest.texts import EVENT_SIDES, INPUT, OUTPUT, Side, text_side
from shared.telemetry.redaction import might_hold_secret

DEPLOYMENT = "promptpulse.deployment"
VARIANT = "promptpulse.variant"
INGEST = "promptpulse.ingest"
REDACTED = "[REDACTED]"  # as services/gateway/redaction.py writes a redacted field
_OURS = "promptpulse."
_SCALARS = frozenset({"int_value", "double_value", "bool_value"})  # counts and flags, never text


@dataclass(frozen=True)
class TraceRecord:
    trace_id: str
    value: bytes
    spans: int


@dataclass(frozen=True)
class TextRedaction:
    """Which sides' texts a deployment's named-field redaction replaces (shared/otlp_ingest/texts.py)."""

    inputs: bool = False
    outputs: bool = False

    def covers(self, side: Side | None) -> bool:
        return (side == INPUT and self.inputs) or (side == OUTPUT and self.outputs)


NO_REDACTION = TextRedaction()


def _mask_secrets(value: AnyValue) -> None:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        if might_hold_secret(value.string_value):
            value.string_value = redact(value.string_value)
    elif kind == "array_value":
        for item in value.array_value.values:
            _mask_secrets(item)
    elif kind == "kvlist_value":
        for pair in value.kvlist_value.values:
            _mask_secrets(pair.value)


def _redacted(value: AnyValue) -> None:
    check_depth(value)
    value.Clear()
    value.string_value = REDACTED


def _clean(pairs: RepeatedCompositeFieldContainer[KeyValue], strings: list[str], *, keep_texts: bool,
           redaction: TextRedaction, side: Side | None = None) -> None:
    """In place on a repeated KeyValue field: drops ours (and unsampled texts), redacts the named
    sides' texts, checks depth and collects the kept strings. ``side``: a message event's,
    whose every non-numeric value is text of that side."""
    dropped: list[int] = []
    for index, pair in enumerate(pairs[:]):  # [:]: one list, no IndexError at the end of the loop
        key = pair.key
        if key.startswith(_OURS):
            check_depth(pair.value)
            dropped.append(index)
            continue
        if side is None:
            pair_side = text_side(key)
        else:  # a message event: its numbers (an index) are no text, the rest is
            pair_side = side if pair.value.WhichOneof("value") not in _SCALARS else None
        if pair_side is not None:
            if not keep_texts:
                check_depth(pair.value)
                dropped.append(index)
                continue
            if redaction.covers(pair_side):
                _redacted(pair.value)
                continue
        value = pair.value
        kind = value.WhichOneof("value")
        if kind == "string_value":  # most values: inline, not a call
            strings.append(value.string_value)
        elif kind == "array_value" or kind == "kvlist_value":
            check_depth(value, 0, strings)
    for index in reversed(dropped):
        del pairs[index]


def _restamped(span: Span, stamps: list[KeyValue], keep_texts: bool, redaction: TextRedaction) -> Span:
    out = Span()
    out.CopyFrom(span)
    strings: list[str] = []
    _clean(out.attributes, strings, keep_texts=keep_texts, redaction=redaction)
    out.attributes.extend(stamps)
    for event in out.events[:]:
        _clean(event.attributes, strings, keep_texts=keep_texts, redaction=redaction,
               side=EVENT_SIDES.get(event.name))
    # A link's attributes are the sender's too: the same rules, or they would be a way around them
    # onto the spans topic (the aggregator stores no links today; a reader of the topic may).
    for link in out.links:
        _clean(link.attributes, strings, keep_texts=keep_texts, redaction=redaction)
    # One check of all the span's texts together (joined by newlines, as our own spans are
    # checked: no pattern matches across a line break in a way that hides a match in one text);
    # only a span that might hold a credential is masked value by value.
    if strings and might_hold_secret("\n".join(strings)):
        for pair in out.attributes:
            _mask_secrets(pair.value)
        for event in out.events:
            for pair in event.attributes:
                _mask_secrets(pair.value)
        for link in out.links:
            for pair in link.attributes:
                _mask_secrets(pair.value)
    if out.status.message and might_hold_secret(out.status.message):
        out.status.message = redact(out.status.message)
    return out


def _string(key: str, text: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=text))


def _clean_descriptive(pairs: RepeatedCompositeFieldContainer[KeyValue]) -> None:
    """A resource's or a scope's attributes, in place: ours dropped, depth checked, secrets
    masked (they describe the sender, so hold no conversation text)."""
    strings: list[str] = []
    _clean(pairs, strings, keep_texts=True, redaction=NO_REDACTION)
    if strings and might_hold_secret("\n".join(strings)):
        for pair in pairs:
            _mask_secrets(pair.value)


def _clean_resource(resource_spans: ResourceSpans) -> ResourceSpans:
    """The resource and schema of ``resource_spans`` without its spans, cleaned."""
    resource = ResourceSpans(schema_url=resource_spans.schema_url)
    resource.resource.CopyFrom(resource_spans.resource)
    _clean_descriptive(resource.resource.attributes)
    return resource


def _clean_scope(scope_spans: ScopeSpans) -> ScopeSpans:
    """The scope and schema of ``scope_spans`` without its spans, cleaned."""
    scope = ScopeSpans(schema_url=scope_spans.schema_url)
    scope.scope.CopyFrom(scope_spans.scope)
    _clean_descriptive(scope.scope.attributes)
    return scope


def per_trace_records(
    export: ExportTraceServiceRequest,
    *,
    deployment: str,
    variant_of: Callable[[Mapping[str, str]], str],
    keeps_texts: Callable[[str], bool],
    max_record_bytes: int,
    redaction: TextRedaction = NO_REDACTION,
) -> list[TraceRecord]:
    """The export's spans, one record (or a few, when large) per trace, ready for the spans topic.

    Raises BadExport for a span with bad ids or times or a value nested too deeply."""
    # trace id -> list of (resource key, ResourceSpans copy without spans, scope, span)
    grouped: dict[str, list[tuple[int, ResourceSpans, ScopeSpans, Span]]] = {}
    sampled: dict[str, bool] = {}
    for index, resource_spans in enumerate(export.resource_spans):
        resource = _clean_resource(resource_spans)
        strings = {
            pair.key: pair.value.string_value
            for pair in resource_spans.resource.attributes
            if pair.value.WhichOneof("value") == "string_value"
        }
        variant = variant_of(strings)
        stamps = [_string(DEPLOYMENT, deployment), _string(VARIANT, variant), _string(INGEST, "otlp")]
        for scope_spans in resource_spans.scope_spans:
            scope = _clean_scope(scope_spans)
            for span in scope_spans.spans[:]:
                trace_id = checked_ids(span)[0]
                keep = sampled.get(trace_id)
                if keep is None:
                    keep = sampled[trace_id] = keeps_texts(trace_id)
                stamped = _restamped(span, stamps, keep, redaction)
                grouped.setdefault(trace_id, []).append((index, resource, scope, stamped))
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
