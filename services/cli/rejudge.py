"""``promptpulse eval rejudge DEPLOYMENT --from T --to T --evaluator NAME[@VERSION] [--sample N]`` and
``promptpulse eval rejudge-show ID``: re-judge a past window, then old version against new.

``rejudge`` asks the query API (admin key) for the re-judge, prints its id, follows its progress
(``GET /v1/rejudges/{id}`` every second) until the processor reports it done or failed, and
prints the comparison. ``rejudge-show`` prints one re-judge's state and comparison. Exit 0 when
done, 1 when it failed, 5 when it did not finish within ``--timeout`` (it goes on in the
processor: ``rejudge-show ID`` later).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from services.cli.config import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    EXIT_SERVICE_ERROR,
    CliError,
    add_api_options,
)

POLL_SECONDS = 1.0


def register_actions(actions: argparse._SubParsersAction) -> None:
    start = actions.add_parser(
        "rejudge", help="re-judge a past window under an evaluator's current version and compare with the old",
        description="Judge every request of DEPLOYMENT that started in [--from, --to) again (read back from "
                    "Kafka, unsampled ones too) with the evaluator's current version, exactly once per request; "
                    "follow progress, then print old version against new on the same requests.")
    start.add_argument("deployment", metavar="DEPLOYMENT")
    start.add_argument("--from", dest="start", required=True, metavar="T", help="RFC 3339 time or Unix seconds")
    start.add_argument("--to", dest="end", required=True, metavar="T", help="RFC 3339 time or Unix seconds (past)")
    start.add_argument("--evaluator", required=True, metavar="NAME[@VERSION]",
                       help="the evaluator; a version must be the one the processor has loaded")
    start.add_argument("--sample", type=int, metavar="N", help="judge at most N requests, chosen by request id")
    start.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS",
                       help="how long to follow progress (default 3600)")
    start.add_argument("--json", action="store_true", help="print the final re-judge as JSON")
    add_api_options(start)
    start.set_defaults(func=main)
    show = actions.add_parser("rejudge-show", help="a re-judge's progress and its comparison",
                              description="Print one re-judge's progress and old version against new.")
    show.add_argument("rejudge_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print the re-judge as JSON")
    add_api_options(show)
    show.set_defaults(func=main)


def _number(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def progress_line(doc: dict[str, Any]) -> str:
    progress = doc.get("progress") or {}
    total = progress.get("total")
    return (f"{doc.get('id')}: {doc.get('status')}, {progress.get('judged', 0)} of "
            f"{'?' if total is None else total} requests judged, {progress.get('published', 0)} outcomes published, "
            f"{progress.get('stored', 0)} stored")


def render(doc: dict[str, Any]) -> list[Any]:
    from rich.table import Table

    out: list[Any] = [f"{doc.get('deployment')}: {doc.get('evaluator')}@{doc.get('version')} over "
                      f"{doc.get('from')} .. {doc.get('to')}", progress_line(doc)]
    if doc.get("message"):
        out.append(f"message: {doc['message']}")
    for figures in (doc.get("comparison") or {}).get("metrics") or []:
        table = Table(title=f"{figures['metric']}: {figures.get('old_version') or '(no old version)'} → "
                            f"{figures['new_version']}", title_justify="left")
        table.add_column("figure")
        table.add_column("value", justify="right")
        difference = figures.get("mean_difference") or {}
        low, high = (difference.get("confidence_interval") or [None, None])
        rates = figures.get("pass_rate") or {}
        for name, value in (
            ("pairs (same requests)", str(figures.get("pairs", 0))),
            ("mean difference new - old", _number(difference.get("mean"))),
            ("95% interval", f"[{_number(low)}, {_number(high)}]"),
            ("pass rate old", _number(rates.get("old"))),
            ("pass rate new", _number(rates.get("new"))),
            ("exact-match rate", _number(figures.get("exact_match_rate"))),
            ("Cohen's kappa (pass/fail)", _number(figures.get("cohen_kappa"))),
            ("weighted kappa (scale)", _number(figures.get("weighted_kappa"))),
        ):
            table.add_row(name, value)
        out.append(table)
        moved = figures.get("most_moved") or []
        if moved:
            lines = Table(title="moved most", title_justify="left")
            for heading in ("request", "old", "new", "change"):
                lines.add_column(heading, justify="left" if heading == "request" else "right")
            for m in moved:
                lines.add_row(str(m["request_id"]), f"{m['old']:g}", f"{m['new']:g}", f"{m['difference']:+g}")
            out.append(lines)
    return out


def main(args: argparse.Namespace) -> int:
    from services.cli.output import run_async

    return run_async(lambda: _rejudge(args))


async def _rejudge(args: argparse.Namespace) -> int:
    import asyncio

    from services.cli import client
    from services.cli.config import api_url
    from services.cli.output import console, emit, notice

    url = api_url(args)
    if args.action == "rejudge":
        body: dict[str, Any] = {"evaluator": args.evaluator, "from": args.start, "to": args.end}
        if args.sample is not None:
            body["sample"] = args.sample
        async with client.Client(client.query_api(url, admin=True)) as admin:
            created = await admin.json("POST", f"/v1/deployments/{client.part(args.deployment)}/rejudges",
                                       json_body=body, not_found=f"no deployment {args.deployment!r}")
        rejudge_id = created["id"]
        emit(rejudge_id)
        deadline = time.monotonic() + args.timeout
        last = ""
        async with client.Client(client.query_api(url)) as api:
            while True:
                doc = await api.get(f"/v1/rejudges/{client.part(rejudge_id)}")
                line = progress_line(doc)
                if line != last:
                    notice(line)
                    last = line
                if doc.get("status") in ("done", "failed") or time.monotonic() > deadline:
                    break
                await asyncio.sleep(POLL_SECONDS)
    else:
        async with client.Client(client.query_api(url)) as api:
            doc = await api.get(f"/v1/rejudges/{client.part(args.rejudge_id)}",
                                not_found=f"no re-judge {args.rejudge_id!r}")
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        for part in render(doc):
            console().print(part)
    if doc.get("status") == "failed":
        return EXIT_CHECK_FAILED
    if args.action == "rejudge" and doc.get("status") != "done":
        raise CliError(f"re-judge {doc.get('id')} not done after {args.timeout:g} s (it goes on: promptpulse eval "
                       f"rejudge-show {doc.get('id')}; is the processor running?)", EXIT_SERVICE_ERROR)
    return EXIT_OK
