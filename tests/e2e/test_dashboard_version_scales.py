"""The dashboard shows each evaluator version on its own scale, in Chromium (Debian's, driven by
Playwright as in test_dashboard.py), against a real aggregator (Kafka, PostgreSQL): the rubric of
tests/integration/test_evaluator_version_scales.py judged a minute on 1-5 (pass at 3), then moved
to 0-10 (pass at 7). A range holding only the old version's minute shows it on 1-5 with its pass
rate under "at least 3"; a range reaching the new minute shows the new version on 0-10. Before
migration 0015 the old version was shown on the file's current 0-10, with a pass rate of 0%."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Page

from tests.integration.test_aggregator_monitors import minute_base, monitor_settings, step
from tests.integration.test_evaluator_version_scales import (
    NEW_SCORES,
    OLD_SCORES,
    READ_KEY,
    aggregator,
    iso,
    scored,
    write_file,
)
from tests.support.aggregator import produce, topics_with_alerts, wait_caught_up
from tests.support.dashboard import chromium, signed_in, text

pytestmark = pytest.mark.integration
ROW = "#quality-summary tr[data-metric=helpfulness]"


async def helpfulness_over(page: Page, url: str, start: datetime, end: datetime) -> tuple[str, str, str]:
    """(scale note, average, pass rate) of the helpfulness row for the range [start, end)."""
    await page.goto(f"{url}/dashboard/#/d/demo?from={iso(start)}&to={iso(end)}")
    shown_to = end.strftime("%Y-%m-%dT%H:%M:%S.000Z")  # as the view marks its range (toISOString)
    await page.wait_for_selector(f"#main[data-to='{shown_to}'] {ROW}", timeout=30_000)
    return (await text(page, f"{ROW} [data-field=scale]"), await text(page, f"{ROW} [data-field=average]"),
            await text(page, f"{ROW} [data-field=pass_rate]"))


@pytest.mark.timeout(180)
async def test_the_dashboard_shows_each_version_on_its_own_scale(fresh_database: str, tmp_path: Path) -> None:
    folder = tmp_path / "deployments"
    old = write_file(folder, "1-5", 3)
    base = minute_base()
    rng = random.Random(29)
    settings = monitor_settings(fresh_database, folder, read_key=READ_KEY)
    async with topics_with_alerts(settings):
        async with aggregator(settings, step(base, 1)):
            await produce(settings, [scored(base + timedelta(seconds=5), rng, old, variant, score)[0]
                                     for variant, scores in OLD_SCORES.items() for score in scores])
            await wait_caught_up(settings)
        new = write_file(folder, "0-10", 7)
        async with aggregator(settings, step(base, 2)) as url, chromium() as browser:
            await produce(settings, [scored(base + timedelta(minutes=1, seconds=5), rng, new, variant, score)[0]
                                     for variant, scores in NEW_SCORES.items() for score in scores])
            await wait_caught_up(settings)
            page, errors = await signed_in(browser, url, READ_KEY)
            only_old = await helpfulness_over(page, url, base, base + timedelta(minutes=1))
            both = await helpfulness_over(page, url, base, base + timedelta(minutes=2))
    # Old: 5, 4, 2, 1 on 1-5 -> average 3.00, 2 of 4 at least 3. New: 9, 7, 3, 2 -> 5.25, 2 of 4 at least 7.
    assert only_old == (f"1–5 · pass ≥ 3 · version {old}", "3.00", "50.0%")
    assert both == (f"0–10 · pass ≥ 7 · version {new} (of 2)", "5.25", "50.0%")
    assert errors == []
