"""What the ops listener reports: health as JSON, and the metric families for /metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.processor.ops import Family

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
        "judge_breakers": breakers,
        "judge_calls_in_flight": runner.calls_in_flight if runner else 0,
        "judge_queue": runner.queued if runner else 0,
        "pending_requests": len(service.intake.pending) if service.intake else 0,
        "intake_held_by_judging": bool(stalls and stalls.held),
        "stall_seconds": service.section.stall_seconds,
        "stalled_partitions": stalled,
        "partitions": _partitions(service),
    }
    return (200 if ok and not stalled else 503), body


def metric_families(service: ProcessorService) -> list[Family]:
    stats = service.stats
    runner = service.runner
    families = [
        Family("events_total", "counter", "Inference events handled (redeliveries excluded).").add(stats.events),
        Family("events_redelivered_total", "counter", "Events skipped because this worker had already handled them (re-seek after a rebalance).").add(stats.redelivered),
        Family("events_ignored_total", "counter", "Events of other types on the inference topic.").add(stats.ignored),
        Family("events_unjudged_deployment_total", "counter", "Events of deployments without an evaluation section here.").add(stats.unjudged_deployment),
        Family("events_unsampled_total", "counter", "Events of requests not in the sample.").add(stats.unsampled),
        Family("requests_sampled_total", "counter", "Sampled request events stored to await their response.").add(stats.sampled_requests),
        Family("judge_triggers_total", "counter", "Sampled responses joined with their request and sent to judging.").add(stats.judge_triggers),
        Family("responses_orphaned_total", "counter", "Sampled responses whose request was not found (expired, or read before this worker started).").add(stats.orphan_responses),
        Family("requests_expired_total", "counter", "Sampled requests whose response did not come within request_ttl_seconds.").add(stats.expired_requests),
        Family("requests_duplicate_total", "counter", "Request events seen twice for one request id.").add(stats.replaced_requests),
        Family("pending_requests", "gauge", "Sampled requests waiting for their response.").add(len(service.intake.pending) if service.intake else 0),
        Family("judge_calls_in_flight", "gauge", "Judge calls in flight in this worker.").add(runner.calls_in_flight if runner else 0),
        Family("judge_concurrency_limit", "gauge", "Maximum judge calls in flight (judge_concurrency).").add(service.section.judge_concurrency),
        Family("judge_queue_depth", "gauge", "Joined requests waiting for a judge worker.").add(runner.queued if runner else 0),
        Family("publish_retries_total", "counter", "Evaluation publishes retried because the broker did not acknowledge.").add(stats.publish_retries),
        Family("commits_total", "counter", "Offset commits made.").add(stats.commits),
        Family("commit_failures_total", "counter", "Offset commits that failed (retried on the next interval).").add(stats.commit_failures),
    ]
    budget_skipped = Family("requests_budget_skipped_total", "counter", "Sampled requests not judged because the deployment's judge token budget was spent.")
    budget_spent = Family("judge_budget_spent_tokens", "gauge", "Judge tokens spent in the last hour, per deployment (this worker).")
    budget_limit = Family("judge_budget_limit_tokens", "gauge", "This worker's share of the deployment's hourly judge token budget.")
    for name, judging in sorted(service.judging.items()):
        budget_skipped.add(stats.budget_skipped.get(name, 0), deployment=name)
        budget_spent.add(judging.budget.spent(), deployment=name)
        limit = judging.budget.limit()
        if limit is not None:
            budget_limit.add(limit, deployment=name)
    families += [budget_skipped, budget_spent, budget_limit]
    unavailable = Family("deployment_unavailable", "gauge", "1 for each deployment whose file does not load or whose judge cannot be set up: its events are not judged (the others are).")
    for name in sorted(service.unavailable):
        unavailable.add(1, deployment=name)
    families.append(unavailable)
    dead = Family("dead_letters_total", "counter", "Records sent to the dead-letter topic, by reason.")
    for reason, count in sorted(stats.dead_letters.items()):
        dead.add(count, reason=reason)
    evaluations = Family("evaluations_total", "counter", "Evaluation outcomes published, by deployment, metric and outcome.")
    for (deployment, metric, outcome), count in sorted(stats.outcomes.items()):
        evaluations.add(count, deployment=deployment, metric=metric, outcome=outcome)
    attempts = Family("judge_attempts_total", "counter", "Judge call attempts by connection and result (retries included).")
    for (connection, result), count in sorted(stats.judge_attempts.items()):
        attempts.add(count, connection=connection, result=result)
    calls = Family("judge_calls_total", "counter", "Judge calls (after retries) by deployment and result.")
    for (deployment, result), count in sorted(stats.judge_calls.items()):
        calls.add(count, deployment=deployment, result=result)
    tokens = Family("judge_tokens_total", "counter", "Judge tokens by deployment and kind.")
    for deployment, count in sorted(stats.judge_prompt_tokens.items()):
        tokens.add(count, deployment=deployment, kind="prompt")
    for deployment, count in sorted(stats.judge_completion_tokens.items()):
        tokens.add(count, deployment=deployment, kind="completion")
    latency_sum = Family("judge_latency_seconds_sum", "counter", "Sum of judge call latencies (last attempt).")
    latency_count = Family("judge_latency_seconds_count", "counter", "Judge calls timed.")
    for deployment, seconds in sorted(stats.judge_latency_seconds_sum.items()):
        latency_sum.add(seconds, deployment=deployment)
        latency_count.add(stats.judge_latency_count[deployment], deployment=deployment)
    breaker_open = Family("judge_breaker_open", "gauge", "1 while a judge connection's circuit breaker is open or half-open.")
    breaker_opened = Family("judge_breaker_opened_total", "counter", "Times a judge connection's breaker opened.")
    breaker_waiting = Family("judge_breaker_waiting", "gauge", "Judge calls waiting for a breaker to close.")
    for connection, client in sorted(service.judge_pool.clients.items()):
        breaker = client.breaker
        breaker_open.add(0 if breaker.state == "closed" else 1, connection=connection)
        breaker_opened.add(breaker.times_opened, connection=connection)
        breaker_waiting.add(breaker.waiting, connection=connection)
    families += [dead, evaluations, attempts, calls, tokens, latency_sum, latency_count,
                 breaker_open, breaker_opened, breaker_waiting]
    lag = Family("consumer_lag", "gauge", "Events on the partition not yet read by this worker.")
    committed = Family("committed_offset", "gauge", "Last offset this worker committed, per partition.")
    lowest = Family("lowest_unfinished_offset", "gauge", "Lowest offset whose work is unfinished (the commit cannot pass it).")
    for row in _partitions(service):
        labels = {"topic": row["topic"], "partition": row["partition"]}
        if row["lag"] is not None:
            lag.add(row["lag"], **labels)
        if row["committed"] is not None:
            committed.add(row["committed"], **labels)
        if row["lowest_unfinished"] is not None:
            lowest.add(row["lowest_unfinished"], **labels)
    families += [lag, committed, lowest]
    families += _stall_families(service)
    return families


def _stall_families(service: ProcessorService) -> list[Family]:
    stalls = service.stalls
    rows = stalls.partition_rows() if stalls is not None else []
    stalled = Family("stalled_partitions", "gauge", "Assigned partitions with records waiting and no intake for stall_seconds (0 when healthy).")
    flag = Family("partition_stalled", "gauge", "1 while the partition is stalled, per assigned partition.")
    intake_lag = Family("intake_lag", "gauge", "Records beyond the intake position, per assigned partition (end offset read from the broker).")
    stalled.add(sum(1 for _, progress in rows if progress.stalled))
    for tp, progress in rows:
        labels = {"topic": tp.topic, "partition": tp.partition}
        flag.add(1 if progress.stalled else 0, **labels)
        if progress.lag is not None:
            intake_lag.add(progress.lag, **labels)
    total = Family("intake_stalls_total", "counter", "Stalls detected (each counted once, when it starts).").add(stalls.stalls_total if stalls else 0)
    held = Family("intake_held_by_judging", "gauge", "1 while the stream waits for room in the judge queue (back-pressure, never a stall).").add(1 if stalls and stalls.held else 0)
    return [stalled, flag, intake_lag, total, held]
