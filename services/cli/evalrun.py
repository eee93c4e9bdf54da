"""``promptpulse eval run DEPLOYMENT --data data.jsonl --variants a,b [--threshold relevance=3.5]``:
prompt flow's bulk test, on the live pipeline.

Every row of the JSON Lines file (one object of flow inputs per line) is sent through the
gateway once per variant, all as one batch run: each request carries ``x-promptpulse-run: <run
id>`` (so the processor judges it fully and the aggregator keeps it out of production figures)
and ``x-promptpulse-variant: <variant>`` (the deployment must allow forced variants). The
command then waits until every answered row has one evaluation per metric of the deployment
(``GET /v1/runs/{id}``, read every second: a run's progress is not on the live stream), and
prints the run's figures per variant, side by side.

Thresholds gate a CI job: ``--threshold relevance=3.5`` needs every variant's average
relevance to be at least 3.5, ``--threshold relevance.pass_rate=0.8`` its pass rate (score >=
3) to be at least 0.8. Exit 0 when every check holds and every row was answered, 1 when one
does not, 5 when judging did not finish within ``--timeout``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.cli.config import (
    EXIT_CHECK_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_SERVICE_ERROR,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    add_api_options,
    add_gateway_options,
)

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
POLL_SECONDS = 1.0
STATISTICS = {"average": (1.0, 5.0), "pass_rate": (0.0, 1.0)}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("eval", help="bulk-test variants on a dataset through the live pipeline",
                            description="Batch evaluation runs.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="{run,rejudge,rejudge-show}")
    run = actions.add_parser(
        "run", help="send a dataset through each variant as one batch run and compare their scores",
        description="Send every row of --data through the gateway once per variant as one batch run, wait "
                    "until every answer is judged, print per-variant figures side by side; exit 1 if a "
                    "--threshold is missed.",
    )
    run.add_argument("deployment", metavar="DEPLOYMENT")
    run.add_argument("--data", required=True, type=Path, metavar="FILE.jsonl",
                     help="one JSON object of flow inputs per line")
    run.add_argument("--variants", required=True, metavar="A,B", help="comma-separated variant ids")
    run.add_argument("--threshold", action="append", default=[], metavar="METRIC[.pass_rate]=VALUE",
                     help="minimum average score (or pass rate) every variant must reach (repeatable)")
    run.add_argument("--concurrency", type=int, default=4, metavar="N", help="requests in flight (default 4)")
    run.add_argument("--run-id", metavar="ID", help="the batch run's id (default: eval-<time>-<random>)")
    run.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                     help="how long to wait for judging (default 600)")
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    add_gateway_options(run)
    add_api_options(run)
    run.set_defaults(func=main)
    from services.cli import rejudge  # re-judging past traffic: its own module

    rejudge.register_actions(actions)


# -- pure parts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    metric: str
    statistic: str  # average | pass_rate
    minimum: float

    def __str__(self) -> str:
        return f"{self.metric} {self.statistic.replace('_', ' ')} >= {self.minimum:g}"


def parse_threshold(text: str) -> Threshold:
    """``relevance=3.5`` (average) or ``relevance.pass_rate=0.8``."""
    name, sep, value = text.partition("=")
    metric, _, statistic = name.strip().partition(".")
    statistic = statistic or "average"
    if not sep or not metric or statistic not in STATISTICS:
        raise CliError(f"--threshold {text!r}: write METRIC=MIN_AVERAGE or METRIC.pass_rate=MIN_RATE", EXIT_USAGE)
    try:
        minimum = float(value)
    except ValueError:
        raise CliError(f"--threshold {text!r}: {value!r} is not a number", EXIT_USAGE) from None
    low, high = STATISTICS[statistic]
    if not low <= minimum <= high:
        raise CliError(f"--threshold {text!r}: a {statistic} is between {low:g} and {high:g}", EXIT_USAGE)
    return Threshold(metric, statistic, minimum)


def parse_variants(text: str) -> list[str]:
    variants = [v.strip() for v in text.split(",") if v.strip()]
    if not variants:
        raise CliError("--variants: name at least one variant", EXIT_USAGE)
    if len(set(variants)) != len(variants):
        raise CliError("--variants: a variant is named twice", EXIT_USAGE)
    return variants


def load_rows(path: Path) -> list[dict[str, Any]]:
    """The dataset: one JSON object per non-blank line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CliError(f"--data {path}: {exc.strerror or exc}", EXIT_USAGE) from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise CliError(f"{path}:{number}: not JSON ({exc})", EXIT_USAGE) from None
        if not isinstance(row, dict):
            raise CliError(f"{path}:{number}: a row must be a JSON object of flow inputs", EXIT_USAGE)
        rows.append(row)
    if not rows:
        raise CliError(f"{path}: no rows", EXIT_USAGE)
    return rows


