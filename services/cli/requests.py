"""``promptpulse requests DEPLOYMENT --sampled [--limit N] [--variant V]``: recent requests
with their answers and judge scores, newest first, from ``GET /v1/deployments/{d}/requests``.

Sampled requests are the ones whose inputs and outputs were kept (and that the judges
scored); ``--all`` lists every request of the last hour, payloads empty where not kept.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from services.cli.config import add_api_options

MAX_PAGE = 500  # the API's default maximum page size


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "requests", help="recent sampled requests with their answers and scores",
        description="Recent requests of DEPLOYMENT, newest first: inputs, answer, judge scores.",
    )
    parser.add_argument("deployment", metavar="DEPLOYMENT")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sampled", dest="sampled", action="store_true", default=True,
                       help="requests whose payloads were kept and judged (the default)")
    which.add_argument("--all", dest="sampled", action="store_false",
                       help="every request of the last hour (payloads only where kept)")
    parser.add_argument("--limit", type=int, default=20, metavar="N", help=f"at most N (1-{MAX_PAGE}, default 20)")
    parser.add_argument("--variant", metavar="ID", help="only this variant")
    parser.add_argument("--run", metavar="RUN_ID", help="requests of this batch run instead of production")
    parser.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    add_api_options(parser)
    parser.set_defaults(func=main)


def question_of(inputs: dict[str, Any] | None) -> Any:
    """The input a person reads first: ``question`` if there is one, else the first input."""
    if not inputs:
        return None
    return inputs.get("question", next(iter(inputs.values())))


def answer_of(outputs: dict[str, Any] | None) -> Any:
    if not outputs:
        return None
    return outputs.get("answer", next(iter(outputs.values())))


def scores_text(evaluations: list[dict[str, Any]] | None) -> str:
    """One line per metric: ``coherence 5`` (``relevance error`` / ``n/a`` for the other
    outcomes), so a narrow column never splits a score from its metric."""
    parts = []
    for e in evaluations or []:
        if e.get("score") is not None:
            parts.append(f"{e['metric']} {e['score']}")
        elif e.get("outcome") == "error":
            parts.append(f"{e['metric']} error")
        else:
            parts.append(f"{e['metric']} n/a")
    return "\n".join(parts) or "—"


def rows(doc: dict[str, Any]) -> list[list[str]]:
    from services.cli.formatting import clip, millis, short_time

    table = []
    for r in doc.get("requests") or []:
        response = r.get("response") or {}
        status = response.get("status") or "pending"
        table.append([
            short_time(r.get("start_time")), r.get("request_id", "?"), r.get("variant") or "—",
            clip(question_of(r.get("inputs")), 40), clip(answer_of(r.get("outputs")), 60),
            scores_text(r.get("evaluations")), millis(response.get("latency_ms")) if status == "ok" else status,
        ])
    return table


def main(args: argparse.Namespace) -> int:
    from services.cli.output import run_async

    return run_async(lambda: _requests(args))


async def _requests(args: argparse.Namespace) -> int:
    from rich.table import Table

    from services.cli import client
    from services.cli.config import EXIT_USAGE, CliError, api_url
    from services.cli.output import console

    if not 1 <= args.limit <= MAX_PAGE:
        raise CliError(f"--limit must be between 1 and {MAX_PAGE}", EXIT_USAGE)
    params = {"sampled": "true" if args.sampled else "false", "limit": str(args.limit)}
    if args.variant:
        params["variant"] = args.variant
    if args.run:
        params["run_id"] = args.run
    async with client.Client(client.query_api(api_url(args))) as api:
        doc = await api.get(f"/v1/deployments/{client.part(args.deployment)}/requests", params=params,
                            not_found=f"no deployment {args.deployment!r}")
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return 0
    found = rows(doc)
    kind = "sampled requests" if args.sampled else "requests"
    table = Table(title=f"{args.deployment}: {len(found)} {kind}, newest first", title_justify="left")
    for heading in ("time", "request id", "variant", "question", "answer", "scores", "latency"):
        table.add_column(heading, no_wrap=heading in ("time", "request id", "scores", "latency"),
                         overflow="fold" if heading in ("question", "answer") else "ellipsis")
    for row in found:
        table.add_row(*row)
    console().print(table)
    return 0
