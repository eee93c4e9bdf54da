"""End to end: a steady request rate through the whole pipeline, and how fresh the figures are.

Two phases, each on its own live stack (tests/support/live_stack.py: llmsim, aggregator,
processor and gateway as real processes, own topics, own database; llmsim with a realistic
latency model, 250 ms to the first token then 80 tokens/s, unless told otherwise):

1. baseline: the same rate against a stack that judges nothing (sampling 0);
2. measured: the demo deployment judged at 10% on its four metrics.

Each phase sends score requests at a fixed rate (open loop: request i leaves at start + i/rate
whatever the earlier ones are doing) for the given time, and measures:

- reply latency: request sent -> 2xx reply received by this client.
- freshness: the gateway hands a request's response event to its publisher just before it
  writes the reply, so "published" is taken as the moment this client has the reply. The k-th
  reply (in arrival order) is "visible" at the first ``/v1/stream/metrics`` event after which
  the API counts at least k responses since the phase began. Freshness = visible - reply. (The
  aggregator commits per batch, not per request, so matching the k-th reply with the k-th
  counted response is exact on average and off by at most a batch for any one request.)
- score visible: for each judged request, reply received -> the first poll of
  ``/v1/deployments/demo/requests`` (every 0.25 s, so up to 0.25 s late) showing an outcome for
  every metric; beside it the request's judge latency (its slowest judge call, as the processor
  measured it and the aggregator stored it) and the margin (score visible - judge latency).
- consumer lag, sampled every second: processor group = inference end offsets - the group's
  committed offsets in Kafka; aggregator = end offsets of its four topics - the offsets it
  committed in PostgreSQL (consumer_offsets).
- RSS and CPU share per process, every second (psutil): each service, this load generator,
  Kafka (one JVM), PostgreSQL's backends serving this stack's database, and PostgreSQL as a
  whole. Kafka and PostgreSQL are shared with everything else running on the machine, so their
  figures include that. CPU share = CPU time / (wall time x CPU count). RSS of PostgreSQL
  processes counts the shared buffers each one has touched, so their sum overstates memory.

A PNG of freshness, score delay, lag, RSS and CPU over time goes to ``--plot``. Prints, asserts
nothing; the goal lines of issue 7 (freshness p95 <= 1 s; score visible within judge latency
+ 1 s) are stated as met or not met.

Usage: ``.venv/bin/python bench/e2e.py [--rate 20] [--duration 120] [--quick] [--plot PATH]
[--ttft-ms 250] [--tokens-per-second 80]`` (needs the local stack's Kafka and PostgreSQL; about
duration + baseline + 1.5 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import psutil
from aiokafka import TopicPartition

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.support, from a checkout

from shared.kafka import make_admin, make_consumer  # noqa: E402
from tests.support.aggregator import sse_events  # noqa: E402
from tests.support.live_stack import LiveStack, StackOptions, live_stack  # noqa: E402

METRICS = ["groundedness", "relevance", "coherence", "fluency"]
SCORE_POLL_SECONDS = 0.25
SAMPLE_SECONDS = 1.0
MAX_IN_FLIGHT = 1000  # beyond this the stack is not keeping up: requests are counted as skipped


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(p) - 1]


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:,.0f} ms"


# -- what one phase records -------------------------------------------------------------------------

@dataclass
class Reply:
    sent: float  # monotonic seconds
    received: float
    status: int
    request_id: str | None


@dataclass
class Phase:
    label: str
    rate: float
    seconds: float
    sampling: float
    batch_wait_ms: str = "?"  # the aggregator's batch wait in this stack
    started: float = 0.0  # monotonic time the load began
    replies: list[Reply] = field(default_factory=list)
    skipped: int = 0
    failures: int = 0  # transport errors (no reply at all)
    counted: list[tuple[float, int]] = field(default_factory=list)  # (time, responses the API counts)
    counted_before: int | None = None  # the API's count when the load began
    scores_seen: dict[str, float] = field(default_factory=dict)  # request id -> first complete poll
    judge_latency: dict[str, float] = field(default_factory=dict)  # request id -> slowest judge call, s
    lag: list[tuple[float, int, int]] = field(default_factory=list)  # (time, processor, aggregator)
    machine: list[tuple[float, float, float]] = field(default_factory=list)  # (time, busy share, load average)
    usage: dict[str, list[tuple[float, float, float]]] = field(default_factory=lambda: defaultdict(list))
    # usage: process group -> [(time, RSS MiB, CPU share of the machine)]

    def ok_replies(self) -> list[Reply]:
        return sorted((r for r in self.replies if 200 <= r.status < 300), key=lambda r: r.received)

    def freshness(self) -> list[tuple[float, float]]:
        """(reply time, seconds until the API counted it) per 2xx reply that became visible."""
        replies = self.ok_replies()
        before = self.counted_before or 0
        found, k = [], 0
        for at, total in self.counted:
            while k < len(replies) and total - before >= k + 1:
                # Counted before this client had the reply (the event left first): freshness 0.
                found.append((replies[k].received, max(0.0, at - replies[k].received)))
                k += 1
        return found

    def score_delays(self) -> list[tuple[float, float, float]]:
        """(reply time, reply -> scores visible, judge latency) per judged request seen complete."""
        by_id = {r.request_id: r for r in self.replies}
        rows = []
        for request_id, seen in self.scores_seen.items():
            reply = by_id.get(request_id)
            if reply is not None and request_id in self.judge_latency:
                rows.append((reply.received, seen - reply.received, self.judge_latency[request_id]))
        return sorted(rows)


# -- load ---------------------------------------------------------------------------------------------

async def send_load(stack: LiveStack, phase: Phase) -> None:
    headers = {"api-key": stack.demo_key}
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    timeout = aiohttp.ClientTimeout(total=120)
    in_flight: set[asyncio.Task[None]] = set()

    async def one(index: int, session: aiohttp.ClientSession) -> None:
        body = {"question": f"Question {index}: how does PromptPulse decide which requests to judge?"}
        sent = time.monotonic()
        try:
            async with session.post(stack.score_url, json=body, headers=headers) as resp:
                payload = await resp.json(content_type=None)
                phase.replies.append(Reply(sent, time.monotonic(), resp.status,
                                           payload.get("request_id") if isinstance(payload, dict) else None))
        except (aiohttp.ClientError, TimeoutError):
            phase.failures += 1

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        phase.started = start = time.monotonic()
        for index in range(int(phase.rate * phase.seconds)):
            await asyncio.sleep(max(0.0, start + index / phase.rate - time.monotonic()))
            if len(in_flight) >= MAX_IN_FLIGHT:
                phase.skipped += 1
                continue
            task = asyncio.create_task(one(index, session))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.wait(in_flight)


# -- readers ------------------------------------------------------------------------------------------

async def follow_stream(stack: LiveStack, phase: Phase, ready: asyncio.Event) -> None:
    """Record the API's response count after each SSE event (minutes are replaced by start)."""
    minutes: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {stack.read_key}"}
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
        f"{stack.aggregator.url}/v1/stream/metrics?deployment={stack.deployment}", headers=headers,
    ) as resp:
        assert resp.status == 200, await resp.text()
        async for name, event in sse_events(resp):
            if name == "snapshot":
                minutes = {}
            minutes.update({m["start"]: m["responses"] for m in event.get("minutes", [])})
            phase.counted.append((time.monotonic(), sum(minutes.values())))
            ready.set()


