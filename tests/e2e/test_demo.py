"""The one-command demo, brought forward: drift, the drifting variant's alert, and nothing else.

``make up`` runs the demo deployment with llmsim drifting ``variant_1`` three minutes in, the
traffic generator, and prints alerts (docs/demo.md). Here the same pieces run as a live stack
(tests/support/live_stack.py): the demo deployment's own monitors, shortened to one-minute
windows and a few seconds of grace; ``variant_1`` drifting from the start; the real traffic
generator (services/demo/traffic.py) against the stack's gateway. The alert is read from the
alerts topic by a plain Kafka consumer, and from the output of `promptpulse alerts subscribe`,
the command `make up` ends with.

A second test holds the generator to its promise of outliving the gateway, against a small
stand-in gateway that goes away and comes back (no Kafka needed there).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiokafka import TopicPartition

from services.demo.dataset import QUESTIONS
from services.demo.settings import KeySource, TrafficSection
from services.demo.traffic import Counts, TrafficGenerator
from services.llmsim import tokens
from services.llmsim.answers import compose_answer, degrade
from services.llmsim.judge import judge, read_judge_request
from services.llmsim.prompt import chat_view
from services.llmsim.settings import LlmsimSection
from services.processor.evaluation.kinds.builtin.prompts import single_metric_messages
from shared.events.codec import decode_alert_json
from shared.events.messages import Alert, AlertState
from shared.flow.template import compile_template, render_chat, render_prompt
from shared.kafka import make_consumer
from tests.support.live_stack import (
    DEMO_DEPLOYMENT,
    DEMO_FLOW,
    REPO,
    LiveStack,
    StackOptions,
    free_port,
    live_stack,
)

DRIFTING, HEALTHY = "variant_1", "variant_0"
PROMPTPULSE = Path(sys.executable).parent / "promptpulse"  # the console script `make up` runs
# The level make up uses (deploy/local/stack.sh); brought forward to the stack's start.
DRIFT = [{"variant": DRIFTING, "level": 0.7, "after_seconds": 0}]


def shortened_demo_monitors() -> list[dict[str, Any]]:
    """The demo deployment's monitors as they are, except one-minute windows and cadence."""
    monitors = yaml.safe_load(DEMO_DEPLOYMENT.read_text())["monitors"]
    assert any(m.get("variant") == DRIFTING for m in monitors), "the demo watches variant_1 on its own"
    assert any(m.get("variant") == HEALTHY for m in monitors), "the demo watches variant_0 on its own"
    return [{**m, "window": "1m", "cadence": "1m"} for m in monitors]


