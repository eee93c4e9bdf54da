"""The OTLP assembler over real PostgreSQL: a call that went through the proxy and is exported by
the application is counted once, whichever of the two span sets is stored first; a trace
exported with two deployments' keys is counted once under each.

Spans are stored as the aggregator stores them (decode_spans rows), the application's as the
gateway's OTLP route re-cuts them (restamp) and the proxy's server span as the gateway's own
tracer makes it (a child of the application's HTTP span, stamped with its request id).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio, Sampler
from opentelemetry.trace import SpanKind, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.aggregator.db.migrate import migrate
from services.aggregator.ingest.spans import decode_spans
from services.aggregator.otlp.assembler import Assembler
from services.aggregator.retention import ensure_partitions
from services.gateway.otlp.restamp import per_trace_records
from shared.events.codec import decode
from shared.topics import Topics
from tests.support.otlp_apps import App, current_chat, export_bytes, proxied_chat

pytestmark = pytest.mark.integration

DEPLOYMENT = "assistant"
_COLUMNS = (
    "start_time, trace_id, span_id, parent_span_id, name, kind, end_time, duration_ms, status_code, status_message,"
    " service_name, scope_name, attributes, events, resource, request_id, deployment"
)


@pytest.fixture
async def pool(fresh_database: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(fresh_database)
    async with asyncpg.create_pool(fresh_database, min_size=1, max_size=2) as pool:
        today = datetime.now(UTC).date()
        await ensure_partitions(pool, today - timedelta(days=1), today + timedelta(days=1))
        yield pool


async def store(pool: asyncpg.Pool, value: bytes) -> None:
    rows = decode_spans(value)
    placeholders = ", ".join(f"${i}" for i in range(1, 18))
    # a re-sent span is dropped, as the ingest's writer drops it (services/aggregator/ingest/rows.py)
    await pool.executemany(f"INSERT INTO spans ({_COLUMNS}) VALUES ({placeholders}) ON CONFLICT DO NOTHING", rows)


async def store_app_export(
    pool: asyncpg.Pool, app: App, spans: list[ReadableSpan] | None = None, *, deployment: str = DEPLOYMENT
) -> None:
    """The application's spans (or ``spans`` of them), as POST /v1/traces publishes them for the deployment."""
    records = per_trace_records(
        ExportTraceServiceRequest.FromString(export_bytes(app.spans() if spans is None else spans)),
        deployment=deployment,
        variant_of=lambda resource: "",
        keeps_texts=lambda trace_id: True,
        max_record_bytes=1 << 20,
    )
    for record in records:
        await store(pool, record.value)