def new_run_id(deployment: str) -> str:
    import secrets

    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    safe = re.sub(r"[^A-Za-z0-9_.:-]", "-", deployment)[:60]
    return f"eval-{safe}-{stamp}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Check:
    variant: str
    threshold: Threshold
    value: float | None

    @property
    def passed(self) -> bool:
        return self.value is not None and self.value >= self.threshold.minimum

    def line(self) -> str:
        shown = "no scores" if self.value is None else f"{self.value:.3g}"
        return f"{'PASS' if self.passed else 'FAIL'}  {self.variant}: {self.threshold} (got {shown})"


def check(by_variant: dict[str, Any], variants: list[str], thresholds: list[Threshold]) -> list[Check]:
    """Every threshold against every variant's figures (a variant without scores fails)."""
    checks = []
    for variant in variants:
        quality = (by_variant.get(variant) or {}).get("quality") or {}
        for threshold in thresholds:
            value = (quality.get(threshold.metric) or {}).get(threshold.statistic)
            checks.append(Check(variant, threshold, value))
    return checks


def progress_of(run: dict[str, Any] | None, deployment: str) -> dict[str, int]:
    """The run's progress on ``deployment`` (zeros before the aggregator has seen it)."""
    for entry in (run or {}).get("deployments") or []:
        if entry.get("deployment") == deployment:
            return {k: int(v) for k, v in (entry.get("progress") or {}).items()}
    return {"requests": 0, "responses": 0, "judged": 0, "evaluations": 0}


def run_entry(run: dict[str, Any] | None, deployment: str) -> dict[str, Any]:
    for entry in (run or {}).get("deployments") or []:
        if entry.get("deployment") == deployment:
            return entry
    return {}


@dataclass
class Sent:
    ok: int = 0
    failed: int = 0


@dataclass(frozen=True)
class RowFailure:
    variant: str
    row: int  # 1-based, counting non-blank rows
    message: str


# -- running ----------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    from services.cli.output import run_async

    return run_async(lambda: _run(args))


async def _deployment_info(api: Any, deployment: str) -> dict[str, Any]:
    listing = await api.get("/v1/deployments")
    for entry in listing.get("deployments") or []:
        if entry.get("name") == deployment:
            return entry
    raise CliError(f"no deployment {deployment!r} (the query API at {api.service.url} does not know it)",
                   EXIT_NOT_FOUND)


async def _send_all(gateway: Any, deployment: str, run_id: str, variants: list[str], rows: list[dict[str, Any]],
                    concurrency: int, progress: Any) -> tuple[dict[str, Sent], list[RowFailure]]:
    import asyncio

    from services.cli.client import part

    path = f"/v1/deployments/{part(deployment)}/score"
    sent = {v: Sent() for v in variants}
    failures: list[RowFailure] = []
    slots = asyncio.Semaphore(concurrency)
    tasks = {v: progress.add_task(f"{v}: sending", total=len(rows)) for v in variants}

    async def one(variant: str, number: int, row: dict[str, Any]) -> None:
        headers = {"x-promptpulse-run": run_id, "x-promptpulse-variant": variant}
        async with slots:
            try:
                async with gateway.open("POST", path, json_body=row, headers=headers,
                                        not_found=f"no deployment {deployment!r}") as response:
                    await response.read()
                sent[variant].ok += 1
            except CliError as exc:
                fatal = exc.code in (EXIT_UNREACHABLE, EXIT_NOT_FOUND) or exc.status in (401, 403)
                if fatal or (exc.status == 400 and "variant" in str(exc)):
                    raise  # nothing else would work either
                sent[variant].failed += 1
                failures.append(RowFailure(variant, number, str(exc)))
            finally:
                progress.advance(tasks[variant])

    jobs = [asyncio.create_task(one(v, n, row)) for v in variants for n, row in enumerate(rows, start=1)]
    try:
        await asyncio.gather(*jobs)
    finally:
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
    return sent, failures


async def _wait_judged(api: Any, run_id: str, deployment: str, answered: int, metrics: int, within: float,
                       progress: Any) -> tuple[dict[str, Any] | None, bool]:
    """Poll the run until every answered row has all its evaluations; (run, complete)."""
    import asyncio

    expected = answered * metrics
    task = progress.add_task("judging", total=max(expected, 1))
    deadline = time.monotonic() + within
    run: dict[str, Any] | None = None
    while True:
        try:
            run = await api.get(f"/v1/runs/{run_id}", not_found="run not seen yet")
        except CliError as exc:
            if exc.code != EXIT_NOT_FOUND:
                raise  # 404 only means the aggregator has not ingested the run's first event
        done = progress_of(run, deployment)
        progress.update(task, completed=min(done.get("evaluations", 0), expected))
        if done.get("responses", 0) >= answered and done.get("evaluations", 0) >= expected:
            return run, True
        if time.monotonic() > deadline:
            return run, False
        await asyncio.sleep(POLL_SECONDS)


