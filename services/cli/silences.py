"""``promptpulse monitors DEPLOYMENT silence ID --for 2h --reason "..."``, ``... silences`` and
``... unsilence ID``: silences of a monitor's direct destinations (docs/alerting.md).

A silence holds the monitor's transitions back from Slack, Teams, PagerDuty and webhooks; they
still reach the alerts topic (marked silenced) and Alertmanager. Who set it is ``--by``,
default the login name (the admin key is shared and names nobody), as amtool does.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from services.cli.config import EXIT_USAGE, CliError

STATES = ("active", "expired", "ended")


def register_actions(actions: argparse._SubParsersAction) -> None:
    silence = actions.add_parser("silence", help="hold a monitor's alerts back from direct destinations for a while")
    silence.add_argument("monitor_id", metavar="ID")
    silence.add_argument("--for", dest="duration", required=True, metavar="DURATION",
                         help="how long from now: 30m, 2h, 1d (1m to 30d)")
    silence.add_argument("--reason", required=True, help="why (recorded and listed)")
    silence.add_argument("--by", help="who sets it (default: your login name)")
    silence.set_defaults(func=main)
    listing = actions.add_parser("silences", help="list silences, newest first (expired and ended ones marked)")
    listing.add_argument("--monitor", metavar="ID", help="only this monitor's")
    listing.add_argument("--state", choices=STATES, help="only silences in this state")
    listing.add_argument("--limit", type=int, default=50, metavar="N", help="at most N (default 50)")
    listing.set_defaults(func=main)
    end = actions.add_parser("unsilence", help="end a monitor's silences now")
    end.add_argument("monitor_id", metavar="ID")
    end.add_argument("--by", help="who ends them (default: your login name)")
    end.set_defaults(func=main)


def login_name() -> str | None:
    import getpass

    try:
        return getpass.getuser() or None
    except (KeyError, OSError):  # no user database entry and no LOGNAME/USER (a bare container)
        return None


def who(args: argparse.Namespace, *, required: bool) -> str | None:
    name = (args.by or "").strip() or login_name()
    if name is None and required:
        raise CliError("cannot tell who you are: pass --by NAME", EXIT_USAGE)
    return name


def _until(silence: dict[str, Any]) -> str:
    from services.cli.formatting import NONE, parse_time

    moment = parse_time(silence.get("ended_at") or silence.get("ends_at"))
    return NONE if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M")


def rows(silences: list[dict[str, Any]]) -> list[list[str]]:
    from services.cli.formatting import clip, parse_time

    table = []
    for s in silences:
        since = parse_time(s.get("created_at"))
        state = str(s.get("state", "?"))
        if state == "ended" and s.get("ended_by"):
            state += f" by {clip(s['ended_by'], 40)}"
        table.append([
            str(s.get("id", "?")), clip(s.get("monitor_id"), 60), state.upper() if state == "active" else state,
            clip(s.get("created_by"), 40), since.astimezone().strftime("%Y-%m-%d %H:%M") if since else "?",
            _until(s), clip(s.get("reason"), 80),
        ])
    return table


def render(doc: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"{doc.get('deployment')}: silences of direct destinations", title_justify="left")
    for heading in ("id", "monitor", "state", "set by", "since", "until", "reason"):
        table.add_column(heading, no_wrap=heading != "reason")
    for row in rows(doc.get("silences") or []):
        table.add_row(*row, style="yellow" if row[2] == "ACTIVE" else "dim")
    return table


def main(args: argparse.Namespace) -> int:
    from services.cli.output import run_async

    return run_async(lambda: _silences(args))


async def _silences(args: argparse.Namespace) -> int:
    from services.cli import client
    from services.cli.config import api_url
    from services.cli.output import console, emit

    deployment = client.part(args.deployment)
    url = api_url(args)
    if args.action == "silences":
        params = {"limit": str(args.limit)} | ({"monitor": args.monitor} if args.monitor else {}) \
            | ({"state": args.state} if args.state else {})
        async with client.Client(client.query_api(url)) as api:
            doc = await api.get(f"/v1/deployments/{deployment}/silences", params=params,
                                not_found=f"no deployment {args.deployment!r}")
        if args.json:
            print(json.dumps(doc, ensure_ascii=False, indent=2))
        elif not doc.get("silences"):
            emit(f"{args.deployment}: no silences")
        else:
            console().print(render(doc))
        return 0
    path = f"/v1/deployments/{deployment}/monitors/{client.part(args.monitor_id)}/silences"
    not_found = f"no monitor {args.monitor_id!r} in deployment {args.deployment!r}"
    async with client.Client(client.query_api(url, admin=True)) as api:
        if args.action == "silence":
            body = {"duration": args.duration, "reason": args.reason, "created_by": who(args, required=True)}
            doc = await api.json("POST", path, json_body=body, not_found=not_found)
        else:
            by = who(args, required=False)
            doc = await api.json("DELETE", path, params={"by": by} if by else None, not_found=not_found)
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    elif args.action == "silence":
        emit(f"silenced {doc['monitor_id']} of {doc['deployment']} until {_until(doc)} (silence {doc['id']}, "
             f"by {doc['created_by']}): its alerts still go to the alerts topic and Alertmanager")
    elif doc.get("ended"):
        ids = ", ".join(str(s["id"]) for s in doc["ended"])
        emit(f"ended {len(doc['ended'])} silence(s) of {args.monitor_id} ({ids}): its alerts reach direct "
             f"destinations again")
    else:
        emit(f"{args.monitor_id} had no silence in force")
    return 0
