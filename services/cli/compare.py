"""``promptpulse compare DEPLOYMENT BASELINE CANDIDATE``: is one prompt variant really better or
worse than another, or is the difference sampling noise? From
``GET /v1/deployments/{d}/compare``.

Per quality metric: both averages with their sample counts, the difference (candidate minus
baseline) with its 95% interval, the pass-rate difference likewise, and the verdict the interval
supports (``better``, ``worse``, ``no clear difference``, ``too few samples``). Under it, each
variant's requests, error rate, latency and tokens over the same range. ``--fail-if-worse``
exits 1 when any metric is clearly worse, for a canary check in a pipeline.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from services.cli.config import EXIT_CHECK_FAILED, EXIT_USAGE, CliError, add_api_options

WORSE = "worse"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "compare", help="two variants' quality side by side, with the difference and its confidence interval",
        description="Compare CANDIDATE with BASELINE (two variants of DEPLOYMENT) over a range: per quality "
                    "metric the difference of average scores and of pass rates with 95% intervals, and a verdict.",
    )
    parser.add_argument("deployment", metavar="DEPLOYMENT")
    parser.add_argument("baseline", metavar="BASELINE", help="the variant compared against")
    parser.add_argument("candidate", metavar="CANDIDATE", help="the variant compared")
    when = parser.add_argument_group("range (default: the last hour)")
    when.add_argument("--last", metavar="DURATION", help="the last 15m, 1h, 1d, ... (whole minutes)")
    when.add_argument("--from", dest="start", metavar="TIME", help="RFC 3339 time or Unix seconds")
    when.add_argument("--to", dest="end", metavar="TIME", help="RFC 3339 time or Unix seconds (default: now)")
    parser.add_argument("--pass-score", type=int, default=None, metavar="N",
                        help="a score at or above N passes (1-5, default 3)")
    parser.add_argument("--version", dest="evaluator_version", metavar="VERSION",
                        help="compare at this evaluator version (default: each metric's latest in the range)")
    parser.add_argument("--fail-if-worse", action="store_true",
                        help="exit 1 if the candidate is clearly worse on any metric")
    parser.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    add_api_options(parser)
    parser.set_defaults(func=main, variant=None)


def query_params(args: argparse.Namespace) -> dict[str, str]:
    from services.cli.metrics import query_params as range_params

    if args.baseline == args.candidate:
        raise CliError("BASELINE and CANDIDATE must be two different variants", EXIT_USAGE)
    params = {k: v for k, v in range_params(args).items() if k != "step"}  # one range, no series
    return {**params, "baseline": args.baseline, "candidate": args.candidate}


def _signed(value: Any, digits: int = 2, scale: float = 1.0, unit: str = "") -> str:
    from services.cli.formatting import NONE

    return NONE if value is None else f"{value * scale:+.{digits}f}{unit}"


def _interval(difference: dict[str, Any] | None, digits: int = 2, scale: float = 1.0, unit: str = "") -> str:
    from services.cli.formatting import NONE

    if not difference:
        return NONE
    low, high = difference["interval"]
    return f"{_signed(difference['value'], digits, scale, unit)} [{low * scale:+.{digits}f}, {high * scale:+.{digits}f}]"


def quality_rows(doc: dict[str, Any]) -> list[list[str]]:
    from services.cli.formatting import number, percent

    rows = []
    for metric, q in (doc.get("quality") or {}).items():
        b, c = q["baseline"], q["candidate"]
        rows.append([
            metric,
            f"{number(b['average'])} (n={b['samples']})", f"{number(c['average'])} (n={c['samples']})",
            _interval(q.get("average_difference")),
            f"{percent(b['pass_rate'], 0)} → {percent(c['pass_rate'], 0)}",
            _interval(q.get("pass_rate_difference"), 1, 100, " pt"),
            q["verdict"],
        ])
    return rows


def operations_rows(doc: dict[str, Any]) -> list[list[str]]:
    from services.cli.formatting import millis, percent

    figures = doc.get("figures") or {}
    sides = [figures.get(doc.get("baseline"), {}), figures.get(doc.get("candidate"), {})]
    rows = [["requests", *(str(s.get("requests", 0)) for s in sides)],
            ["error rate", *(percent(s.get("error_rate")) for s in sides)]]
    for p in ("p50", "p95"):
        rows.append([f"latency {p}", *(millis((s.get("latency_ms") or {}).get(p)) for s in sides)])
    rows.append(["tokens / request", *(_per_request(s) for s in sides)])
    return rows


def _per_request(side: dict[str, Any]) -> str:
    from services.cli.formatting import NONE

    total, requests = (side.get("tokens") or {}).get("total"), side.get("requests")
    return NONE if not total or not requests else f"{total / requests:.0f}"


def main(args: argparse.Namespace) -> int:
    from services.cli.output import run_async

    return run_async(lambda: _compare(args))


async def _compare(args: argparse.Namespace) -> int:
    from rich.console import Group
    from rich.table import Table

    from services.cli import client
    from services.cli.config import api_url
    from services.cli.formatting import short_time
    from services.cli.output import console

    params = query_params(args)
    async with client.Client(client.query_api(api_url(args))) as api:
        doc = await api.get(f"/v1/deployments/{client.part(args.deployment)}/compare", params=params,
                            not_found=f"no deployment {args.deployment!r}")
    worse = sorted(m for m, q in (doc.get("quality") or {}).items() if q.get("verdict") == WORSE)
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        title = (f"{doc['deployment']}: {doc['candidate']} against {doc['baseline']}  "
                 f"{short_time(doc.get('from'))} → {short_time(doc.get('to'))}  (95% intervals)")
        quality = Table(title=title, title_justify="left")
        for heading in ("metric", doc["baseline"], doc["candidate"], "average difference", "pass rate",
                        "pass rate difference", "verdict"):
            quality.add_column(heading, no_wrap=True, justify="left" if heading in ("metric", "verdict") else "right")
        for row in quality_rows(doc):
            quality.add_row(*row, style="red" if row[-1] == WORSE else "green" if row[-1] == "better" else None)
        operations = Table(title="operations", title_justify="left")
        for heading in ("", doc["baseline"], doc["candidate"]):
            operations.add_column(heading, justify="right" if heading else "left", no_wrap=True)
        for row in operations_rows(doc):
            operations.add_row(*row)
        console().print(Group(quality, operations))
    if args.fail_if_worse and worse:
        if not args.json:
            console().print(f"{doc['candidate']} is worse than {doc['baseline']} on: {', '.join(worse)}")
        return EXIT_CHECK_FAILED
    return 0