def render(run_id: str, deployment: str, variants: list[str], entry: dict[str, Any], sent: dict[str, Sent]) -> Any:
    from rich.table import Table

    from services.cli.formatting import metrics_rows

    headings, rows = metrics_rows({"by_variant": entry.get("by_variant") or {}}, variants, violations=False)
    table = Table(title=f"{deployment}: run {run_id}", title_justify="left")
    for index, heading in enumerate(headings):
        table.add_column(heading, justify="left" if index == 0 else "right", no_wrap=True)
    table.add_row("rows answered / failed", *(f"{sent[v].ok} / {sent[v].failed}" for v in variants))
    for row in rows:
        table.add_row(*row)
    return table


async def _run(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from services.cli import client
    from services.cli.config import api_url, gateway_key, gateway_key_hint, gateway_url
    from services.cli.output import console, notice

    variants = parse_variants(args.variants)
    thresholds = [parse_threshold(t) for t in args.threshold]
    rows = load_rows(args.data)
    if args.concurrency < 1:
        raise CliError("--concurrency must be at least 1", EXIT_USAGE)
    run_id = args.run_id or new_run_id(args.deployment)
    if not RUN_ID.match(run_id):
        raise CliError("--run-id: 1-128 letters, digits or _.:- starting with a letter or digit", EXIT_USAGE)
    key = gateway_key(args, args.deployment)
    gateway_service = client.gateway(gateway_url(args), key.value, key.source, gateway_key_hint(args.deployment))
    async with client.Client(client.query_api(api_url(args))) as api, client.Client(
        gateway_service, total_timeout=180
    ) as gateway:
        info = await _deployment_info(api, args.deployment)
        metrics = list(info.get("metrics") or [])
        known = {v.get("id") for v in info.get("variants") or []}
        unknown = [v for v in variants if v not in known]
        if unknown:
            raise CliError(f"{args.deployment!r} has no variant {', '.join(unknown)} (it has {', '.join(sorted(known))})",
                           EXIT_USAGE)
        missing = sorted({t.metric for t in thresholds} - set(metrics))
        if missing:
            raise CliError(f"{args.deployment!r} is not judged on {', '.join(missing)} (its metrics: "
                           f"{', '.join(metrics) or 'none'})", EXIT_USAGE)
        notice(f"run {run_id}: {len(rows)} rows × {len(variants)} variants through {gateway_service.url}")
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console(stderr=True), transient=False) as progress:
            sent, failures = await _send_all(gateway, args.deployment, run_id, variants, rows, args.concurrency,
                                             progress)
            answered = sum(s.ok for s in sent.values())
            run, complete = await _wait_judged(api, run_id, args.deployment, answered, len(metrics), args.timeout,
                                               progress)
    entry = run_entry(run, args.deployment)
    checks = check(entry.get("by_variant") or {}, variants, thresholds)
    passed = complete and not failures and all(c.passed for c in checks)
    if args.json:
        print(json.dumps({
            "run_id": run_id, "deployment": args.deployment, "variants": variants, "complete": complete,
            "sent": {v: {"ok": s.ok, "failed": s.failed} for v, s in sent.items()},
            "failures": [f.__dict__ for f in failures],
            "checks": [{"variant": c.variant, "metric": c.threshold.metric, "statistic": c.threshold.statistic,
                        "minimum": c.threshold.minimum, "value": c.value, "passed": c.passed} for c in checks],
            "passed": passed, "run": entry,
        }, ensure_ascii=False, indent=2))
    else:
        out = console()
        out.print(render(run_id, args.deployment, variants, entry, sent))
        for failure in failures[:10]:
            out.print(f"row {failure.row} on {failure.variant} failed: {failure.message}", style="red")
        if len(failures) > 10:
            out.print(f"... and {len(failures) - 10} more failed rows", style="red")
        for c in checks:
            out.print(c.line(), style="green" if c.passed else "bold red")
    if not complete:
        done = progress_of(run, args.deployment)
        raise CliError(f"judging incomplete after {args.timeout:g} s: {done.get('evaluations', 0)} of "
                       f"{answered * len(metrics)} evaluations (is the processor running?)", EXIT_SERVICE_ERROR)
    if failures:
        notice(f"{len(failures)} rows failed: the run is not a fair comparison")
    return EXIT_OK if passed else EXIT_CHECK_FAILED
