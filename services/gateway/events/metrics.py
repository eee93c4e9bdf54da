"""The publisher's counters, read into the gateway's ``/metrics`` at scrape time.

Plain integers on one object (the publisher bumps them on the event loop, so no locks);
:meth:`PublisherMetrics.collect` adds them, with the gauges the publisher reports at that
moment, to a scrape (shared/prometheus.py renders it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from shared.prometheus import Families

PREFIX = "promptpulse_gateway_"

# Known label values are always written (as 0 until they happen), so a dashboard or an alert
# rule sees the series exist before the first incident.
CHUNK_DROP_REASONS = ("spool_full", "queue_full", "too_large", "closed", "rejected", "spool_error")
EVENT_LOSS_REASONS = ("spool_full", "spool_error", "rejected")
REFUSAL_REASONS = ("spool_full", "queue_full", "spool_error", "closed")


@dataclass
class PublisherMetrics:
    events_queued: int = 0
    # Acknowledged by Kafka: sent straight from the queue, or drained from the spool.
    events_sent_direct: int = 0
    events_sent_from_spool: int = 0
    events_spooled: int = 0
    # Spooled copies acked in the spool unsent: the producer kept through a send timeout
    # delivered the event after all (counted in events_sent_direct). So every spooled event is
    # sent from the spool, skipped here, lost (events_lost, token_chunks_dropped) or still pending.
    events_spool_skipped: int = 0
    token_chunks_dropped: Counter[str] = field(default_factory=Counter)
    # Request, response or feedback events that will never reach Kafka: must stay at 0.
    events_lost: Counter[str] = field(default_factory=Counter)
    # Admissions refused (the endpoint answers 503), by the limit that was reached.
    reservations_refused: Counter[str] = field(default_factory=Counter)
    # Batches that failed or timed out, by error type.
    send_errors: Counter[str] = field(default_factory=Counter)
    producer_restarts: int = 0

    def collect(self, out: Families, gauges: Mapping[str, tuple[str, float]]) -> None:
        """Every counter, plus ``gauges`` (name -> (help, value)), into ``out``."""
        out.counter("events_queued_total", "Events accepted by publish().").add(self.events_queued)
        sent = out.counter("events_sent_total", "Events acknowledged by Kafka.", ["path"])
        sent.add(self.events_sent_direct, path="direct")
        sent.add(self.events_sent_from_spool, path="spool")
        out.counter("events_spooled_total", "Events written to the on-disk spool.").add(self.events_spooled)
        out.counter("events_spool_skipped_total",
                    "Spooled events not sent from the spool: the producer delivered them after a send timeout "
                    "(counted in events_sent_total{path=\"direct\"}).").add(self.events_spool_skipped)
        out.counter("producer_restarts_total", "Kafka producers replaced after a failed send.").add(
            self.producer_restarts)
        _labelled(out, "token_chunks_dropped_total",
                  "Token chunk events dropped to keep room for request and response events.",
                  "reason", self.token_chunks_dropped, CHUNK_DROP_REASONS)
        _labelled(out, "events_lost_total", "Request, response or feedback events that could not be kept.",
                  "reason", self.events_lost, EVENT_LOSS_REASONS)
        _labelled(out, "admissions_refused_total", "Requests refused (503) because their events had no room.",
                  "reason", self.reservations_refused, REFUSAL_REASONS)
        _labelled(out, "event_send_errors_total", "Batches of events that Kafka did not acknowledge in time.",
                  "error", self.send_errors, ())
        for name, (text, value) in gauges.items():
            out.gauge(name, text).add(value)


def _labelled(out: Families, name: str, text: str, label: str, counts: Counter[str], known: Iterable[str]) -> None:
    series = out.counter(name, text, [label])
    for key, value in sorted((dict.fromkeys(known, 0) | dict(counts)).items()):
        series.add(value, **{label: key})
