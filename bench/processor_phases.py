"""The measured parts of bench/processor_throughput.py: loading the topic, each phase, and phase 4.

Each function measures one thing on a pre-loaded topic of small inference events and returns
its figures; processor_throughput.py runs them (phases 2-3 each in a process of its own) and
prints. Nothing here asserts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import aiohttp  # noqa: E402
import faust  # noqa: E402
import yaml  # noqa: E402
from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402

from services.processor.app import ProcessorService  # noqa: E402
from services.processor.settings import ProcessorSection, ProcessorSettings  # noqa: E402
from shared.deployments import load_connections, load_deployments  # noqa: E402
from shared.events.builders import dict_to_struct, new_meta, next_meta  # noqa: E402
from shared.events.codec import encode  # noqa: E402
from shared.events.messages import InferenceRequest, InferenceResponse  # noqa: E402
from shared.kafka import make_producer  # noqa: E402
from shared.settings import KafkaSettings, load_settings  # noqa: E402
from shared.topics import delete_topics  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLING_RATE = 0.10
# A phase that has not read its events by then has failed (its process is ended).
PHASE_SECONDS = 600.0


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_seconds() -> float:
    """CPU time of the whole process (every thread: faust's consumer thread, code evaluator threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def code_threads_usage() -> tuple[float, int]:
    """(CPU seconds, voluntary context switches) of the code evaluators' threads so far.

    A thread waiting for the GIL is woken each time the loop's thread lets go of it and goes back
    to sleep when it loses the race, so its switches count how dearly it got the GIL
    (docs/processor.md, "Code evaluators on the stream").
    """
    ticks = os.sysconf("SC_CLK_TCK")
    cpu, switches = 0.0, 0
    for thread in threading.enumerate():
        if not thread.name.startswith("code-evaluator") or thread.native_id is None:
            continue
        try:
            with open(f"/proc/self/task/{thread.native_id}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/self/task/{thread.native_id}/status") as status:
                text = status.read()
        except OSError:  # the thread just ended
            continue
        cpu += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        switches += int(text.split("\nvoluntary_ctxt_switches:")[1].split()[0])
    return cpu, switches


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def templates() -> tuple[InferenceRequest, InferenceResponse, list, list]:
    meta = new_meta(request_id="template", deployment="bench", request_start_time=None)
    meta.request_start_time.GetCurrentTime()
    request = InferenceRequest(meta=meta, inputs=dict_to_struct({"question": "What is item 7?"}))
    response = InferenceResponse(
        meta=next_meta(meta), status=1, latency_ms=5.0, outputs=dict_to_struct({"answer": "Item 7 is a thing."})
    )
    return request, response, encode(request).headers, encode(response).headers


async def load_topic(kafka: KafkaSettings, topic: str, requests: int) -> float:
    """Produce ``requests`` request/response pairs; returns the seconds it took.

    Events are stamped from a validated template (copy, new ids, serialise): building each one
    through the codec's validation would make loading, not reading, the slow part of the run.
    """
    request_template, response_template, request_headers, response_headers = templates()
    # Loading is not what is measured: big batches, no idempotence, so it takes seconds.
    producer = make_producer(
        kafka, client_id="bench-gateway", enable_idempotence=False, acks=1, linger_ms=50,
        max_batch_size=1024 * 1024,
    )
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for n in range(requests):
            request_id = f"bench-{n:08d}"
            key = request_id.encode()
            for template, headers in ((request_template, request_headers), (response_template, response_headers)):
                event = type(template)()
                event.CopyFrom(template)
                event.meta.request_id = request_id
                event.meta.event_id = str(uuid.uuid4())
                pending.append(
                    await producer.send(topic, value=event.SerializeToString(), key=key, headers=headers)
                )
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def raw_consumer(kafka: KafkaSettings, topic: str, total: int, partitions: int) -> float:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        seen = 0
        first = last = 0.0
        while seen < total:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for rows in batch.values():
                if rows and not first:
                    first = time.perf_counter()
                seen += len(rows)
            last = time.perf_counter()
        return seen / (last - first)
    finally:
        await consumer.stop()


async def faust_noop(kafka: KafkaSettings, topic: str, total: int) -> tuple[float, float]:
    """(events/s, process CPU µs per event) of a faust agent that does nothing with each event."""
    group = f"bench-noop-{uuid.uuid4().hex[:8]}"
    datadir = tempfile.mkdtemp(prefix="bench-faust-")
    app = faust.App(
        group, broker=f"kafka://{kafka.bootstrap_servers}", web_enabled=False, datadir=datadir,
        topic_replication_factor=1, consumer_auto_offset_reset="earliest", autodiscover=False,
    )
    source = app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw", acks=False)
    state = SimpleNamespace(seen=0, first=0.0, last=0.0, cpu_first=0.0, cpu_last=0.0)
    done = asyncio.Event()

    async def nothing(stream: Any) -> None:
        async for _event in stream.events():
            if not state.seen:
                state.first = time.perf_counter()
                state.cpu_first = cpu_seconds()
            state.seen += 1
            if state.seen == total:
                state.last = time.perf_counter()
                state.cpu_last = cpu_seconds()
                done.set()

    app.agent(source, name=f"{group}.noop")(nothing)
    await app.start()
    try:
        await asyncio.wait_for(done.wait(), 600)
    finally:
        await app.stop()
        await delete_topics(kafka, [f"{group}-__assignor-__leader"])
        shutil.rmtree(datadir, ignore_errors=True)
    return (total - 1) / (state.last - state.first), 1e6 * (state.cpu_last - state.cpu_first) / (total - 1)


class InstantJudge:
    """An openai-like client whose judge answers at once, without HTTP."""

    def __init__(self) -> None:
        usage = SimpleNamespace(prompt_tokens=300, completion_tokens=20)
        message = SimpleNamespace(content='{"score": 4, "reason": "instant"}')
        self._reply = SimpleNamespace(model="instant", choices=[SimpleNamespace(message=message)], usage=usage)
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))

    async def _create(self, **kwargs: Any) -> Any:
        return self._reply

    async def close(self) -> None:
        pass