@contextlib.asynccontextmanager
async def alerts_read(stack: LiveStack) -> AsyncIterator[list[Alert]]:
    """Every alert on the stack's alerts topic, from the beginning, appended as it arrives."""
    topic = stack.topics.alerts
    consumer = make_consumer(stack.kafka, group_id=None, client_id=f"test-demo-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    found: list[Alert] = []

    async def read() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                found.extend(decode_alert_json(record.value) for record in records)

    try:
        # live_stack made the topic with this many partitions.
        partitions = [TopicPartition(topic, p) for p in range(stack.kafka.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        reader = asyncio.create_task(read())
        try:
            yield found
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def subscriber(stack: LiveStack) -> AsyncIterator[list[str]]:
    """What `make up` ends with: `promptpulse alerts subscribe --deployment demo`, its stdout
    lines collected as they come. Yields once it listens (it reads alerts from then on)."""
    process = await asyncio.create_subprocess_exec(
        str(PROMPTPULSE), "alerts", "subscribe", "--deployment", "demo", cwd=REPO, env=stack.cli_env(),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    lines: list[str] = []
    notices: list[str] = []

    async def collect(stream: asyncio.StreamReader, into: list[str]) -> None:
        async for raw in stream:
            into.append(raw.decode(errors="replace").rstrip())

    readers = [asyncio.create_task(collect(process.stdout, lines)),  # type: ignore[arg-type]
               asyncio.create_task(collect(process.stderr, notices))]  # type: ignore[arg-type]
    try:
        async def listening() -> bool:
            assert process.returncode is None, f"alerts subscribe exited: {notices}"
            return any("listening" in line for line in notices)

        await stack.wait_for(listening, within=60, what="`promptpulse alerts subscribe` to listen")
        yield lines
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)  # Ctrl-C, as a user stops it
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()
        await asyncio.gather(*readers, return_exceptions=True)


def firing(alerts: list[Alert], variant: str) -> list[Alert]:
    return [a for a in alerts if a.state == AlertState.ALERT_STATE_FIRING and a.variant == variant]


@pytest.mark.timeout(420)
async def test_the_drifting_variant_fires_its_monitor_and_the_healthy_one_does_not(tmp_path: Path) -> None:
    options = StackOptions(
        sampling_rate=0.25,  # the demo samples 10% over minutes; a one-minute window needs more
        monitors=shortened_demo_monitors(),
        drift_schedule=DRIFT,
        env={"aggregator": {
            "PROMPTPULSE_AGGREGATOR__MONITORS__GRACE_SECONDS": "5",
            "PROMPTPULSE_AGGREGATOR__MONITORS__TICK_SECONDS": "1",
        }},
    )
    async with live_stack(tmp_path, options) as stack, alerts_read(stack) as alerts, \
            subscriber(stack) as printed:
        traffic = TrafficGenerator(
            TrafficSection(rate=4, stream_share=0.25, feedback_share=0.05, status_every_seconds=15, seed=6),
            stack.gateway.url, KeySource(fixed=stack.demo_key),
        )
        sending = asyncio.create_task(traffic.run())
        try:
            async def drifting_alert() -> Alert | None:
                if sending.done():
                    sending.result()  # the generator stopped on its own: show why
                    raise AssertionError("the traffic generator stopped")
                fired = firing(alerts, DRIFTING)
                return fired[0] if fired else None

            alert = await stack.wait_for(drifting_alert, within=300, what=f"a firing alert naming {DRIFTING}",
                                         every=1.0)

            async def healthy_judged() -> dict | None:
                # The healthy variant's monitor must have judged a window with enough samples (the
                # first windows after start-up may not have), or "it never fired" would prove nothing.
                found = {m["id"]: m for m in (await stack.api("/v1/deployments/demo/monitors"))["monitors"]}
                window = found[f"demo-relevance-{HEALTHY}"]["last_window"]
                return found if window and window["enough_samples"] else None

            monitors = await stack.wait_for(healthy_judged, within=150, every=1.0,
                                            what=f"a window of {HEALTHY}'s monitor with enough samples")

            async def printed_alert() -> list[str]:
                return [line for line in printed if "FIRING" in line and alert.monitor_id in line]

            shown = await stack.wait_for(printed_alert, within=60, what="the alert printed by alerts subscribe")
        finally:
            traffic.stop()
            totals: Counts = await sending

    # The alert names the drifting variant and the metric that fell, with the figures behind it.
    assert alert.deployment == "demo"
    assert alert.monitor_id == f"demo-relevance-{DRIFTING}"
    assert alert.metric == "relevance"
    assert DRIFTING in alert.message and "relevance" in alert.message
    assert alert.value < alert.threshold
    assert alert.sample_count >= monitors[alert.monitor_id]["min_samples"]

    # ... and `promptpulse alerts subscribe`, which `make up` ends with, printed it.
    assert f"demo/{DRIFTING}" in shown[0] and "relevance" in shown[0]

    # The healthy variant's monitor judged windows with enough samples and never fired.
    assert firing(alerts, HEALTHY) == []
    assert not [line for line in printed if "FIRING" in line and f"demo/{HEALTHY}" in line]
    healthy = monitors[f"demo-relevance-{HEALTHY}"]
    assert healthy["state"] == "ok"
    assert healthy["last_window"] is not None
    assert healthy["last_window"]["enough_samples"] is True
    assert healthy["last_window"]["violated"] is False
    assert healthy["last_window"]["value"] >= healthy["threshold"]

    # The generator sent what the demo sends: both variants, streamed and not, some ratings.
    assert totals.ok > 0 and not totals.failed, totals.describe(1)
    assert set(totals.variants) == {HEALTHY, DRIFTING}
    assert totals.streamed > 0 and totals.feedback > 0


# -- what the judges make of the demo's answers -------------------------------------------------


def judged_demo_scores(variant: str, level: float) -> dict[str, list[int]]:
    """Every dataset question through the demo flow's prompt of ``variant`` (rendered as the
    gateway renders it), llmsim's answer at drift ``level``, the processor's judge prompts and
    llmsim's judge: the scores per metric. No I/O; the live test above runs the same chain."""
    flow = yaml.safe_load((DEMO_FLOW / "flow.dag.yaml").read_text())
    node = flow["node_variants"]["answer"]["variants"][variant]["node"]
    answer_template = compile_template((DEMO_FLOW / node["source"]["path"]).read_text())
    context_template = compile_template((DEMO_FLOW / "format_context.jinja2").read_text())
    scores: dict[str, list[int]] = {}
    for item in QUESTIONS:
        numbered = render_prompt(context_template, {"context": item.context})
        messages = render_chat(answer_template, {"question": item.question, "context": numbered})
        view = chat_view([(m["role"], m["content"]) for m in messages])
        answer = degrade(compose_answer(view, LlmsimSection().answer_tokens), level, view.question)
        answer, _ = tokens.truncate(answer, node["inputs"]["max_tokens"])
        columns = {"question": item.question, "context": item.context, "answer": answer}
        for metric in ("groundedness", "relevance", "coherence", "fluency"):
            prompt = single_metric_messages(metric, columns)
            request = read_judge_request("\n\n".join(m["content"] for m in prompt), wants_json=True)
            assert request is not None and request.metric == metric
            scores.setdefault(metric, []).append(judge(request).score)
    return scores


@pytest.mark.timeout(60)
@pytest.mark.parametrize("variant", [HEALTHY, DRIFTING])
def test_healthy_demo_answers_judge_well_and_drifted_ones_do_not(variant: str) -> None:
    healthy = judged_demo_scores(variant, 0.0)
    # Undrifted, both prompt variants' answers are grounded, relevant and fluent: no monitor of
    # the demo can fire on a healthy variant, however the sample falls.
    assert {metric: set(found) for metric, found in healthy.items()} == {
        "groundedness": {5}, "relevance": {5}, "coherence": {5}, "fluency": {5}}
    drifted = judged_demo_scores(variant, DRIFT[0]["level"])
    relevance = sum(drifted["relevance"]) / len(drifted["relevance"])
    assert relevance < 3.0  # well under the demo's threshold of 3.5, so its monitor fires
    assert sum(drifted["groundedness"]) / len(drifted["groundedness"]) < 3.0


# -- the generator outlives its gateway --------------------------------------------------------


class StandInGateway:
    """Answers score and feedback requests like the gateway; can be stopped, started, unready."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ready = True
        self.scored = 0
        self.probes = 0
        self.keys_seen: set[str] = set()
        self._runner: web.AppRunner | None = None

    async def _score(self, request: web.Request) -> web.StreamResponse:
        self.keys_seen.add(request.headers.get("api-key", ""))
        body = await request.json()
        assert {"question", "context"} <= set(body)
        self.scored += 1
        request_id = str(uuid.uuid4())
        if request.query.get("stream") == "true":
            resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b'event: delta\ndata: {"delta": "Fine."}\n\n')
            await resp.write(b'event: done\ndata: {"outputs": {"answer": "Fine."}, "request_id": "'
                             + request_id.encode() + b'", "variant": "variant_0"}\n\n')
            await resp.write_eof()
            return resp
        return web.json_response({"answer": "Fine.", "request_id": request_id, "variant": "variant_0"})

    async def _feedback(self, request: web.Request) -> web.Response:
        await request.json()
        return web.json_response({"status": "accepted"}, status=202)

    async def _readyz(self, request: web.Request) -> web.Response:
        self.probes += 1
        return web.json_response({"status": "ready" if self.ready else "not_ready"}, status=200 if self.ready else 503)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/deployments/demo/score", self._score)
        app.router.add_post("/v1/deployments/demo/feedback", self._feedback)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def eventually(check: Any, within: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.timeout(60)
async def test_the_generator_pauses_while_the_gateway_is_away_and_resumes_when_it_is_ready() -> None:
    gateway = StandInGateway(free_port())
    await gateway.start()
    lines: list[str] = []
    traffic = TrafficGenerator(
        TrafficSection(rate=20, stream_share=0.3, feedback_share=0.2, status_every_seconds=1, seed=1,
                       backoff_initial_seconds=0.1, backoff_max_seconds=0.4),
        f"http://127.0.0.1:{gateway.port}", KeySource(fixed="pp_test_key"), out=lines.append,
    )
    sending = asyncio.create_task(traffic.run())
    try:
        await eventually(lambda: gateway.scored >= 10, 20, "requests to reach the gateway")

        await gateway.stop()
        await eventually(lambda: traffic.gateway_down, 20, "the generator to notice the gateway is gone")
        await asyncio.sleep(0.3)  # requests started before it noticed have failed by now
        sent_while_down = traffic.total.sent + traffic.interval.sent
        probes_while_down = gateway.probes

        # Back, but not ready: the generator keeps probing and sends nothing.
        gateway.ready = False
        await gateway.start()
        await eventually(lambda: gateway.probes >= probes_while_down + 2, 20, "probes of /readyz")
        assert traffic.gateway_down
        assert traffic.total.sent + traffic.interval.sent == sent_while_down

        # Ready: traffic resumes.
        scored_before = gateway.scored
        gateway.ready = True
        await eventually(lambda: gateway.scored >= scored_before + 10, 20, "traffic to resume")
        assert not traffic.gateway_down
    finally:
        traffic.stop()
        totals = await sending
        await gateway.stop()

    assert traffic.outages == 1
    assert totals.failed["unreachable"] >= 1
    assert totals.ok >= 20 and totals.streamed > 0 and totals.feedback > 0
    assert gateway.keys_seen == {"pp_test_key"}
    assert any("unavailable" in line for line in lines) and any("is back" in line for line in lines)
    assert all("pp_test_key" not in line for line in lines)  # the key is never printed
