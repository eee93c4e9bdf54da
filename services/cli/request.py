"""``promptpulse request ID``: everything stored about one request, from
``GET /v1/requests/{id}``.

Where an on-call engineer starts when someone reports one bad answer: the request id is in
the gateway's ``x-request-id`` header (and ``invoke`` prints it). Shown: deployment, variant,
time, status, latency, tokens per model, the question and answer (kept only for sampled
requests and batch runs), every judge's score and reason, feedback, and the trace id to pass to
``promptpulse trace``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from services.cli.config import add_api_options


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "request", help="one request by id: answer, latency, tokens, judge scores and reasons",
        description="Show everything stored about one request (its id is the gateway's x-request-id).",
    )
    parser.add_argument("id", metavar="REQUEST_ID")
    parser.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    add_api_options(parser)
    parser.set_defaults(func=main)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def describe(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) lines for a request document, in reading order."""
    from services.cli.formatting import NONE, millis

    response = doc.get("response") or {}
    status = response.get("status") or "no answer stored yet"
    if response.get("error_type"):
        status += f" ({response['error_type']}: {response.get('error_message') or ''})".replace(": )", ")")
    lines = [
        ("deployment", f"{doc.get('deployment')}  variant {doc.get('variant') or NONE}"
                       + (f"  run {doc['run_id']}" if doc.get("run_id") else "")),
        ("started", doc.get("start_time") or NONE),
        ("status", status),
        ("latency", millis(response.get("latency_ms"))
         + (f"  (first token {millis(response['time_to_first_token_ms'])})"
            if response.get("time_to_first_token_ms") is not None else "")),
    ]
    tokens = response.get("tokens") or {}
    if tokens.get("total") is not None:
        models = ", ".join(f"{u.get('model')} {u.get('total_tokens')}" for u in response.get("usage") or [])
        lines.append(("tokens", f"{tokens.get('prompt')} prompt + {tokens.get('completion')} completion"
                                f" = {tokens.get('total')}" + (f"  ({models})" if models else "")))
    if doc.get("sampled") or doc.get("run_id"):
        for name, value in (doc.get("inputs") or {}).items():
            lines.append((f"input {name}", _text(value)))
        for name, value in (doc.get("outputs") or {}).items():
            lines.append((f"output {name}", _text(value)))
    else:
        lines.append(("payload", "not kept: the request was not sampled"))
    for e in doc.get("evaluations") or []:
        if e.get("score") is not None:
            verdict = f"{e['score']}  {e.get('reason') or ''}".rstrip()
        elif e.get("outcome") == "error":
            verdict = f"error ({e.get('error_type') or 'unknown'})"
        else:
            verdict = "not applicable"
        lines.append((e.get("metric") or "?", verdict))
    for f in doc.get("feedback") or []:
        lines.append(("feedback", f"rating {f.get('rating')}" + (f"  {f['comment']}" if f.get("comment") else "")))
    lines.append(("trace", f"{doc.get('trace_id') or NONE}"
                           + (f"  (promptpulse trace {doc['trace_id']})" if doc.get("trace_id") else "")))
    return lines


def main(args: argparse.Namespace) -> int:
    from services.cli.output import run_async

    return run_async(lambda: _request(args))


async def _request(args: argparse.Namespace) -> int:
    from rich.table import Table

    from services.cli import client
    from services.cli.config import api_url
    from services.cli.output import console

    async with client.Client(client.query_api(api_url(args))) as api:
        doc = await api.get(f"/v1/requests/{client.part(args.id)}",
                            not_found=f"request {args.id} is not stored (yet?): the aggregator may still be "
                                      "ingesting it, or it is older than retention")
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return 0
    table = Table(title=f"request {doc.get('request_id')}", title_justify="left", show_header=False,
                  box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in describe(doc):
        table.add_row(label, value)
    console().print(table)
    return 0