# Phase 3b's code evaluator: synchronous, so it runs in the code evaluators' thread pool, as a
# user's would; cheap, so the figure is the pipeline's cost of a code evaluator, not its own.
CODE_EVALUATOR = '''
def answer_words(answer):
    words = len((answer or "").split())
    return {"score": 1.0 if words >= 3 else words / 3, "reason": f"{words} words"}
'''


# Phase 3c's: the same check written ``async def``, which the pipeline awaits on the event loop
# (no thread hand-over): what a user whose check never blocks can write instead.
ASYNC_CODE_EVALUATOR = CODE_EVALUATOR.replace("def answer_words", "async def answer_words")


def write_deployments(
    folder: Path, judge_url: str, rate: float = SAMPLING_RATE, code: str | None = None
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    evaluators = []
    if code is not None:
        (folder / "bench_checks.py").write_text(code)
        evaluators = [{
            "name": "answer_words", "kind": "code", "code": "bench_checks.py:answer_words",
            "columns": {"answer": "outputs.answer"}, "scale": "float", "timeout_seconds": 5,
        }]
    (folder / "connections.yaml").write_text(
        yaml.safe_dump({"connections": {"judge": {"type": "openai_compatible", "base_url": judge_url, "api_key": "none"}}})
    )
    (folder / "bench.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "bench", "flow": "flows/unused",
                "column_mapping": {"question": "inputs.question", "answer": "outputs.answer"},
                "evaluation": {
                    "metrics": ["relevance"], "sampling_rate": rate,
                    "judge": {"connection": "judge", "model": "llmsim-judge", "token_budget_per_hour": None},
                    **({"evaluators": evaluators} if evaluators else {}),
                },
            }
        )
    )


