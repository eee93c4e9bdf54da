"""The publisher's counters, and their Prometheus text form for the gateway's ``/metrics``.

Plain integers on one object (the publisher bumps them on the event loop, so no locks), read by
:meth:`PublisherMetrics.samples` together with the gauges the publisher reports at that moment.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

PREFIX = "promptpulse_gateway_"

# Known label values are always written (as 0 until they happen), so a dashboard or an alert
# rule sees the series exist before the first incident.
CHUNK_DROP_REASONS = ("spool_full", "queue_full", "too_large", "closed", "rejected", "spool_error")
EVENT_LOSS_REASONS = ("spool_full", "spool_error", "rejected")
REFUSAL_REASONS = ("spool_full", "queue_full", "spool_error", "closed")


@dataclass(frozen=True, slots=True)
class MetricSample:
    name: str
    kind: Literal["counter", "gauge"]
    help: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


@dataclass
class PublisherMetrics:
    events_queued: int = 0
    # Acknowledged by Kafka: sent straight from the queue, or drained from the spool.
    events_sent_direct: int = 0
    events_sent_from_spool: int = 0
    events_spooled: int = 0
    token_chunks_dropped: Counter[str] = field(default_factory=Counter)
    # Request, response or feedback events that will never reach Kafka: must stay at 0.
    events_lost: Counter[str] = field(default_factory=Counter)
    # Admissions refused (the endpoint answers 503), by the limit that was reached.
    reservations_refused: Counter[str] = field(default_factory=Counter)
    # Batches that failed or timed out, by error type.
    send_errors: Counter[str] = field(default_factory=Counter)
    producer_restarts: int = 0

    def samples(self, gauges: Mapping[str, tuple[str, float]]) -> list[MetricSample]:
        """Every counter, plus ``gauges`` (name -> (help, value)), as samples."""
        out = [
            MetricSample(f"{PREFIX}events_queued_total", "counter",
                         "Events accepted by publish().", self.events_queued),
            MetricSample(f"{PREFIX}events_sent_total", "counter",
                         "Events acknowledged by Kafka.", self.events_sent_direct,
                         (("path", "direct"),)),
            MetricSample(f"{PREFIX}events_sent_total", "counter",
                         "Events acknowledged by Kafka.", self.events_sent_from_spool,
                         (("path", "spool"),)),
            MetricSample(f"{PREFIX}events_spooled_total", "counter",
                         "Events written to the on-disk spool.", self.events_spooled),
            MetricSample(f"{PREFIX}producer_restarts_total", "counter",
                         "Kafka producers replaced after a failed send.", self.producer_restarts),
        ]
        out += _labelled(f"{PREFIX}token_chunks_dropped_total",
                         "Token chunk events dropped to keep room for request and response events.",
                         "reason", self.token_chunks_dropped, CHUNK_DROP_REASONS)
        out += _labelled(f"{PREFIX}events_lost_total",
                         "Request, response or feedback events that could not be kept.",
                         "reason", self.events_lost, EVENT_LOSS_REASONS)
        out += _labelled(f"{PREFIX}admissions_refused_total",
                         "Requests refused (503) because their events had no room.",
                         "reason", self.reservations_refused, REFUSAL_REASONS)
        out += _labelled(f"{PREFIX}event_send_errors_total",
                         "Batches of events that Kafka did not acknowledge in time.",
                         "error", self.send_errors, ())
        out += [MetricSample(f"{PREFIX}{name}", "gauge", text, value)
                for name, (text, value) in gauges.items()]
        return out


def _labelled(
    name: str, text: str, label: str, counts: Counter[str], known: Iterable[str]
) -> list[MetricSample]:
    values = dict.fromkeys(known, 0) | dict(counts)
    return [MetricSample(name, "counter", text, value, ((label, key),))
            for key, value in sorted(values.items())]


def render(samples: Iterable[MetricSample]) -> str:
    """Prometheus text exposition format (version 0.0.4)."""
    lines: list[str] = []
    seen: set[str] = set()
    for sample in samples:
        if sample.name not in seen:
            seen.add(sample.name)
            lines.append(f"# HELP {sample.name} {_escape_help(sample.help)}")
            lines.append(f"# TYPE {sample.name} {sample.kind}")
        labels = ",".join(f'{key}="{_escape_label(value)}"' for key, value in sample.labels)
        value = int(sample.value) if float(sample.value).is_integer() else sample.value
        lines.append(f"{sample.name}{{{labels}}} {value}" if labels else f"{sample.name} {value}")
    return "\n".join(lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
