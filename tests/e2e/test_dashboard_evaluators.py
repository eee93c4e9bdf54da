"""The dashboard in a real headless Chromium shows a deployment's own evaluators beside the
built-in metrics: each with its scale, pass rule and the evaluator version its figures count, and
the figures the query API gives (a real aggregator on Kafka and Postgres; the scored events of
tests/integration/test_aggregator_evaluator_scales.py)."""

from __future__ import annotations

import random

import pytest
from aiohttp import web

from services.aggregator.app import create_app
from shared.deployments import load_deployment_folder
from shared.topics import Topics, delete_topics, ensure_topics
from tests.e2e.test_dashboard import chromium, text
from tests.integration.test_aggregator_evaluator_scales import (
    READ_KEY,
    custom_scale_messages,
    deployments_with_evaluators,
)
from tests.integration.test_aggregator_monitors import minute_base, monitor_settings
from tests.support.aggregator import CONSUMED, create_topics, produce, wait_caught_up


@pytest.mark.timeout(180)
async def test_custom_evaluators_in_the_dashboard(fresh_database, tmp_path) -> None:
    folder = deployments_with_evaluators(tmp_path / "deployments")
    evaluation = load_deployment_folder(folder, check_flow=False).deployments["demo"].evaluation
    settings = monitor_settings(fresh_database, folder, read_key=READ_KEY)
    topics = await create_topics(settings)
    await ensure_topics(settings, [Topics.from_settings(settings).alerts])
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    try:
        await produce(settings, custom_scale_messages(evaluation, minute_base(), random.Random(17)))
        await wait_caught_up(settings)
        async with chromium() as browser:
            page = await (await browser.new_context(viewport={"width": 1440, "height": 900})).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(f"{base}/")
            await page.fill("#read-key", READ_KEY)
            await page.click("#signin button[type=submit]")
            await page.wait_for_selector("#deployments tr[data-deployment=demo]")
            await page.click("#deployments a[href='#/d/demo']")
            await page.wait_for_selector("#quality-summary tr[data-metric=verdict]", timeout=30_000)
            helpful = "#quality-summary tr[data-metric=helpfulness]"
            assert await text(page, f"{helpful} [data-field=average]") == "5.25"
            assert await text(page, f"{helpful} [data-field=pass_rate]") == "50.0%"
            scale = await text(page, f"{helpful} [data-field=scale]")
            version = evaluation.evaluator("helpfulness").version
            assert scale == f"0–10 · pass ≥ 7 · version {version} (of 2)"
            verdict = "#quality-summary tr[data-metric=verdict]"
            assert await text(page, f"{verdict} [data-field=pass_rate]") == "40.0%"
            assert (await text(page, f"{verdict} [data-field=scale]")).startswith("correct / partial / wrong · pass: correct")
            grounded = "#quality-summary tr[data-metric=grounded_share]"
            assert await text(page, f"{grounded} [data-field=average]") == "0.64"  # 0.635, two decimals
            # The built-in metrics are still there, on 1-5, with no scores in this range.
            assert (await text(page, "#quality-summary tr[data-metric=relevance] [data-field=scale]")).startswith("1–5")
            assert errors == []
    finally:
        await runner.cleanup()
        await delete_topics(settings, [*(getattr(topics, r) for r in CONSUMED), topics.alerts])
