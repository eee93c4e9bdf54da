"""Re-judge throughput against the judge concurrency cap and judge latency, beside live judging.

One processor (judge cap ``--cap``), llmsim in its own process answering every judge call after
``--latency`` seconds. A window of ``--requests`` requests is loaded on the inference topic
(10% of them sampled, so live judging has work from the start), then a RejudgeCommand for the
whole window is sent while live traffic goes on at ``--live-rate`` requests/s (10% sampled).
Little's law bounds judge throughput at cap / latency calls per second; the run prints how much
of that bound re-judging and live judging took together, re-judging's share, the mean calls in
flight against the cap, and how long live calls waited for a place (their latency as judged,
against llmsim's). The goal (issue 13) is re-judging plus live at >= 90% of the bound.

Usage: ``python bench/rejudge.py [--requests 600] [--cap 16] [--latency 0.2] [--live-rate 20]``.
Needs Kafka on 127.0.0.1:9092. It prints; it does not assert.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from processor_throughput import load_topic, processor_settings, slow_llmsim, write_deployments

from services.processor.app import ProcessorService
from shared.deployments import load_deployments
from shared.events.builders import dict_to_struct, new_meta, next_meta
from shared.events.codec import encode, event_key
from shared.events.messages import InferenceRequest, InferenceResponse
from shared.events.rejudge import RejudgeCommand, encode_rejudge
from shared.kafka import make_producer
from shared.settings import KafkaSettings
from shared.topics import Topics, delete_topics, ensure_topics


async def live_traffic(kafka: KafkaSettings, topic: str, rate: float, stop: asyncio.Event) -> int:
    producer = make_producer(kafka, client_id="bench-live")
    await producer.start()
    sent = 0
    try:
        while not stop.is_set():
            request_id = f"live-{uuid.uuid4().hex}"
            meta = new_meta(request_id=request_id, deployment="bench", request_start_time=datetime.now(UTC))
            request = InferenceRequest(meta=meta, inputs=dict_to_struct({"question": "What is item 7?"}))
            response = InferenceResponse(meta=next_meta(meta), status=1, latency_ms=5.0,
                                         outputs=dict_to_struct({"answer": "Item 7 is a thing."}))
            for event in (request, response):
                record = encode(event)
                await producer.send(topic, value=record.value, key=event_key(event), headers=record.headers)
            sent += 1
            await asyncio.sleep(1 / rate)
    finally:
        await producer.stop()
    return sent


async def run(args: argparse.Namespace) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    kafka = KafkaSettings(topic_prefix=prefix)
    topics = Topics.from_prefix(prefix)
    await ensure_topics(kafka, [topics.inference, topics.evaluations, topics.deadletter_processor])
    folder = Path(tempfile.mkdtemp(prefix="bench-rejudge-"))
    try:
        async with slow_llmsim(args.latency) as judge_url:
            write_deployments(folder, judge_url)
            version = load_deployments(folder, check_flow=False)["bench"].evaluation.evaluator("relevance").version
            start = datetime.now(UTC) - timedelta(seconds=1)
            await load_topic(kafka, topics.inference, args.requests)
            end = datetime.now(UTC) + timedelta(seconds=1)
            await asyncio.sleep(1.1)  # the window must be over
            settings = processor_settings(prefix, folder, f"bench-rejudge-{uuid.uuid4().hex[:8]}",
                                          judge_concurrency=args.cap, judge_timeout_seconds=args.latency * 20,
                                          shutdown_drain_seconds=0)
            service = ProcessorService(settings)
            async with service:
                stop = asyncio.Event()
                live = asyncio.create_task(live_traffic(kafka, topics.inference, args.live_rate, stop))
                await asyncio.sleep(2)  # live judging under way first
                command = RejudgeCommand(rejudge_id="bench-rj", deployment="bench", evaluator="relevance",
                                         evaluator_version=version)
                command.window_start.FromDatetime(start)
                command.window_end.FromDatetime(end)
                producer = make_producer(kafka, client_id="bench-command")
                await producer.start()
                record = encode_rejudge(command)
                await producer.send_and_wait(topics.rejudge_commands, value=record.value, key=b"bench-rj",
                                             headers=record.headers)
                await producer.stop()
                stats = service.stats
                # Polls the agent's state: it exposes no event, and 10 ms is far below what is measured.
                while service.rejudge is not None and service.rejudge.current != "bench-rj":  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                began = time.perf_counter()
                calls_before = sum(stats.judge_calls.values())
                rejudged_before = stats.rejudge_published
                latency_sum, latency_count = stats.judge_latency_seconds_sum["bench"], stats.judge_latency_count["bench"]
                samples: list[int] = []
                while True:
                    progress = service.rejudge.progress.get("bench-rj") if service.rejudge else None
                    if progress is not None and progress.status in ("done", "failed"):
                        break
                    samples.append(service.runner.calls_in_flight if service.runner else 0)
                    await asyncio.sleep(0.1)
                elapsed = time.perf_counter() - began
                calls = sum(stats.judge_calls.values()) - calls_before
                rejudged = stats.rejudge_published - rejudged_before
                latency = ((stats.judge_latency_seconds_sum["bench"] - latency_sum)
                           / max(1, stats.judge_latency_count["bench"] - latency_count))
                stop.set()
                live_sent = await live
            await delete_topics(settings, [f"{settings.group_id()}-__assignor-__leader"])
    finally:
        await delete_topics(kafka, topics.all())
    bound = args.cap / args.latency
    live_calls = calls - rejudged
    print(f"re-judge of {args.requests} requests ({progress.status}, {progress.total} chosen) in {elapsed:.1f} s, "
          f"cap {args.cap}, llmsim latency {args.latency:g} s; live traffic {live_sent} requests at "
          f"{args.live_rate:g}/s (10% sampled)")
    print(f"judge calls: {calls} ({rejudged} re-judge, {live_calls} live) = {calls / elapsed:.1f}/s; "
          f"Little's law bound cap/latency = {bound:.1f}/s")
    print(f"ratios: all calls / bound {calls / elapsed / bound:.2f}; re-judge / bound {rejudged / elapsed / bound:.2f}; "
          f"mean in flight / cap {sum(samples) / max(1, len(samples)) / args.cap:.2f}; judged latency / llmsim's "
          f"{latency / args.latency:.2f}")
    print(f"against the latency as judged ({latency:.3f} s): all calls / (cap / latency) "
          f"{calls / elapsed / (args.cap / latency):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--cap", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--live-rate", type=float, default=20.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
