"""The gateway's own counters and histograms, and ``GET /metrics`` in Prometheus text format.

Labels only ever take values the gateway controls (deployment names it loaded, variant ids,
status codes, model names the LLM answered with), never a client's path or header, so a caller
cannot grow the series without bound.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from services.gateway.events.metrics import PREFIX, MetricSample, render

# Seconds. Latency of an LLM flow spans milliseconds (cached, tiny) to minutes (long answers).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class Histogram:
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

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out: list[str] = []
        running = 0
        for bound, n in zip(self.buckets, self.counts, strict=True):
            running += n
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound:g}"}} {running}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        wrapped = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{wrapped} {self.total:.6f}")
        out.append(f"{name}_count{wrapped} {self.count}")
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
    run_duration: dict[str, Histogram] = field(default_factory=dict)
    time_to_first_token: dict[str, Histogram] = field(default_factory=dict)
    in_flight: int = 0

    def observe_run(self, deployment: str, seconds: float) -> None:
        self.run_duration.setdefault(deployment, Histogram(DURATION_BUCKETS)).observe(seconds)

    def observe_ttft(self, deployment: str, seconds: float) -> None:
        self.time_to_first_token.setdefault(deployment, Histogram(TTFT_BUCKETS)).observe(seconds)

    def samples(self) -> list[MetricSample]:
        out = [
            MetricSample(f"{PREFIX}http_requests_total", "counter", "HTTP requests answered, by endpoint and status.",
                         n, (("endpoint", endpoint), ("code", str(code))))
            for (endpoint, code), n in sorted(self.http_requests.items())
        ]
        out += [
            MetricSample(f"{PREFIX}flow_runs_total", "counter", "Accepted requests by outcome (ok, error, cancelled).",
                         n, (("deployment", d), ("variant", v), ("status", s)))
            for (d, v, s), n in sorted(self.flow_runs.items())
        ]
        out += [
            MetricSample(f"{PREFIX}llm_tokens_total", "counter", "Tokens the LLM endpoints reported, by model.",
                         n, (("deployment", d), ("model", m), ("kind", k)))
            for (d, m, k), n in sorted(self.tokens.items())
        ]
        out += [
            MetricSample(f"{PREFIX}auth_failures_total", "counter", "Requests refused with 401.", n, (("deployment", d),))
            for d, n in sorted(self.auth_failures.items())
        ]
        out += [
            MetricSample(f"{PREFIX}rate_limited_total", "counter", "Requests refused with 429.", n, (("deployment", d),))
            for d, n in sorted(self.rate_limited.items())
        ]
        out += [
            MetricSample(f"{PREFIX}implausible_values_total", "counter",
                         "Response events holding a number outside its plausible range (an LLM call's usage "
                         "left out of the event, or an event the aggregator will dead-letter).",
                         n, (("deployment", d),))
            for d, n in sorted(self.implausible_values.items())
        ]
        out.append(MetricSample(f"{PREFIX}requests_in_flight", "gauge", "Score and feedback requests being served.",
                                self.in_flight))
        return out

    def histogram_text(self) -> str:
        lines: list[str] = []
        for name, text, series in (
            (f"{PREFIX}flow_run_duration_seconds", "From receiving a request to its last byte.", self.run_duration),
            (f"{PREFIX}time_to_first_token_seconds", "From receiving a streamed request to its first token.",
             self.time_to_first_token),
        ):
            lines += [f"# HELP {name} {text}", f"# TYPE {name} histogram"]
            for deployment, histogram in sorted(series.items()):
                lines += histogram.lines(name, f'deployment="{_escape(deployment)}"')
        return "\n".join(lines) + "\n"


def exposition(sample_groups: Iterable[Iterable[MetricSample]], histograms: str) -> str:
    """The whole /metrics page: counters and gauges, then histograms."""
    samples = [s for group in sample_groups for s in group]
    return render(samples) + histograms


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
