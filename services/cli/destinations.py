"""``promptpulse alerts deliveries [DEPLOYMENT]`` and ``promptpulse alerts test DESTINATION``:
the direct destinations' delivery log, and a test notification.

Both go through the aggregator's query API: the test is sent BY the aggregator
(``POST /v1/deployments/{d}/destinations/{name}/test``, admin key), because the URLs, routing
keys and secrets are in its environment, not the CLI's; so a passing test also proves the
aggregator has them. docs/alerting.md.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from services.cli.config import (
    EXIT_CHECK_FAILED,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    CliError,
    add_api_options,
)


def register(actions: argparse._SubParsersAction) -> None:
    deliveries = actions.add_parser(
        "deliveries", help="the delivery log of direct destinations (Slack, Teams, PagerDuty, webhooks)",
        description="Each attempt to deliver an alert (or a test) to a direct destination, oldest first: "
                    "destination, kind, monitor, attempt, outcome, HTTP status, error.",
    )
    deliveries.add_argument("deployment", nargs="?", metavar="DEPLOYMENT", help="only this deployment's")
    deliveries.add_argument("--destination", metavar="NAME", help="only this destination's")
    deliveries.add_argument("--monitor", metavar="ID", help="only this monitor's")
    deliveries.add_argument("--limit", type=int, default=50, metavar="N")
    deliveries.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    add_api_options(deliveries)
    deliveries.set_defaults(func=deliveries_main)
    test = actions.add_parser(
        "test", help="send a test notification to a destination (from the aggregator; admin key)",
        description="The aggregator sends a test notification to DESTINATION through the same code as "
                    "alerts, once, and says what came back; exit 1 if it was not delivered. DESTINATION "
                    "may be written DEPLOYMENT/NAME.",
    )
    test.add_argument("destination", metavar="DESTINATION")
    test.add_argument("--deployment", metavar="NAME", help="the deployment whose destination it is "
                                                          "(needed only when several have one of that name)")
    test.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    add_api_options(test)
    test.set_defaults(func=test_main)


def delivery_line(row: dict[str, Any]) -> str:
    from services.cli.formatting import short_time

    what = "test" if row.get("test") else row.get("monitor_id") or "-"
    status = f"HTTP {row['http_status']}" if row.get("http_status") is not None else "no answer"
    if row.get("outcome") == "silenced":
        status = "not sent"
    text = (f"{short_time(row.get('at'))}  {row.get('deployment')}  {row.get('destination')} ({row.get('kind')})  "
            f"{what} {str(row.get('alert_state', '')).upper()}  attempt {row.get('attempt')}  "
            f"{str(row.get('outcome', '')).upper()}  {status}")
    return text + (f"  {row['error']}" if row.get("error") and not str(row["error"]).startswith("HTTP ") else "")


def deliveries_main(args: argparse.Namespace) -> int:
    from services.cli.output import run_async

    return run_async(lambda: _deliveries(args))


async def _deliveries(args: argparse.Namespace) -> int:
    from services.cli import client
    from services.cli.config import api_url
    from services.cli.output import emit

    params = {"limit": str(args.limit)}
    for name in ("deployment", "destination", "monitor"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    async with client.Client(client.query_api(api_url(args))) as api:
        doc = await api.get("/v1/deliveries", params=params)
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return 0
    rows = doc.get("deliveries") or []
    if not rows:
        emit("no deliveries yet")
    for row in reversed(rows):  # oldest first, like a log
        emit(delivery_line(row))
    return 0


def test_main(args: argparse.Namespace) -> int:
    from services.cli.output import run_async

    return run_async(lambda: _test(args))


def _pick(destinations: list[dict[str, Any]], name: str, deployment: str | None) -> str:
    """The deployment whose destination ``name`` is meant."""
    owners = sorted({d["deployment"] for d in destinations if d.get("name") == name})
    if deployment is not None:
        return deployment
    if not owners:
        raise CliError(f"no deployment has a destination named {name!r} (see `destinations:` in the "
                       "deployment files, docs/alerting.md)", EXIT_NOT_FOUND)
    if len(owners) > 1:
        raise CliError(f"destination {name!r} is in deployments {', '.join(owners)}: pass --deployment "
                       "or write DEPLOYMENT/NAME", EXIT_USAGE)
    return owners[0]


async def _test(args: argparse.Namespace) -> int:
    from services.cli import client
    from services.cli.config import api_url
    from services.cli.output import emit

    deployment, _, name = args.destination.rpartition("/")
    deployment = deployment or args.deployment
    url = api_url(args)
    if deployment is None:
        async with client.Client(client.query_api(url)) as api:
            listed = await api.get("/v1/destinations")
        deployment = _pick(listed.get("destinations") or [], name, None)
    path = f"/v1/deployments/{client.part(deployment)}/destinations/{client.part(name)}/test"
    async with client.Client(client.query_api(url, admin=True)) as api:
        doc = await api.json("POST", path, not_found=f"deployment {deployment!r} or its destination {name!r}")
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        for attempt in doc.get("attempts") or []:
            status = f"HTTP {attempt['http_status']}" if attempt.get("http_status") is not None else "no answer"
            verdict = "delivered" if attempt.get("delivered") else f"NOT delivered: {attempt.get('error')}"
            emit(f"{deployment}/{name} ({doc.get('kind')}) test {str(attempt.get('alert_state')).upper()}: "
                 f"{status}, {verdict}")
    return 0 if doc.get("delivered") else EXIT_CHECK_FAILED
