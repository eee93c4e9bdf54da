"""The processor's counters, kept as plain attributes (the per-event path pays one increment) and
read into /metrics by :mod:`services.processor.observe`."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field


@dataclass
class ProcessorStats:
    # Per event (hot path): plain ints.
    events: int = 0
    redelivered: int = 0
    ignored: int = 0
    unjudged_deployment: int = 0
    unsampled: int = 0
    # Per sampled request.
    sampled_requests: int = 0
    judge_triggers: int = 0
    orphan_responses: int = 0
    expired_requests: int = 0
    replaced_requests: int = 0
    budget_skipped: Counter = field(default_factory=Counter)  # deployment -> requests
    dead_letters: Counter = field(default_factory=Counter)  # reason -> records
    # (deployment, metric, outcome) -> evaluations published; outcome is "scored",
    # "not_applicable" or "error:<type>".
    outcomes: Counter = field(default_factory=Counter)
    # (connection, result) -> judge call attempts; result is "ok" or an error name.
    judge_attempts: Counter = field(default_factory=Counter)
    judge_calls: Counter = field(default_factory=Counter)  # (deployment, "ok"|"error") -> calls
    judge_prompt_tokens: Counter = field(default_factory=Counter)  # deployment -> tokens
    judge_completion_tokens: Counter = field(default_factory=Counter)
    # deployment -> seconds (a float sum, which Counter's int counts are not typed to hold)
    judge_latency_seconds_sum: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    judge_latency_count: Counter = field(default_factory=Counter)
    publish_retries: int = 0
    rejudge_published: int = 0  # evaluations published by re-judges (rejudge/agent.py)
    commits: int = 0
    commit_failures: int = 0

    def outcome_total(self) -> int:
        return sum(self.outcomes.values())
