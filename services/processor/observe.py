"""What the ops listener reports: health as JSON, and the metric families for /metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.processor.evaluation.kinds.flow import AGGREGATION_REASON
from services.processor.evaluation.protocol import UnavailableEvaluator
from shared.prometheus import Families

if TYPE_CHECKING:
    from services.processor.app import ProcessorService


def _partitions(service: ProcessorService) -> list[dict[str, Any]]:
    intake = service.intake
    if intake is None:
        return []
    consumer = service.faust_app.consumer if service.state == "running" else None
    rows = []
    for tp, mark in sorted(intake.watermarks.items(), key=lambda item: (item[0].topic, item[0].partition)):
        highwater = None
        if consumer is not None:
            try:
                highwater = consumer.highwater(tp)
            except Exception:  # not fetched yet, or the consumer is between assignments
                highwater = None
        read_up_to = mark.next_offset if mark.next_offset is not None else mark.committed
        lag = None
        if highwater is not None and highwater >= 0:
            lag = max(0, highwater - (read_up_to or 0))
        rows.append(
            {
                "topic": tp.topic,
                "partition": tp.partition,
                "next_offset": mark.next_offset,
                "lowest_unfinished": mark.lowest_open(),
                "unfinished": mark.open_count,
                "committed": mark.committed,
                "highwater": highwater,
                "lag": lag,
            }
        )
    return rows


def _aggregation_not_run(service: ProcessorService) -> list[dict[str, Any]]:
    """Evaluation flows' aggregation nodes, which do not run online (kinds/flow/evaluator.py)."""
    return [
        {"deployment": name, "evaluator": evaluator.name, "nodes": list(nodes), "reason": AGGREGATION_REASON}
        for name, judging in sorted(service.judging.items())
        for evaluator in judging.evaluators
        if (nodes := getattr(evaluator, "aggregation_not_run", ()))
    ]


def health(service: ProcessorService) -> tuple[int, dict[str, Any]]:
    runner = service.runner
    breakers = {
        name: judging.judge.breaker.state for name, judging in service.judging.items()
    }
    crashed = bool(getattr(service.faust_app, "crashed", False))
    ok = service.state == "running" and not crashed
    status = "stopping" if service.state in ("stopping", "stopped") else "ok" if ok else service.state
    if ok and any(state != "closed" for state in breakers.values()):
        status = "degraded"
    stalls = service.stalls
    stalled = stalls.stalled_rows() if stalls is not None and ok else []
    if stalled:
        # Records wait and the intake took none in for stall_seconds: not back-pressure (that
        # is excluded), so nothing here will fix itself; 503 lets the liveness probe restart us.
        status = "stalled"
    body = {
        "status": status,
        "service": "processor",
        "group_id": service.settings.group_id(),
        "deployments": sorted(service.judging),
        "unavailable_deployments": sorted(service.unavailable),
        # Evaluators that cannot run (their outcomes are configuration errors), with why.
        "unavailable_evaluators": {
            name: {e.name: e.reason for e in judging.evaluators if isinstance(e, UnavailableEvaluator)}
            for name, judging in sorted(service.judging.items())
            if any(isinstance(e, UnavailableEvaluator) for e in judging.evaluators)
        },
        "judge_breakers": breakers,
        "judge_calls_in_flight": runner.calls_in_flight if runner else 0,
        "judge_queue": runner.queued if runner else 0,
        "pending_requests": len(service.intake.pending) if service.intake else 0,
        "intake_held_by_judging": bool(stalls and stalls.held),
        "stall_seconds": service.section.stall_seconds,
        "stalled_partitions": stalled,
        "partitions": _partitions(service),
        "aggregation_nodes_not_run": _aggregation_not_run(service),
    }
    return (200 if ok and not stalled else 503), body


