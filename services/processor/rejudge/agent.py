"""The re-judge agent: carries out RejudgeCommands, exactly once per (request, evaluator, version).

Commands come from the commands topic (one partition: one worker of the group runs re-judges,
one at a time; the others stand by). The command's offset is committed only once its re-judge
is done or has failed, so a worker killed mid-way leaves the command to be read again.

What a re-judge has done is its latest RejudgeProgress on the compacted progress topic: the
requests of the window in a fixed order (window.chosen) and ``judged``, the length of the
prefix whose outcomes the broker has acknowledged. A command read again resumes after that
prefix; one that is done or failed is skipped. Requests judged past the prefix when the worker
died are judged again, and their outcomes repeat an event already on the topic: the
aggregator stores the first one per (request, metric, evaluator version) and drops the repeat.

Each request is judged through the evaluation pipeline (JudgeRunner.evaluate) with the one
evaluator re-judged, by workers (workers.py, one per place of the judge cap) running at REJUDGE
priority on the shared cap, after waiting while the deployment's token budget is spent (live
judging skips instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from services.processor.evaluation.judge.calls import REJUDGE, REJUDGE_PRIORITY
from services.processor.evaluation.pipeline import JudgeJob, JudgeRunner
from services.processor.evaluation.protocol import Evaluator
from services.processor.evaluation.setup import DeploymentEvaluation
from services.processor.rejudge.window import WindowRequest, chosen, read_window, topic_partitions
from services.processor.rejudge.workers import WindowJudging
from services.processor.stats import ProcessorStats
from shared.deployments import Deployment
from shared.events.errors import EventDecodeError
from shared.events.messages import Evaluation
from shared.events.rejudge import RejudgeCommand, RejudgeProgress, decode_rejudge, encode_rejudge
from shared.kafka import SettingsLike, make_consumer
from shared.topics import REJUDGE_PROGRESS_CONFIGS, Topics, ensure_topics

log = logging.getLogger(__name__)

_PROGRESS_EVERY_SECONDS = 1.0
_RETRY_SECONDS = 2.0
# Outcomes a worker may have awaiting the broker's acknowledgement before it waits (workers.py).
_UNACKNOWLEDGED_PER_WORKER = 4


class RejudgeFailed(Exception):
    """The command cannot be carried out (unknown evaluator or version, window unreadable)."""


class RejudgeAgent:
    def __init__(
        self, settings: SettingsLike, topics: Topics, group_id: str, deployments: Mapping[str, Deployment],
        judging: Mapping[str, DeploymentEvaluation], runner: JudgeRunner, producer: object,
        stats: ProcessorStats, *, concurrency: int, grace_seconds: float,
    ) -> None:
        self._settings, self._topics, self._group = settings, topics, group_id
        self._deployments, self._judging, self._runner = deployments, judging, runner
        self._producer, self._stats = producer, stats
        self._concurrency, self._grace = max(1, concurrency), grace_seconds
        self.progress: dict[str, RejudgeProgress] = {}
        self.current: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await ensure_topics(self._settings, [self._topics.rejudge_commands], 1)
        await ensure_topics(self._settings, [self._topics.rejudge_progress], 1, configs=REJUDGE_PROGRESS_CONFIGS)
        self._task = asyncio.create_task(self._consume(), name="rejudge-commands")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- state --------------------------------------------------------------------------------

    async def _load_progress(self) -> None:
        """Every re-judge's latest progress, read from the start of the compacted topic to its end."""
        consumer = make_consumer(self._settings, group_id=None, client_id=f"{self._group}-rejudge-state",
                                 enable_auto_commit=False, auto_offset_reset="earliest")
        try:
            # Started inside the try: a stop that cancels this during start() still closes it.
            await consumer.start()
            tps = await topic_partitions(consumer, self._topics.rejudge_progress)
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            pending = {tp for tp in tps if ends[tp] > 0}
            while pending:
                for tp, records in (await consumer.getmany(*pending, timeout_ms=1000)).items():
                    for record in records:
                        with contextlib.suppress(EventDecodeError):
                            progress = decode_rejudge(record.value, record.headers, RejudgeProgress)
                            self.progress[progress.rejudge_id] = progress
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
        finally:
            await consumer.stop()

    async def _report(self, progress: RejudgeProgress) -> None:
        progress.updated_at.FromDatetime(datetime.now(UTC))
        record = encode_rejudge(progress)
        await self._producer.send_and_wait(  # type: ignore[attr-defined]
            self._topics.rejudge_progress, value=record.value, key=progress.rejudge_id.encode(),
            headers=record.headers,
        )
        self.progress[progress.rejudge_id] = RejudgeProgress.FromString(record.value)

    # -- commands -----------------------------------------------------------------------------

    async def _consume(self) -> None:
        await self._load_progress()
        consumer = make_consumer(self._settings, self._topics.rejudge_commands, group_id=f"{self._group}-rejudge",
                                 client_id=f"{self._group}-rejudge", auto_offset_reset="earliest")
        try:
            await consumer.start()  # inside the try, as in _load_progress
            while True:
                batches = await consumer.getmany(timeout_ms=1000, max_records=1)
                for tp, records in batches.items():
                    for record in records:
                        # Keep polling while it runs (a re-judge can outlast max_poll_interval),
                        # with the partition paused so nothing else is fetched meanwhile.
                        consumer.pause(tp)
                        work = asyncio.create_task(self._carry_out(record.value, record.headers), name="rejudge-command")
                        try:
                            while not work.done():
                                await consumer.getmany(timeout_ms=500)
                        finally:
                            if not work.done():
                                # Stopped meanwhile: the re-judge stops with the agent (its command,
                                # uncommitted, is read again and resumes from its progress).
                                work.cancel()
                                await asyncio.wait([work])
                        if work.exception() is not None:
                            # Broker away mid-way, or a bug: the command stays uncommitted and is
                            # read again after a pause; the re-judge resumes from its progress.
                            log.error("re-judge command at offset %d stopped; retrying it", record.offset,
                                      exc_info=work.exception())
                            consumer.seek(tp, record.offset)
                            consumer.resume(tp)
                            await asyncio.sleep(_RETRY_SECONDS)
                            break
                        await consumer.commit({tp: record.offset + 1})
                        consumer.resume(tp)
        finally:
            await consumer.stop()

    async def _carry_out(self, value: bytes | None, headers: object) -> None:
        try:
            command = decode_rejudge(value, headers, RejudgeCommand)  # type: ignore[arg-type]
        except EventDecodeError as exc:
            log.warning("skipping an unreadable re-judge command: %s", exc)
            return
        known = self.progress.get(command.rejudge_id)
        if known is not None and known.status in ("done", "failed"):
            log.info("re-judge %s is already %s; its command repeated", command.rejudge_id, known.status)
            return
        self.current = command.rejudge_id
        try:
            await self._run(command, known.judged if known is not None else 0,
                            known.published if known is not None else 0)
        except RejudgeFailed as exc:
            log.error("re-judge %s failed: %s", command.rejudge_id, exc)
            await self._report(RejudgeProgress(rejudge_id=command.rejudge_id, status="failed", message=str(exc)))
        finally:
            self.current = None

    def _evaluator(self, command: RejudgeCommand) -> tuple[DeploymentEvaluation, set[str]]:
        """The deployment's judging with only the re-judged evaluator, and that evaluator's metrics."""
        deployment = self._deployments.get(command.deployment)
        judging = self._judging.get(command.deployment)
        config = deployment.evaluation.evaluator(command.evaluator) if deployment and deployment.evaluation else None
        if judging is None or config is None:
            raise RejudgeFailed(f"this processor does not judge evaluator {command.evaluator!r} of "
                                f"{command.deployment!r}")
        if config.version != command.evaluator_version:
            raise RejudgeFailed(f"this processor has {command.evaluator}@{config.version} loaded, not "
                                f"@{command.evaluator_version}: it judges only with the versions it has loaded")
        metrics = set(config.metrics())
        chosen_evaluators: list[Evaluator] = [e for e in judging.evaluators if metrics & set(e.metrics)]
        if not chosen_evaluators:
            raise RejudgeFailed(f"evaluator {command.evaluator!r} is not set up in this processor")
        return replace(judging, evaluators=tuple(chosen_evaluators)), metrics

    async def _run(self, command: RejudgeCommand, judged: int, published: int) -> None:
        judging, metrics = self._evaluator(command)
        start = command.window_start.ToDatetime(tzinfo=UTC)
        end = command.window_end.ToDatetime(tzinfo=UTC)
        try:
            window = await read_window(self._settings, self._topics.inference, command.deployment, start, end,
                                       self._grace)
        except Exception as exc:
            raise RejudgeFailed(f"cannot read the window from {self._topics.inference}: {exc!r}") from exc
        todo = chosen(window, command.sample)
        log.info("re-judge %s: %d requests chosen (%d read, %d without response); resuming after %d",
                 command.rejudge_id, len(todo), window.records, window.unanswered, judged)
        progress = RejudgeProgress(rejudge_id=command.rejudge_id, status="running", total=len(todo),
                                   judged=min(judged, len(todo)), published=published)
        await self._report(progress)
        REJUDGE_PRIORITY.set(REJUDGE)  # this task and those it starts wait behind live judge calls

        async def judge(index: int) -> list[Evaluation]:
            # The budget frees up with the clock (budget.py), not on an event to wait for.
            while judging.budget.exhausted():  # noqa: ASYNC110  # live judging skips; a re-judge waits
                await asyncio.sleep(1.0)
            return await self._judge(judging, metrics, todo[index], command.rejudge_id)

        async def publish(events: Sequence[Evaluation]) -> None:
            await self._runner.publish(list(events))
            self._stats.rejudge_published += len(events)

        async def report(work: WindowJudging) -> None:
            await self._report(running(progress, work.prefix, published + work.published))

        work = WindowJudging(len(todo), progress.judged, judge, publish, workers=self._concurrency,
                             unacknowledged=_UNACKNOWLEDGED_PER_WORKER * self._concurrency)
        await work.run(report, _PROGRESS_EVERY_SECONDS)
        published += work.published
        await self._report(RejudgeProgress(rejudge_id=command.rejudge_id, status="done", total=len(todo),
                                           judged=len(todo), published=published))
        log.info("re-judge %s done: %d requests, %d outcomes published", command.rejudge_id, len(todo), published)

    async def _judge(self, judging: DeploymentEvaluation, metrics: set[str], item: WindowRequest,
                     rejudge_id: str) -> list[Evaluation]:
        job = JudgeJob(judging=judging, request=item.request, response=item.response,
                       traceparent=item.traceparent, holds=[])
        events = [event for event in await self._runner.evaluate(job) if event.metric in metrics]
        for event in events:
            event.rejudge_id = rejudge_id
        return events


def running(progress: RejudgeProgress, judged: int, published: int) -> RejudgeProgress:
    return RejudgeProgress(rejudge_id=progress.rejudge_id, status="running", total=progress.total,
                           judged=judged, published=published)
