"""``promptpulse metrics DEPLOYMENT [--follow] [--last 1h | --from T --to T]``: the overview.

One table: requests, errors, tokens, latency percentiles and, per quality metric, the average
score, the pass rate and the monitors' violations, with a column for all traffic and one per
variant. The figures are the query API's (``GET /v1/deployments/{d}/metrics``), production
traffic only.

``--follow`` keeps the table live. It subscribes to the API's server-sent events
(``GET /v1/stream/metrics?deployment=D``) and redraws when an event says the deployment's
figures changed; nothing polls. Each event triggers one read of the overview for the window
(events arriving during a read are folded into the next one), because latency percentiles
come from merged histograms that the stream's per-minute figures do not carry. In a terminal
the table is redrawn in place (rich.live); piped, each update is printed after the last.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from typing import Any

from services.cli.config import EXIT_UNREACHABLE, EXIT_USAGE, CliError, add_api_options

STREAM_READ_TIMEOUT = 90.0  # the API sends a keepalive every 15 s by default
RECONNECT_SECONDS = 3.0  # the stream's own `retry:` hint
MIN_REDRAW_SECONDS = 0.5


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "metrics", help="a deployment's requests, tokens, latency and quality (live with --follow)",
        description="The deployment's overview from the query API: one column for all traffic and "
                    "one per variant. --follow redraws it from the live event stream.",
    )
    parser.add_argument("deployment", metavar="DEPLOYMENT")
    parser.add_argument("--follow", "-f", action="store_true",
                        help="keep the table live, redrawn from the SSE stream (Ctrl-C to stop)")
    when = parser.add_argument_group("range (default: the last hour)")
    when.add_argument("--last", metavar="DURATION", help="the last 15m, 1h, 1d, ... (whole minutes)")
    when.add_argument("--from", dest="start", metavar="TIME", help="RFC 3339 time or Unix seconds")
    when.add_argument("--to", dest="end", metavar="TIME", help="RFC 3339 time or Unix seconds (default: now)")
    parser.add_argument("--variant", metavar="ID", help="only this variant")
    parser.add_argument("--pass-score", type=int, default=None, metavar="N",
                        help="a built-in metric's score counts as a pass from N (1-5, default 3)")
    parser.add_argument("--version", dest="evaluator_version", metavar="VERSION",
                        help="figures of this evaluator version (default: each metric's latest in the range)")
    parser.add_argument("--json", action="store_true",
                        help="print the API's answer as JSON (with --follow: one line per update)")
    add_api_options(parser)
    parser.set_defaults(func=main)


def query_params(args: argparse.Namespace, now: float | None = None) -> dict[str, str]:
    """The metrics route's query parameters for the command's range options."""
    from services.cli.formatting import parse_duration

    if args.last and (args.start or args.end):
        raise CliError("--last cannot be combined with --from/--to", EXIT_USAGE)
    params: dict[str, str] = {}
    if args.last:
        try:
            seconds = int(parse_duration(args.last).total_seconds())
        except ValueError as exc:
            raise CliError(f"--last: {exc}", EXIT_USAGE) from None
        if seconds % 60:
            raise CliError("--last: use whole minutes (15m, 1h, ...)", EXIT_USAGE)
        now = time.time() if now is None else now
        params["from"] = str(int(now) - seconds)
        params["step"] = str(seconds)  # one step: the series is not shown
    else:
        if args.start:
            params["from"] = args.start
        if args.end:
            params["to"] = args.end
        if not args.start and not args.end:
            params["step"] = "3600"  # the default range is the last hour
    if args.variant:
        params["variant"] = args.variant
    if args.pass_score is not None:
        params["pass_score"] = str(args.pass_score)
    if getattr(args, "evaluator_version", None):
        params["version"] = args.evaluator_version
    return params


def render(doc: dict[str, Any], note: str = "") -> Any:
    """The overview as a rich Table (and the monitors' windows under it)."""
    from rich.console import Group
    from rich.table import Table

    from services.cli.formatting import metrics_rows, percent, short_time

    headings, rows = metrics_rows(doc)
    scope = doc.get("deployment", "?") + (f" / {doc['variant']}" if doc.get("variant") else "")
    title = f"{scope}  {short_time(doc.get('from'))} → {short_time(doc.get('to'))}"
    table = Table(title=title, caption=note or None, title_justify="left", caption_justify="left")
    for index, heading in enumerate(headings):
        table.add_column(heading, justify="left" if index == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    monitors = (doc.get("overview") or {}).get("monitors") or []
    if not monitors:
        return table
    watch = Table(title="monitor windows in range", title_justify="left")
    for heading in ("monitor", "scope", "windows", "violated", "rate"):
        watch.add_column(heading, justify="left" if heading in ("monitor", "scope") else "right")
    for m in monitors:
        watch.add_row(m.get("monitor_id", "?"), m.get("variant") or "all", str(m.get("windows", 0)),
                      str(m.get("violations", 0)), percent(m.get("violation_rate")))
    return Group(table, watch)


def main(args: argparse.Namespace) -> int:
    from services.cli.output import run_async

    return run_async(lambda: _follow(args) if args.follow else _once(args), stop_ok=args.follow)


def _paths(args: argparse.Namespace) -> tuple[str, str]:
    from services.cli.client import part

    return f"/v1/deployments/{part(args.deployment)}/metrics", f"no deployment {args.deployment!r}"


async def _once(args: argparse.Namespace) -> int:
    from services.cli import client
    from services.cli.config import api_url
    from services.cli.output import console

    params = query_params(args)
    path, not_found = _paths(args)
    async with client.Client(client.query_api(api_url(args))) as api:
        doc = await api.get(path, params=params, not_found=not_found)
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        console().print(render(doc))
    return 0


async def _follow(args: argparse.Namespace) -> int:
    import asyncio

    import aiohttp

    from services.cli import client
    from services.cli.config import api_url
    from services.cli.output import console, emit, notice

    query_params(args)  # reject bad options before connecting
    if args.end:
        raise CliError("--follow shows a window ending now: use --last or --from, not --to", EXIT_USAGE)
    service = client.query_api(api_url(args))
    path, not_found = _paths(args)
    changed = asyncio.Event()
    state = {"events": 0, "connected": False}
    out = console()
    live = None
    if out.is_terminal and not args.json:
        from rich.live import Live

        live = Live(console=out, auto_refresh=False, transient=False)

    async def redraw(api: client.Client) -> None:
        while True:
            await changed.wait()
            changed.clear()
            try:
                doc = await api.get(path, params=query_params(args), not_found=not_found,
                                    client_timeout=aiohttp.ClientTimeout(total=client.REQUEST_TIMEOUT))
            except CliError as exc:
                if exc.code != EXIT_UNREACHABLE:
                    raise
                notice(f"cannot redraw ({exc}); waiting for the stream")
                continue
            stamp = datetime.now(UTC).astimezone().strftime("%H:%M:%S")
            if args.json:
                emit(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
            else:
                note = f"live · updated {stamp} · {state['events']} stream events · Ctrl-C to stop"
                if live is not None:
                    live.update(render(doc, note), refresh=True)
                else:
                    out.print(render(doc, note))
                    out.file.flush()
            await asyncio.sleep(MIN_REDRAW_SECONDS)

    async def read_stream(api: client.Client) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=client.CONNECT_TIMEOUT,
                                        sock_read=STREAM_READ_TIMEOUT)
        while True:
            try:
                async with api.open("GET", "/v1/stream/metrics", params={"deployment": args.deployment},
                                    not_found=not_found, client_timeout=timeout) as response:
                    state["connected"] = True
                    async for event in client.sse_events(response):
                        if event.name in ("snapshot", "metrics"):
                            state["events"] += 1
                            changed.set()
            except CliError as exc:
                if not state["connected"] or exc.code != EXIT_UNREACHABLE:
                    raise  # the first connection, or a refusal: nothing to wait for
                notice(f"stream lost ({exc}); reconnecting in {RECONNECT_SECONDS:.0f} s")
            else:
                notice(f"the stream ended; reconnecting in {RECONNECT_SECONDS:.0f} s")
            await asyncio.sleep(RECONNECT_SECONDS)

    async with client.Client(service, total_timeout=None) as api:
        if live is not None:
            live.start()
        tasks = [asyncio.create_task(read_stream(api)), asyncio.create_task(redraw(api))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # the first failure ends the command with its error
            return 0
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if live is not None:
                live.stop()