def collect_metrics(service: ProcessorService, out: Families) -> None:
    """The processor's series at scrape time (``promptpulse_processor_`` + name)."""
    stats = service.stats
    runner = service.runner
    for name, help_text, value in (
        ("events_total", "Inference events handled (redeliveries excluded).", stats.events),
        ("events_redelivered_total", "Events skipped because this worker had already handled them (re-seek after a rebalance).", stats.redelivered),
        ("events_ignored_total", "Events of other types on the inference topic.", stats.ignored),
        ("events_unjudged_deployment_total", "Events of deployments without an evaluation section here.", stats.unjudged_deployment),
        ("events_unsampled_total", "Events of requests not in the sample.", stats.unsampled),
        ("requests_sampled_total", "Sampled request events stored to await their response.", stats.sampled_requests),
        ("judge_triggers_total", "Sampled responses joined with their request and sent to judging.", stats.judge_triggers),
        ("responses_orphaned_total", "Sampled responses whose request was not found (expired, or read before this worker started).", stats.orphan_responses),
        ("requests_expired_total", "Sampled requests whose response did not come within request_ttl_seconds.", stats.expired_requests),
        ("requests_duplicate_total", "Request events seen twice for one request id.", stats.replaced_requests),
        ("publish_retries_total", "Evaluation publishes retried because the broker did not acknowledge.", stats.publish_retries),
        ("commits_total", "Offset commits made.", stats.commits),
        ("commit_failures_total", "Offset commits that failed (retried on the next interval).", stats.commit_failures),
    ):
        out.counter(name, help_text).add(value)
    for name, help_text, value in (
        ("pending_requests", "Sampled requests waiting for their response.", len(service.intake.pending) if service.intake else 0),
        ("judge_calls_in_flight", "Judge calls in flight in this worker.", runner.calls_in_flight if runner else 0),
        ("judge_concurrency_limit", "Maximum judge calls in flight (judge_concurrency).", service.section.judge_concurrency),
        ("judge_queue_depth", "Joined requests waiting for a judge worker.", runner.queued if runner else 0),
    ):
        out.gauge(name, help_text).add(value)
    _budget_series(service, out)
    unavailable = out.gauge("deployment_unavailable", "1 for each deployment whose file does not load or whose judge "
                            "cannot be set up: its events are not judged (the others are).", ["deployment"])
    for name in sorted(service.unavailable):
        unavailable.add(1, deployment=name)
    dead = out.counter("dead_letters_total", "Records sent to the dead-letter topic, by reason.", ["reason"])
    for reason, count in sorted(stats.dead_letters.items()):
        dead.add(count, reason=reason)
    evaluations = out.counter("evaluations_total", "Evaluation outcomes published, by deployment, metric and outcome.",
                              ["deployment", "metric", "outcome"])
    for (deployment, metric, outcome), count in sorted(stats.outcomes.items()):
        evaluations.add(count, deployment=deployment, metric=metric, outcome=outcome)
    _judge_series(service, out)
    lag = out.gauge("consumer_lag", "Events on the partition not yet read by this worker.", ["topic", "partition"])
    committed = out.gauge("committed_offset", "Last offset this worker committed, per partition.", ["topic", "partition"])
    lowest = out.gauge("lowest_unfinished_offset", "Lowest offset whose work is unfinished (the commit cannot pass it).",
                       ["topic", "partition"])
    for row in _partitions(service):
        labels = {"topic": row["topic"], "partition": row["partition"]}
        if row["lag"] is not None:
            lag.add(row["lag"], **labels)
        if row["committed"] is not None:
            committed.add(row["committed"], **labels)
        if row["lowest_unfinished"] is not None:
            lowest.add(row["lowest_unfinished"], **labels)
    if service.stalls is not None:
        service.stalls.collect_metrics(out, "intake_held_by_judging", "1 while the stream waits for room in the "
                                       "judge queue (back-pressure, never a stall).")


def _budget_series(service: ProcessorService, out: Families) -> None:
    stats = service.stats
    skipped = out.counter("requests_budget_skipped_total", "Sampled requests not judged because the deployment's judge token budget was spent.", ["deployment"])
    spent = out.gauge("judge_budget_spent_tokens", "Judge tokens spent in the last hour, per deployment (this worker).", ["deployment"])
    limits = out.gauge("judge_budget_limit_tokens", "This worker's share of the deployment's hourly judge token budget.", ["deployment"])
    for name, judging in sorted(service.judging.items()):
        skipped.add(stats.budget_skipped.get(name, 0), deployment=name)
        spent.add(judging.budget.spent(), deployment=name)
        limit = judging.budget.limit()
        if limit is not None:
            limits.add(limit, deployment=name)


def _judge_series(service: ProcessorService, out: Families) -> None:
    stats = service.stats
    attempts = out.counter("judge_attempts_total", "Judge call attempts by connection and result (retries included).",
                           ["connection", "result"])
    for (connection, result), count in sorted(stats.judge_attempts.items()):
        attempts.add(count, connection=connection, result=result)
    calls = out.counter("judge_calls_total", "Judge calls (after retries) by deployment and result.", ["deployment", "result"])
    for (deployment, result), count in sorted(stats.judge_calls.items()):
        calls.add(count, deployment=deployment, result=result)
    tokens = out.counter("judge_tokens_total", "Judge tokens by deployment and kind.", ["deployment", "kind"])
    for deployment, count in sorted(stats.judge_prompt_tokens.items()):
        tokens.add(count, deployment=deployment, kind="prompt")
    for deployment, count in sorted(stats.judge_completion_tokens.items()):
        tokens.add(count, deployment=deployment, kind="completion")
    # A summary without quantiles: the same _sum and _count series as before, typed as one family.
    latency = out.summary("judge_latency_seconds", "Judge call latencies (last attempt).", ["deployment"])
    for deployment, seconds in sorted(stats.judge_latency_seconds_sum.items()):
        latency.add_summary(stats.judge_latency_count[deployment], seconds, deployment=deployment)
    breaker_open = out.gauge("judge_breaker_open", "1 while a judge connection's circuit breaker is open or half-open.", ["connection"])
    breaker_opened = out.counter("judge_breaker_opened_total", "Times a judge connection's breaker opened.", ["connection"])
    breaker_waiting = out.gauge("judge_breaker_waiting", "Judge calls waiting for a breaker to close.", ["connection"])
    for connection, client in sorted(service.judge_pool.clients.items()):
        breaker = client.breaker
        breaker_open.add(0 if breaker.state == "closed" else 1, connection=connection)
        breaker_opened.add(breaker.times_opened, connection=connection)
        breaker_waiting.add(breaker.waiting, connection=connection)
