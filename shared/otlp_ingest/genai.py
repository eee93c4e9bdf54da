"""Which spans of a trace are requests, and the request each one describes.

One request per *root GenAI operation*: an ``invoke_agent`` or ``invoke_workflow`` span with no
GenAI operation above it, else the outermost ``chat`` (or text completion, or embeddings). The
LLM calls below a root are its calls: their usage is the request's usage.

Spans of a trace arrive in several exports, children first (a parent ends after its
children), so whether a span has a GenAI operation above it is known only once its chain of
parents is known up to the process's own root (a span without parent, or whose parent is in
another process). Until then the span is *undecided*; the assembler keeps it and decides
again when more spans come, or decides with what it has once the trace has been quiet long
enough (``settled``).

A call that went through PromptPulse's own proxy is already a request (the proxy counted it):
its server span continues the application's trace, so its parent is the application's span that
made the HTTP call. Such *counted calls* are passed in; a root GenAI call with one below it is
no new request, and an agent's usage leaves them out (docs/otlp.md, "Calls through the proxy").
While an HTTP client span below a root has no child yet, the proxy's span may still be on its
way, so the root waits (at most until the trace settles).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.otlp_ingest import conventions
from shared.otlp_ingest.conventions import REQUEST_OPERATIONS, Message
from shared.otlp_ingest.decode import IngestedSpan
from shared.otlp_ingest.ids import derived_request_id

# OTLP's SpanKind.SPAN_KIND_CLIENT: an outgoing call (an HTTP client span, an LLM call).
SPAN_KIND_CLIENT = 3


@dataclass(frozen=True)
class CountedCall:
    """A request PromptPulse counted itself, entered below a span of the application.

    ``parent_span_id`` is the parent of the gateway's server span: the application's span that
    made the call (an HTTP client instrumentation's span, which injected the traceparent)."""

    request_id: str
    parent_span_id: str
    start_ns: int


def _is_http_client(span: IngestedSpan) -> bool:
    attrs = span.attributes
    return span.kind == SPAN_KIND_CLIENT and ("http.request.method" in attrs or "http.method" in attrs)


def _open_http_call(
    family: Sequence[IngestedSpan], parents: set[str], counted: Sequence[CountedCall]
) -> bool:
    """Whether an HTTP call below the root has no child yet: it may have gone through the proxy,
    whose spans come on their own schedule."""
    called = {call.parent_span_id for call in counted}
    return any(
        _is_http_client(span) and span.span_id not in parents and span.span_id not in called
        for span in family
    )


@dataclass(frozen=True)
class Roots:
    decided: list[IngestedSpan]
    undecided: list[IngestedSpan]


def find_roots(
    spans: Sequence[IngestedSpan],
    *,
    settled: bool = False,
    counted: Sequence[CountedCall] = (),
) -> Roots:
    by_id = {span.span_id: span for span in spans}
    parents = {span.parent_span_id for span in spans}
    decided: list[IngestedSpan] = []
    undecided: list[IngestedSpan] = []
    for span in spans:
        if conventions.operation(span) not in REQUEST_OPERATIONS:
            continue
        outermost, complete = True, True
        current = span
        seen = {span.span_id}
        while current.parent_span_id:
            parent = by_id.get(current.parent_span_id)
            if parent is None:
                # A remote parent lives in another process: this process's part ends here.
                complete = current.parent_is_remote is True
                break
            if parent.span_id in seen:  # a cycle: ids forged or reused; stop rather than loop
                break
            seen.add(parent.span_id)
            if conventions.operation(parent) in REQUEST_OPERATIONS:
                outermost = False
                break
            current = parent
        if not outermost:
            continue
        if complete and not settled and _open_http_call(descendants(span, spans), parents, counted):
            complete = False
        (decided if complete or settled else undecided).append(span)
    decided.sort(key=lambda span: (span.start_ns, span.span_id))
    return Roots(decided, undecided)


def descendants(root: IngestedSpan, spans: Sequence[IngestedSpan]) -> list[IngestedSpan]:
    """The root and every known span below it, in start order."""
    children: dict[str, list[IngestedSpan]] = {}
    for span in spans:
        children.setdefault(span.parent_span_id, []).append(span)
    out, stack, seen = [root], [root.span_id], {root.span_id}
    while stack:
        for child in children.get(stack.pop(), []):
            if child.span_id not in seen:
                seen.add(child.span_id)
                out.append(child)
                stack.append(child.span_id)
    out.sort(key=lambda span: (span.start_ns, span.span_id))
    return out


@dataclass(frozen=True)
class Call:
    """One LLM call of a request, as the response event's usage lists them."""

    name: str
    model: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class DerivedRequest:
    request_id: str
    trace_id: str
    root_span_id: str
    operation: str
    start_ns: int
    end_ns: int
    ok: bool
    error_type: str
    error_message: str
    model: str
    calls: tuple[Call, ...]
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    span_ids: tuple[str, ...] = field(default=())
    # Requests of the proxy below this root: their usage is theirs, not this request's.
    proxied_request_ids: tuple[str, ...] = field(default=())

    @property
    def latency_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def proxied_calls(
    root: IngestedSpan, spans: Sequence[IngestedSpan], counted: Sequence[CountedCall]
) -> list[CountedCall]:
    """The counted calls entered below ``root`` (its own span included), oldest first."""
    if not counted:
        return []
    family = {span.span_id for span in descendants(root, spans)}
    return sorted(
        (call for call in counted if call.parent_span_id in family),
        key=lambda call: (call.start_ns, call.request_id),
    )


def _above_counted(spans: Sequence[IngestedSpan], counted: Sequence[CountedCall]) -> set[str]:
    """Ids of the spans that have a counted call below them (or made it)."""
    by_id = {span.span_id: span for span in spans}
    marked: set[str] = set()
    for call in counted:
        current = by_id.get(call.parent_span_id)
        while current is not None and current.span_id not in marked:
            marked.add(current.span_id)
            current = by_id.get(current.parent_span_id)
    return marked


def _messages_json(messages: Sequence[Message]) -> list[dict[str, Any]]:
    out = []
    for message in messages:
        item: dict[str, Any] = {"role": message.role, "content": message.text}
        if message.tool_calls:
            item["tool_calls"] = [dict(call) for call in message.tool_calls]
        out.append(item)
    return out


def derive(
    root: IngestedSpan,
    spans: Sequence[IngestedSpan],
    *,
    sampling_rate: float = 0.0,
    counted: Sequence[CountedCall] = (),
) -> DerivedRequest:
    """The request a root span describes, reading its calls from the spans below it.

    Calls that went through the proxy (``counted``) are left out of its usage: the proxy's
    requests count them."""
    family = descendants(root, spans)
    proxied = proxied_calls(root, spans, counted)
    through_proxy = _above_counted(family, proxied)
    operation = conventions.operation(root) or "chat"

    def call_of(span: IngestedSpan) -> Call | None:
        counted = conventions.usage(span)
        return (
            None
            if counted is None
            else Call(span.name, conventions.model(span), counted[0], counted[1])
        )

    below = [
        call
        for span in family
        if span is not root
        and conventions.operation(span) in conventions.CALL_OPERATIONS
        and span.span_id not in through_proxy
        for call in [call_of(span)]
        if call is not None
    ]
    own = call_of(root) if root.span_id not in through_proxy else None
    if operation in conventions.CALL_OPERATIONS:
        calls = ([own] if own else []) + below
    else:
        # An agent span may total its calls' usage itself: counted once, from the calls if known
        # (and never when some went through the proxy: its total holds theirs).
        calls = below or ([own] if own and not proxied else [])
    model = conventions.model(root) or next((call.model for call in calls if call.model), "")

    inputs_seen = conventions.input_messages(root)
    outputs_seen = conventions.output_messages(root)
    if not inputs_seen or not outputs_seen:
        # An agent span without content: its first call's input and last call's output say it.
        llm_spans = [
            s
            for s in family
            if s is not root and conventions.operation(s) in conventions.CALL_OPERATIONS
        ]
        if not inputs_seen and llm_spans:
            inputs_seen = conventions.input_messages(llm_spans[0])
        if not outputs_seen and llm_spans:
            outputs_seen = conventions.output_messages(llm_spans[-1])

    inputs: dict[str, Any] = {}
    question = conventions.last_text(inputs_seen, "user")
    if question:
        inputs["question"] = question
    context = "\n".join(m.text for m in inputs_seen if m.role == "system" and m.text)
    if context:
        inputs["context"] = context
    if inputs_seen:
        inputs["messages"] = _messages_json(inputs_seen)

    outputs: dict[str, Any] = {}
    first = outputs_seen[0] if outputs_seen else None
    if operation != "embeddings" and first is not None:
        if first.text:
            outputs["answer"] = first.text
        if first.tool_calls:
            outputs["tool_calls"] = [dict(call) for call in first.tool_calls]
        if len(outputs_seen) > 1:
            outputs["choices"] = _messages_json(outputs_seen)

    error_type = root.attributes.get("error.type")
    return DerivedRequest(
        request_id=derived_request_id(root.trace_id, root.span_id, root.start_ns, sampling_rate),
        trace_id=root.trace_id,
        root_span_id=root.span_id,
        operation=operation,
        start_ns=root.start_ns,
        end_ns=root.end_ns,
        ok=not root.error,
        error_type=str(error_type)
        if root.error and error_type
        else ("error" if root.error else ""),
        error_message=root.status_message if root.error else "",
        model=model,
        calls=tuple(calls),
        inputs=inputs,
        outputs=outputs if not root.error else {},
        span_ids=tuple(span.span_id for span in family),
        proxied_request_ids=tuple(call.request_id for call in proxied),
    )
