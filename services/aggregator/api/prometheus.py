"""``GET /metrics``: the aggregator process in Prometheus text format (0.0.4).

Process figures only (ingestion, monitor evaluation, alert delivery, the query API and its
streams), never deployment data, so it is served without a key like ``/healthz``. Labels take
only values the aggregator controls (route templates, table names, status codes).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from services.aggregator.api.state import API

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "promptpulse_aggregator_"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Exposition:
    def __init__(self) -> None:
        self._families: dict[str, tuple[str, str, list[str]]] = {}

    def add(self, name: str, kind: str, help_text: str, value: float,
            labels: Iterable[tuple[str, str]] = ()) -> None:
        family = self._families.setdefault(PREFIX + name, (kind, help_text, []))
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
        sample = f"{PREFIX}{name}{{{label_text}}}" if label_text else PREFIX + name
        number = str(int(value)) if isinstance(value, bool | int) else repr(float(value))
        family[2].append(f"{sample} {number}")

    def text(self) -> str:
        lines = []
        for name, (kind, help_text, samples) in self._families.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]
        return "\n".join(lines) + "\n"


def _ingest(out: Exposition, ingestor: Any) -> None:
    stats = ingestor.stats
    out.add("ingest_ready", "gauge", "1 when every assigned partition is positioned.", bool(ingestor.ready))
    out.add("ingest_batches_total", "counter", "Micro-batches committed.", stats.batches)
    out.add("ingest_records_total", "counter", "Kafka records committed.", stats.records)
    for table, count in sorted(stats.inserted.items()):
        out.add("ingest_rows_inserted_total", "counter", "Raw rows new to the store.", count, [("table", table)])
    out.add("ingest_duplicates_total", "counter", "Records already stored (redeliveries).", stats.duplicates)
    out.add("ingest_dead_letters_total", "counter", "Records dead-lettered.", stats.dead_letters)
    out.add("ingest_too_old_total", "counter", "Events skipped as older than retention.", stats.too_old)
    out.add("ingest_failed_attempts_total", "counter", "Batch transactions that failed and were retried.",
            stats.failed_attempts)
    out.add("database_available", "gauge", "1 while Postgres accepts the ingest's writes.", stats.database_available)
    out.add("ingest_held_records", "gauge", "Records read from Kafka and not committed yet.", stats.held_records)


def _stalls(out: Exposition, watch: Any) -> None:
    rows = watch.partition_rows()
    out.add("stalled_partitions", "gauge",
            "Assigned partitions with records waiting and no intake for stall_seconds (0 when healthy).",
            sum(1 for _, progress in rows if progress.stalled))
    for tp, progress in rows:
        labels = [("topic", tp.topic), ("partition", str(tp.partition))]
        out.add("partition_stalled", "gauge", "1 while the partition is stalled, per watched partition.",
                progress.stalled, labels)
        if progress.lag is not None:
            out.add("intake_lag", "gauge", "Records beyond the intake position, per watched partition "
                    "(end offset read from the broker).", progress.lag, labels)
    out.add("intake_stalls_total", "counter", "Stalls detected (each counted once, when it starts).",
            watch.stalls_total)
    out.add("intake_held", "gauge", "1 while intake is held on purpose (Postgres away, a batch being "
            "written, positioning): never a stall.", watch.held)


def _monitors(out: Exposition, service: Any) -> None:
    stats, delivery = service.stats, service.delivery
    out.add("monitor_evaluator_leader", "gauge", "1 while this replica holds the evaluator lock.", stats.is_leader)
    out.add("monitor_ticks_total", "counter", "Evaluator passes.", stats.ticks)
    out.add("monitor_failed_ticks_total", "counter", "Evaluator passes that failed.", stats.failed_ticks)
    out.add("monitor_windows_total", "counter", "Windows evaluated by this replica.", stats.windows)
    out.add("monitor_violations_total", "counter", "Violated windows found by this replica.", stats.violations)
    out.add("alerts_total", "counter", "Alert state changes written by this replica.", stats.alerts)
    out.add("alerts_published_total", "counter", "Alerts published to the alerts topic.", delivery.published)
    out.add("alert_publish_failures_total", "counter", "Failed alert publishing passes.", delivery.publish_failures)
    out.add("webhooks_delivered_total", "counter", "Webhook POSTs accepted.", delivery.webhooks_delivered)
    out.add("webhook_failures_total", "counter", "Webhook attempts that failed.", delivery.webhook_failures)


async def metrics(request: web.Request) -> web.Response:
    # Imported here: app.py imports the API package to wire it in.
    from services.aggregator.app import INGESTOR, STALLS
    from services.aggregator.monitors import MONITORS

    out = Exposition()
    app = request.app
    if INGESTOR in app:
        _ingest(out, app[INGESTOR])
    if STALLS in app:
        _stalls(out, app[STALLS])
    if MONITORS in app:
        _monitors(out, app[MONITORS])
    if API in app:
        state = app[API]
        hub = state.hub
        out.add("stream_subscribers", "gauge", "Open SSE streams.", hub.subscriber_count)
        out.add("stream_listener_connected", "gauge", "1 while the LISTEN connection is up.", hub.connected)
        out.add("stream_notifications_total", "counter", "Notifications received.", hub.notifications)
        out.add("stream_events_total", "counter", "Change events queued to subscribers.", hub.events_sent)
        out.add("stream_reconnects_total", "counter", "Times the LISTEN connection was re-made.", hub.reconnects)
        for (route, status), count in sorted(state.responses.items()):
            out.add("api_responses_total", "counter", "Query API answers.", count,
                    [("route", route), ("status", str(status))])
    return web.Response(body=out.text().encode(), headers={"Content-Type": CONTENT_TYPE})
