"""The gateway's own counters and histograms, read into ``GET /metrics`` at scrape time.

Labels only ever take values the gateway controls (deployment names it loaded, variant ids,
status codes, model names the LLM answered with), never a client's path or header, so a caller
cannot grow the series without bound.

They are plain numbers bumped on the event loop, not prometheus_client objects: the request path
pays a dict increment (see shared/prometheus.py for the measured difference), and the scrape
turns them into metric families.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass, field

from shared.prometheus import Families

# Seconds. Latency of an LLM flow spans milliseconds (cached, tiny) to minutes (long answers).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class Histogram:
    """Counts per bucket (not cumulative) and their sum: one bisect and two adds per observation."""

    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), ending with (inf, all of them)."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip(self.buckets, self.counts, strict=True):
            running += n
            out.append((bound, running))
        out.append((math.inf, self.count))
        return out


@dataclass
class GatewayMetrics:
    """Bumped by the handlers on the event loop (no locks needed)."""

    http_requests: Counter[tuple[str, int]] = field(default_factory=Counter)  # (endpoint, status)
    flow_runs: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (deployment, variant, status)
    tokens: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (deployment, model, kind)
    auth_failures: Counter[str] = field(default_factory=Counter)
    rate_limited: Counter[str] = field(default_factory=Counter)
    implausible_values: Counter[str] = field(default_factory=Counter)  # deployment
    otlp_spans: Counter[str] = field(default_factory=Counter)  # deployment
    run_duration: dict[str, Histogram] = field(default_factory=dict)
    time_to_first_token: dict[str, Histogram] = field(default_factory=dict)
    in_flight: int = 0

    def observe_run(self, deployment: str, seconds: float) -> None:
        _histogram(self.run_duration, deployment, DURATION_BUCKETS).observe(seconds)

    def observe_ttft(self, deployment: str, seconds: float) -> None:
        _histogram(self.time_to_first_token, deployment, TTFT_BUCKETS).observe(seconds)

    def collect(self, out: Families) -> None:
        http = out.counter("http_requests_total", "HTTP requests answered, by endpoint and status.",
                           ["endpoint", "code"])
        for (endpoint, code), n in sorted(self.http_requests.items()):
            http.add(n, endpoint=endpoint, code=code)
        runs = out.counter("flow_runs_total", "Accepted requests by outcome (ok, error, cancelled).",
                           ["deployment", "variant", "status"])
        for (deployment, variant, status), n in sorted(self.flow_runs.items()):
            runs.add(n, deployment=deployment, variant=variant, status=status)
        tokens = out.counter("llm_tokens_total", "Tokens the LLM endpoints reported, by model.",
                             ["deployment", "model", "kind"])
        for (deployment, model, kind), n in sorted(self.tokens.items()):
            tokens.add(n, deployment=deployment, model=model, kind=kind)
        for name, text, counts in (
            ("auth_failures_total", "Requests refused with 401.", self.auth_failures),
            ("rate_limited_total", "Requests refused with 429.", self.rate_limited),
            ("implausible_values_total", "Response events holding a number outside its plausible range (an LLM "
             "call's usage left out of the event, or an event the aggregator will dead-letter).",
             self.implausible_values),
            ("otlp_spans_total", "Spans accepted on POST /v1/traces (OTLP ingest).", self.otlp_spans),
        ):
            series = out.counter(name, text, ["deployment"])
            for deployment, n in sorted(counts.items()):
                series.add(n, deployment=deployment)
        out.gauge("requests_in_flight", "Score and feedback requests being served.").add(self.in_flight)
        for name, text, histograms in (
            ("flow_run_duration_seconds", "From receiving a request to its last byte.", self.run_duration),
            ("time_to_first_token_seconds", "From receiving a streamed request to its first token.",
             self.time_to_first_token),
        ):
            series = out.histogram(name, text, ["deployment"])
            for deployment, histogram in sorted(histograms.items()):
                series.add_buckets(histogram.cumulative(), histogram.total, deployment=deployment)


def _histogram(series: dict[str, Histogram], deployment: str, buckets: tuple[float, ...]) -> Histogram:
    histogram = series.get(deployment)
    if histogram is None:
        histogram = series[deployment] = Histogram(buckets)
    return histogram
