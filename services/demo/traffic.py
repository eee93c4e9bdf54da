"""The demo's users: a steady stream of questions to a deployment on the gateway.

Requests go out at a fixed rate (``rate`` per second, evenly spaced, each without waiting for
the previous one, as independent users would), each a question with its context from the
built-in dataset (services/demo/dataset.py). A share is streamed (SSE), and now and then the
answer is rated through the feedback endpoint, so every figure of the dashboard moves.

The generator outlives the gateway: when the gateway cannot be reached (or answers 503, no room
for events) it stops sending, probes ``/readyz`` with exponential backoff, and resumes at the
same rate once the gateway is ready, without a burst to catch up. A 401 makes it read its key
again (the key file may have been rewritten). It prints one status line every
``status_every_seconds``; the key is never printed.

Settings: ``PROMPTPULSE_GATEWAY_URL``, ``PROMPTPULSE_DEMO_API_KEY`` and ``PROMPTPULSE_DEMO__*``
(the fields of :class:`TrafficSection`, settings.py, which also finds the keys), each overridden
by the command line flag of the same name (``python -m services.demo traffic --help``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from services.demo.dataset import FEEDBACK, QUESTIONS, Question
from services.demo.proxy_users import ProxyUnavailable, ProxyUsers
from services.demo.settings import KeySource, NoApiKey, TrafficSection
from shared import sse
from shared.retry import Backoff


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@dataclass
class Counts:
    """What happened over some stretch of time."""

    sent: int = 0
    ok: int = 0
    proxied: int = 0  # sent through the proxy deployment with the openai SDK
    streamed: int = 0
    feedback: int = 0
    skipped: int = 0  # ticks dropped because max_in_flight requests were waiting
    failed: Counter[str] = field(default_factory=Counter)  # reason -> count
    variants: Counter[str] = field(default_factory=Counter)  # answered requests per variant
    latencies: list[float] = field(default_factory=list)  # seconds, answered requests

    def merge(self, other: Counts) -> None:
        self.sent += other.sent
        self.ok += other.ok
        self.proxied += other.proxied
        self.streamed += other.streamed
        self.feedback += other.feedback
        self.skipped += other.skipped
        self.failed.update(other.failed)
        self.variants.update(other.variants)
        self.latencies.extend(other.latencies)

    def describe(self, seconds: float) -> str:
        rate = self.sent / seconds if seconds > 0 else 0.0
        text = f"{self.sent} sent ({rate:.1f}/s), {self.ok} ok"
        if self.failed:
            reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(self.failed.items()))
            text += f", {sum(self.failed.values())} failed ({reasons})"
        text += f", {self.streamed} streamed, {self.proxied} via the proxy, {self.feedback} rated"
        if self.skipped:
            text += f", {self.skipped} skipped (too many in flight)"
        if self.variants:
            text += "; " + " / ".join(f"{v} {n}" for v, n in sorted(self.variants.items()))
        if self.latencies:
            text += (f"; latency p50 {_percentile(self.latencies, 0.5):.2f} s,"
                     f" p95 {_percentile(self.latencies, 0.95):.2f} s")
        return text


class GatewayUnavailable(Exception):
    """The gateway cannot take requests now: unreachable, or 503 (no room for events)."""


@dataclass
class Answer:
    status: int
    request_id: str | None = None
    variant: str | None = None
    error: str | None = None


class TrafficGenerator:
    """Sends the traffic; ``await run()`` until ``stop()`` (or the duration) ends it."""

    def __init__(
        self,
        section: TrafficSection,
        gateway_url: str,
        keys: KeySource,
        *,
        questions: tuple[Question, ...] = QUESTIONS,
        out: Callable[[str], None] | None = None,
        proxy_keys: KeySource | None = None,
    ) -> None:
        self.section = section
        self.gateway_url = gateway_url.rstrip("/")
        self.keys = keys
        self.questions = questions
        self._out = out or (lambda line: print(line, flush=True))
        self._random = random.Random(section.seed)
        self._stop = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._key = ""
        self.proxy_keys = proxy_keys
        self._proxy: ProxyUsers | None = None
        self._down_since: float | None = None
        self.interval = Counts()
        self.total = Counts()
        self.outages = 0  # times the gateway went away and came back (or not, yet)

    # -- control ------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    @property
    def gateway_down(self) -> bool:
        return self._down_since is not None

    def _say(self, text: str) -> None:
        self._out(f"[{time.strftime('%H:%M:%S')}] traffic: {text}")

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, or return True at once when asked to stop."""
        try:
            await asyncio.wait_for(self._stop.wait(), max(0.0, seconds))
        except TimeoutError:
            return False
        return True

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> Counts:
        """Send until stopped; returns the counts since start (also in ``self.total``)."""
        section = self.section
        self._key = self.keys.get()  # fails early, with a message, when there is no key
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + section.duration_seconds if section.duration_seconds else None
        timeout = aiohttp.ClientTimeout(total=section.request_timeout_seconds)
        self._say(f"{section.rate:g} requests/s to {self.gateway_url}/v1/deployments/"
                  f"{section.deployment}/score ({section.stream_share:.0%} streamed, "
                  f"{section.feedback_share:.0%} rated)")
        self._open_proxy()
        connector = aiohttp.TCPConnector(limit=section.max_in_flight + 4)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            reporter = asyncio.create_task(self._report(started))
            try:
                await self._send_loop(session, deadline)
            finally:
                self._stop.set()
                await self._drain()
                reporter.cancel()
                await asyncio.gather(reporter, return_exceptions=True)
                self._flush_interval()
                if self._proxy is not None:
                    await self._proxy.close()
        elapsed = loop.time() - started
        self._say(f"stopped after {elapsed:.0f} s: {self.total.describe(elapsed)}")
        return self.total

    async def _send_loop(self, session: aiohttp.ClientSession, deadline: float | None) -> None:
        loop = asyncio.get_running_loop()
        spacing = 1.0 / self.section.rate
        next_at = loop.time()
        while not self._stop.is_set():
            if deadline is not None and loop.time() >= deadline:
                return
            if self.gateway_down:
                await self._wait_for_gateway(session)
                next_at = loop.time()  # resume at the steady rate: no burst to catch up
                continue
            if await self._sleep(next_at - loop.time()):
                return
            next_at += spacing
            if next_at < loop.time() - spacing:
                next_at = loop.time()  # the loop fell behind (a busy machine): do not burst
            if len(self._in_flight) >= self.section.max_in_flight:
                self.interval.skipped += 1
                continue
            self._start(self._one(session))
            # The proxy's questions come on top, so the flow's traffic (and the demo's timeline) stays.
            if self._proxy is not None and self._random.random() < self.section.proxy_share:
                self._start(self._one(session, proxied=True))

    def _start(self, request: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(request)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _drain(self, within: float = 5.0) -> None:
        if not self._in_flight:
            return
        _, pending = await asyncio.wait(set(self._in_flight), timeout=within)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # -- one request --------------------------------------------------------------------------

    @property
    def _score_url(self) -> str:
        return f"{self.gateway_url}/v1/deployments/{self.section.deployment}/score"

    def _open_proxy(self) -> None:
        section = self.section
        if section.proxy_share <= 0 or self.proxy_keys is None:
            return
        try:
            key = self.proxy_keys.get()
        except NoApiKey as exc:  # the flow's traffic goes on; the proxy's waits for its key
            self._say(f"not using the proxy: {exc}")
            return
        self._proxy = ProxyUsers(self.gateway_url, key, model=section.proxy_model,
                                 timeout=section.request_timeout_seconds)
        self._say(f"and {section.rate * section.proxy_share:g} questions/s through {self.gateway_url}/v1/chat/"
                  f"completions (deployment {section.proxy_deployment}, the openai SDK)")

    async def _ask(self, session: aiohttp.ClientSession, question: Question, streamed: bool,
                   proxied: bool) -> Answer:
        if not proxied:
            return await (self._streamed(session, question) if streamed else self._whole(session, question))
        assert self._proxy is not None
        try:
            status, request_id, variant, error = await self._proxy.ask(question, streamed=streamed)
        except ProxyUnavailable as exc:
            raise GatewayUnavailable(str(exc)) from None
        return Answer(status, request_id, variant, error)

    async def _one(self, session: aiohttp.ClientSession, proxied: bool = False) -> None:
        question = self._random.choice(self.questions)
        streamed = self._random.random() < self.section.stream_share
        rated = self._random.random() < self.section.feedback_share
        # Counted into self.interval at each step, never a saved reference: the status reporter
        # swaps the interval's Counts while requests are in flight.
        self.interval.sent += 1
        self.interval.streamed += streamed
        self.interval.proxied += proxied
        began = time.monotonic()
        try:
            answer = await self._ask(session, question, streamed, proxied)
        except TimeoutError:
            # Before the connection errors: aiohttp's timeouts are both, and a slow answer
            # (a hanging LLM) is not a gateway that went away.
            self.interval.failed["timeout"] += 1
            return
        except GatewayUnavailable as exc:
            self.interval.failed["unavailable"] += 1
            self._gateway_went_away(str(exc))
            return
        except aiohttp.ClientConnectionError as exc:
            self.interval.failed["unreachable"] += 1
            self._gateway_went_away(f"{type(exc).__name__}: {exc}")
            return
        except (aiohttp.ClientError, ValueError) as exc:  # a cut body, a reply that is not JSON
            self.interval.failed[type(exc).__name__] += 1
            return
        if answer.status == 401:
            self.interval.failed["401"] += 1
            self._reload_key()
            return
        if answer.status != 200 or answer.error:
            self.interval.failed[answer.error or str(answer.status)] += 1
            return
        self.interval.ok += 1
        self.interval.latencies.append(time.monotonic() - began)
        self.interval.variants[answer.variant or "?"] += 1
        if rated and answer.request_id:
            await self._rate(session, answer.request_id, proxied)

    def _headers(self, **more: str) -> dict[str, str]:
        return {"api-key": self._key, "content-type": "application/json", **more}

    def _body(self, question: Question) -> dict[str, str]:
        return {"question": question.question, "context": question.context}

    async def _whole(self, session: aiohttp.ClientSession, question: Question) -> Answer:
        async with session.post(self._score_url, json=self._body(question), headers=self._headers()) as resp:
            if resp.status == 503:
                raise GatewayUnavailable("503 from the gateway (no room for events)")
            if resp.status != 200:
                await resp.read()
                return Answer(resp.status)
            body = await resp.json(content_type=None)
        if not isinstance(body, dict):
            return Answer(200, error="reply not an object")
        return Answer(200, body.get("request_id"), body.get("variant"))

    async def _streamed(self, session: aiohttp.ClientSession, question: Question) -> Answer:
        async with session.post(
            self._score_url, params={"stream": "true"}, json=self._body(question),
            headers=self._headers(accept=sse.MEDIA_TYPE),
        ) as resp:
            if resp.status == 503:
                raise GatewayUnavailable("503 from the gateway (no room for events)")
            if resp.status != 200:
                await resp.read()
                return Answer(resp.status)
            async for event in sse.read_events(resp.content.iter_any()):
                if event.name == "done":
                    body = event.json()
                    return Answer(200, body.get("request_id"), body.get("variant"))
                if event.name == "error":
                    return Answer(200, error="stream error")
        return Answer(200, error="stream cut")

    async def _rate(self, session: aiohttp.ClientSession, request_id: str, proxied: bool = False) -> None:
        rating, comment = self._random.choice(FEEDBACK)
        body: dict[str, Any] = {"request_id": request_id, "rating": rating}
        if comment:
            body["comment"] = comment
        deployment = self.section.proxy_deployment if proxied else self.section.deployment
        url = f"{self.gateway_url}/v1/deployments/{deployment}/feedback"
        headers = self._headers()
        if proxied and self._proxy is not None:
            headers["api-key"] = self._proxy.client.api_key
        try:
            async with session.post(url, json=body, headers=headers) as resp:
                await resp.read()
                if resp.status == 202:
                    self.interval.feedback += 1
                else:
                    self.interval.failed[f"feedback {resp.status}"] += 1
        except (aiohttp.ClientError, TimeoutError):
            self.interval.failed["feedback unreachable"] += 1

    def _reload_key(self) -> None:
        try:
            self._key = self.keys.get()
            if self._proxy is not None and self.proxy_keys is not None:
                self._proxy.use_key(self.proxy_keys.get())
        except NoApiKey as exc:
            self._say(str(exc))

    # -- the gateway going away and coming back -----------------------------------------------

    def _gateway_went_away(self, reason: str) -> None:
        if self._down_since is not None:
            return
        self._down_since = time.monotonic()
        self.outages += 1
        self._say(f"the gateway is unavailable ({reason}); pausing, probing {self.gateway_url}"
                  f"/readyz with backoff up to {self.section.backoff_max_seconds:g} s")

    async def _wait_for_gateway(self, session: aiohttp.ClientSession) -> None:
        backoff = Backoff(self.section.backoff_initial_seconds, self.section.backoff_max_seconds)
        while not self._stop.is_set():
            if await self._sleep(backoff.next()):
                return
            try:
                async with session.get(f"{self.gateway_url}/readyz",
                                       timeout=aiohttp.ClientTimeout(total=5)) as resp:
                    await resp.read()
                    ready = resp.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ready = False
            if ready:
                down = time.monotonic() - (self._down_since or time.monotonic())
                self._down_since = None
                self._reload_key()  # a restarted stack may have made a new key
                self._say(f"the gateway is back after {down:.0f} s; resuming {self.section.rate:g} requests/s")
                return

    # -- status -------------------------------------------------------------------------------

    def _flush_interval(self) -> Counts:
        counts, self.interval = self.interval, Counts()
        self.total.merge(counts)
        return counts

    async def _report(self, started: float) -> None:
        loop = asyncio.get_running_loop()
        every = self.section.status_every_seconds
        last = started
        while True:
            await asyncio.sleep(every)
            now = loop.time()
            counts = self._flush_interval()
            line = f"last {now - last:.0f} s: {counts.describe(now - last)}"
            if self._down_since is not None:
                line += f" | gateway unavailable for {time.monotonic() - self._down_since:.0f} s"
            line += f" | total {self.total.sent} sent, {self.total.ok} ok"
            self._say(line)
            last = now
