"""The fault ledger: count every acknowledged request, heal the fault, then look for what is lost.

Modelled on the Kafka community's fault checkers (Jepsen's queue checker): :func:`run_load` sends
steady open-loop traffic to a :func:`tests.support.live_stack.live_stack` gateway and records in a
:class:`Ledger` every request the gateway acknowledged (a 2xx JSON reply, or a stream that reached
its ``done`` event) with its request id, variant, time and whether it was streamed; refusals are
counted by status (``rejected``), client-side failures by kind (``errors``), and replies that
carried a request id but no success go to ``unacknowledged`` (their events may exist; they are
never required). After the fault heals and the load stops, :func:`verify` waits (up to
``within`` seconds) until every acknowledged request is counted, then checks four things and
returns a :class:`Verdict`: every acknowledged request's request and response events are on the
inference topic; the aggregator's raw tables hold each request, response and evaluation exactly
once; every rollup equals its recomputation from the raw rows in plain SQL (the independent
``RECOMPUTE`` queries of tests/support/aggregator.py, read in one repeatable-read snapshot); and
every sampled acknowledged request has one evaluation outcome per metric of the deployment.
``lost`` = acknowledged but never counted although the aggregator's stored offsets are past its
events (or its events never reached the topic); ``unseen`` = acknowledged, not counted, and the
aggregator still behind when ``within`` expired; ``duplicated`` = a request (or evaluation) with
two raw rows, or a rollup minute counting more requests, responses or evaluations than there
are distinct raw rows; ``unjudged`` = sampled, counted, but missing evaluations; ``dead_letters`` =
inference or evaluation records the aggregator refused.
``Verdict.assert_clean()`` fails with a readable summary. :class:`RssSampler` samples every
stack process's RSS (psutil) once a second. Helpers: :func:`steady_load` (run_load in the
background of an ``async with``), ``Ledger.until_acknowledged`` / ``acknowledged_since``,
:func:`aggregator_caught_up`, :func:`prometheus_total` (prove the fault was felt) and
:func:`report` (a row of docs/reliability.md). A fault test reads:

    ledger = Ledger()
    async with RssSampler(stack) as rss, steady_load(stack, ledger, rate=15):
        await ledger.until_acknowledged(50, within=60)
        ...                                   # the fault, then the heal
    (await verify(stack, ledger)).assert_clean()
    rss.assert_below(600 * 2**20)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import psutil
import yaml
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from shared.events.headers import event_type
from shared.kafka import make_consumer
from shared.sampling import is_sampled
from tests.support.live_stack import LiveStack
from tests.support.prometheus_text import total
from tests.support.rollup_recompute import KEY_WIDTH, RECOMPUTE
from tests.support.service_process import Service

MB = 2**20
REQUEST, RESPONSE = "inference.request", "inference.response"


# -- the ledger and the load ------------------------------------------------------------------


@dataclass
class Ledger:
    """What the gateway told the load generator. Only ``acknowledged`` is a promise."""

    # request_id -> {variant, at, streamed, sent, headers}: `at` when acknowledged, `sent` when
    # the request left, `headers` when the reply's headers came (all time.time()).
    acknowledged: dict[str, dict] = field(default_factory=dict)
    rejected: Counter = field(default_factory=Counter)  # HTTP status (or "stream_error") -> count
    errors: Counter = field(default_factory=Counter)  # client-side failure kind -> count
    unacknowledged: dict[str, str] = field(default_factory=dict)  # request_id -> why (events optional)
    # Every request not acknowledged: {reason, streamed, sent, at, headers (None if none came)}.
    failures: list[dict] = field(default_factory=list)
    sent: int = 0
    shed: int = 0  # arrivals not sent because `concurrency` requests were already in flight

    def acknowledge(self, request_id: str, variant: str, streamed: bool, *, sent: float | None = None,
                    headers: float | None = None) -> None:
        self.acknowledged[request_id] = {"variant": variant, "at": time.time(), "streamed": streamed,
                                         "sent": sent, "headers": headers}

    def fail(self, reason: str, streamed: bool, sent: float, headers: float | None) -> None:
        self.failures.append({"reason": reason, "streamed": streamed, "sent": sent, "at": time.time(),
                              "headers": headers})

    async def until_acknowledged(self, count: int, within: float = 60.0) -> None:
        """Wait until at least ``count`` requests are acknowledged (fails after ``within`` s)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while len(self.acknowledged) < count:
            if loop.time() > deadline:
                raise AssertionError(f"only {len(self.acknowledged)} of {count} requests acknowledged "
                                     f"within {within:.0f} s; {self.summary()}")
            await asyncio.sleep(0.1)

    def acknowledged_since(self, moment: float) -> int:
        return sum(1 for entry in self.acknowledged.values() if entry["at"] >= moment)

    def summary(self) -> str:
        return (f"sent {self.sent}, acknowledged {len(self.acknowledged)}, rejected {dict(self.rejected)}, "
                f"errors {dict(self.errors)}, unacknowledged with an id {len(self.unacknowledged)}, "
                f"shed {self.shed}")