async def poll_scores(stack: LiveStack, phase: Phase, since: datetime, stop: asyncio.Event) -> None:
    headers = {"Authorization": f"Bearer {stack.read_key}"}
    url = (f"{stack.aggregator.url}/v1/deployments/{stack.deployment}/requests"
           f"?sampled=true&limit=50&from={int(since.timestamp())}")
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            async with session.get(url, headers=headers) as resp:
                if resp.status == 200:
                    now = time.monotonic()
                    for row in (await resp.json())["requests"]:
                        done = {e["metric"] for e in row["evaluations"] if e.get("outcome")}
                        if done >= set(METRICS):
                            phase.scores_seen.setdefault(row["request_id"], now)
            await asyncio.sleep(SCORE_POLL_SECONDS)


class Lag:
    """Consumer lag of the processor group (Kafka commits) and the aggregator (Postgres offsets)."""

    def __init__(self, stack: LiveStack) -> None:
        self.stack = stack
        topics = stack.topics
        self.processor_topics = [topics.inference]
        self.aggregator_topics = [topics.inference, topics.evaluations, topics.feedback, topics.spans]
        self.group = stack.processor.env["PROMPTPULSE_PROCESSOR__GROUP_ID"]
        self.aggregator_group = stack.aggregator.env["PROMPTPULSE_AGGREGATOR__GROUP_ID"]
        self.partitions = stack.kafka.partitions
        self.consumer = make_consumer(stack.kafka, group_id=None, client_id="bench-e2e-lag")
        self.admin = make_admin(stack.kafka, client_id="bench-e2e-lag")
        self.db: asyncpg.Connection | None = None

    async def start(self) -> None:
        await self.consumer.start()
        await self.admin.start()
        self.db = await asyncpg.connect(self.stack.database_url)

    async def close(self) -> None:
        await self.consumer.stop()
        await self.admin.close()
        if self.db is not None:
            await self.db.close()

    async def measure(self) -> tuple[int, int]:
        tps = [TopicPartition(t, p) for t in self.aggregator_topics for p in range(self.partitions)]
        ends = await self.consumer.end_offsets(tps)
        committed = await self.admin.list_consumer_group_offsets(self.group)
        processor = sum(max(0, ends[tp] - (committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0))
                        for tp in tps if tp.topic in self.processor_topics)
        assert self.db is not None
        stored = {(r["topic"], r["kafka_partition"]): r["next_offset"] for r in await self.db.fetch(
            "SELECT topic, kafka_partition, next_offset FROM consumer_offsets WHERE consumer_group = $1",
            self.aggregator_group)}
        aggregator = sum(max(0, ends[tp] - stored.get((tp.topic, tp.partition), 0)) for tp in tps)
        return processor, aggregator


