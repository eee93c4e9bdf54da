"""One processor worker: the faust app and everything around it, opened and closed in one place.

Start-up: topics exist (created if missing), the evaluations producer is started, judge workers,
the ops listener and the stall watch's offset probe (stall.py) run, then the faust app joins the
consumer group.

Shutdown, in this order (test_clean_stop_stops_intake_drains_then_commits in
tests/integration/test_processor_scaleout.py checks it):

1. stop intake: faust stops fetching (``App.on_stop``) and sends ``on_before_shutdown``;
2. drain: judge calls in flight and queued finish and publish, up to ``shutdown_drain_seconds``;
3. commit the watermarks (outcomes are acknowledged by the broker before their offsets are
   released, so nothing is committed before its effect is durable);
4. faust leaves the group; the producer is flushed and closed; judge clients and the ops
   listener close; telemetry is flushed last by the caller (__main__).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, cast

import faust
from faust.types import TP
from faust.types.core import HeadersArg
from opentelemetry.trace import Tracer

from services.processor.evaluation.judge.calls import JudgeCalls
from services.processor.evaluation.pipeline import Hold, JudgeRunner
from services.processor.evaluation.setup import build_judging
from services.processor.faust_app import build_faust_app
from services.processor.intake import Intake
from services.processor.observe import collect_metrics, health
from services.processor.ops import OpsServer, create_ops_app
from services.processor.publisher import Publisher
from services.processor.rejudge.agent import RejudgeAgent
from services.processor.settings import ProcessorSettings
from services.processor.stall import StallWatch, faust_diagnostics
from services.processor.stats import ProcessorStats
from shared import gctuning
from shared.deployments import Connection, Deployment, load_connections, load_deployment_folder
from shared.kafka import make_producer
from shared.kafka_partitioner import KeyPartitioner
from shared.topics import Topics, ensure_topics

log = logging.getLogger(__name__)


class _OffsetCommitter(Protocol):
    """faust's transport-level consumer (faust.transport.consumer.Consumer) commits exactly the
    offsets it is given; its public interface (ConsumerT, what ``app.consumer`` is typed as)
    leaves that method out."""

    async def _commit(self, offsets: Mapping[TP, int]) -> bool: ...


class ProcessorService:
    def __init__(
        self,
        settings: ProcessorSettings,
        *,
        deployments: Mapping[str, Deployment] | None = None,
        connections: Mapping[str, Connection] | None = None,
        tracer: Tracer | None = None,
        make_judge_client: Callable[[Connection], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.section = settings.processor
        self.topics = Topics.from_settings(settings)
        # Deployment name -> why it is not judged (its file does not load, or its judge cannot
        # be set up). The others are judged: one broken deployment never stops the processor.
        self.unavailable: dict[str, list[str]] = {}
        if deployments is None:
            folder = load_deployment_folder(settings.deployments_dir, check_flow=False)
            folder.log_problems(log, "its events are not judged")
            deployments = folder.deployments
            self.unavailable = {name: [str(p) for b in folder.broken if b.name == name for p in b.problems]
                                for name in folder.broken_names}
            if connections is None:
                connections = folder.connections
        if connections is None:
            connections = load_connections(settings.deployments_dir)
        self.stats = ProcessorStats()
        self.judge_calls = JudgeCalls(self.section, self.stats, tracer)
        self.judging, self.judge_pool, judges_unavailable = build_judging(
            deployments, connections, self.section, self.stats, make_client=make_judge_client,
            judge_calls=self.judge_calls,
        )
        for name, reason in judges_unavailable.items():
            log.error("deployment %r: %s; its events are not judged, the others are", name, reason)
            self.unavailable[name] = [reason]
        self._tracer = tracer
        self._datadir = Path(tempfile.mkdtemp(prefix="promptpulse-processor-"))
        self.faust_app = build_faust_app(settings, self.topics.inference, self._handle, self._datadir)
        self.intake: Intake | None = None
        self.runner: JudgeRunner | None = None
        self.ops: OpsServer | None = None
        self.stalls: StallWatch | None = None
        self.rejudge: RejudgeAgent | None = None
        self._deployments = deployments
        self._producer: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._commit_lock = asyncio.Lock()
        self.state = "created"
        self._connect_signals()

    # -- wiring ----------------------------------------------------------------------------------

    def _handle(
        self, tp: TP, offset: int, key: bytes | None, value: bytes | None, headers: HeadersArg
    ) -> Awaitable[None] | None:
        # faust delivers records only once start() has made the intake; no per-event check.
        return self.intake.handle(tp, offset, key, value, headers)  # type: ignore[union-attr]

    def _connect_signals(self) -> None:
        app = self.faust_app

        # mode's type for a receiver (SignalHandlerT) accepts no function at all, however
        # permissive its signature (mypy rejects even (sender, *args, signal, **kwargs)): hence
        # the three ignores. faust sends the partition signals one positional: the partitions.
        @app.on_partitions_revoked.connect  # type: ignore[arg-type]
        async def _revoked(sender: faust.App, revoked: set[TP], **kwargs: Any) -> None:
            # Still a member of the group, with intake paused: let judging in flight finish
            # (bounded) and commit, so the partitions' next owner re-judges as little as possible.
            if self.runner is not None:
                await self.runner.drain(self.section.rebalance_drain_seconds)
            await self.commit()

        @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # as above
        async def _assigned(sender: faust.App, assigned: set[TP], **kwargs: Any) -> None:
            if self.intake is not None:
                count = app.consumer.topic_partitions(self.topics.inference)
                self.intake.on_assigned(assigned, count)
                log.info("assigned partitions %s", sorted(tp.partition for tp in assigned if tp.topic == self.topics.inference))

        @app.on_before_shutdown.connect  # type: ignore[arg-type]  # as above
        async def _before_shutdown(sender: faust.App, **kwargs: Any) -> None:
            await self._drain_and_commit()

        # mode keeps receivers in storage shared by every app (keyed by sender) and never drops
        # them: left connected, they would keep this service and its faust app alive after stop().
        self._receivers: list[tuple[Any, Callable[..., Any]]] = [
            (app.on_partitions_revoked, _revoked),
            (app.on_partitions_assigned, _assigned),
            (app.on_before_shutdown, _before_shutdown),
        ]

    def _disconnect_signals(self) -> None:
        for signal, receiver in self._receivers:
            signal.disconnect(receiver)
        self._receivers = []

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self.state = "starting"
        await ensure_topics(
            self.settings,
            [self.topics.inference, self.topics.evaluations, self.topics.deadletter_processor],
        )
        # No linger: the publisher gathers evaluations itself (publish_linger_ms) and hands them over
        # in one loop turn, so the sender, woken after that turn, takes every partition's batch in
        # one request. A linger on top made each batch due its linger after its own first record,
        # those appended a while apart: ~1.9 requests per hand-over, not 1 (docs/processor.md).
        # KeyPartitioner: aiokafka's partitions for each request id, its hash in half the time.
        self._producer = make_producer(
            self.settings, client_id=f"{self.settings.group_id()}-out", partitioner=KeyPartitioner(), linger_ms=0
        )
        await self._producer.start()
        publisher = Publisher(
            self._producer, self.topics.evaluations, self.topics.deadletter_processor,
            gather_seconds=self.section.publish_linger_ms / 1000,
        )
        self.runner = JudgeRunner(self.section, publisher, self.stats, self._release, self.judge_calls)
        self.intake = Intake(
            self.judging, self.runner, publisher, self.stats,
            request_ttl_seconds=self.section.request_ttl_seconds,
            inference_topic=self.topics.inference,
        )
        self.runner.start()
        self.ops = OpsServer(
            create_ops_app(lambda: health(self), lambda out: collect_metrics(self, out)),
            self.section.host, self.section.port,
        )
        await self.ops.start()
        self.stalls = StallWatch(
            self.settings, self.topics.inference,
            assignment=lambda: self.faust_app.consumer.assignment(),
            watermarks=lambda: self.intake.watermarks if self.intake else None,
            held=lambda: bool(self.runner and self.runner.intake_waiting),
            faust_state=faust_diagnostics(self.faust_app),
        )
        await self.stalls.start()
        await self.faust_app.start()
        if self.section.rejudge_enabled:
            self.rejudge = RejudgeAgent(
                self.settings, self.topics, self.settings.group_id(), self._deployments, self.judging, self.runner,
                # One worker per place under the cap (rejudge/workers.py, bench/rejudge.py).
                self._producer, self.stats, concurrency=self.section.judge_concurrency,
                grace_seconds=self.section.request_ttl_seconds,
            )
            await self.rejudge.start()
        self._tasks = [
            asyncio.create_task(self._every(self.section.commit_interval_seconds, self.commit), name="commit"),
            asyncio.create_task(self._every(1.0, self._expire), name="expire"),
            asyncio.create_task(self._every(self.stalls.interval, self.stalls.check), name="stall-check"),
        ]
        # As the gateway and the aggregator do: faust allocates several objects per event, and
        # with the default thresholds full collections walk everything start-up made.
        gctuning.tune_for_throughput()
        self.state = "running"
        log.info("processor %s running; ops on %s:%s", self.settings.group_id(), self.section.host, self.ops.port)

    async def stop(self) -> None:
        if self.state in ("stopping", "stopped"):
            return
        self.state = "stopping"
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self.rejudge is not None:
            await self.rejudge.stop()  # a re-judge in flight resumes from its progress record
        try:
            await self.faust_app.stop()  # stops intake, then drains and commits (signal above)
        finally:
            if self.runner is not None:
                await self.runner.stop()
            if self.intake is not None:
                await self.intake.stop()
            if self._producer is not None:
                await self._producer.stop()
                log.info("shutdown: evaluations producer flushed and closed")
            await self.judge_pool.close()
            if self.stalls is not None:
                await self.stalls.stop()
            if self.ops is not None:
                await self.ops.stop()
            log.info("shutdown: judge clients and ops listener closed")
            shutil.rmtree(self._datadir, ignore_errors=True)
            self._disconnect_signals()  # last: faust's stop above still sends before_shutdown
            self.state = "stopped"

    async def __aenter__(self) -> ProcessorService:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- offsets ---------------------------------------------------------------------------------

    def _release(self, holds: list[Hold]) -> None:
        if self.intake is not None:
            self.intake.release(holds)

    async def commit(self) -> dict[TP, int]:
        """Commit every partition's lowest unfinished offset that moved; returns what was committed."""
        if self.intake is None:
            return {}
        async with self._commit_lock:
            offsets = self.intake.watermarks.pending_commits()
            if not offsets:
                return {}
            consumer = self.faust_app.consumer
            assignment = consumer.assignment()
            offsets = {tp: offset for tp, offset in offsets.items() if tp in assignment}
            if not offsets:
                return {}
            try:
                # faust's transport-level commit: exactly these offsets, nothing from its acks.
                committed = await cast(_OffsetCommitter, consumer)._commit(offsets)
            except Exception as exc:
                self.stats.commit_failures += 1
                log.warning("commit failed (%r); will retry", exc)
                return {}
            if not committed:
                self.stats.commit_failures += 1
                return {}
            self.intake.watermarks.mark_committed(offsets)
            self.stats.commits += 1
            return offsets

    async def _drain_and_commit(self) -> None:
        if self.runner is None or self.intake is None:
            return
        log.info("shutdown: intake stopped; draining %d judge jobs", self.runner.queued + self.runner.jobs_running)
        drained = await self.runner.drain(self.section.shutdown_drain_seconds)
        await self.intake.drain_dead_letters(max(1.0, self.section.shutdown_drain_seconds / 4))
        if drained:
            log.info("shutdown: judging drained")
        else:
            log.warning(
                "stopping with %d judge jobs unfinished; their events will be read again",
                self.runner.queued + self.runner.jobs_running,
            )
        committed = await self.commit()
        log.info("shutdown: committed %s", {f"{tp.topic}[{tp.partition}]": o for tp, o in committed.items()})

    async def _expire(self) -> None:
        if self.intake is not None:
            self.intake.expire()

    async def _every(self, seconds: float, action: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await action()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("periodic %s failed", getattr(action, "__name__", action))
