"""Re-judge throughput against the judge concurrency cap and judge latency, beside live judging.

One processor (judge cap ``--cap``), llmsim in its own process answering every judge call after
``--latency`` seconds. A window of ``--requests`` requests is loaded on the inference topic
(10% of them sampled, so live judging has work from the start), then a RejudgeCommand for the
whole window is sent while live traffic goes on at ``--live-rate`` requests/s (10% sampled).

Measured from the moment the window has been read (judging begins) to the re-judge's "done":
- occupancy: the time-averaged number of judge calls in flight over the cap, from the exact time
  integral JudgeCalls keeps (not samples);
- throughput (re-judge and live calls) against Little's law's bound cap / latency, with the
  latency as the judge client measured it (the figure that matters on a loaded machine, whose
  load slows the judge's answers, not the cap's use) and with llmsim's nominal latency;
- how long live and re-judge calls waited for a place (live first), the processor's CPU per call.
By Little's law the two ratios agree (up to the moments a call holds its place without the judge
answering); the goal (issue 13) is >= 0.90.

Usage: ``python bench/rejudge.py [--requests 600] [--cap 16] [--latency 0.2] [--live-rate 20]``
(about 20 s at the defaults). Needs Kafka on 127.0.0.1:9092. It prints; it does not assert.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from processor_phases import load_topic, processor_settings, slow_llmsim, write_deployments

from services.processor.app import ProcessorService
from services.processor.evaluation.judge.calls import LIVE, REJUDGE
from shared.deployments import load_deployments
from shared.events.builders import dict_to_struct, new_meta, next_meta
from shared.events.codec import encode, event_key
from shared.events.messages import InferenceRequest, InferenceResponse
from shared.events.rejudge import RejudgeCommand, RejudgeProgress, encode_rejudge
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
                agent = service.rejudge
                assert agent is not None and service.runner is not None, "the processor runs no re-judge agent"
                # Polls the agent's state: it exposes no event, and 10 ms is far below what is measured.
                while agent.current != "bench-rj":  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                seen = time.perf_counter()
                while (progress := agent.progress.get("bench-rj")) is None:  # noqa: ASYNC110  # window read
                    await asyncio.sleep(0.01)
                before = Snapshot.take(service)
                while progress.status not in ("done", "failed"):
                    await asyncio.sleep(0.01)
                    progress = agent.progress["bench-rj"]
                after = Snapshot.take(service)
                stop.set()
                live_sent = await live
            await delete_topics(settings, [f"{settings.group_id()}-__assignor-__leader"])
    finally:
        await delete_topics(kafka, topics.all())
    report(args, progress, before, after, before.at - seen, live_sent)


@dataclass(frozen=True)
class Snapshot:
    """The processor's judge counters at one moment, taken in the bench's own process."""

    at: float
    calls: int
    rejudged: int
    occupied_seconds: float  # the time integral of judge calls in flight (JudgeCalls)
    latency_sum: float  # seconds the judge took to answer, as the judge client measured it
    latency_count: int
    cpu_seconds: float  # this process's: the processor, plus the bench's light live producer
    free_seconds: float  # the time integral of free places: none of them asked for (PrioritySlots)
    taken: tuple[int, ...]  # places taken under the cap, live and re-judge
    waited_seconds: tuple[float, ...]  # time spent waiting for them

    @classmethod
    def take(cls, service: ProcessorService) -> Snapshot:
        stats, usage, slots = service.stats, resource.getrusage(resource.RUSAGE_SELF), service.judge_calls.slots
        return cls(time.perf_counter(), sum(stats.judge_calls.values()), stats.rejudge_published,
                   service.judge_calls.occupied_seconds, sum(stats.judge_latency_seconds_sum.values()),
                   sum(stats.judge_latency_count.values()), usage.ru_utime + usage.ru_stime,
                   slots.free_seconds, tuple(slots.taken), tuple(slots.waited_seconds))

    def waited_ms(self, before: Snapshot, priority: int) -> float:
        taken = self.taken[priority] - before.taken[priority]
        return 1000 * (self.waited_seconds[priority] - before.waited_seconds[priority]) / max(1, taken)


def report(args: argparse.Namespace, progress: RejudgeProgress, before: Snapshot, after: Snapshot,
           window_read: float, live_sent: int) -> None:
    elapsed = after.at - before.at
    calls, rejudged = after.calls - before.calls, after.rejudged - before.rejudged
    rate = calls / elapsed
    answered = (after.latency_sum - before.latency_sum) / max(1, after.latency_count - before.latency_count)
    held = (after.occupied_seconds - before.occupied_seconds) / max(1, calls)
    occupancy = (after.occupied_seconds - before.occupied_seconds) / elapsed / args.cap
    measured = rate / (args.cap / answered)
    print(f"re-judge of {args.requests} requests ({progress.status}, {progress.total} chosen): window read in "
          f"{window_read:.2f} s, judged in {elapsed:.2f} s; cap {args.cap}, llmsim latency {args.latency:g} s; "
          f"live traffic {live_sent} requests at {args.live_rate:g}/s (10% sampled)")
    print(f"judge calls while judging: {calls} ({rejudged} re-judge, {calls - rejudged} live) = {rate:.1f}/s; "
          f"processor CPU {1000 * (after.cpu_seconds - before.cpu_seconds) / max(1, calls):.2f} ms per call")
    print(f"judge latency: {answered:.3f} s as the judge client measured it, {held:.3f} s a call held its place "
          f"under the cap, {args.latency:g} s llmsim's own")
    print(f"waiting for a place under the cap: live calls {after.waited_ms(before, LIVE):.1f} ms on average "
          f"(live first), re-judge calls {after.waited_ms(before, REJUDGE):.1f} ms")
    print(f"occupancy (time-averaged judge calls in flight / cap): {occupancy:.2f}")
    free = (after.free_seconds - before.free_seconds) / elapsed / args.cap
    print(f"  the cap's idle {1 - occupancy:.3f}: {free:.3f} free with no call asking for a place (e.g. the "
          f"window's last calls), {1 - occupancy - free:.3f} handed to a waiting call the event loop had not "
          f"run yet")
    print(f"throughput / (cap / nominal latency {args.latency:g} s): {rate / (args.cap / args.latency):.2f}")
    print(f"throughput / (cap / measured latency {answered:.3f} s): {measured:.2f}   goal >= 0.90: "
          f"{'met' if measured >= 0.9 else 'NOT met'}")
    print(f"  the same with the window read counted in the time: "
          f"{calls / (elapsed + window_read) / (args.cap / answered):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--cap", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--live-rate", type=float, default=20.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
