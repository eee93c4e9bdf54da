"""Kafka round trip: the project's producer settings against aiokafka's defaults.

For each producer profile it measures, on a fresh topic per run:

- producer throughput: 50,000 one-kilobyte events sent as fast as the producer takes them,
  timed until the last one is acknowledged, with produce-to-consume latency under that load;
- produce-to-consume latency p50/p99 at a steady 2,000 events/s for 5 s.

The consumer runs in a separate process so it does not share the producer's event loop; the
send time travels in a header (wall clock, same machine). Payloads are text-like protobuf
bodies (an LLM answer made of common words), so compression sees what it would see in
production. It prints; it asserts nothing. Run: ``make bench`` or
``.venv/bin/python bench/kafka_roundtrip.py [--events N] [--rate R] [--seconds S] [--codecs]``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from aiokafka.codec import has_lz4, has_zstd  # noqa: E402

from shared.kafka import PRODUCER_DEFAULTS, connection_options, make_producer  # noqa: E402
from shared.settings import ServiceSettings, load_settings  # noqa: E402
from shared.topics import delete_topics, ensure_topics  # noqa: E402

SENT_HEADER = "bench-sent-ns"
WORDS = (
    "the answer model context question relevance score judge flow deployment variant token "
    "latency request response customer order refund policy shipping account password reset "
    "please thank you sorry can will would should our your their this that with from about"
).split()


def payloads(count: int = 500, size: int = 1024) -> list[bytes]:
    rng = random.Random(7)
    bodies = []
    for _ in range(count):
        text = ""
        while len(text) < size:
            text += rng.choice(WORDS) + " "
        bodies.append(text[:size].encode())
    return bodies


def consume(options: dict, topic: str, partitions: int, expected: int, ready, results) -> None:
    """Child process: read ``expected`` records, report latency percentiles in ms."""

    async def run() -> None:
        consumer = AIOKafkaConsumer(**options, enable_auto_commit=False, fetch_max_wait_ms=100)
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
            await consumer.seek_to_beginning()
            ready.set()
            latencies: list[float] = []
            deadline = time.monotonic() + 120
            while len(latencies) < expected and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                now = time.time_ns()
                for records in batch.values():
                    for record in records:
                        sent = int(dict(record.headers)[SENT_HEADER])
                        latencies.append((now - sent) / 1e6)
            results.put(latencies)
        finally:
            await consumer.stop()

    asyncio.run(run())


def percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {"p50": float("nan"), "p99": float("nan"), "n": len(values)}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": cuts[49], "p99": cuts[98], "n": len(values)}


async def produce(settings, overrides: dict, topic: str, bodies: list[bytes], count: int, rate: float | None):
    producer = make_producer(settings, "bench-producer", **overrides) if overrides is not None else None
    if producer is None:  # aiokafka's defaults: only where and how to connect
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(**connection_options(settings), client_id="bench-default")
    await producer.start()
    try:
        futures = []
        started = time.perf_counter()
        tick = 0.01
        per_tick = max(1, round(rate * tick)) if rate else None
        for i in range(count):
            if per_tick and i % per_tick == 0:
                # Paced: sleep until this tick's slot, so the rate is steady, not bursty.
                delay = started + (i // per_tick) * tick - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            headers = [(SENT_HEADER, str(time.time_ns()).encode())]
            futures.append(
                await producer.send(topic, bodies[i % len(bodies)], key=f"req-{i}".encode(), headers=headers)
            )
        await asyncio.gather(*futures)
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
    return elapsed


async def run_once(settings, name: str, overrides, bodies, count: int, rate: float | None) -> dict:
    topic = f"bench-{uuid.uuid4().hex[:10]}"
    await ensure_topics(settings, [topic])
    ctx = mp.get_context("spawn")
    ready, results = ctx.Event(), ctx.Queue()
    options = {**connection_options(settings), "client_id": "bench-consumer"}
    options.pop("ssl_context", None)  # not picklable; the bench targets the local broker
    child = ctx.Process(target=consume, args=(options, topic, settings.kafka.partitions, count, ready, results), daemon=True)
    child.start()
    try:
        for _ in range(600):
            if await asyncio.to_thread(ready.wait, 0.1) or not child.is_alive():
                break
        if not ready.is_set():
            raise RuntimeError("consumer process did not start")
        elapsed = await produce(settings, overrides, topic, bodies, count, rate)
        latencies = await asyncio.to_thread(results.get, True, 150)
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.terminate()
        await delete_topics(settings, [topic])
    return {"name": name, "events_per_s": count / elapsed, "mb_per_s": count * 1024 / elapsed / 1e6,
            **percentiles(latencies)}


def show(result: dict, label: str) -> None:
    print(
        f"  {result['name']:<26} {label:<11} {result['events_per_s']:>9,.0f} ev/s "
        f"{result['mb_per_s']:>6.1f} MB/s   latency p50 {result['p50']:>7.1f} ms  "
        f"p99 {result['p99']:>7.1f} ms  (n={result['n']})"
    )


async def main(args: argparse.Namespace) -> None:
    settings = load_settings(ServiceSettings)
    bodies = payloads()
    defaults_label = ", ".join(f"{k}={v}" for k, v in PRODUCER_DEFAULTS.items())
    print(f"broker {settings.kafka.bootstrap_servers}, {settings.kafka.partitions} partitions per topic, "
          f"1 KiB text-like events; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start "
          "(other work on the machine moves these numbers)")
    print(f"project producer: {defaults_label}")
    print("aiokafka default producer: acks=1, no idempotence, no compression, linger_ms=0, max_batch_size=16384")
    profiles = [("project settings", {}), ("aiokafka defaults", None)]
    if args.codecs:
        for codec, available in (("gzip", True), ("lz4", has_lz4()), ("zstd", has_zstd()), (None, True)):
            if available and codec != PRODUCER_DEFAULTS["compression_type"]:
                profiles.append((f"project, compression={codec}", {"compression_type": codec}))
    results: dict[tuple[str, str], dict] = {}
    for name, overrides in profiles:
        results[(name, "max")] = await run_once(settings, name, overrides, bodies, args.events, None)
        show(results[(name, "max")], "max rate")
        if overrides is None or not overrides:
            steady = int(args.rate * args.seconds)
            results[(name, "steady")] = await run_once(settings, name, overrides, bodies, steady, args.rate)
            show(results[(name, "steady")], f"{args.rate:,.0f}/s")
    ours, theirs = results[("project settings", "max")], results[("aiokafka defaults", "max")]
    ours_s, theirs_s = results[("project settings", "steady")], results[("aiokafka defaults", "steady")]
    print("(latency at max rate includes the consumer's backlog whenever the producer outruns it)")
    print("ratios, project / aiokafka defaults:")
    print(f"  throughput           {ours['events_per_s'] / theirs['events_per_s']:.2f}x")
    print(f"  latency at max  p50  {ours['p50'] / theirs['p50']:.2f}x   p99 {ours['p99'] / theirs['p99']:.2f}x")
    print(f"  latency steady  p50  {ours_s['p50'] / theirs_s['p50']:.2f}x   "
          f"p99 {ours_s['p99'] / theirs_s['p99']:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="events in the max-rate run")
    parser.add_argument("--rate", type=float, default=2_000, help="events/s in the steady run")
    parser.add_argument("--seconds", type=float, default=5, help="length of the steady run")
    parser.add_argument("--codecs", action="store_true", help="also compare compression codecs")
    asyncio.run(main(parser.parse_args()))
