"""``promptpulse monitors DEPLOYMENT`` lists a deployment's monitors with their state;
``monitors DEPLOYMENT set ID --threshold X [...]`` changes (or adds) one and
``monitors DEPLOYMENT remove ID`` drops one (``silence``, ``silences`` and ``unsilence`` are
services/cli/silences.py's).

The API replaces a deployment's whole monitor set at once (``PUT
/v1/deployments/{d}/monitors``, admin key), so a change reads the set, edits one monitor and
writes the set back; the API validates it like a deployment file and names any bad field.
From then on the API's set wins over the deployment file's (docs/aggregator-api.md). A
webhook URL comes back masked and, sent back masked, keeps the stored one.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from services.cli import silences
from services.cli.config import EXIT_NOT_FOUND, EXIT_USAGE, CliError, add_api_options

# What GET adds to a monitor's definition; PUT takes the definition alone.
VIEW_FIELDS = ("source", "state", "state_changed_at", "evaluated_through", "silenced_until", "last_window")
QUALITY = ("average", "pass_rate")
STATISTICS = ("average", "pass_rate", "error_rate", "latency_p95", "tokens_per_hour", "cost_per_hour")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "monitors", help="list a deployment's monitors, or change one (set / remove)",
        description="List DEPLOYMENT's monitors with their state and last window; `set` changes or adds "
                    "one, `remove` drops one (both need the admin key).",
    )
    parser.add_argument("deployment", metavar="DEPLOYMENT")
    parser.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    add_api_options(parser)
    parser.set_defaults(func=main, action=None)
    actions = parser.add_subparsers(dest="action", metavar="[set ID ... | remove ID | silence ID ... | silences | unsilence ID]")
    change = actions.add_parser("set", help="change a monitor's fields, or add a monitor with this id")
    change.add_argument("monitor_id", metavar="ID")
    change.add_argument("--threshold", type=float, help="the value past which a window is violated")
    change.add_argument("--statistic", choices=STATISTICS)
    change.add_argument("--metric", help="quality metric (for average and pass_rate)")
    change.add_argument("--variant", help="watch one variant ('' for the whole deployment)")
    change.add_argument("--window", help="window length: 1m, 5m, 1h, ...")
    change.add_argument("--cadence", help="how often a window ends (default: the window)")
    change.add_argument("--min-samples", type=int, metavar="N", help="fewer samples never violate")
    change.add_argument("--score-threshold", type=int, metavar="N", help="pass_rate: a pass is a score >= N")
    change.add_argument("--fire-only-when-ci-below", action=argparse.BooleanOptionalAction, default=None,
                        help="violate only when the whole confidence interval is past the threshold")
    change.add_argument("--severity", help="Alertmanager's severity label: critical, warning, info, ... "
                                           "('' for the default, warning)")
    change.add_argument("--runbook-url", metavar="URL",
                        help="where the engineer paged starts reading (an http(s) URL; '' removes it)")
    change.set_defaults(func=main)
    remove = actions.add_parser("remove", help="drop a monitor (a firing one resolves)")
    remove.add_argument("monitor_id", metavar="ID")
    remove.set_defaults(func=main)
    silences.register_actions(actions)


def definition(monitor: dict[str, Any]) -> dict[str, Any]:
    """A monitor as GET shows it, minus what GET adds: the shape PUT takes."""
    return {k: v for k, v in monitor.items() if k not in VIEW_FIELDS}


def changes_from(args: argparse.Namespace) -> dict[str, Any]:
    fields = {
        "threshold": args.threshold, "statistic": args.statistic, "metric": args.metric, "variant": args.variant,
        "window": args.window, "cadence": args.cadence, "min_samples": args.min_samples,
        "score_threshold": args.score_threshold, "fire_only_when_ci_below": args.fire_only_when_ci_below,
        "severity": args.severity, "runbook_url": args.runbook_url,
    }
    return {k: v for k, v in fields.items() if v is not None}


def apply_change(monitors: list[dict[str, Any]], monitor_id: str, changes: dict[str, Any]) -> list[dict[str, Any]]:
    """The new set: ``monitor_id`` updated with ``changes``, or appended when new. An empty
    string removes an optional field (``--variant ''`` watches the whole deployment)."""
    if not changes:
        raise CliError("nothing to change: give --threshold or another field", EXIT_USAGE)
    result = [definition(m) for m in monitors]
    current = next((m for m in result if m.get("id") == monitor_id), None)
    if current is None:
        missing = [f"--{name}" for name in ("statistic", "threshold", "window") if name not in changes]
        if changes.get("statistic") in QUALITY and "metric" not in changes:
            missing.append("--metric")
        if missing:
            raise CliError(f"no monitor {monitor_id!r} yet: a new one needs {', '.join(missing)}", EXIT_USAGE)
        current = {"id": monitor_id}
        result.append(current)
    old_window = current.get("window")
    for name, value in changes.items():
        if value == "":
            current.pop(name, None)
        else:
            current[name] = value
    # Fields the new statistic does not take go, unless they were given just now.
    statistic = current.get("statistic")
    if statistic not in QUALITY and "metric" not in changes:
        current.pop("metric", None)
    if statistic != "pass_rate" and "score_threshold" not in changes:
        current.pop("score_threshold", None)
    if statistic not in QUALITY and "fire_only_when_ci_below" not in changes:
        current.pop("fire_only_when_ci_below", None)
    if "window" in changes and "cadence" not in changes and current.get("cadence") == old_window:
        current.pop("cadence", None)  # GET writes a tumbling window's cadence out: keep it tumbling
    return result


def remove(monitors: list[dict[str, Any]], monitor_id: str) -> list[dict[str, Any]]:
    kept = [definition(m) for m in monitors if m.get("id") != monitor_id]
    if len(kept) == len(monitors):
        raise CliError(f"no monitor {monitor_id!r}", EXIT_NOT_FOUND)
    return kept


def _silenced(monitor: dict[str, Any]) -> str:
    from services.cli.formatting import parse_time

    until = parse_time(monitor.get("silenced_until"))
    return "" if until is None else f" (silenced until {until.astimezone().strftime('%m-%d %H:%M')})"


def rows(doc: dict[str, Any]) -> list[list[str]]:
    from services.cli.formatting import NONE

    table = []
    for m in doc.get("monitors") or []:
        statistic = m.get("statistic", "?")
        quality = statistic in QUALITY
        watches = f"{m.get('metric')} {statistic}" if m.get("metric") else statistic
        if statistic == "pass_rate":
            watches += f" (>= {m.get('score_threshold') or 3})"
        window = m.get("window", "?") + (f" every {m['cadence']}" if m.get("cadence") not in (None, m.get("window")) else "")
        last = m.get("last_window")
        if last is None:
            last_text = NONE
        else:
            value = NONE if last.get("value") is None else f"{last['value']:.4g}"
            last_text = f"{value} (n={last.get('sample_count', 0)}{', violated' if last.get('violated') else ''})"
        table.append([
            m.get("id", "?"), m.get("variant") or "all", watches,
            f"{'<' if quality else '>'} {m.get('threshold', 0):g}", window, str(m.get("min_samples", "")),
            str(m.get("state", "ok")).upper() + _silenced(m), last_text, m.get("source", ""),
        ])
    return table


def render(doc: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"{doc.get('deployment')}: monitors (set from {doc.get('source', '?')})", title_justify="left")
    for heading in ("id", "scope", "watches", "violated when", "window", "min samples", "state", "last window",
                    "source"):
        table.add_column(heading, no_wrap=heading != "watches")
    for row in rows(doc):
        style = "red" if row[6] == "FIRING" else None  # a silenced one is not: someone knows
        table.add_row(*row, style=style)
    return table


def main(args: argparse.Namespace) -> int:
    from services.cli.output import run_async

    return run_async(lambda: _monitors(args))


async def _monitors(args: argparse.Namespace) -> int:
    from services.cli import client
    from services.cli.config import api_url
    from services.cli.output import console

    path = f"/v1/deployments/{client.part(args.deployment)}/monitors"
    not_found = f"no deployment {args.deployment!r}"
    url = api_url(args)
    if args.action is None:
        async with client.Client(client.query_api(url)) as api:
            doc = await api.get(path, not_found=not_found)
    else:
        async with client.Client(client.query_api(url, admin=True)) as api:
            current = (await api.get(path, not_found=not_found)).get("monitors") or []
            if args.action == "remove":
                new_set = remove(current, args.monitor_id)
            else:
                new_set = apply_change(current, args.monitor_id, changes_from(args))
            doc = await api.json("PUT", path, json_body={"monitors": new_set}, not_found=not_found)
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        console().print(render(doc))
    return 0
