"""The dashboard's re-judge views in Chromium (Debian's, driven by Playwright as in
test_dashboard.py): the hand-worked fixture of tests/integration/test_rejudge_pipeline.py stored by
a real aggregator (Kafka, PostgreSQL), then the page signed in with the read key shows the
deployment's re-judges and one re-judge's figures as worked out by hand."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.topics import Topics, delete_topics, ensure_topics
from tests.integration.test_processor_harness import stage
from tests.integration.test_rejudge_pipeline import (
    READ_KEY,
    V1,
    aggregator,
    iso,
    outcome,
    settings_for,
    spec,
    version,
)
from tests.support.aggregator import produce, uuid7_at, wait_caught_up
from tests.support.dashboard import chromium


async def test_rejudge_views_show_the_hand_worked_figures(fresh_database: str, tmp_path: Path) -> None:
    async with stage(tmp_path, spec(V1)) as st:
        current = version(st.deployments_dir)
        settings = settings_for(fresh_database, st.deployments_dir, st.prefix)
        await ensure_topics(settings, [getattr(st.topics, t) for t in ("feedback", "spans")])
        start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
        rng = random.Random(5)
        ids = sorted(uuid7_at(start + timedelta(seconds=i), rng) for i in range(5))
        old, new = [8, 6, 9, 3, 7], [6, 6, 9, 8, 9]
        async with aggregator(settings) as api, chromium() as browser:
            view = await api.call("POST", "/v1/deployments/shop/rejudges", 202, {
                "evaluator": "cites_context", "from": iso(start), "to": iso(start + timedelta(minutes=1))})
            messages = [outcome(rid, start + timedelta(seconds=i), o, "old-version")
                        for i, (rid, o) in enumerate(zip(ids, old, strict=True))]
            messages += [outcome(rid, start + timedelta(seconds=i), n, current, view["id"])
                         for i, (rid, n) in enumerate(zip(ids, new, strict=True))]
            await produce(settings, messages)
            await wait_caught_up(settings)

            page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(f"{api.url}/")
            await page.wait_for_selector("#read-key")
            await page.fill("#read-key", READ_KEY)
            await page.click("#signin button[type=submit]")
            await page.wait_for_selector("#deployments")
            await page.goto(f"{api.url}/dashboard/#/rejudges/shop")
            row = page.locator(f"#rejudges tr[data-rejudge='{view['id']}']")
            await row.wait_for()
            assert await row.locator(".rejudge-status").inner_text() == "requested"
            await row.locator("a").click()
            await page.wait_for_selector("#rejudge-view")
            panel = page.locator(".rejudge-metric[data-metric=cites_context]")

            async def figure(key: str) -> str:
                return (await panel.locator(f"dd[data-figure={key}]").inner_text()).strip()

            # The figures of tests/integration/test_rejudge_pipeline.py, worked out by hand there.
            shown = {key: await figure(key) for key in (
                "pairs", "mean-difference", "interval", "pass-old", "pass-new", "exact-match", "cohen-kappa",
                "weighted-kappa")}
            heading = await panel.locator("h3").inner_text()
            moved = await panel.locator("table.moved tbody tr td:first-child").all_inner_texts()
            progress = await page.locator("#rejudge-progress").inner_text()
        await delete_topics(settings, [Topics.from_settings(settings).feedback, Topics.from_settings(settings).spans])
    assert shown == {"pairs": "5", "mean-difference": "1.000", "interval": "-2.285 … 4.285", "pass-old": "0.600",
                     "pass-new": "0.600", "exact-match": "0.400", "cohen-kappa": "0.167",
                     "weighted-kappa": f"{1 - 0.33 / 0.354:.3f}"}
    assert heading == f"cites_context: old-version → {current}"
    assert moved == [ids[3], *sorted([ids[0], ids[4]])]
    assert progress.startswith("requested:") and "5 stored" in progress
    assert errors == []
