"""The dashboard's "judges against people" view in Chromium (Debian's, driven by Playwright as in
test_dashboard.py) against the whole stack as real processes: requests judged by the processor
with llmsim, people's labels sent through the gateway's feedback route and `promptpulse annotate`,
then the page, signed in with the read key and reached from the monitoring view's link, shows per
evaluator version the figures the agreement route gives, and "not enough labels (n of N)" for a
version with fewer labelled requests than the minimum."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_human_labels import cli, feedback
from tests.support.dashboard import chromium
from tests.support.live_stack import StackOptions, live_stack

pytestmark = pytest.mark.integration

REQUESTS = 8
FEW = 2  # coherence is labelled on this many requests only
MIN_LABELS = 5


def fixed(value: float | None) -> str:
    """``Number.toFixed(3)`` as the page formats a figure (ties away from zero, on the exact binary value)."""
    if value is None:
        return "–"
    return str(Decimal(value).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP))


def person(judge: float, position: int) -> int:
    """A person's score: agrees with the judge on some requests, one point off either way on others."""
    step = (0, -1, 1, 0, -2)[position % 5]
    return int(min(5, max(1, judge + step)))


@pytest.mark.timeout(300)
async def test_agreement_view_shows_the_api_figures_and_the_not_enough_state(tmp_path: Path) -> None:
    # One variant drifts off topic, so the judge's relevance scores spread over the scale (a judge
    # that gives one score to everything has a weighted kappa of 0 whatever people say).
    options = StackOptions(sampling_rate=1.0, metrics=["relevance", "coherence"], monitors=[],
                           drift_schedule=[{"variant": "variant_1", "level": 0.9, "after_seconds": 0}])
    async with live_stack(tmp_path, options) as stack:
        ids = []
        for index in range(REQUESTS):
            status, body = await stack.score(f"Where is parcel {index} now?")
            assert status == 200
            ids.append(body["request_id"])

        async def judged() -> dict[tuple[str, str], float] | None:
            scores = {}
            for request_id in ids:
                try:
                    doc = await stack.api(f"/v1/requests/{request_id}")
                except AssertionError:  # a 404 until the aggregator has stored the request
                    return None
                for e in doc.get("evaluations") or []:
                    if e.get("outcome") == "scored":
                        scores[(request_id, e["metric"])] = float(e["score"])
            return scores if len(scores) == 2 * REQUESTS else None

        scores = await stack.wait_for(judged, 120, "every request judged on relevance and coherence")
        for position, request_id in enumerate(ids):
            labels = {"relevance": person(scores[(request_id, "relevance")], position)}
            if position < FEW:
                labels["coherence"] = person(scores[(request_id, "coherence")], position + 1)
            if position % 2 == 0:  # a reviewer through the CLI
                code, out, err = await cli(stack, "annotate", request_id,
                                           *(f"{m}={v}" for m, v in labels.items()))
                assert code == 0, err
            else:
                status, _ = await feedback(stack, {"request_id": request_id, "labels": labels})
                assert status == 202

        async def reported() -> dict[str, Any] | None:
            doc = await stack.api(f"/v1/deployments/demo/agreement?min_labels={MIN_LABELS}")
            counts = {row["metric"]: row["labelled"] for row in doc["agreement"]}
            return doc if counts == {"relevance": REQUESTS, "coherence": FEW} else None

        doc = await stack.wait_for(reported, 60, "every label in the agreement figures")
        by_metric = {row["metric"]: row for row in doc["agreement"]}
        relevance = by_metric["relevance"]
        assert relevance["enough"] and relevance["weighted_kappa"] is not None
        assert by_metric["coherence"]["enough"] is False

        async with chromium() as browser:
            page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(f"{stack.aggregator.url}/")
            await page.fill("#read-key", stack.read_key)
            await page.click("#signin button[type=submit]")
            await page.wait_for_selector("#deployments tr[data-deployment=demo]")
            # From the monitoring view's link (the default minimum: 10 labelled requests) ...
            await page.goto(f"{stack.aggregator.url}/dashboard/#/d/demo")
            await page.click("#agreement-link", timeout=30_000)
            await page.wait_for_selector("#agreement tbody tr")
            default_rows = await shown(page)
            # ... then with the minimum set to 5 in the view: relevance has enough labels, coherence not.
            await page.fill("#agreement-min", str(MIN_LABELS))
            await page.press("#agreement-min", "Tab")  # the change event
            await page.wait_for_selector(f"#agreement[data-min-labels='{MIN_LABELS}'] tbody tr")
            rows = await shown(page)
            # A range from the address that is none of the control's choices is shown as the range,
            # and stays it when the minimum changes (it was reloaded as "last 1 d").
            await page.goto(f"{stack.aggregator.url}/dashboard/#/agreement/demo?days=14")
            await page.wait_for_selector("#agreement[data-min-labels='10'] tbody tr")
            custom_range = [await page.input_value("#agreement-days")]
            await page.fill("#agreement-min", str(MIN_LABELS))
            await page.press("#agreement-min", "Tab")
            await page.wait_for_selector(f"#agreement[data-min-labels='{MIN_LABELS}'] tbody tr")
            custom_range += [await page.input_value("#agreement-days"), await page.evaluate("location.hash")]
    assert errors == []
    assert custom_range == ["14", "14", f"#/agreement/demo?days=14&min_labels={MIN_LABELS}"]
    version = relevance["evaluator_version"]
    interval = relevance["mean_difference"]
    assert rows["relevance"] == {
        "version": version,
        "labelled": str(REQUESTS),
        "weighted-kappa": fixed(relevance["weighted_kappa"]),
        "exact-match": fixed(relevance["exact_match_rate"]),
        "mean-difference": ("+" if interval["value"] > 0 else "") + fixed(interval["value"]),
        "interval": f"{fixed(interval['low'])} … {fixed(interval['high'])}",
    }
    assert rows["coherence"] == {"version": by_metric["coherence"]["evaluator_version"], "labelled": str(FEW),
                                 "not-enough": f"not enough labels ({FEW} of {MIN_LABELS})"}
    assert default_rows["relevance"] == {"version": version, "labelled": str(REQUESTS),
                                         "not-enough": f"not enough labels ({REQUESTS} of 10)"}


async def shown(page: Any) -> dict[str, dict[str, str]]:
    """Each row of the view: the text of each figure cell (version included) by its name."""
    out: dict[str, dict[str, str]] = {}
    for row in await page.locator("#agreement tbody tr").all():
        cells = {}
        for cell in await row.locator("td[data-figure]").all():
            cells[await cell.get_attribute("data-figure") or ""] = (await cell.inner_text()).strip()
        out[await row.get_attribute("data-metric") or ""] = cells
    return out