def processor_settings(prefix: str, folder: Path, group: str, **section: Any) -> ProcessorSettings:
    return load_settings(
        ProcessorSettings,
        kafka=KafkaSettings(topic_prefix=prefix),
        deployments_dir=folder,
        telemetry={"spans_to_kafka": False},
        processor=ProcessorSection(port=0, group_id=group, **section),
    )


async def processor_path(prefix: str, folder: Path, total: int) -> tuple[float, float, int, tuple[float, int]]:
    """(events/s, process CPU µs per event, requests judged, the code threads' CPU seconds and
    voluntary switches) of the processor on the topic; the CPU figures run until every judged
    request's outcomes are published."""
    settings = processor_settings(prefix, folder, f"bench-proc-{uuid.uuid4().hex[:8]}")
    service = ProcessorService(
        settings,
        deployments=load_deployments(folder, check_flow=False),
        connections=load_connections(folder),
        make_judge_client=lambda connection: InstantJudge(),
    )
    async with service:
        first = last = cpu_first = 0.0
        give_up = time.monotonic() + PHASE_SECONDS
        while service.stats.events < total:
            if service.stats.events and not first:
                first = time.perf_counter()
                cpu_first = cpu_seconds()
            if time.monotonic() > give_up:  # a run stuck (seen once, not reproduced) fails, not hangs
                raise RuntimeError(f"read {service.stats.events:,} of {total:,} events in {PHASE_SECONDS:g}s")
            await asyncio.sleep(0.02)
        last = time.perf_counter()
        await service.runner.drain(60)
        cpu = cpu_seconds() - cpu_first
        judged = service.stats.judge_triggers
        code_threads = code_threads_usage()  # made at the first call: nothing before the phase
    await delete_topics(settings, [f"{settings.group_id()}-__assignor-__leader"])
    return total / (last - first), 1e6 * cpu / total, judged, code_threads


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def slow_llmsim(seconds: float) -> Any:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PROMPTPULSE_")},
        "PROMPTPULSE_LLMSIM__PORT": str(port),
        "PROMPTPULSE_LLMSIM__LATENCY__TTFT_MS": str(seconds * 1000),
        "PROMPTPULSE_LLMSIM__LATENCY__TOKENS_PER_SECOND": "10000000",
        "PROMPTPULSE_LLMSIM__LATENCY__JITTER": "0",
        "PROMPTPULSE_TELEMETRY__LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.llmsim", cwd=REPO, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/healthz") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.05)
        yield f"{url}/v1"
    finally:
        process.terminate()
        await process.wait()


async def slow_judge(prefix: str, folder: Path, seconds: float, window: float, cap: int) -> dict[str, float]:
    settings = processor_settings(
        prefix, folder, f"bench-slow-{uuid.uuid4().hex[:8]}", judge_concurrency=cap,
        judge_timeout_seconds=seconds * 10, shutdown_drain_seconds=0,
    )
    service = ProcessorService(settings)
    samples: list[int] = []
    async with service:
        stats = service.stats
        # Warm up until the cap is (nearly) reached (the queue holds the rest: back-pressure).
        # Not "reached": calls finishing and starting keep the count a little under it, and
        # waiting for the exact cap could outlast a short topic's judging.
        for _ in range(1200):  # up to a minute
            if service.runner.calls_in_flight >= 0.9 * cap:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(seconds)
        calls_before = sum(stats.judge_calls.values())
        events_before = stats.events
        started = time.perf_counter()
        while time.perf_counter() - started < window:
            samples.append(service.runner.calls_in_flight)
            await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - started
        calls = sum(stats.judge_calls.values()) - calls_before
        events = stats.events - events_before
        latency = stats.judge_latency_seconds_sum["bench"] / max(1, stats.judge_latency_count["bench"])
        queued = service.runner.queued
    await delete_topics(settings, [f"{settings.group_id()}-__assignor-__leader"])
    return {
        "in_flight_mean": sum(samples) / len(samples),
        "in_flight_max": max(samples),
        "calls_per_second": calls / elapsed,
        "events_per_second": events / elapsed,
        "judge_latency": latency,
        "queued": queued,
    }
