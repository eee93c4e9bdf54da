"""The dashboard in a real headless Chromium, against the whole pipeline (tests/support/live_stack.py).

Debian's ``chromium`` driven by Playwright's Python package (no browser download: the
executable is the system one). The page signs in with the read key, opens the demo deployment
and then must:

- show the query API's own figures: the four cards, quality per metric (average, pass rate,
  samples, violations), the variants side by side, latency percentiles;
- draw a violation marker for every violated monitor window the API counts (the drifting variant
  produces some), beside the monitors' threshold lines;
- raise the request card by exactly N when N requests go through the gateway, without a reload,
  while the network log shows no polling: after the load, nothing but the one EventSource, no
  figures fetched again (only the violation markers and monitor states may be re-read, once
  per new minute of traffic the stream announces);
- list the sampled requests with their scores and reasons, and open a request's trace as a
  waterfall holding the gateway's spans and the processor's judge spans, with their attributes;
- load nothing from any other origin (it works offline), and keep the read key out of the page
  (only the HttpOnly session cookie).

Screenshots go to the test's folder, and to ``PROMPTPULSE_SCREENSHOTS_DIR`` when set
(docs/img holds the committed ones). ``PROMPTPULSE_DASHBOARD_WARMUP_SECONDS`` sends background
traffic for that long before the browser opens, so that screenshots show minutes of series;
the test's assertions do not depend on it.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import pytest
from playwright.async_api import Page

from tests.support.dashboard import chromium, text
from tests.support.live_stack import LiveStack, StackOptions, live_stack

pytestmark = pytest.mark.integration

WARMUP_SECONDS = float(os.environ.get("PROMPTPULSE_DASHBOARD_WARMUP_SECONDS", "0"))
METRICS = ["groundedness", "relevance", "coherence", "fluency"]
DRIFTING, HEALTHY = "variant_1", "variant_0"
NEW_REQUESTS = 5

# One-minute windows and a few seconds of grace, so the drifting variant violates within a minute.
MONITORS: list[dict[str, Any]] = [
    {"id": f"e2e-relevance-{v}", "variant": v, "statistic": "average", "metric": "relevance",
     "threshold": 3.5, "window": "1m", "cadence": "1m", "min_samples": 2}
    for v in (HEALTHY, DRIFTING)
] + [
    {"id": f"e2e-groundedness-{v}", "variant": v, "statistic": "pass_rate", "metric": "groundedness",
     "score_threshold": 3, "threshold": 0.8, "window": "1m", "cadence": "1m", "min_samples": 2}
    for v in (HEALTHY, DRIFTING)
] + [{"id": "e2e-error-rate", "statistic": "error_rate", "threshold": 0.05, "window": "1m", "min_samples": 5}]

OPTIONS = StackOptions(
    sampling_rate=1.0,
    monitors=MONITORS,
    # From the start; with a warm-up, part-way through it, so screenshots show the drop.
    drift_schedule=[{"variant": DRIFTING, "level": 0.7, "after_seconds": round(WARMUP_SECONDS * 0.4)}],
    # Some latency, so the charts and the waterfall have something to show.
    llm_latency={"ttft_ms": 30, "tokens_per_second": 600, "jitter": 0.3},
    env={"aggregator": {"PROMPTPULSE_AGGREGATOR__MONITORS__GRACE_SECONDS": "3",
                        "PROMPTPULSE_AGGREGATOR__MONITORS__TICK_SECONDS": "1"}},
)
QUESTIONS = ["How are requests sampled?", "What does the gateway do?", "How is quality judged?",
             "What is a variant?", "How do monitors fire?", "Where are traces stored?"]


# -- the same formatting as static/format.js, to read the page's numbers back -------------------

def number(text: str) -> float:
    cleaned = text.replace(",", "").replace("%", "").replace("ms", "").replace("s", "").strip()
    return float(cleaned)


def milliseconds(text: str) -> float:
    value = number(text)
    return value * 1000 if text.strip().endswith(" s") else value


def close_to(shown: float, expected: float, decimals: int) -> bool:
    """The page rounds to ``decimals``: allow half a unit of the last digit shown."""
    return abs(shown - expected) <= 0.5 * 10 ** -decimals + 1e-9


# -- traffic ---------------------------------------------------------------------------------

async def send(stack: LiveStack, session: aiohttp.ClientSession, question: str, variant: str,
               stream: bool = False) -> str:
    headers = {"api-key": stack.demo_key, "x-promptpulse-variant": variant}
    url = stack.score_url + ("?stream=true" if stream else "")
    async with session.post(url, json={"question": question}, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        if not stream:
            return (await resp.json())["request_id"]
        body = await resp.text()
    match = re.search(r'"request_id":\s*"([^"]+)"', body)
    return match.group(1) if match else ""


async def warm_up(stack: LiveStack, seconds: float) -> None:
    """Background traffic for the screenshots (both variants, some streamed)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    async with aiohttp.ClientSession() as session:
        i = 0
        while loop.time() < end:
            i += 1
            await send(stack, session, QUESTIONS[i % len(QUESTIONS)], (HEALTHY, DRIFTING)[i % 2], stream=i % 3 == 0)
            await asyncio.sleep(0.5)


