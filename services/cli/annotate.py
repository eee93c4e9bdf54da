"""``promptpulse annotate REQUEST_ID metric=score ...`` and ``promptpulse agreement DEPLOYMENT``.

A person's scores per metric go with feedback on the request (the gateway's feedback route,
``labels``), on each metric's own scale (a labels scale takes the label's name). The request's
deployment is looked up in the query API unless ``--deployment`` names it; the key is the
deployment's, as for ``invoke``. ``agreement`` shows, per metric and evaluator version, how far
the judge agrees with those labels (``GET /v1/deployments/{d}/agreement``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from services.cli.config import EXIT_USAGE, CliError, add_api_options, add_gateway_options


def register(sub: argparse._SubParsersAction) -> None:
    annotate = sub.add_parser(
        "annotate", help="give a request a person's score per metric (to measure the judges against)",
        description="Send a person's scores for one request: metric=score pairs, each on its metric's scale.",
    )
    annotate.add_argument("id", metavar="REQUEST_ID")
    annotate.add_argument("labels", nargs="+", metavar="METRIC=SCORE")
    annotate.add_argument("--comment", help="a comment sent with the labels")
    annotate.add_argument("--deployment", help="the request's deployment (default: looked up in the query API)")
    add_gateway_options(annotate)
    add_api_options(annotate)
    annotate.set_defaults(func=main_annotate)

    agreement = sub.add_parser(
        "agreement", help="how far each judge agrees with people's labels, per metric and version",
        description="Weighted kappa, exact matches and the mean difference (judge minus person) per metric "
                    "and evaluator version, over requests with both a label and a judge score.",
    )
    agreement.add_argument("deployment", metavar="DEPLOYMENT")
    agreement.add_argument("--from", dest="start", metavar="TIME", help="start (default: 7 days ago)")
    agreement.add_argument("--to", dest="end", metavar="TIME", help="end (default: now)")
    agreement.add_argument("--metric", help="only this metric")
    agreement.add_argument("--min-labels", type=int, default=10, help="fewest labelled requests to report (10)")
    agreement.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    add_api_options(agreement)
    agreement.set_defaults(func=main_agreement)


def parse_labels(pairs: list[str]) -> dict[str, Any]:
    """``["relevance=4", "eval.citation=cited"]`` -> {"relevance": 4, "eval.citation": "cited"}."""
    labels: dict[str, Any] = {}
    for pair in pairs:
        metric, sep, text = pair.partition("=")
        if not sep or not metric or not text:
            raise CliError(f"{pair!r}: give METRIC=SCORE (e.g. relevance=4)", EXIT_USAGE)
        if metric in labels:
            raise CliError(f"{metric} is given twice", EXIT_USAGE)
        try:
            number = float(text)
        except ValueError:
            labels[metric] = text  # a label's name, on a labels scale
        else:
            labels[metric] = int(number) if number.is_integer() else number
    return labels


def main_annotate(args: argparse.Namespace) -> int:
    from services.cli.output import run_async

    labels = parse_labels(args.labels)
    return run_async(lambda: _annotate(args, labels))


async def _annotate(args: argparse.Namespace, labels: dict[str, Any]) -> int:
    from services.cli import client
    from services.cli.config import api_url, gateway_key, gateway_key_hint, gateway_url

    deployment = args.deployment
    if deployment is None:
        async with client.Client(client.query_api(api_url(args))) as api:
            doc = await api.get(f"/v1/requests/{client.part(args.id)}",
                                not_found=f"request {args.id} is not stored (yet?); pass --deployment to "
                                          "send the labels anyway")
        deployment = str(doc["deployment"])
    key = gateway_key(args, deployment)
    service = client.gateway(gateway_url(args), key.value, key.source, gateway_key_hint(deployment))
    body: dict[str, Any] = {"request_id": args.id, "labels": labels}
    if args.comment:
        body["comment"] = args.comment
    async with client.Client(service) as gateway:
        reply = await gateway.json("POST", f"/v1/deployments/{client.part(deployment)}/feedback", json_body=body,
                                   not_found=f"no deployment {deployment!r}")
    print(f"labels recorded for request {args.id} ({deployment}): "
          + ", ".join(f"{metric}={value}" for metric, value in labels.items())
          + f"  [event {reply.get('event_id')}]")
    return 0


def main_agreement(args: argparse.Namespace) -> int:
    from services.cli.output import run_async

    return run_async(lambda: _agreement(args))


def _figure(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


async def _agreement(args: argparse.Namespace) -> int:
    from rich.table import Table

    from services.cli import client
    from services.cli.config import api_url
    from services.cli.output import console

    params = {"min_labels": str(args.min_labels)}
    for name, value in (("from", args.start), ("to", args.end), ("metric", args.metric)):
        if value:
            params[name] = value
    async with client.Client(client.query_api(api_url(args))) as api:
        doc = await api.get(f"/v1/deployments/{client.part(args.deployment)}/agreement", params=params,
                            not_found=f"no deployment {args.deployment!r}")
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return 0
    rows = doc.get("agreement") or []
    if not rows:
        print(f"no request of {args.deployment} has both a human label and a judge score in the range "
              "(promptpulse annotate REQUEST_ID metric=score adds labels)")
        return 0
    table = Table(title=f"judges against people: {args.deployment}", title_justify="left")
    for column in ("metric", "version", "labelled", "weighted kappa", "exact", "judge - person (95% CI)"):
        table.add_column(column)
    for row in rows:
        if not row.get("enough"):
            table.add_row(row["metric"], row["evaluator_version"] or "-", str(row["labelled"]), "-", "-",
                          row.get("note") or "")
            continue
        difference = row.get("mean_difference") or {}
        interval = f"{_figure(difference.get('value'))} [{_figure(difference.get('low'))}, " \
                   f"{_figure(difference.get('high'))}]" if difference else "-"
        table.add_row(row["metric"], row["evaluator_version"] or "-", str(row["labelled"]),
                      _figure(row.get("weighted_kappa")), _figure(row.get("exact_match_rate")), interval)
    console().print(table)
    return 0