async def run_load(
    stack: LiveStack, ledger: Ledger, *, rate: float, stop: asyncio.Event,
    streaming_share: float = 0.2, concurrency: int = 16,
) -> None:
    """Open-loop load at ``rate`` requests/s until ``stop`` is set, then wait for those in flight.

    An arrival finding ``concurrency`` requests in flight is not sent (counted in ``ledger.shed``),
    so a stalled gateway cannot make the generator pile up requests. Connection errors and
    timeouts are recorded in ``ledger.errors``, never raised.
    """
    rng = random.Random(len(ledger.acknowledged) + ledger.sent)
    loop = asyncio.get_running_loop()
    in_flight: set[asyncio.Task] = set()
    timeout = aiohttp.ClientTimeout(total=60, sock_connect=5)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        next_at = loop.time()
        number = 0
        while not stop.is_set():
            if len(in_flight) >= concurrency:
                ledger.shed += 1
            else:
                number += 1
                streamed = rng.random() < streaming_share
                task = asyncio.create_task(_one_request(stack, ledger, session, number, streamed))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            next_at += 1.0 / rate
            delay = next_at - loop.time()
            if delay < -1.0:  # the loop itself fell behind (a busy machine): do not burst to catch up
                next_at = loop.time()
                delay = 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(delay, 0))
        if in_flight:
            await asyncio.wait(in_flight)


async def _one_request(
    stack: LiveStack, ledger: Ledger, session: aiohttp.ClientSession, number: int, streamed: bool,
) -> None:
    ledger.sent += 1
    sent = time.time()
    headers_at = None
    url = stack.score_url + ("?stream=true" if streamed else "")
    body = {"question": f"Question {number}: how does PromptPulse decide which requests to judge?"}
    request_id = None
    try:
        async with session.post(url, json=body, headers={"api-key": stack.demo_key}) as resp:
            headers_at = time.time()
            request_id = resp.headers.get("x-request-id")
            if resp.status >= 300:
                ledger.rejected[resp.status] += 1
                await resp.read()
                if request_id:
                    ledger.unacknowledged[request_id] = f"HTTP {resp.status}"
                ledger.fail(f"HTTP {resp.status}", streamed, sent, headers_at)
                return
            if not streamed:
                reply = await resp.json(content_type=None)
                ledger.acknowledge(reply["request_id"], reply.get("variant", ""), streamed=False,
                                   sent=sent, headers=headers_at)
                return
            done = await _read_stream(resp)
            if done is None:
                ledger.rejected["stream_error"] += 1
                if request_id:
                    ledger.unacknowledged[request_id] = "stream ended without done"
                ledger.fail("stream ended without done", streamed, sent, headers_at)
                return
            ledger.acknowledge(done["request_id"], done.get("variant", ""), streamed=True,
                               sent=sent, headers=headers_at)
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        ledger.errors[type(exc).__name__] += 1
        if request_id:
            ledger.unacknowledged[request_id] = f"{type(exc).__name__} after the headers"
        ledger.fail(type(exc).__name__, streamed, sent, headers_at)


async def _read_stream(resp: aiohttp.ClientResponse) -> dict | None:
    """The ``done`` event's data, or None when the stream ended with an error or without it."""
    name = ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and name == "done":
            return json.loads(line[6:])
        elif line.startswith("data: ") and name == "error":
            return None
    return None


