"""The dashboard in a real headless Chromium shows a deployment's own evaluators beside the
built-in metrics: each with its scale, pass rule and the evaluator version its figures count, and
the figures the query API gives (a real aggregator on Kafka and Postgres; the scored events of
tests/integration/test_aggregator_evaluator_scales.py)."""

from __future__ import annotations

import random

import pytest

from shared.deployments import load_deployment_folder
from tests.integration.test_aggregator_evaluator_scales import (
    READ_KEY,
    custom_scale_messages,
    deployments_with_evaluators,
)
from tests.integration.test_aggregator_monitors import minute_base, monitor_settings
from tests.support.aggregator import produce, serving_aggregator, topics_with_alerts, wait_caught_up
from tests.support.dashboard import chromium, signed_in, text


@pytest.mark.timeout(180)
async def test_custom_evaluators_in_the_dashboard(fresh_database, tmp_path) -> None:
    folder = deployments_with_evaluators(tmp_path / "deployments")
    evaluation = load_deployment_folder(folder, check_flow=False).deployments["demo"].evaluation
    settings = monitor_settings(fresh_database, folder, read_key=READ_KEY)
    async with topics_with_alerts(settings), serving_aggregator(settings) as (_, base):
        await produce(settings, custom_scale_messages(evaluation, minute_base(), random.Random(17)))
        await wait_caught_up(settings)
        async with chromium() as browser:
            page, errors = await signed_in(browser, base, READ_KEY)
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
