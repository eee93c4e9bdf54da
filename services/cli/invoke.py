"""``promptpulse invoke DEPLOYMENT -i question="..." [--stream] [--variant V]``: one request
through the gateway, as any client would send it.

The answer goes to stdout (token by token with ``--stream``); the request id, variant, trace id
and token usage go to stderr, so ``ANSWER=$(promptpulse invoke ...)`` keeps only the answer.
Usage comes from the streamed ``done`` event, or from the JSON reply's ``x-promptpulse-usage``
header (the body's fields are the flow's outputs, so usage cannot live there).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from services.cli.config import EXIT_SERVICE_ERROR, EXIT_USAGE, CliError, add_gateway_options

RESERVED = ("request_id", "variant")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "invoke", help="send one request to a deployment through the gateway",
        description="Send one request to DEPLOYMENT through the gateway and print the answer; "
                    "the request id, variant, trace id and tokens follow on stderr.",
    )
    parser.add_argument("deployment", metavar="DEPLOYMENT")
    parser.add_argument("-i", "--input", dest="inputs", action="append", default=[], metavar="NAME=VALUE",
                        help="a flow input (repeatable); NAME:=JSON sends a JSON value, e.g. -i chat_history:='[]'")
    parser.add_argument("--stream", action="store_true", help="stream the answer's tokens as they arrive")
    parser.add_argument("--variant", metavar="ID", help="force a variant (the deployment must allow it)")
    parser.add_argument("--json", action="store_true", help="print the gateway's whole reply as JSON")
    add_gateway_options(parser)
    parser.set_defaults(func=main)


def parse_inputs(items: list[str]) -> dict[str, Any]:
    """``["question=Why?", "n:=3"]`` → ``{"question": "Why?", "n": 3}``."""
    inputs: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        as_json = name.endswith(":")
        name = name[:-1] if as_json else name
        if not sep or not name.strip():
            raise CliError(f"-i {item!r}: write NAME=VALUE (or NAME:=JSON)", EXIT_USAGE)
        if name in inputs:
            raise CliError(f"-i {name}: given twice", EXIT_USAGE)
        if as_json:
            try:
                inputs[name] = json.loads(value)
            except ValueError as exc:
                raise CliError(f"-i {name}:=...: not JSON ({exc})", EXIT_USAGE) from None
        else:
            inputs[name] = value
    return inputs


def answer_text(outputs: dict[str, Any]) -> str:
    """The flow's outputs as text: a single output as itself, several as ``name: value`` lines."""
    shown = {k: v for k, v in outputs.items() if k not in RESERVED}
    if len(shown) == 1:
        (value,) = shown.values()
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return "\n".join(f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
                     for k, v in shown.items())


def token_summary(usage: list[dict[str, Any]] | None) -> str:
    """Usage records of the LLM calls as ``61 prompt + 40 completion = 101``."""
    if usage is None:
        return "n/a (the gateway sent no usage)"
    prompt = sum(int(u.get("prompt_tokens") or 0) for u in usage)
    completion = sum(int(u.get("completion_tokens") or 0) for u in usage)
    total = sum(int(u.get("total_tokens") or 0) for u in usage)
    return f"{prompt} prompt + {completion} completion = {total}"


def usage_from_header(value: str | None) -> list[dict[str, Any]] | None:
    """``prompt=61, completion=40, total=101, calls=1`` as one usage record; None if absent or odd."""
    if not value:
        return None
    fields: dict[str, int] = {}
    for part in value.split(","):
        name, _, number = part.strip().partition("=")
        if not number.strip().isdigit():
            return None
        fields[name.strip()] = int(number)
    if not {"prompt", "completion", "total"} <= fields.keys():
        return None
    return [{"prompt_tokens": fields["prompt"], "completion_tokens": fields["completion"],
             "total_tokens": fields["total"]}]


def trace_id(traceresponse: str | None) -> str | None:
    """The trace id of a W3C ``traceresponse`` header (``00-<trace>-<span>-01``)."""
    parts = (traceresponse or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def summary(request_id: str | None, variant: str | None, trace: str | None, usage: list | None,
            ttft_ms: float | None = None) -> str:
    line = f"request {request_id or '?'}  variant {variant or '?'}  trace {trace or '?'}  tokens {token_summary(usage)}"
    if ttft_ms is not None:
        line += f"  first token {ttft_ms:.0f} ms"
    return line


def main(args: argparse.Namespace) -> int:
    from services.cli.output import run_async

    return run_async(lambda: _invoke(args))


async def _invoke(args: argparse.Namespace) -> int:
    import aiohttp

    from services.cli import client
    from services.cli.config import gateway_key, gateway_key_hint, gateway_url
    from services.cli.output import notice

    inputs = parse_inputs(args.inputs)
    key = gateway_key(args, args.deployment)
    service = client.gateway(gateway_url(args), key.value, key.source, gateway_key_hint(args.deployment))
    headers = {"x-promptpulse-variant": args.variant} if args.variant else {}
    path = f"/v1/deployments/{client.part(args.deployment)}/score"
    not_found = f"no deployment {args.deployment!r}"
    if not args.stream:
        async with client.Client(service, total_timeout=180) as http, http.open(
            "POST", path, json_body=inputs, headers=headers, not_found=not_found
        ) as response:
            try:
                reply = await response.json(content_type=None)
            except ValueError:
                raise CliError(f"the gateway at {service.url} sent a reply that is not JSON", EXIT_SERVICE_ERROR) from None
            trace = trace_id(response.headers.get("traceresponse"))
            usage = usage_from_header(response.headers.get("x-promptpulse-usage"))
        if args.json:
            print(json.dumps(reply, ensure_ascii=False, indent=2))
        else:
            print(answer_text(reply), flush=True)
        notice(summary(reply.get("request_id"), reply.get("variant"), trace, usage))
        return 0

    streaming = aiohttp.ClientTimeout(total=None, sock_connect=client.CONNECT_TIMEOUT, sock_read=180)
    headers["Accept"] = "text/event-stream"
    done: dict[str, Any] | None = None
    streamed = False
    async with client.Client(service, total_timeout=None) as http, http.open(
        "POST", path, json_body=inputs, headers=headers, params={"stream": "true"}, not_found=not_found,
        client_timeout=streaming,
    ) as response:
        trace = trace_id(response.headers.get("traceresponse"))
        async for event in client.sse_events(response):
            data = event.json()
            if event.name == "delta" and not args.json:
                sys.stdout.write(data.get("delta", ""))
                sys.stdout.flush()
                streamed = True
            elif event.name == "done":
                done = data
            elif event.name == "error":
                if streamed:
                    sys.stdout.write("\n")
                error = data.get("error") or {}
                raise CliError(f"the flow failed while streaming ({error.get('type')}): {error.get('message')}",
                               EXIT_SERVICE_ERROR)
    if done is None:
        raise CliError("the gateway's stream ended without its done event", EXIT_SERVICE_ERROR)
    if args.json:
        print(json.dumps(done, ensure_ascii=False, indent=2))
    elif streamed:
        print(flush=True)
    else:  # nothing streamable: the outputs came whole
        print(answer_text(done.get("outputs") or {}), flush=True)
    notice(summary(done.get("request_id"), done.get("variant"), trace, done.get("usage"),
                   done.get("time_to_first_token_ms")))
    return 0