async def judged(stack: LiveStack, request_ids: set[str]) -> bool:
    page = await stack.api("/v1/deployments/demo/requests?sampled=true&limit=500")
    done = {r["request_id"] for r in page["requests"]
            # The built-in metrics: the demo's own evaluators (a rubric, code, a flow) come on top.
            if len([e for e in r["evaluations"] if e["outcome"] == "scored" and e["metric"] in METRICS]) == len(METRICS)}
    return request_ids <= done


async def trace_with_judges(stack: LiveStack, trace_id: str) -> dict[str, Any] | None:
    async with aiohttp.ClientSession() as session, session.get(
        f"{stack.aggregator.url}/v1/traces/{trace_id}", headers={"Authorization": f"Bearer {stack.read_key}"}
    ) as resp:
        if resp.status != 200:
            return None
        trace = await resp.json()
    spans = flatten(trace["roots"])
    judges = [s for s in spans if s["service"] == "processor" and s["name"].startswith("chat ")]
    gateway = [s for s in spans if s["service"] == "gateway"]
    return trace if len(judges) >= len(METRICS) and len(gateway) >= 3 else None


def flatten(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for span in spans:
        out.append(span)
        out.extend(flatten(span["children"]))
    return out


async def violated_windows(stack: LiveStack) -> int:
    return len((await stack.api("/v1/deployments/demo/violations"))["violations"])


# -- the browser ------------------------------------------------------------------------------

class Shots:
    def __init__(self, folder: Path) -> None:
        self.folders = [folder]
        extra = os.environ.get("PROMPTPULSE_SCREENSHOTS_DIR")
        if extra:
            self.folders.append(Path(extra))
        for f in self.folders:
            f.mkdir(parents=True, exist_ok=True)

    async def page(self, page: Page, name: str, **options: Any) -> None:
        data = await page.screenshot(**options)
        for folder in self.folders:
            (folder / f"dashboard-{name}.png").write_bytes(data)

    async def element(self, page: Page, selector: str, name: str, margin: int = 12) -> None:
        # Clipped from a full-page capture: an element screenshot of something taller than the
        # window would scroll, and the sticky top bar would land in the middle of it.
        box = await page.locator(selector).bounding_box()
        assert box is not None, selector
        scroll = await page.evaluate("[scrollX, scrollY]")
        x, y = max(0, box["x"] + scroll[0] - margin), max(0, box["y"] + scroll[1] - margin)
        clip = {"x": x, "y": y, "width": box["width"] + 2 * margin, "height": box["height"] + 2 * margin}
        data = await page.screenshot(full_page=True, clip=clip)
        for folder in self.folders:
            (folder / f"dashboard-{name}.png").write_bytes(data)


async def wait_quiet_second(low: int = 8, high: int = 40) -> None:
    """Wait until the wall clock is between ``low`` and ``high`` seconds into a minute.

    Monitor windows end on minute boundaries and are evaluated a few seconds later (3 s of
    grace here): comparing the page's violation counts with the API's away from that moment
    means both read the same evaluated windows.
    """
    second = datetime.now(UTC).second + datetime.now(UTC).microsecond / 1e6
    if not low <= second <= high:
        await asyncio.sleep((low - second) % 60)


@pytest.mark.timeout(240 + WARMUP_SECONDS)
async def test_dashboard_in_chromium(tmp_path: Path) -> None:
    shots = Shots(tmp_path / "screenshots")
    async with live_stack(tmp_path / "stack", OPTIONS) as stack, chromium() as browser:
        base = stack.aggregator.url
        if WARMUP_SECONDS:
            await warm_up(stack, WARMUP_SECONDS)

        # Traffic to look at: both variants, two streamed (time to first token), all judged.
        async with aiohttp.ClientSession() as session:
            ids = [await send(stack, session, QUESTIONS[i % len(QUESTIONS)], (HEALTHY, DRIFTING)[i % 2],
                              stream=i in (2, 5)) for i in range(8)]
        plain = [ids[i] for i in range(8) if i not in (2, 5)]
        await stack.wait_for(lambda: judged(stack, set(plain)), 90, "the first requests judged")
        newest = (await stack.api("/v1/deployments/demo/requests?sampled=true&limit=1"))["requests"][0]
        traced = await stack.wait_for(lambda: trace_with_judges(stack, newest["trace_id"]), 60,
                                      "the newest request's trace with its judge spans")
        # variant_1 answers off-topic from the start: its monitors violate once their window closes.
        await stack.wait_for(lambda: violated_windows(stack), 100, "a violated monitor window")
        await wait_quiet_second()

        context = await browser.new_context(viewport={"width": 1440, "height": 900})
        page = await context.new_page()
        log: list[tuple[float, str, str]] = []
        page.on("request", lambda r: log.append((time.monotonic(), r.resource_type, r.url)))
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))

        # Sign in once with the read key; the page keeps only the HttpOnly cookie.
        await page.goto(f"{base}/")
        await page.wait_for_selector("#read-key")
        await shots.page(page, "signin")
        await page.fill("#read-key", "not-the-key-at-all")
        await page.click("#signin button[type=submit]")
        await page.wait_for_selector("#signin .form-error:has-text('not accepted')")
        await page.fill("#read-key", stack.read_key)
        await page.click("#signin button[type=submit]")
        await page.wait_for_selector("#deployments tr[data-deployment=demo]")
        await shots.page(page, "deployments")
        cookies = {c["name"]: c for c in await context.cookies()}
        assert cookies["pp_session"]["httpOnly"] and cookies["pp_session"]["sameSite"] == "Strict"
        stored = await page.evaluate("JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + location.href"
                                     " + document.documentElement.outerHTML")
        assert stack.read_key not in stored

        # The monitoring view, live.
        await page.click("#deployments a[href='#/d/demo']")
        await page.wait_for_selector("#status[data-state=live]", timeout=30_000)
        main = page.locator("#main")
        start, end = await main.get_attribute("data-from"), await main.get_attribute("data-to")
        api = await stack.api(f"/v1/deployments/demo/metrics?from={quote(start)}&to={quote(end)}&step=1m")
        overview = api["overview"]

        # The dashboard's own route agrees with the metrics route, and is guarded like it.
        window = f"from={quote(start)}&to={quote(end)}"
        violations = await stack.api(f"/v1/deployments/demo/violations?{window}")
        assert len(violations["violations"]) == sum(m["violations"] for m in overview["monitors"])
        assert {m: v["violations"] for m, v in violations["by_metric"].items()} == {
            m: q["violations"]["violations"] for m, q in overview["quality"].items() if q["violations"]["windows"]}
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/v1/deployments/demo/violations") as resp:
                assert resp.status == 401
            async with session.get(f"{base}/v1/deployments/demo/violations?stpe=1m",
                                   headers={"Authorization": f"Bearer {stack.read_key}"}) as resp:
                assert resp.status == 400 and (await resp.json())["error"]["field"] == "stpe"
            async with session.get(f"{base}/dashboard/static/app.js") as resp:
                assert resp.status == 200 and resp.content_type in ("text/javascript", "application/javascript")
                assert "script-src 'self'" in resp.headers["Content-Security-Policy"]

        # The cards are the API's figures.
        assert overview["requests"] >= 8
        assert number(await text(page, "[data-card=requests] .card-value")) == overview["requests"]
        assert number(await text(page, "[data-card=tokens] .card-value")) == overview["tokens"]["total"]
        assert number(await text(page, "[data-card=prompt_tokens] .card-value")) == overview["tokens"]["prompt"]
        assert number(await text(page, "[data-card=completion_tokens] .card-value")) == overview["tokens"]["completion"]

        # Quality per metric, with the monitors' violation counts.
        for metric in METRICS:
            q = overview["quality"][metric]
            row = f"#quality-summary tr[data-metric={metric}]"
            assert close_to(number(await text(page, f"{row} [data-field=average]")), q["average"], 2), metric
            assert close_to(number(await text(page, f"{row} [data-field=pass_rate]")), q["pass_rate"] * 100, 1), metric
            assert number(await text(page, f"{row} [data-field=samples]")) == q["samples"]
            if metric in ("relevance", "groundedness"):
                assert number(await text(page, f"{row} [data-field=violations]")) == q["violations"]["violations"]
        # One marker per violated window of the monitors shown, and their threshold lines.
        markers = await page.locator("[data-quality-metric] svg .marker").count()
        expected_markers = sum(m["violations"] for m in overview["monitors"] if m["metric"] in ("relevance", "groundedness"))
        assert expected_markers >= 1 and markers == expected_markers
        assert await page.locator("[data-quality-metric=relevance] svg .threshold").count() == 1  # both at 3.5
        assert await page.locator("[data-quality-metric=groundedness] svg .threshold").count() == 1  # both at 80%
        assert await page.locator("[data-quality-metric=coherence] svg .threshold").count() == 0

        # Operations: latency percentiles over the range, as the API merged them.
        for q in ("p50", "p95", "p99"):
            shown = milliseconds(await text(page, f"[data-tile=latency_{q}] .tile-value"))
            assert close_to(shown, overview["latency_ms"][q], 0), q
        assert close_to(milliseconds(await text(page, "[data-tile=ttft_p50] .tile-value")),
                        overview["time_to_first_token_ms"]["p50"], 0)

        # Variants side by side.
        assert set(api["by_variant"]) == {HEALTHY, DRIFTING}
        for variant, figures in api["by_variant"].items():
            cell = f"#variants-table tr[data-row=%s] td[data-variant={variant}]"
            assert number(await text(page, cell % "requests" + " .value")) == figures["requests"]
            assert number(await text(page, cell % "tokens")) == figures["tokens"]["total"]
            shown = number(await text(page, cell % "quality-relevance" + " .value"))
            assert close_to(shown, figures["quality"]["relevance"]["average"], 2)
        drifting = api["by_variant"][DRIFTING]["quality"]["groundedness"]["average"]
        assert drifting < api["by_variant"][HEALTHY]["quality"]["groundedness"]["average"]
        # The drifting variant's difference from the first one, with the compare route's interval.
        compared = await stack.api(f"/v1/deployments/demo/compare?baseline={HEALTHY}&candidate={DRIFTING}&{window}")
        for metric, q in compared["quality"].items():
            # Quoted: a flow evaluator's metric has a dot (eval_groundedness.citation).
            cell = f'#variants-table tr[data-row="difference-{metric}"] td[data-variant={DRIFTING}]'
            if q["average_difference"] is None:
                continue
            value = page.locator(f"{cell} .value")
            assert await value.get_attribute("data-verdict") == q["verdict"], metric
            assert number(await value.inner_text()) == round(q["average_difference"]["value"], 2), metric
            assert await text(page, f'#variants-table tr[data-row="difference-{metric}"] td[data-variant={HEALTHY}]') == "baseline"
        assert compared["quality"]["groundedness"]["average_difference"]["value"] < 0

        # No polling: quiet while nothing happens, then N requests arrive through the stream only.
        after_load = len(log)
        await asyncio.sleep(3)
        assert log[after_load:] == [], f"the page fetched while nothing happened: {log[after_load:]}"
        before = int(number(await text(page, "[data-card=requests] .card-value")))
        async with aiohttp.ClientSession() as session:
            for i in range(NEW_REQUESTS):
                await send(stack, session, QUESTIONS[i % len(QUESTIONS)], (HEALTHY, DRIFTING)[i % 2])
        await page.wait_for_function(
            "n => document.querySelector('[data-card=requests] .card-value').textContent.replace(/,/g, '') === String(n)",
            arg=before + NEW_REQUESTS, timeout=30_000)
        # Then the tokens of their answers, equal to the API's for the range once it has them all.
        start, end = await main.get_attribute("data-from"), await main.get_attribute("data-to")
        path = f"/v1/deployments/demo/metrics?from={quote(start)}&to={quote(end)}&step=1m"

        async def answered() -> dict[str, Any] | None:
            o = (await stack.api(path))["overview"]
            return o if o["responses"] == o["requests"] == before + NEW_REQUESTS else None

        now = await stack.wait_for(answered, 30, "every new request answered")
        await page.wait_for_function(
            "n => document.querySelector('[data-card=tokens] .card-value').textContent.replace(/,/g, '') === String(n)",
            arg=now["tokens"]["total"], timeout=30_000)
        # And their scores, once judged: the quality figures move by exact sums too.
        async def scored() -> dict[str, Any] | None:
            o = (await stack.api(path))["overview"]
            ok = all(o["quality"][m]["samples"] == o["requests"] for m in METRICS) and o["requests"] == before + NEW_REQUESTS
            return o if ok else None

        now = await stack.wait_for(scored, 60, "every new request judged")
        for metric in METRICS:
            row = f"#quality-summary tr[data-metric={metric}]"
            await page.wait_for_function(
                "([row, n]) => document.querySelector(row + ' [data-field=samples]').textContent.replace(/,/g, '') === String(n)",
                arg=[row, now["quality"][metric]["samples"]], timeout=30_000)
            assert close_to(number(await text(page, f"{row} [data-field=average]")), now["quality"][metric]["average"], 2)
            assert close_to(number(await text(page, f"{row} [data-field=pass_rate]")), now["quality"][metric]["pass_rate"] * 100, 1)
        after = log[after_load:]
        fetched = [urlsplit(url).path for _, kind, url in after]
        refetched = [p for p in fetched if p.endswith(("/metrics", "/requests", "/deployments")) or "/traces/" in p]
        assert refetched == [], f"figures fetched again instead of applied from the stream: {after}"
        assert all(p.endswith(("/violations", "/monitors")) for p in fetched), after
        assert len(fetched) <= 4, f"monitor states read more than once per new minute: {after}"
        streams = [url for _, kind, url in log if kind == "eventsource"]
        assert len(streams) == 1 and "/v1/stream/metrics?deployment=demo" in streams[0]
        assert await page.locator("#requests-new").inner_text() != ""  # "N new requests ... Refresh"

        # The sampled requests table: scores and reasons; the newest judged request's trace.
        rows = page.locator("#requests-table tr.request")
        assert await rows.count() >= 5
        row = page.locator(f"#requests-table tr.request[data-request-id='{newest['request_id']}']")
        for evaluation in newest["evaluations"]:
            line = row.locator(f'.score-line[data-metric="{evaluation["metric"]}"]')
            # As the evaluator gave it: a label, or the value on its scale (a 1-5 built-in: the score).
            value = evaluation["value"]
            shown = evaluation["label"] or (str(int(value)) if value == int(value) else str(round(value, 3)))
            assert await line.locator(".score").inner_text() == shown
            assert (await line.locator(".score-reason").inner_text()).strip() == evaluation["reason"].strip()
        await shots.element(page, "#requests", "requests")
        await row.locator(".trace-button").click()
        await page.wait_for_selector("#waterfall .wf-row[data-span-id]")
        spans = flatten(traced["roots"])
        shown_ids = set(await page.locator("#waterfall .wf-row[data-span-id]").evaluate_all(
            "rows => rows.map(r => r.dataset.spanId)"))
        assert {s["span_id"] for s in spans} <= shown_ids
        for span in spans:
            if span["service"] == "gateway":
                assert await page.locator(f"#waterfall .wf-row[data-span-id='{span['span_id']}'][data-service=gateway]").count() == 1
        judges = page.locator("#waterfall .wf-row[data-service=processor][data-judge=true]")
        assert await judges.count() >= len(METRICS)
        verdicts = await page.locator("#waterfall .verdict").all_inner_texts()
        # Every built-in judge's verdict (the demo's code evaluator and evaluation flow call no
        # judge of their own in this span; its rubric's verdict is there too).
        builtin = [f"{e['metric']} {e['score']}" for e in newest["evaluations"] if e["metric"] in METRICS]
        assert len(builtin) == len(METRICS) and set(builtin) <= set(verdicts)
        judge = next(s for s in spans if s["service"] == "processor" and s["name"].startswith("chat "))
        await page.locator(f"#waterfall .wf-row[data-span-id='{judge['span_id']}']").click()
        detail = await text(page, "#span-detail")
        assert judge["name"] in detail
        for key, value in judge["attributes"].items():
            assert key in detail and (not isinstance(value, str) or value in detail), key
        await shots.page(page, "trace")
        await page.keyboard.press("Escape")
        await page.wait_for_selector("#trace", state="detached")

        # Another range: the figures are read again for it, and the stream reopened.
        await page.click("#range button[data-range='15m']")
        await page.wait_for_selector("#range button[data-range='15m'].active")
        await page.wait_for_selector("#status[data-state=live]", timeout=30_000)
        start, end = await main.get_attribute("data-from"), await main.get_attribute("data-to")
        assert datetime.fromisoformat(end) - datetime.fromisoformat(start) == timedelta(minutes=15)
        fifteen = await stack.api(f"/v1/deployments/demo/metrics?from={quote(start)}&to={quote(end)}&step=1m")
        assert number(await text(page, "[data-card=requests] .card-value")) == fifteen["overview"]["requests"]
        assert len([url for _, kind, url in log if kind == "eventsource"]) == 2
        await shots.page(page, "overview")
        await shots.element(page, "#quality", "quality")
        await shots.element(page, "#operations", "operations")
        await shots.element(page, "#variants", "variants")

        # The on-call path: a request id (the gateway's x-request-id) in the top bar's box opens
        # that request with its scores and reasons, and its trace; an unknown id says so.
        await page.fill("#find-request", newest["request_id"])
        await page.press("#find-request", "Enter")
        await page.wait_for_selector(f"#request-view[data-request-id='{newest['request_id']}']")
        shown = await text(page, "#request-view")
        assert newest["trace_id"] in shown and newest["variant"] in shown
        for evaluation in newest["evaluations"]:
            assert evaluation["reason"].strip() in shown, evaluation
        await shots.page(page, "request")
        await page.locator("#request-view .trace-button").click()
        await page.wait_for_selector("#waterfall .wf-row[data-span-id]")
        await page.keyboard.press("Escape")
        await page.wait_for_selector("#trace", state="detached")
        await page.fill("#find-request", "0192f000-0000-7000-8000-000000000000")
        await page.press("#find-request", "Enter")
        await page.wait_for_selector("#request-missing")

        # Offline: everything came from the aggregator itself; nothing broke in the page.
        origins = {f"{urlsplit(url).scheme}://{urlsplit(url).netloc}" for _, _, url in log}
        assert origins == {base}, origins
        assert errors == []
        await context.close()
