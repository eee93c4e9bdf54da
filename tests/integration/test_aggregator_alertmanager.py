"""Monitor alerts to a real Prometheus Alertmanager (Debian's prometheus-alertmanager, started
per test on a free port, with short group timers and a webhook receiver in the test).

Transitions come from the real pipeline with the evaluation clock chosen by the test (as in
test_aggregator_monitors.py): scores go through the real ingest into Postgres, ``once(now)``
evaluates the windows, and the sender delivers the outbox to Alertmanager, which is read back
through its own API (``GET /api/v2/alerts``) and through what it notifies the receiver of.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
from aiohttp import web

from services.aggregator.api.prometheus import PREFIX, collect_metrics
from services.aggregator.appkeys import MONITORS
from services.aggregator.db.pool import create_pool
from services.aggregator.monitors.alertmanager import (
    ALERTMANAGER_LOCK,
    AlertmanagerSender,
    target_id,
)
from services.aggregator.monitors.evaluator import EVALUATOR_LOCK
from services.aggregator.monitors.service import MonitorService
from services.aggregator.settings import AggregatorSettings
from shared.prometheus import ServiceMetrics
from tests.integration.test_aggregator_monitors import (
    AVERAGE,
    SCRIPT,
    ingested,
    minute_base,
    monitor_settings,
    script_messages,
    step,
    write_deployments,
)
from tests.support.aggregator import wait_for
from tests.support.alertmanager import (
    Receiver,
    free_port,
    running_alertmanager,
    serving,
    webhook_receiver,
)
from tests.support.prometheus_text import assert_promtool_clean, value

PUBLIC_URL = "https://promptpulse.example.com"
RUNBOOK = "https://runbooks.example.com/relevance"
PAGED = {**AVERAGE, "severity": "page", "runbook_url": RUNBOOK}


def am_settings(dsn: str, folder: Path, urls: list[str], **alertmanager: object) -> AggregatorSettings:
    settings = monitor_settings(dsn, write_deployments(folder, [PAGED]),
                                alertmanager={"urls": urls, **alertmanager})
    settings.aggregator.public_url = PUBLIC_URL
    return settings


def notified_as(receiver: Receiver, status: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(receiver.alerts(status))

    return check


async def sends(pool: asyncpg.Pool, url: str) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT * FROM alertmanager_sends WHERE monitor_id = 'rel-avg' AND target = $1",
                               target_id(url))


async def sender_lock_holders(pool: asyncpg.Pool) -> list[str]:
    """The pg_stat_activity state of each backend holding the sender's advisory lock."""
    rows = await pool.fetch("""
        SELECT a.state FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 AND l.objid = $2
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
        ALERTMANAGER_LOCK >> 32, ALERTMANAGER_LOCK & 0xFFFF_FFFF)
    return [row["state"] for row in rows]


async def test_an_alert_arrives_firing_is_resent_then_resolved(fresh_database, tmp_path) -> None:
    base = minute_base()
    async with webhook_receiver() as receiver, running_alertmanager(tmp_path / "am", receiver.url) as am:
        settings = am_settings(fresh_database, tmp_path / "d", [am.url], resend_seconds=1,
                               retry_initial_seconds=0.1, retry_max_seconds=1)
        async with ingested(settings, script_messages(base, SCRIPT)):
            pool = await create_pool(settings)
            service = MonitorService(settings, pool)
            try:
                await service.sync_files()
                await service.open()  # its producer and webhook session (app.py does it at start-up)
                for minute in (1, 2):
                    await service.once(step(base, minute))
                assert await service.alertmanager.send_due() == 1

                # Arrives firing: in Alertmanager's API, and notified to the receiver.
                [active] = await am.alerts(monitor="rel-avg")
                await wait_for(notified_as(receiver, "firing"), 30, "the firing notification")
                [notified] = receiver.alerts("firing")

                # Not due again before the re-send interval: a sender with a long one sends nothing.
                patient = AlertmanagerSender(pool, settings.aggregator.monitors.alertmanager.model_copy(
                    update={"resend_seconds": 3600}), PUBLIC_URL)
                assert await patient.send_due() == 0
                await patient.close()

                # Re-sent while firing, by the sender's own loop: Alertmanager's updatedAt moves.
                stop = asyncio.Event()
                loop = asyncio.create_task(service.alertmanager.run(stop, 0.2))

                async def resent() -> bool:
                    row = await sends(pool, am.url)
                    return row is not None and row["sends"] >= 3

                await wait_for(resent, 30, "two re-sends")
                stop.set()
                await loop
                [again] = await am.alerts(monitor="rel-avg")

                # Resolved: the next window is fine; sent with endsAt, notified as resolved.
                await service.once(step(base, 3))
                assert await service.alertmanager.send_due() == 1
                await wait_for(notified_as(receiver, "resolved"), 30, "the resolved notification")
                still_active = await am.alerts(monitor="rel-avg")
                row = await sends(pool, am.url)
                outbox = await pool.fetchrow("SELECT * FROM alertmanager_alerts WHERE monitor_id = 'rel-avg'")
                app = web.Application()
                app[MONITORS] = service
                metrics = ServiceMetrics(PREFIX, partial(collect_metrics, app)).text().decode()
                # Past the retention, a resolved alert leaves the outbox, its delivery records with it.
                await service._retention(datetime.now(UTC) + timedelta(days=settings.aggregator.retention_days + 1))
                left = await pool.fetchval("SELECT count(*) FROM alertmanager_alerts")
                left_sends = await pool.fetchval("SELECT count(*) FROM alertmanager_sends")
            finally:
                await service.close()
                await pool.close()

    labels = {"alertname": "PromptPulseAverage", "deployment": "demo", "variant": "a", "monitor": "rel-avg",
              "metric": "relevance", "severity": "page"}
    assert active["labels"] == labels and active["status"]["state"] == "active"
    summary = active["annotations"]["summary"]
    assert summary.startswith("[FIRING] rel-avg: average score of relevance on demo/a is below 3.5")
    assert "(1.5 over 1m, 4 samples" in summary
    assert active["annotations"]["runbook_url"] == RUNBOOK
    link = urlsplit(active["annotations"]["dashboard_url"])
    assert f"{link.scheme}://{link.netloc}{link.path}" == f"{PUBLIC_URL}/dashboard/"
    assert link.fragment.startswith("/d/demo?")
    query = parse_qs(link.fragment.split("?", 1)[1])
    assert datetime.fromisoformat(query["from"][0]) == base + timedelta(minutes=1)
    assert datetime.fromisoformat(query["to"][0]) == base + timedelta(minutes=2)
    assert query["variant"] == ["a"]
    assert active["generatorURL"] == active["annotations"]["dashboard_url"]
    assert datetime.fromisoformat(active["startsAt"]) == base + timedelta(minutes=2)
    assert notified["labels"] == labels and notified["annotations"]["runbook_url"] == RUNBOOK

    assert datetime.fromisoformat(again["updatedAt"]) > datetime.fromisoformat(active["updatedAt"])
    assert again["startsAt"] == active["startsAt"]  # the same alert, kept alive

    [resolved] = receiver.alerts("resolved")
    assert resolved["labels"] == labels
    assert datetime.fromisoformat(resolved["endsAt"]) == base + timedelta(minutes=3)
    assert resolved["annotations"]["summary"].startswith("[RESOLVED] rel-avg")
    assert resolved["annotations"]["runbook_url"] == RUNBOOK
    assert still_active == []
    assert row["version"] == outbox["version"] == 2 and row["sends"] >= 4 and row["last_error"] is None
    assert outbox["state"] == "resolved"
    assert value(metrics, PREFIX + "alertmanager_alerts_sent_total") == row["sends"] == service.alertmanager.stats.sent
    assert value(metrics, PREFIX + "alertmanager_send_failures_total") == 0
    assert_promtool_clean(metrics)
    assert left == left_sends == 0


async def test_without_alertmanager_nothing_is_sent_and_monitors_work(fresh_database, tmp_path) -> None:
    base = minute_base()
    async with webhook_receiver() as receiver, running_alertmanager(tmp_path / "am", receiver.url) as am:
        settings = am_settings(fresh_database, tmp_path / "d", [])
        async with ingested(settings, script_messages(base, SCRIPT)):
            pool = await create_pool(settings)
            service = MonitorService(settings, pool)
            try:
                await service.sync_files()
                await service.open()  # its producer and webhook session (app.py does it at start-up)
                ticks = [await service.once(step(base, minute)) for minute in (1, 2, 3)]
                stop = asyncio.Event()
                await asyncio.wait_for(service.alertmanager.run(stop, 0.1), 5)  # returns at once: nothing to do
                sent = await service.alertmanager.send_due()
                published = await pool.fetchval("SELECT count(*) FROM alerts WHERE published_at IS NOT NULL")
                attempted = await pool.fetchval("SELECT count(*) FROM alertmanager_sends")
            finally:
                await service.close()
                await pool.close()
        await asyncio.sleep(2)  # two group intervals: anything sent would have been notified
        seen = await am.alerts()
    assert [t.alerts for t in ticks] == [0, 1, 1] and published == 2  # monitors, alerts topic as before
    assert sent == 0 and attempted == 0 and not service.alertmanager.enabled
    assert seen == [] and receiver.notifications == []


async def test_an_unreachable_alertmanager_is_retried_and_recorded_and_never_blocks_evaluation(
    fresh_database, tmp_path
) -> None:
    base = minute_base()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stuck, evaluated = asyncio.Event(), asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        stuck.set()
        await evaluated.wait()  # answers only once the test has evaluated meanwhile
        return web.Response(status=503, text="overloaded")

    hanging_app = web.Application()
    hanging_app.router.add_post("/api/v2/alerts", hang)

    settings = am_settings(fresh_database, tmp_path / "d", [url], retry_initial_seconds=0.2,
                           retry_max_seconds=0.5)
    async with (ingested(settings, script_messages(base, SCRIPT)), webhook_receiver() as receiver,
                serving(hanging_app) as hanging_url):
        pool = await create_pool(settings)
        service = MonitorService(settings, pool)
        slow = AlertmanagerSender(pool, settings.aggregator.monitors.alertmanager.model_copy(
            update={"urls": [hanging_url]}), PUBLIC_URL)
        try:
            await service.sync_files()
            await service.open()  # its producer and webhook session (app.py does it at start-up)
            for minute in (1, 2):
                await service.once(step(base, minute))  # rel-avg fires
            # Nothing listens on the configured port: refused, recorded, scheduled again.
            assert await service.alertmanager.send_due() == 0
            failed = await sends(pool, url)
            # Alertmanager comes up on that port: the next due attempt delivers.
            async with running_alertmanager(tmp_path / "am", receiver.url, port=port) as am:
                async def delivered() -> bool:
                    await service.alertmanager.send_due()
                    row = await sends(pool, url)
                    return row is not None and row["sends"] == 1

                await wait_for(delivered, 30, "the retry to reach Alertmanager")
                arrived = await am.alerts(monitor="rel-avg")
                recovered = await sends(pool, url)

            # An Alertmanager that never answers holds a send pass (and its lock) open...
            pending = asyncio.create_task(slow.send_due())
            await asyncio.wait_for(stuck.wait(), 30)
            # The lock is held by a connection with no transaction open while the post waits.
            holders_during_post = await sender_lock_holders(pool)
            # ...while evaluation goes on: the evaluator's lock is not the sender's.
            tick = await service.once(step(base, 3))  # rel-avg resolves
            assert not pending.done()
            evaluated.set()
            assert await pending == 0  # a 503: recorded, retried later
            slow_row = await sends(pool, hanging_url)
            holders_after = await sender_lock_holders(pool)
        finally:
            await slow.close()
            await service.close()
            await pool.close()
    assert holders_during_post == ["idle"]
    assert holders_after == []
    assert tick.leader and tick.alerts == 1
    assert slow_row["attempts"] == 1 and slow_row["last_error"] == "HTTP 503: overloaded"
    assert slow_row["sends"] == 0 and slow_row["version"] == 0
    assert failed["attempts"] >= 1 and failed["last_error"].startswith("request failed (")
    assert failed["next_attempt_at"] is not None and failed["sends"] == 0 and failed["version"] == 0
    assert str(port) not in failed["last_error"]  # the URL (which may hold a password) is not recorded
    assert service.alertmanager.stats.failed >= 1
    assert len(arrived) == 1 and arrived[0]["labels"]["monitor"] == "rel-avg"
    assert recovered["attempts"] == 0 and recovered["last_error"] is None and recovered["version"] == 1


async def test_two_replicas_send_each_change_once(fresh_database, tmp_path) -> None:
    base = minute_base()
    async with webhook_receiver() as receiver, running_alertmanager(tmp_path / "am", receiver.url) as am:
        # A re-send interval far away: any second send of the firing alert would be a duplicate.
        settings = am_settings(fresh_database, tmp_path / "d", [am.url], resend_seconds=3600)
        async with ingested(settings, script_messages(base, SCRIPT)):
            pools = [await create_pool(settings) for _ in range(2)]
            services = [MonitorService(settings, pool) for pool in pools]
            try:
                await services[0].sync_files()
                for service in services:
                    await service.open()
                for minute in (1, 2, 3):
                    await asyncio.gather(*(s.once(step(base, minute)) for s in services))
                    for _ in range(3):  # several rounds, both replicas at once
                        await asyncio.gather(*(s.alertmanager.send_due() for s in services))
                await wait_for(notified_as(receiver, "resolved"), 30, "the resolved notification")
                row = await sends(pools[0], am.url)
            finally:
                for service, pool in zip(services, pools, strict=True):
                    await service.close()
                    await pool.close()
    assert sum(s.alertmanager.stats.sent for s in services) == 2 == row["sends"]  # firing, then resolved
    assert len(receiver.alerts("firing")) == 1 and len(receiver.alerts("resolved")) == 1


async def test_the_monitor_loop_runs_the_sender_beside_evaluation(fresh_database, tmp_path) -> None:
    base = minute_base()
    async with webhook_receiver() as receiver, running_alertmanager(tmp_path / "am", receiver.url) as am:
        settings = am_settings(fresh_database, tmp_path / "d", [am.url], resend_seconds=3600)
        settings.aggregator.monitors.tick_seconds = 0.2
        async with ingested(settings, script_messages(base, SCRIPT)):
            pool = await create_pool(settings)
            service = MonitorService(settings, pool)
            holder = await asyncpg.connect(fresh_database)
            try:
                await service.sync_files()
                await service.open()
                for minute in (1, 2):
                    await service.once(step(base, minute))  # rel-avg fires, at the test's clock
                # The loop evaluates on the wall clock: another session holds the evaluator lock,
                # so it evaluates nothing and the outbox holds only the test's alert.
                await holder.execute("SELECT pg_advisory_lock($1)", EVALUATOR_LOCK)
                loop = asyncio.create_task(service.run())

                async def arrived() -> bool:
                    return bool(await am.alerts(monitor="rel-avg"))

                await wait_for(arrived, 30, "the loop's sender to deliver")
                service.stop()
                await asyncio.wait_for(loop, 30)  # the sender stops with the loop
                leader_ticks = service.stats.leader_ticks
            finally:
                service.stop()
                await holder.close()
                await service.close()
                await pool.close()
    assert service.alertmanager.stats.sent == 1
    assert leader_ticks == 2  # only the test's own two passes evaluated
