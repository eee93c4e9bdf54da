"""``GET /metrics``: the aggregator process in Prometheus text format (shared/prometheus.py renders).

Process figures only (ingestion, monitor evaluation, alert delivery, the query API and its
streams), never deployment data, so it is served without a key like ``/healthz``. Labels take
only values the aggregator controls (route templates, table names, status codes).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from aiohttp import web

from services.aggregator.api.state import API
from services.aggregator.appkeys import INGESTOR, MONITORS, QUERY_API, STALLS
from shared.prometheus import PROMETHEUS, Families, ServiceMetrics, metrics_handler

PREFIX = "promptpulse_aggregator_"


def _ingest(out: Families, ingestor: Any) -> None:
    stats = ingestor.stats
    out.add("gauge", "ingest_ready", "1 when every assigned partition is positioned.", bool(ingestor.ready))
    out.add("counter", "ingest_batches_total", "Micro-batches committed.", stats.batches)
    out.add("counter", "ingest_records_total", "Kafka records committed.", stats.records)
    inserted = out.counter("ingest_rows_inserted_total", "Raw rows new to the store.", ["table"])
    for table, count in sorted(stats.inserted.items()):
        inserted.add(count, table=table)
    out.add("counter", "ingest_duplicates_total", "Records already stored (redeliveries).", stats.duplicates)
    out.add("counter", "ingest_dead_letters_total", "Records dead-lettered.", stats.dead_letters)
    out.add("counter", "ingest_too_old_total", "Events skipped as older than retention.", stats.too_old)
    out.add("counter", "ingest_failed_attempts_total", "Batch transactions that failed and were retried.",
            stats.failed_attempts)
    out.add("gauge", "database_available", "1 while Postgres accepts the ingest's writes.", stats.database_available)
    out.add("gauge", "ingest_held_records", "Records read from Kafka and not committed yet.", stats.held_records)


def _monitors(out: Families, service: Any) -> None:
    stats, delivery = service.stats, service.delivery
    out.add("gauge", "monitor_evaluator_leader", "1 while this replica holds the evaluator lock.", stats.is_leader)
    out.add("counter", "monitor_ticks_total", "Evaluator passes.", stats.ticks)
    out.add("counter", "monitor_failed_ticks_total", "Evaluator passes that failed.", stats.failed_ticks)
    out.add("counter", "monitor_windows_total", "Windows evaluated by this replica.", stats.windows)
    out.add("counter", "monitor_violations_total", "Violated windows found by this replica.", stats.violations)
    out.add("counter", "alerts_total", "Alert state changes written by this replica.", stats.alerts)
    out.add("counter", "alerts_published_total", "Alerts published to the alerts topic.", delivery.published)
    out.add("counter", "alert_publish_failures_total", "Failed alert publishing passes.", delivery.publish_failures)
    out.add("counter", "webhooks_delivered_total", "Alerts delivered to direct destinations (Slack, Teams, "
            "PagerDuty, webhooks).", delivery.webhooks_delivered)
    out.add("counter", "webhook_failures_total", "Direct destination attempts that failed.", delivery.webhook_failures)
    out.add("counter", "destination_silenced_total", "Alert transitions held back from direct destinations "
            "by a silence.", delivery.silenced)
    alertmanager = service.alertmanager.stats
    out.add("counter", "alertmanager_alerts_sent_total", "Alerts Alertmanager accepted (re-sends and every "
            "instance counted).", alertmanager.sent)
    out.add("counter", "alertmanager_send_failures_total", "Alerts whose send to an Alertmanager failed "
            "(retried).", alertmanager.failed)


def collect_metrics(app: web.Application, out: Families) -> None:
    """The aggregator's series at scrape time, from whichever parts this process runs."""
    if INGESTOR in app:
        _ingest(out, app[INGESTOR])
    if STALLS in app:
        app[STALLS].collect_metrics(out, "intake_held", "1 while intake is held on purpose (Postgres away, "
                                    "a batch being written, positioning): never a stall.")
    if MONITORS in app:
        _monitors(out, app[MONITORS])
    api = app.get(QUERY_API)  # /metrics is a route of the main app; the API's state is in its sub-app
    if api is not None and API in api:
        state = api[API]
        hub = state.hub
        out.add("gauge", "stream_subscribers", "Open SSE streams.", hub.subscriber_count)
        out.add("gauge", "stream_listener_connected", "1 while the LISTEN connection is up.", hub.connected)
        out.add("counter", "stream_notifications_total", "Notifications received.", hub.notifications)
        out.add("counter", "stream_events_total", "Change events queued to subscribers.", hub.events_sent)
        out.add("counter", "stream_reconnects_total", "Times the LISTEN connection was re-made.", hub.reconnects)
        responses = out.counter("api_responses_total", "Query API answers.", ["route", "status"])
        for (route, status), count in sorted(state.responses.items()):
            responses.add(count, route=route, status=status)


def setup(app: web.Application) -> None:
    """Serve ``GET /metrics`` on ``app`` from its own registry (before it starts)."""
    app[PROMETHEUS] = ServiceMetrics(PREFIX, partial(collect_metrics, app))
    app.router.add_get("/metrics", metrics_handler)
