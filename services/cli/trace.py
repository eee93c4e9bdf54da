"""``promptpulse trace ID``: a request's spans as a tree in the terminal.

ID is a trace id (32 hex digits, as `invoke` prints it and the gateway's ``traceresponse``
header carries), a ``traceparent`` value, or a request id, which ``GET /v1/requests/{id}``
maps to its trace id first.

Each node shows the span's name, service, duration and status, and its key attributes (model,
tokens, variant, HTTP status, ...; ``--all-attributes`` for all of them); judge spans show the
score each evaluation gave.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from services.cli.config import EXIT_NOT_FOUND, EXIT_USAGE, CliError, add_api_options

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")

KEY_ATTRIBUTES = (
    "gen_ai.request.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "promptpulse.request_id",
    "promptpulse.variant",
    "promptpulse.run_id",
    "promptpulse.evaluation.metrics",
    "promptpulse.cancelled",
    "http.request.method",
    "http.response.status_code",
    "error.type",
    "messaging.destination.name",
)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "trace", help="a request's spans as a tree (gateway, flow nodes, LLM and judge calls)",
        description="Show a trace as a tree of spans. ID: a trace id, a traceparent, or a request id.",
    )
    parser.add_argument("id", metavar="ID", help="trace id (32 hex), traceparent, or request id (UUID)")
    parser.add_argument("--all-attributes", action="store_true", help="show every span attribute")
    parser.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    add_api_options(parser)
    parser.set_defaults(func=main)


def classify(text: str) -> tuple[str, str]:
    """("trace", trace id) or ("request", request id); CliError for anything else."""
    value = text.strip().lower()
    if TRACE_ID.match(value):
        return "trace", value
    match = TRACEPARENT.match(value)
    if match:
        return "trace", match.group(1)
    import uuid

    try:
        return "request", str(uuid.UUID(value))
    except ValueError:
        raise CliError(f"{text!r} is neither a trace id (32 hex digits) nor a request id (a UUID)",
                       EXIT_USAGE) from None


def _value(value: Any, width: int = 100) -> str:
    from services.cli.formatting import clip

    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return clip(text, width)


INHERITED = ("promptpulse.request_id", "promptpulse.variant", "promptpulse.run_id")


def span_label(span: dict[str, Any], all_attributes: bool = False, known: dict[str, Any] | None = None) -> Any:
    """The span's lines. ``known``: request id, variant and run id an ancestor already shows
    (left out here unless they differ)."""
    from rich.text import Text

    from services.cli.formatting import millis

    status = span.get("status") or {}
    code = str(status.get("code") or "").upper()
    label = Text()
    label.append(span.get("name") or "?", style="bold")
    label.append(f"  {span.get('service') or '?'}", style="cyan")
    label.append(f"  {millis(span.get('duration_ms'))}")
    if code in ("ERROR", "2", "STATUS_CODE_ERROR"):
        label.append(f"  ERROR {status.get('message') or ''}".rstrip(), style="red")
    if span.get("orphan"):
        label.append("  (parent not stored)", style="dim")
    attributes = span.get("attributes") or {}
    known = known or {}
    keys = sorted(attributes) if all_attributes else [
        k for k in KEY_ATTRIBUTES if k in attributes and not (k in INHERITED and known.get(k) == attributes[k])
    ]
    if keys:
        label.append("\n" + "  ".join(f"{k}={_value(attributes[k])}" for k in keys), style="dim")
    for event in span.get("events") or []:
        attrs = event.get("attributes") or {}
        if event.get("name") == "gen_ai.evaluation.result":
            score = attrs.get("gen_ai.evaluation.score.value")
            score_text = f"{score:g}" if isinstance(score, int | float) else str(score)
            label.append(f"\nscore {attrs.get('gen_ai.evaluation.name', '?')}={score_text}"
                         f"  {_value(attrs.get('gen_ai.evaluation.explanation', ''), 80)}", style="green")
        elif all_attributes:
            label.append(f"\nevent {event.get('name')}: " + "  ".join(f"{k}={_value(v)}" for k, v in attrs.items()),
                         style="dim")
    return label


def build_tree(doc: dict[str, Any], all_attributes: bool = False) -> Any:
    from rich.tree import Tree

    from services.cli.formatting import millis

    title = (f"[bold]trace {doc.get('trace_id')}[/]  {millis(doc.get('duration_ms'))}  "
             f"{doc.get('span_count', 0)} spans  services: {', '.join(doc.get('services') or [])}")
    if doc.get("truncated"):
        title += "  [red](truncated)[/]"
    tree = Tree(title)

    def add(node: Any, span: dict[str, Any], known: dict[str, Any]) -> None:
        branch = node.add(span_label(span, all_attributes, known))
        attributes = span.get("attributes") or {}
        inherited = {**known, **{k: attributes[k] for k in INHERITED if k in attributes}}
        for child in span.get("children") or []:
            add(branch, child, inherited)

    for root in doc.get("roots") or []:
        add(tree, root, {})
    return tree


def main(args: argparse.Namespace) -> int:
    from services.cli.output import run_async

    return run_async(lambda: _trace(args))


async def _find_trace_id(api: Any, request_id: str) -> str:
    from services.cli.client import part

    row = await api.get(f"/v1/requests/{part(request_id)}",
                        not_found=f"request {request_id} is not stored (yet?): the aggregator may still be "
                                  "ingesting it; try again, or pass the trace id `invoke` printed")
    if not row.get("trace_id"):
        raise CliError(f"request {request_id} was stored without a trace id", EXIT_NOT_FOUND)
    return row["trace_id"]


async def _trace(args: argparse.Namespace) -> int:
    from services.cli import client
    from services.cli.config import api_url
    from services.cli.output import console, notice

    kind, value = classify(args.id)
    async with client.Client(client.query_api(api_url(args))) as api:
        trace_id = value
        if kind == "request":
            trace_id = await _find_trace_id(api, value)
            notice(f"request {value} is trace {trace_id}")
        doc = await api.get(f"/v1/traces/{trace_id}", not_found=f"no span of trace {trace_id} is stored (yet?)")
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        console().print(build_tree(doc, args.all_attributes))
    return 0
