"""``promptpulse alerts subscribe [--deployment D]``: every alert transition as it happens.

Reads the alerts topic directly (the aggregator publishes each firing / resolved transition
there, as protobuf's canonical JSON keyed by monitor id: docs/aggregator-api.md), so it needs
Kafka, not the query API. One line per transition, flushed at once, until Ctrl-C:

    12:03:05 FIRING   demo-relevance-variant_1  demo/variant_1  relevance average 3.12 < 3.5  (window 11:58:00-12:03:00, 14 samples)

Delivery is at least once: a repeat (same ``eventId``) is skipped. A record that is not a valid
alert (checked with the codec's own alert decoder: types, required fields) is shown as such on
stderr, with its position and why, and skipped: one bad record never ends the follower.
``--exit-on-firing`` stops
after the first firing alert with exit 0, for scripts and tests. ``alerts list`` reads past
transitions and the monitors firing now from the query API instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict
from typing import Any

from services.cli import destinations
from services.cli.config import add_api_options

SEEN_IDS = 10_000  # event ids remembered to drop repeats


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("alerts", help="alert transitions: subscribe (live, from Kafka) or list (API); "
                                           "direct destinations' deliveries and tests",
                            description="Alert transitions of the monitors, and their direct destinations.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="{subscribe,list,deliveries,test}")
    subscribe = actions.add_parser(
        "subscribe", help="print each alert transition as it happens (reads the alerts topic)",
        description="Print one line per alert transition from the alerts topic, until Ctrl-C. "
                    "Kafka from PROMPTPULSE_KAFKA__BOOTSTRAP_SERVERS and PROMPTPULSE_KAFKA__TOPIC_PREFIX.",
    )
    subscribe.add_argument("--deployment", metavar="NAME", help="only this deployment's alerts")
    subscribe.add_argument("--from-beginning", action="store_true",
                           help="first print every alert the topic still holds")
    subscribe.add_argument("--json", action="store_true", help="print each alert's JSON, one per line")
    subscribe.add_argument("--exit-on-firing", action="store_true",
                           help="exit 0 after the first firing alert (for scripts)")
    subscribe.set_defaults(func=subscribe_main)
    listing = actions.add_parser("list", help="past transitions and the monitors firing now (query API)")
    listing.add_argument("--deployment", metavar="NAME")
    listing.add_argument("--state", choices=("firing", "resolved"))
    listing.add_argument("--limit", type=int, default=20, metavar="N")
    listing.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    add_api_options(listing)
    listing.set_defaults(func=list_main)
    destinations.register(actions)


class Repeats:
    """Remembers the last event ids seen (at-least-once delivery can repeat an alert)."""

    def __init__(self, size: int = SEEN_IDS) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def seen(self, event_id: str | None) -> bool:
        if not event_id:
            return False
        if event_id in self._seen:
            return True
        self._seen[event_id] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return False


class MalformedAlert(ValueError):
    """The record is not an alert this CLI can show; the message says why."""


def parse_alert(value: bytes | None) -> dict[str, Any]:
    """An alert record's JSON object, once the alert contract (proto/ Alert as canonical JSON)
    holds for it; raises MalformedAlert otherwise."""
    from shared.events.codec import decode_alert_json
    from shared.events.errors import EventDecodeError

    try:
        decode_alert_json(value)  # the aggregator publishes nothing this refuses
        alert = json.loads(bytes(value or b""))
    except EventDecodeError as exc:
        raise MalformedAlert(exc.detail) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise MalformedAlert(str(exc)) from None
    if not isinstance(alert, dict):
        raise MalformedAlert("not a JSON object")
    return alert


def _show(alert: dict[str, Any], as_json: bool, out: Any) -> None:
    from services.cli.formatting import alert_line
    from services.cli.output import emit

    if as_json:
        emit(json.dumps(alert, ensure_ascii=False, separators=(",", ":")))
    elif out is not None:  # a terminal: coloured
        firing = str(alert.get("state", "")).endswith("FIRING")
        out.print(alert_line(alert), style="bold red" if firing else "green")
    else:
        emit(alert_line(alert))


def subscribe_main(args: argparse.Namespace) -> int:
    from services.cli.output import run_async

    return run_async(lambda: _subscribe(args), stop_ok=True)


async def _subscribe(args: argparse.Namespace) -> int:
    from services.cli.formatting import alert_matches
    from services.cli.kafkaread import records, topic_reader
    from services.cli.output import console, notice

    out = console() if sys.stdout.isatty() and not args.json else None
    repeats = Repeats()
    async with topic_reader(["alerts"], from_beginning=args.from_beginning) as (consumer, names):
        scope = f" of deployment {args.deployment}" if args.deployment else ""
        start = "everything it holds" if args.from_beginning else "new alerts"
        notice(f"listening to {names[0]}{scope} ({start}); Ctrl-C to stop")
        async for record in records(consumer, names):
            where = f"{record.topic}/{record.partition}@{record.offset}"
            try:
                alert = parse_alert(record.value)
            except MalformedAlert as exc:
                notice(f"skipped a malformed alert ({where}): {str(exc)[:300]}")
                continue
            if not alert_matches(alert, args.deployment) or repeats.seen(alert.get("eventId")):
                continue
            try:
                _show(alert, args.json, out)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:  # a shape the line cannot show
                notice(f"skipped a malformed alert ({where}): {exc}")
                continue
            if args.exit_on_firing and str(alert.get("state", "")).endswith("FIRING"):
                return 0
    return 0


def list_main(args: argparse.Namespace) -> int:
    from services.cli.output import run_async

    return run_async(lambda: _list(args))


async def _list(args: argparse.Namespace) -> int:
    from services.cli import client
    from services.cli.config import api_url
    from services.cli.formatting import alert_line, api_alert_as_event, short_time
    from services.cli.output import emit

    params = {"limit": str(args.limit)}
    if args.deployment:
        params["deployment"] = args.deployment
    if args.state:
        params["state"] = args.state
    async with client.Client(client.query_api(api_url(args))) as api:
        doc = await api.get("/v1/alerts", params=params)
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return 0
    firing = doc.get("firing") or []
    emit(f"firing now: {', '.join(f['monitor_id'] + ' since ' + short_time(f.get('since')) for f in firing) or 'none'}")
    for row in reversed(doc.get("alerts") or []):  # oldest first, like the live stream
        emit(alert_line(api_alert_as_event(row)))
    return 0