class Usage:
    """RSS and CPU per group of processes; CPU is counted per pid so that processes coming and
    going (PostgreSQL backends) neither lose nor invent time."""

    def __init__(self, stack: LiveStack) -> None:
        self.database = urlsplit(stack.database_url).path.lstrip("/")
        self.kafka_port = int(stack.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])
        self.kafka_pid: int | None = None
        self.fixed = {s.name: s.pid for s in stack.services.values() if s.pid}
        self.fixed["load generator (this)"] = os.getpid()
        # (group, pid) -> (create time, cpu seconds last time); a pid can be in two groups.
        self.seen: dict[tuple[str, int], tuple[float, float]] = {}
        self.last = time.time()

    def groups(self) -> dict[str, list[psutil.Process]]:
        found: dict[str, list[psutil.Process]] = defaultdict(list)
        for name, pid in self.fixed.items():
            try:
                found[name].append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        for proc in psutil.process_iter(["name", "cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if proc.info["name"] == "java" and "kafka.Kafka" in cmdline and self._is_our_broker(proc):
                found["kafka (shared)"].append(proc)
            elif proc.info["name"] == "postgres":
                found["postgresql (all, shared)"].append(proc)
                if f" {self.database} " in cmdline:
                    found["postgresql (this stack's backends)"].append(proc)
        return found

    def _is_our_broker(self, proc: psutil.Process) -> bool:
        """The broker listening on the stack's bootstrap port (tests run private brokers too)."""
        if self.kafka_pid is None:
            try:
                if any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.kafka_port
                       for c in proc.net_connections(kind="tcp")):
                    self.kafka_pid = proc.pid
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                return False
        return proc.pid == self.kafka_pid

    def sample(self) -> dict[str, tuple[float, float]]:
        """Group -> (RSS MiB, CPU share of the machine since the last sample)."""
        now = time.time()
        wall = max(1e-6, now - self.last)
        result = {}
        for name, procs in self.groups().items():
            rss, cpu = 0.0, 0.0
            for proc in procs:
                try:
                    with proc.oneshot():
                        times = proc.cpu_times()
                        total = times.user + times.system
                        created = proc.create_time()
                        rss += proc.memory_info().rss / 2**20
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                before = self.seen.get((name, proc.pid))
                if before is not None and before[0] == created:
                    cpu += total - before[1]
                elif created > self.last:  # started since the last sample: all its time is new
                    cpu += total
                self.seen[(name, proc.pid)] = (created, total)
            result[name] = (rss, cpu / wall / psutil.cpu_count())
        self.last = now
        return result


async def sample_system(stack: LiveStack, phase: Phase, stop: asyncio.Event) -> None:
    lag, usage = Lag(stack), Usage(stack)
    await lag.start()
    usage.sample()  # the baseline of every pid's CPU time
    psutil.cpu_percent(interval=None)
    try:
        while not stop.is_set():
            await asyncio.sleep(SAMPLE_SECONDS)
            now = time.monotonic()
            phase.machine.append((now, psutil.cpu_percent(interval=None) / 100, psutil.getloadavg()[0]))
            processor, aggregator = await lag.measure()
            phase.lag.append((now, processor, aggregator))
            for name, (rss, share) in usage.sample().items():
                phase.usage[name].append((now, rss, share))
    finally:
        await lag.close()


async def judge_latencies(stack: LiveStack, request_ids: list[str]) -> dict[str, float]:
    conn = await asyncpg.connect(stack.database_url)
    try:
        rows = await conn.fetch(
            "SELECT request_id, max(judge_latency_ms) AS slowest FROM evaluations "
            "WHERE request_id = ANY($1::text[]) GROUP BY request_id", request_ids)
    finally:
        await conn.close()
    return {r["request_id"]: r["slowest"] / 1000 for r in rows if r["slowest"] is not None}


# -- one phase ----------------------------------------------------------------------------------------

async def run_phase(phase: Phase, work: Path, latency: dict[str, float]) -> Phase:
    options = StackOptions(sampling_rate=phase.sampling, metrics=METRICS, llm_latency=latency)
    async with live_stack(work, options) as stack:
        phase.batch_wait_ms = stack.aggregator.env.get("PROMPTPULSE_AGGREGATOR__BATCH_MAX_WAIT_MS", "default")
        # Warm-up: one request through, until the API counts it (consumers assigned and positioned).
        status, body = await stack.score("Warm-up: is everything assigned?")
        assert status == 200, body

        async def counted() -> bool:
            figures = await stack.api(f"/v1/deployments/{stack.deployment}/metrics")
            return figures["overview"]["responses"] >= 1

        await stack.wait_for(counted, 90, "the warm-up request in the API")
        stop, ready = asyncio.Event(), asyncio.Event()
        stream = asyncio.create_task(follow_stream(stack, phase, ready))
        await asyncio.wait_for(ready.wait(), 30)
        phase.counted_before = phase.counted[-1][1]
        since = datetime.now(UTC)
        readers = [asyncio.create_task(poll_scores(stack, phase, since, stop)),
                   asyncio.create_task(sample_system(stack, phase, stop))]
        try:
            await send_load(stack, phase)
            # Then wait (up to 60 s) for the last replies to be counted and the last scores shown.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                counted_all = len(phase.freshness()) >= len(phase.ok_replies())
                sampled = phase.sampling > 0
                if counted_all and (not sampled or time.monotonic() > phase.started + phase.seconds + 15):
                    break
                await asyncio.sleep(0.5)
            phase.judge_latency = await judge_latencies(stack, [r.request_id for r in phase.replies if r.request_id])
        finally:
            stop.set()
            stream.cancel()
            await asyncio.gather(*readers, stream, return_exceptions=True)
    return phase


# -- report -------------------------------------------------------------------------------------------

def summary(phase: Phase) -> dict[str, Any]:
    ok = phase.ok_replies()
    latency = [r.received - r.sent for r in ok]
    fresh = [f for _, f in phase.freshness()]
    delays = phase.score_delays()
    return {
        "sent": len(phase.replies) + phase.failures, "ok": len(ok),
        "other": len(phase.replies) - len(ok), "failures": phase.failures, "skipped": phase.skipped,
        "achieved": len(ok) / phase.seconds,
        "latency": {p: pct(latency, p) for p in (50, 95, 99)},
        "fresh": {p: pct(fresh, p) for p in (50, 95, 99)}, "fresh_n": len(fresh),
        "score": {p: pct([d for _, d, _ in delays], p) for p in (50, 95, 99)},
        "judge": {p: pct([j for _, _, j in delays], p) for p in (50, 95, 99)},
        "margin": {p: pct([d - j for _, d, j in delays], p) for p in (50, 95, 99)},
        "scored_n": len(delays), "judged_n": len(phase.judge_latency),
        "lag_max": (max((p for _, p, _ in phase.lag), default=0), max((a for _, _, a in phase.lag), default=0)),
    }


def print_phase(phase: Phase, s: dict[str, Any]) -> None:
    print(f"\n{phase.label}: {phase.rate:g} requests/s for {phase.seconds:g} s, sampling {phase.sampling:.0%}"
          f" (aggregator batch wait {phase.batch_wait_ms} ms, as live_stack sets it)")
    print(f"  sent {s['sent']}: {s['ok']} 2xx, {s['other']} other status, {s['failures']} no reply, "
          f"{s['skipped']} skipped (over {MAX_IN_FLIGHT} in flight); achieved {s['achieved']:.1f} 2xx/s")
    row = "  {:<44} p50 {:>9}   p95 {:>9}   p99 {:>9}   [{}]"
    print(row.format("reply latency (sent -> 2xx reply)", *(ms(s["latency"][p]) for p in (50, 95, 99)),
                     f"{s['ok']} replies"))
    print(row.format("freshness (reply -> counted by the API, SSE)", *(ms(s["fresh"][p]) for p in (50, 95, 99)),
                     f"{s['fresh_n']}/{s['ok']} counted"))
    if phase.sampling > 0:
        print(row.format("score visible (reply -> all 4 scores in API)", *(ms(s["score"][p]) for p in (50, 95, 99)),
                         f"{s['scored_n']} of {s['judged_n']} judged requests seen"))
        print(row.format("  judge latency (slowest call of the request)", *(ms(s["judge"][p]) for p in (50, 95, 99)),
                         "from the evaluations table"))
        print(row.format("  margin (score visible - judge latency)", *(ms(s["margin"][p]) for p in (50, 95, 99)),
                         f"polled every {SCORE_POLL_SECONDS:g} s"))
    print(f"  max consumer lag: processor {s['lag_max'][0]} records, aggregator {s['lag_max'][1]} records"
          f" (sampled every {SAMPLE_SECONDS:g} s)")
    print(f"  {'process':<36} {'RSS mean':>9} {'RSS max':>9} {'CPU mean':>9} {'CPU max':>9}   (CPU: share of "
          f"{psutil.cpu_count()} CPUs)")
    for name, points in sorted(phase.usage.items()):
        rss = [r for _, r, _ in points]
        cpu = [c for _, _, c in points[1:]] or [0.0]
        print(f"  {name:<36} {statistics.fmean(rss):>6.0f} MB {max(rss):>6.0f} MB {statistics.fmean(cpu):>8.1%} "
              f"{max(cpu):>8.1%}")
    if phase.machine:
        busy = [b for _, b, _ in phase.machine]
        load = [a for _, _, a in phase.machine]
        print(f"  {'machine, every process on it':<36} {'':>9} {'':>9} {statistics.fmean(busy):>8.1%} {max(busy):>8.1%}"
              f"   (1-minute load average {statistics.fmean(load):.1f} mean, {max(load):.1f} max)")


def plot(phase: Phase, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = phase.started
    fig, axes = plt.subplots(4, 1, figsize=(11, 14), sharex=True)
    fresh = phase.freshness()
    axes[0].scatter([t - t0 for t, _ in fresh], [f * 1000 for _, f in fresh], s=4, label="freshness (reply -> API)")
    delays = phase.score_delays()
    axes[0].scatter([t - t0 for t, _, _ in delays], [d * 1000 for _, d, _ in delays], s=10, marker="x",
                    label="reply -> scores visible")
    axes[0].scatter([t - t0 for t, _, _ in delays], [j * 1000 for _, _, j in delays], s=10, marker="+",
                    label="judge latency (slowest call)")
    axes[0].axhline(1000, color="grey", linestyle="--", linewidth=0.8, label="goal: freshness p95 1 s")
    axes[0].set_ylabel("ms")
    axes[0].legend(loc="upper left", fontsize=8)
    axes[1].plot([t - t0 for t, _, _ in phase.lag], [p for _, p, _ in phase.lag], label="processor group")
    axes[1].plot([t - t0 for t, _, _ in phase.lag], [a for _, _, a in phase.lag], label="aggregator (Postgres offsets)")
    axes[1].set_ylabel("consumer lag (records)")
    axes[1].legend(loc="upper left", fontsize=8)
    for name, points in sorted(phase.usage.items()):
        times = [t - t0 for t, _, _ in points]
        axes[2].plot(times, [r for _, r, _ in points], label=name)
        axes[3].plot(times[1:], [c * 100 for _, _, c in points[1:]], label=name)
    axes[3].plot([t - t0 for t, _, _ in phase.machine], [b * 100 for _, b, _ in phase.machine], color="black",
                 linestyle=":", label="machine, every process")
    axes[2].set_ylabel("RSS (MiB)")
    axes[3].set_ylabel(f"CPU (% of {psutil.cpu_count()} CPUs)")
    axes[3].set_xlabel("seconds since the load began")
    for axis in axes[2:]:
        axis.legend(loc="upper left", fontsize=7, ncol=2)
    fig.suptitle(f"PromptPulse end to end: {phase.rate:g} req/s for {phase.seconds:g} s, sampling {phase.sampling:.0%}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def goal(label: str, value: float | None, limit: float) -> str:
    if value is None:
        return f"  {label}: n/a (nothing measured)"
    return f"  {label}: {'met' if value <= limit else 'NOT met'} ({ms(value)} against {ms(limit)})"


async def main(args: argparse.Namespace) -> None:
    latency = {"ttft_ms": args.ttft_ms, "tokens_per_second": args.tokens_per_second, "jitter": 0.2}
    baseline_seconds = max(15.0, args.duration / 4)
    print(f"end to end: {psutil.cpu_count()} CPUs shared by Kafka, PostgreSQL, the four services, this load "
          f"generator (and whatever else runs here); llmsim ttft {args.ttft_ms:g} ms, "
          f"{args.tokens_per_second:g} tokens/s")
    with tempfile.TemporaryDirectory(prefix="pp-bench-e2e-") as tmp:
        baseline = await run_phase(Phase("baseline (nothing judged)", args.rate, baseline_seconds, 0.0),
                                   Path(tmp) / "baseline", latency)
        measured = await run_phase(Phase("measured (10% judged)", args.rate, args.duration, 0.10),
                                   Path(tmp) / "measured", latency)
    base, main_ = summary(baseline), summary(measured)
    print_phase(baseline, base)
    print_phase(measured, main_)
    print("\nmeasured / baseline:")
    for key, label in (("latency", "reply latency"), ("fresh", "freshness")):
        for p in (50, 95):
            a, b = main_[key][p], base[key][p]
            ratio = f"{a / b:.2f}x" if a is not None and b else "n/a"
            print(f"  {label} p{p}: {ms(a)} / {ms(b)} = {ratio}")
    print("\ngoals (issue 7), not asserted:")
    print(goal("freshness p95 <= 1 s", main_["fresh"][95], 1.0))
    print(goal("score visible within judge latency + 1 s (p95 of the margin)", main_["margin"][95], 1.0))
    plot(measured, args.plot)
    print(f"\nplot: {args.plot}")


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="score requests per second (default 20)")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of measured load (default 120)")
    parser.add_argument("--quick", action="store_true", help="a 30 s measured run (and a 15 s baseline)")
    parser.add_argument("--plot", type=Path, default=REPO / "bench" / "out" / "e2e.png", help="PNG to write")
    parser.add_argument("--ttft-ms", type=float, default=250.0, help="llmsim time to first token")
    parser.add_argument("--tokens-per-second", type=float, default=80.0, help="llmsim generation speed")
    args = parser.parse_args()
    if args.quick:
        args.duration = 30.0
    return args


if __name__ == "__main__":
    asyncio.run(main(_args()))