@asynccontextmanager
async def steady_load(
    stack: LiveStack, ledger: Ledger, *, rate: float, streaming_share: float = 0.2, concurrency: int = 16,
) -> AsyncIterator[asyncio.Task]:
    """:func:`run_load` in the background for the ``async with`` block; stops and drains on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_load(stack, ledger, rate=rate, stop=stop,
                                        streaming_share=streaming_share, concurrency=concurrency))
    try:
        yield task
    finally:
        stop.set()
        await task


# -- the verdict ------------------------------------------------------------------------------


@dataclass
class Verdict:
    lost: list[str]
    duplicated: list[str]
    unseen: list[str]
    rollup_mismatches: list[str]
    counts: dict
    unjudged: list[str] = field(default_factory=list)  # sampled, counted, evaluations missing
    dead_letters: list[str] = field(default_factory=list)  # inference/evaluation records refused

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.unseen or self.rollup_mismatches
                    or self.unjudged or self.dead_letters)

    def summary(self) -> str:
        def some(items: list[str]) -> str:
            return f"{len(items)}" + (f" (e.g. {'; '.join(items[:5])})" if items else "")

        return (f"lost {some(self.lost)}, duplicated {some(self.duplicated)}, unseen {some(self.unseen)}, "
                f"unjudged {some(self.unjudged)}, rollup mismatches {some(self.rollup_mismatches)}, "
                f"dead letters {some(self.dead_letters)}; counts {self.counts}")

    def assert_clean(self) -> None:
        if not self.clean:
            raise AssertionError("the ledger does not balance: " + self.summary())


@dataclass
class _TopicView:
    """Per request id on the inference topic: how many request and response events, and where."""

    requests: Counter = field(default_factory=Counter)
    responses: Counter = field(default_factory=Counter)
    last_position: dict[str, tuple[int, int]] = field(default_factory=dict)  # rid -> (partition, offset)
    records: int = 0


@dataclass
class _Stored:
    requests: Counter
    responses: Counter
    evaluations: Counter  # (rid, metric) -> rows
    offsets: dict[tuple[str, int], int]
    dead_letters: list[str]


def _deployment_spec(stack: LiveStack) -> dict[str, Any]:
    return yaml.safe_load((stack.deployments_dir / f"{stack.deployment}.yaml").read_text())


def _aggregator_group(stack: LiveStack) -> str:
    env = stack.of_kind("aggregator")[0].env
    return env.get("PROMPTPULSE_AGGREGATOR__GROUP_ID") or f"{stack.kafka.topic_prefix}aggregator"


async def _read_inference_topic(stack: LiveStack) -> _TopicView:
    """Every record of the inference topic, from the beginning to the end offsets of now."""
    view = _TopicView()
    consumer = make_consumer(stack.kafka, group_id=None, client_id="fault-ledger-reader")
    await consumer.start()
    try:
        partitions = [TopicPartition(stack.topics.inference, p)
                      for p in sorted(consumer.partitions_for_topic(stack.topics.inference) or
                                      range(stack.kafka.partitions))]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        remaining = {tp for tp, end in ends.items() if end > 0}
        async with asyncio.timeout(120):
            while remaining:
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                for tp, records in batch.items():
                    for record in records:
                        if record.offset >= ends[tp]:
                            continue
                        view.records += 1
                        rid = record.key.decode(errors="replace") if record.key else ""
                        kind = event_type(record.headers)
                        if kind == REQUEST:
                            view.requests[rid] += 1
                        elif kind == RESPONSE:
                            view.responses[rid] += 1
                        view.last_position[rid] = (tp.partition, record.offset)
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
    return view


async def _end_offsets(stack: LiveStack, topics: list[str]) -> dict[tuple[str, int], int]:
    consumer = make_consumer(stack.kafka, group_id=None, client_id="fault-ledger-ends")
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in range(stack.kafka.partitions)]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}


async def _read_stored(stack: LiveStack, group: str) -> _Stored:
    conn = await asyncpg.connect(stack.database_url, timeout=10)
    try:
        requests = Counter({r["request_id"]: r["n"] for r in await conn.fetch(
            "SELECT request_id, count(*) AS n FROM inference_requests WHERE deployment = $1 GROUP BY 1",
            stack.deployment)})
        responses = Counter({r["request_id"]: r["n"] for r in await conn.fetch(
            "SELECT request_id, count(*) AS n FROM inference_responses WHERE deployment = $1 GROUP BY 1",
            stack.deployment)})
        evaluations = Counter({(r["request_id"], r["metric"]): r["n"] for r in await conn.fetch(
            "SELECT request_id, metric, count(*) AS n FROM evaluations WHERE deployment = $1 GROUP BY 1, 2",
            stack.deployment)})
        offsets = {(r["topic"], r["kafka_partition"]): r["next_offset"] for r in await conn.fetch(
            "SELECT topic, kafka_partition, next_offset FROM consumer_offsets WHERE consumer_group = $1", group)}
        letters = [f"{r['topic']}[{r['kafka_partition']}]@{r['kafka_offset']}: {r['reason']} {r['detail'][:120]}"
                   for r in await conn.fetch(
                       "SELECT topic, kafka_partition, kafka_offset, reason, detail FROM dead_letters "
                       "WHERE topic = ANY($1::text[]) ORDER BY id",
                       [stack.topics.inference, stack.topics.evaluations])]
    finally:
        await conn.close()
    return _Stored(requests, responses, evaluations, offsets, letters)


async def _rollup_checks(stack: LiveStack) -> tuple[list[str], list[str]]:
    """(rollup mismatches, rollup double counts), both read in one repeatable-read snapshot so
    that a batch committed meanwhile cannot make stored and recomputed figures disagree."""
    conn = await asyncpg.connect(stack.database_url, timeout=10)
    mismatches: list[str] = []
    doubles: list[str] = []
    try:
        await conn.execute("SET TIME ZONE 'UTC'")
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            for table, query in RECOMPUTE.items():
                width = KEY_WIDTH[table]
                expected = {tuple(r[:width]): tuple(r[width:]) for r in await conn.fetch(query)}
                stored = {tuple(r[:width]): tuple(r[width:]) for r in await conn.fetch(f"SELECT * FROM {table}")}
                for key in sorted(set(expected) | set(stored), key=repr):
                    want, have = expected.get(key), stored.get(key)
                    if want is None or have is None or not all(map(_close, want, have)):
                        mismatches.append(f"{table} {_show(key)}: recomputed {want} stored {have}")
            doubles += [
                f"rollup_operations {r['what']} {_show(tuple(r)[:4])}: {r['counted']} counted for "
                f"{r['distinct_ids']} distinct raw rows"
                for r in await conn.fetch(_DOUBLE_OPERATIONS)
            ]
            doubles += [
                f"rollup_quality evaluations {_show(tuple(r)[:5])}: {r['counted']} counted for "
                f"{r['distinct_ids']} distinct raw rows"
                for r in await conn.fetch(_DOUBLE_QUALITY)
            ]
    finally:
        await conn.close()
    return mismatches, doubles


# A rollup minute that counts more than there are distinct requests in the raw rows of that
# minute double-counted something (or lost a raw row after counting it: then `lost` says so too).
_DOUBLE_OPERATIONS = """
    WITH q AS (SELECT deployment, date_trunc('minute', request_start_time) AS minute, variant, run_id,
                      count(DISTINCT request_id) AS n FROM inference_requests GROUP BY 1, 2, 3, 4),
         r AS (SELECT deployment, date_trunc('minute', request_start_time) AS minute, variant, run_id,
                      count(DISTINCT request_id) AS n FROM inference_responses GROUP BY 1, 2, 3, 4)
    SELECT o.deployment, o.minute, o.variant, o.run_id, 'requests' AS what,
           o.requests AS counted, coalesce(q.n, 0) AS distinct_ids
    FROM rollup_operations o LEFT JOIN q USING (deployment, minute, variant, run_id)
    WHERE o.requests > coalesce(q.n, 0)
    UNION ALL
    SELECT o.deployment, o.minute, o.variant, o.run_id, 'responses', o.responses, coalesce(r.n, 0)
    FROM rollup_operations o LEFT JOIN r USING (deployment, minute, variant, run_id)
    WHERE o.responses > coalesce(r.n, 0)"""
_DOUBLE_QUALITY = """
    WITH e AS (SELECT deployment, date_trunc('minute', request_start_time) AS minute, variant, run_id, metric,
                      count(DISTINCT request_id) AS n FROM evaluations GROUP BY 1, 2, 3, 4, 5)
    SELECT q.deployment, q.minute, q.variant, q.run_id, q.metric, q.evaluations AS counted,
           coalesce(e.n, 0) AS distinct_ids
    FROM rollup_quality q LEFT JOIN e USING (deployment, minute, variant, run_id, metric)
    WHERE q.evaluations > coalesce(e.n, 0)"""


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-6)
    return a == b


def _show(key: tuple) -> str:
    return "/".join(v.strftime("%H:%M") if hasattr(v, "strftime") else str(v) for v in key)


async def verify(stack: LiveStack, ledger: Ledger, *, within: float = 120) -> Verdict:
    """Wait until every acknowledged request is counted (and judged when sampled) and the
    aggregator has stored everything on its topics, at most ``within`` seconds; then judge."""
    spec = _deployment_spec(stack)
    rate = float(spec["evaluation"]["sampling_rate"])
    metrics = list(spec["evaluation"]["metrics"])
    group = _aggregator_group(stack)
    acked = dict(ledger.acknowledged)
    sampled = {rid for rid in acked if is_sampled(rid, rate)}
    consumed = [stack.topics.inference, stack.topics.evaluations, stack.topics.feedback]

    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + within
    stored: _Stored | None = None
    caught_up = False
    while True:
        try:
            stored = await _read_stored(stack, group)
        except (OSError, asyncpg.PostgresError) as exc:  # still healing: try again
            if loop.time() > deadline:
                raise AssertionError(f"PostgreSQL unreachable when verifying: {exc!r}") from exc
            await asyncio.sleep(1)
            continue
        pending = _pending(acked, sampled, metrics, stored)
        if not pending:
            try:
                ends = await _end_offsets(stack, consumed)
            except KafkaError:
                ends = None
            if ends is not None:
                stored = await _read_stored(stack, group)
                caught_up = all(stored.offsets.get(tp, 0) >= end for tp, end in ends.items() if end > 0)
                if caught_up:
                    break
        if loop.time() > deadline:
            break
        await asyncio.sleep(0.5)
    waited = loop.time() - started
    assert stored is not None

    view = await _read_inference_topic(stack)
    mismatches, doubles = await _rollup_checks(stack)

    lost, unseen = [], []
    for rid in acked:
        if stored.requests[rid] and stored.responses[rid]:
            continue
        on_topic = view.requests[rid] > 0 and view.responses[rid] > 0
        partition, offset = view.last_position.get(rid, (0, -1))
        passed = stored.offsets.get((stack.topics.inference, partition), 0) > offset
        missing = "request" if not stored.requests[rid] else "response"
        if not on_topic:
            what = "request" if not view.requests[rid] else "response"
            lost.append(f"{rid}: no {what} event on the inference topic")
        elif passed:
            lost.append(f"{rid}: aggregator is past its events, no {missing} row")
        else:
            unseen.append(f"{rid}: on the topic, no {missing} row yet (aggregator behind)")

    duplicated = [f"{rid}: {n} inference_requests rows" for rid, n in stored.requests.items() if n > 1]
    duplicated += [f"{rid}: {n} inference_responses rows" for rid, n in stored.responses.items() if n > 1]
    duplicated += [f"{rid}/{metric}: {n} evaluations rows" for (rid, metric), n in stored.evaluations.items() if n > 1]
    duplicated += doubles

    unjudged = []
    for rid in sorted(sampled):
        if not (stored.requests[rid] and stored.responses[rid]):
            continue  # already reported as lost or unseen
        missing_metrics = [m for m in metrics if not stored.evaluations[(rid, m)]]
        if missing_metrics:
            unjudged.append(f"{rid}: no evaluation for {', '.join(missing_metrics)}")

    judged = sum(1 for rid in sampled if all(stored.evaluations[(rid, m)] for m in metrics))
    counts = {
        "acknowledged": len(acked),
        "streamed": sum(1 for entry in acked.values() if entry["streamed"]),
        "rejected": sum(ledger.rejected.values()),
        "client_errors": sum(ledger.errors.values()),
        "in_topics": sum(1 for rid in acked if view.requests[rid] and view.responses[rid]),
        "in_postgres": sum(1 for rid in acked if stored.requests[rid] and stored.responses[rid]),
        "sampled": len(sampled),
        "judged": judged,
        "topic_records": view.records,
        "topic_duplicate_events": sum(n - 1 for n in view.requests.values() if n > 1)
        + sum(n - 1 for n in view.responses.values() if n > 1),
        "raw_requests": len(stored.requests),
        "raw_evaluations": len(stored.evaluations),
        "aggregator_caught_up": caught_up,
        "waited_seconds": round(waited, 1),
        "not_running": sorted(name for name, s in stack.services.items() if not s.running),
    }
    return Verdict(lost=lost, duplicated=duplicated, unseen=unseen, rollup_mismatches=mismatches,
                   counts=counts, unjudged=unjudged, dead_letters=stored.dead_letters)


async def aggregator_caught_up(stack: LiveStack) -> bool:
    """Whether the offsets the aggregator stored in Postgres reach the current end of its
    inference, evaluations and feedback partitions (spans are left out: telemetry keeps
    writing them)."""
    topics = [stack.topics.inference, stack.topics.evaluations, stack.topics.feedback]
    ends = await _end_offsets(stack, topics)
    stored = await _read_stored(stack, _aggregator_group(stack))
    return all(stored.offsets.get(tp, 0) >= end for tp, end in ends.items() if end > 0)


def _pending(acked: Mapping[str, dict], sampled: set[str], metrics: list[str], stored: _Stored) -> int:
    missing = sum(1 for rid in acked if not (stored.requests[rid] and stored.responses[rid]))
    missing += sum(1 for rid in sampled for m in metrics if not stored.evaluations[(rid, m)])
    return missing


# -- memory -----------------------------------------------------------------------------------


class RssSampler:
    """Samples the resident set size of every stack process (by service name, following
    restarts) once every ``every`` seconds while the ``async with`` block runs.

    ``extra`` adds processes the stack does not own (a private broker or database): name ->
    a callable returning its pid, or None while it is down. A process's RSS includes its
    children's.
    """

    def __init__(self, stack: LiveStack, *, every: float = 1.0,
                 extra: Mapping[str, Callable[[], int | None]] | None = None) -> None:
        self.stack = stack
        self.every = every
        self.extra = dict(extra or {})
        self.peak: dict[str, int] = {}
        self.samples: dict[str, list[int]] = defaultdict(list)
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> RssSampler:
        self.sample()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.sample()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            self.sample()

    def _pids(self) -> dict[str, int | None]:
        pids: dict[str, int | None] = {name: s.pid if s.running else None for name, s in self.stack.services.items()}
        for name, pid_of in self.extra.items():
            try:
                pids[name] = pid_of()
            except Exception:  # noqa: BLE001  (a pid file mid-rewrite: skip this sample)
                pids[name] = None
        return pids

    def sample(self) -> None:
        for name, pid in self._pids().items():
            if pid is None:
                continue
            try:
                process = psutil.Process(pid)
                rss = process.memory_info().rss
                for child in process.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        rss += child.memory_info().rss
            except psutil.Error:
                continue
            self.samples[name].append(rss)
            self.peak[name] = max(self.peak.get(name, 0), rss)

    def peaks_mb(self) -> dict[str, int]:
        return {name: round(value / MB) for name, value in sorted(self.peak.items())}

    def assert_below(self, limit_bytes: int, *, only: list[str] | None = None) -> None:
        """Every sampled process (or those named in ``only``) peaked under ``limit_bytes``."""
        names = only or [name for name in self.peak if name in self.stack.services]
        assert all(name in self.peak for name in names), f"no RSS samples for {set(names) - set(self.peak)}"
        over = {name: self.peak[name] for name in names if self.peak[name] >= limit_bytes}
        assert not over, f"RSS over {limit_bytes // MB} MB: { {n: v // MB for n, v in over.items()} } MB"


# -- reporting --------------------------------------------------------------------------------


def report(fault: str, held: str, verdict: Verdict, rss: RssSampler) -> str:
    """One row of docs/reliability.md's table, printed (``pytest -s`` shows it) and appended to
    the file named by ``PROMPTPULSE_FAULT_REPORT`` when that is set."""
    counts = verdict.counts
    peaks = ", ".join(f"{name} {mb}" for name, mb in rss.peaks_mb().items())
    row = (f"| {fault} | {held} | {counts['acknowledged']} | {len(verdict.lost)} | {len(verdict.duplicated)} "
           f"| {counts['sampled']}/{counts['judged']} | {peaks} |")
    print(row)
    target = os.environ.get("PROMPTPULSE_FAULT_REPORT")
    if target:
        with open(target, "a") as out:
            out.write(row + "\n")
    return row


async def prometheus_total(service: Service, name: str, **labels: str) -> float:
    """The sum over the series of metric ``name`` on ``service``'s ``/metrics`` that carry every
    label given (0 if none): how a test proves its fault was really felt (the gateway spooled,
    the aggregator retried)."""
    async with aiohttp.ClientSession() as session, session.get(f"{service.url}/metrics") as resp:
        assert resp.status == 200, f"{service.name} /metrics: {resp.status}"
        text = await resp.text()
    return total(text, name, **labels)