def proxy_server_span(http_span, request_id: str, sampler: Sampler | None = None) -> bytes:
    """The gateway's server span of a proxied call: it continued the app's HTTP span's context
    (with ``sampler``, as the gateway gets it: from the ``traceparent`` header, a remote parent)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("services.gateway")
    context = set_span_in_context(http_span)
    if sampler is not None:
        headers: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(headers, context=context)
        context = TraceContextTextMapPropagator().extract(headers)
    with tracer.start_as_current_span(
        "POST /v1/chat/completions", context=context, kind=SpanKind.SERVER
    ) as server:
        server.set_attributes({"promptpulse.request_id": request_id, "promptpulse.deployment": DEPLOYMENT})
        with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT) as client:
            client.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 21,
                                   "gen_ai.usage.output_tokens": 7})
    return export_bytes(exporter.get_finished_spans())


def assembler(pool: asyncpg.Pool, settle_seconds: float) -> Assembler:
    # no producer: derived events stay in the outbox, which is what is checked
    return Assembler(pool, None, Topics.from_prefix("it-otlp-link."), lambda deployment: 1.0,
                     settle_seconds=settle_seconds, keep_days=3)


async def derived(pool: asyncpg.Pool, trace_id: str) -> list[str]:
    rows = await pool.fetch("SELECT request_id FROM otlp_requests WHERE trace_id = $1", trace_id)
    return [row["request_id"] for row in rows]


async def app_span_requests(pool: asyncpg.Pool, trace_id: str) -> set[str | None]:
    rows = await pool.fetch(
        "SELECT request_id FROM spans WHERE trace_id = $1 AND attributes ? 'promptpulse.ingest'", trace_id
    )
    return {row["request_id"] for row in rows}


async def test_the_app_s_export_first_waits_for_the_proxy_s_span_then_is_no_second_request(pool) -> None:
    app = App(service="parcel-support")
    _chat, http = proxied_chat(app)
    trace_id = format(http.context.trace_id, "032x")
    proxy_request = str(uuid.uuid4())
    await store_app_export(pool, app)
    waiting = assembler(pool, settle_seconds=3600)
    await waiting.run_pass()
    assert await derived(pool, trace_id) == []  # complete, but its HTTP call has no child yet
    assert await app_span_requests(pool, trace_id) == {None}
    await store(pool, proxy_server_span(http, proxy_request))
    await waiting.run_pass()
    assert await derived(pool, trace_id) == [] and waiting.stats.derived == 0
    assert waiting.stats.linked == 1
    assert await app_span_requests(pool, trace_id) == {proxy_request}  # shown under the proxy's request
    pending = await pool.fetchval("SELECT count(*) FROM otlp_pending WHERE trace_id = $1", trace_id)
    assert pending == 0  # decided: not read again every pass


async def test_the_proxy_s_span_first_links_at_once(pool) -> None:
    app = App(service="parcel-support")
    _chat, http = proxied_chat(app)
    trace_id = format(http.context.trace_id, "032x")
    proxy_request = str(uuid.uuid4())
    await store(pool, proxy_server_span(http, proxy_request))
    await store_app_export(pool, app)
    await assembler(pool, settle_seconds=3600).run_pass()
    assert await derived(pool, trace_id) == []
    assert await app_span_requests(pool, trace_id) == {proxy_request}


async def test_a_gateway_that_samples_its_own_traces_out_still_links_the_app_s_sampled_call(pool) -> None:
    # OTEL_TRACES_SAMPLER=parentbased_traceidratio at 0 in the gateway (docs/proxy.md, "Throughput and
    # tracing"): the app's sampled traceparent keeps the proxy's server span, so the call is counted once.
    app = App(service="parcel-support")
    _chat, http = proxied_chat(app)
    trace_id = format(http.context.trace_id, "032x")
    proxy_request = str(uuid.uuid4())
    value = proxy_server_span(http, proxy_request, sampler=ParentBasedTraceIdRatio(0.0))
    assert value  # recorded and exported despite the ratio of 0
    await store(pool, value)
    await store_app_export(pool, app)
    await assembler(pool, settle_seconds=3600).run_pass()
    assert await derived(pool, trace_id) == []
    assert await app_span_requests(pool, trace_id) == {proxy_request}


async def test_an_http_call_that_never_reached_the_proxy_is_counted_once_the_trace_settles(pool) -> None:
    app = App(service="parcel-support")
    _chat, http = proxied_chat(app)  # its HTTP call went to the LLM directly: no span of ours comes
    trace_id = format(http.context.trace_id, "032x")
    await store_app_export(pool, app)
    await assembler(pool, settle_seconds=3600).run_pass()
    assert await derived(pool, trace_id) == []
    settled = assembler(pool, settle_seconds=0)
    await settled.run_pass()
    [request_id] = await derived(pool, trace_id)
    assert settled.stats.derived == 1
    assert await app_span_requests(pool, trace_id) == {request_id}
    # the outbox holds its request and response events, once
    assert await pool.fetchval("SELECT count(*) FROM otlp_outbox") == 2


async def test_a_linked_call_is_counted_once_and_its_trace_read_once_across_passes(pool) -> None:
    # Every pass looks 30 s back for stored spans; a trace found there again with nothing new is
    # not assembled again, and its link is not counted again (both were, once a pass, before).
    app = App(service="parcel-support")
    _chat, http = proxied_chat(app)
    trace_id = format(http.context.trace_id, "032x")
    proxy_request = str(uuid.uuid4())
    await store(pool, proxy_server_span(http, proxy_request))
    await store_app_export(pool, app)
    passes = assembler(pool, settle_seconds=3600)
    for _ in range(3):
        await passes.run_pass()
    assert passes.stats.linked == 1
    assert passes.stats.traces == 1
    assert await app_span_requests(pool, trace_id) == {proxy_request}


async def test_a_span_committed_after_its_trace_was_assembled_still_joins_the_request(pool) -> None:
    # What the lookback is for: an ingest transaction that began before a pass (its spans'
    # ingested_at) and committed after it. The trace, assembled already, is read again for it.
    app = App(service="parcel-support")
    with app.tracer.start_as_current_span("chat gpt-4o-mini") as chat:
        chat.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                             "gen_ai.usage.input_tokens": 21, "gen_ai.usage.output_tokens": 7})
        with app.tracer.start_as_current_span("moderate answer"):
            pass
    late, root = app.spans()
    trace_id = format(root.context.trace_id, "032x")
    began = await pool.fetchval("SELECT now()")
    await store_app_export(pool, app, [root])
    passes = assembler(pool, settle_seconds=0)
    await passes.run_pass()
    [request_id] = await derived(pool, trace_id)
    await store_app_export(pool, app, [late])
    await pool.execute("UPDATE spans SET ingested_at = $2 WHERE trace_id = $1 AND span_id = $3",
                       trace_id, began, format(late.context.span_id, "016x"))
    await passes.run_pass()
    assert passes.stats.traces == 2 and passes.stats.derived == 1
    assert await app_span_requests(pool, trace_id) == {request_id}
    await passes.run_pass()
    assert passes.stats.traces == 2  # and once only


# A trace crossing two services, each exporting with its own deployment's key: the storefront's
# chat under its server span, and the planner's chat under the planner's server span, a child
# of the storefront's call to it (so the planner's part has a parent it never sees: it is
# decided once the trace settles).
PLANNER = "planner"


def two_services_trace() -> tuple[App, App, str]:
    storefront, planner = App(service="storefront"), App(service="planner")
    with storefront.tracer.start_as_current_span("POST /order", kind=SpanKind.SERVER):
        current_chat(storefront)
        with storefront.tracer.start_as_current_span("call planner", kind=SpanKind.CLIENT) as call:
            with planner.tracer.start_as_current_span("POST /plan", kind=SpanKind.SERVER):
                current_chat(planner, answer="Two days by road.")
    trace_id = format(call.context.trace_id, "032x")
    return storefront, planner, trace_id


async def derived_by_deployment(pool: asyncpg.Pool, trace_id: str) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT deployment, count(*) AS n FROM otlp_requests WHERE trace_id = $1 GROUP BY deployment", trace_id
    )
    return {row["deployment"]: row["n"] for row in rows}


async def outbox_deployments(pool: asyncpg.Pool) -> list[str]:
    """The deployment of every event waiting in the outbox (request and response per request)."""
    rows = await pool.fetch("SELECT value, headers::text AS headers FROM otlp_outbox ORDER BY id")
    return sorted(
        decode(row["value"], [(k, base64.b64decode(v)) for k, v in json.loads(row["headers"])]).meta.deployment
        for row in rows
    )


async def test_a_trace_exported_with_two_deployments_keys_is_one_request_under_each(pool) -> None:
    storefront, planner, trace_id = two_services_trace()
    await store_app_export(pool, storefront)
    await store_app_export(pool, planner, deployment=PLANNER)
    passes = assembler(pool, settle_seconds=0)
    await passes.run_pass()
    assert await derived_by_deployment(pool, trace_id) == {DEPLOYMENT: 1, PLANNER: 1}
    assert await outbox_deployments(pool) == [DEPLOYMENT, DEPLOYMENT, PLANNER, PLANNER]
    # each request holds its own deployment's spans only
    for deployment in (DEPLOYMENT, PLANNER):
        tied = await pool.fetch(
            "SELECT DISTINCT request_id FROM spans WHERE trace_id = $1 AND deployment = $2 AND name LIKE 'chat %'",
            trace_id,
            deployment,
        )
        [request] = await pool.fetch(
            "SELECT request_id FROM otlp_requests WHERE trace_id = $1 AND deployment = $2", trace_id, deployment
        )
        assert [row["request_id"] for row in tied] == [request["request_id"]]
    # both parts sent again: nothing new is derived or queued, and neither waits any more
    await store_app_export(pool, storefront)
    await store_app_export(pool, planner, deployment=PLANNER)
    await passes.run_pass()
    await passes.run_pass()
    assert passes.stats.derived == 2
    assert await derived_by_deployment(pool, trace_id) == {DEPLOYMENT: 1, PLANNER: 1}
    assert await pool.fetchval("SELECT count(*) FROM otlp_outbox") == 4
    assert await pool.fetchval("SELECT count(*) FROM otlp_pending") == 0
    assert passes.stats.traces == 2  # read once per deployment, not again every pass


async def test_an_assembler_restart_between_two_deployments_parts_counts_each_once(pool) -> None:
    storefront, planner, trace_id = two_services_trace()
    await store_app_export(pool, storefront)
    await assembler(pool, settle_seconds=0).run_pass()
    assert await derived_by_deployment(pool, trace_id) == {DEPLOYMENT: 1}
    await store_app_export(pool, planner, deployment=PLANNER)
    restarted = assembler(pool, settle_seconds=0)  # a new process: its cursor starts an hour back
    await restarted.run_pass()
    assert await derived_by_deployment(pool, trace_id) == {DEPLOYMENT: 1, PLANNER: 1}
    assert restarted.stats.derived == 1  # the planner's; the storefront's was derived before
    # and again after another restart, with both parts re-sent
    await store_app_export(pool, storefront)
    await store_app_export(pool, planner, deployment=PLANNER)
    again = assembler(pool, settle_seconds=0)
    await again.run_pass()
    assert again.stats.derived == 0
    assert await derived_by_deployment(pool, trace_id) == {DEPLOYMENT: 1, PLANNER: 1}
    assert await outbox_deployments(pool) == [DEPLOYMENT, DEPLOYMENT, PLANNER, PLANNER]


@pytest.mark.parametrize("assembled_before_0018", [False, True])
async def test_a_late_span_joins_a_trace_whose_spans_read_before_started_on_another_day(
    pool, assembled_before_0018: bool
) -> None:
    # The check for spans stored since a trace was assembled counts only the day partitions
    # between the start times of the spans read then and of the recent ones: the root, read
    # before and stored long ago, started yesterday; the new span must still be seen as new.
    # A row written before migration 0018 has no range: its count is not bounded.
    app = App(service="parcel-support")
    with app.tracer.start_as_current_span("chat gpt-4o-mini") as chat:
        chat.set_attributes({"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini"})
        with app.tracer.start_as_current_span("moderate answer"):
            pass
        with app.tracer.start_as_current_span("translate answer"):
            pass
    moderate, translate, root = app.spans()
    trace_id = format(root.context.trace_id, "032x")
    await store_app_export(pool, app, [root])
    await pool.execute(
        "UPDATE spans SET start_time = start_time - interval '1 day', ingested_at = now() - interval '2 hours'"
        " WHERE trace_id = $1",
        trace_id,
    )
    await store_app_export(pool, app, [moderate])
    passes = assembler(pool, settle_seconds=3600)
    await passes.run_pass()  # finds the trace by its recent span, reads both
    [request_id] = await derived(pool, trace_id)
    if assembled_before_0018:
        await pool.execute("UPDATE otlp_assembled SET first_start = NULL, last_start = NULL")
    await store_app_export(pool, app, [translate])
    await passes.run_pass()
    assert passes.stats.traces == 2 and passes.stats.derived == 1
    assert await app_span_requests(pool, trace_id) == {request_id}
