"""The stream's side of the processor: route each inference event, sample, join, hand over to judging.

:meth:`Intake.handle` runs once per event, so the common case, an event of a request that is
not sampled, costs a header scan, a hash and one body peek (see routing.py) and finishes its
offset at once. Sampled requests are decoded, joined and kept open on their partition's
watermark until judged (or expired), so the committed offset never passes them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from faust.types import TP
from faust.types.core import HeadersArg

from services.processor.evaluation.pipeline import Hold, JudgeJob, JudgeRunner
from services.processor.evaluation.setup import DeploymentEvaluation
from services.processor.join import PendingRequest, PendingRequests
from services.processor.publisher import Publisher
from services.processor.routing import REQUEST, RESPONSE, peek_run_id, read_route
from services.processor.stats import ProcessorStats
from services.processor.watermark import PartitionWatermark, Watermarks
from shared.events.codec import decode
from shared.events.errors import EventDecodeError
from shared.events.messages import InferenceRequest, InferenceResponse
from shared.retry import Backoff, Jitter
from shared.sampling import is_sampled

log = logging.getLogger(__name__)

# The dead-letter reason of a record the intake itself failed on (every other reason is the codec's).
PROCESSOR_ERROR = "processor-error"


class Intake:
    def __init__(
        self,
        judging: dict[str, DeploymentEvaluation],
        runner: JudgeRunner,
        publisher: Publisher,
        stats: ProcessorStats,
        *,
        request_ttl_seconds: float,
        inference_topic: str,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.judging = judging
        self.runner = runner
        self.publisher = publisher
        self.stats = stats
        self.watermarks = Watermarks()
        self.pending = PendingRequests(request_ttl_seconds, **({"clock": clock} if clock else {}))
        self.inference_topic = inference_topic
        self._dead_letters: set[asyncio.Task[None]] = set()
        self._unknown_deployments: set[str] = set()

    # -- the per-event path -------------------------------------------------------------------

    def handle(
        self, tp: TP, offset: int, key: bytes | None, value: bytes | None, headers: HeadersArg
    ) -> Awaitable[None] | None:
        """Process one record; returns an awaitable only when the stream must wait (full judge
        queue). ``tp`` is faust's TP (``.topic``, ``.partition``). Never raises: a record this
        code fails on (a bug, not bad input, which is dead-lettered by its reason below) is
        dead-lettered as ``processor-error``, so it is kept and counted, and the consumer's loop,
        which calls this directly (faust_app.py), goes on."""
        # The body in the try, not a call from it: a frame less on the path every event takes.
        try:
            mark = self.watermarks.get(tp)
            if not mark.see(offset):
                self.stats.redelivered += 1
                return None
            stats = self.stats
            stats.events += 1
            route = read_route(key, headers)
            if not route.readable or route.kind is None or route.deployment is None or route.request_id is None:
                # Only the body can tell what this is; decoding it also validates it.
                return self._sampled(tp, mark, offset, key, value, headers, None, route.traceparent)
            if route.kind != REQUEST and route.kind != RESPONSE:
                stats.ignored += 1  # not ours to judge (and never decoded)
                return None
            judging = self.judging.get(route.deployment)
            if judging is None:
                stats.unjudged_deployment += 1
                if route.deployment not in self._unknown_deployments and len(self._unknown_deployments) < 1000:
                    self._unknown_deployments.add(route.deployment)
                    log.info("deployment %r has no evaluation section here; its events are skipped", route.deployment)
                return None
            if not judging.sampled(key):  # type: ignore[arg-type]  # a readable route has a UTF-8 key
                run_id = peek_run_id(value)
                if run_id == "":
                    stats.unsampled += 1
                    return None
                # A batch run (judged in full), or a body whose front does not parse: decode it.
            return self._sampled(tp, mark, offset, key, value, headers, judging, route.traceparent)
        except Exception as exc:
            count = self.stats.dead_letters[PROCESSOR_ERROR]
            if count % 1000 == 0:  # a traceback for the first and every 1000th, not a flood
                log.exception("the intake failed on %s[%d]@%d (%d so far); dead-lettering it",
                              tp.topic, tp.partition, offset, count + 1)
            self._dead_letter(tp, self.watermarks.get(tp), offset, key, value, headers, PROCESSOR_ERROR, repr(exc))
            return None

    def _sampled(
        self,
        tp: TP,
        mark: PartitionWatermark,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: HeadersArg,
        judging: DeploymentEvaluation | None,
        traceparent: str | None,
    ) -> Awaitable[None] | None:
        try:
            event = decode(value, headers)
        except EventDecodeError as exc:
            self._dead_letter(tp, mark, offset, key, value, headers, exc.reason, exc.detail)
            return None
        if not isinstance(event, InferenceRequest | InferenceResponse):
            self.stats.ignored += 1  # routed by the body to another type, or not ours to judge
            return None
        meta = event.meta
        if judging is None:
            # Routed by the body: apply the same rules as for a readable header.
            judging = self.judging.get(meta.deployment)
            if judging is None:
                self.stats.unjudged_deployment += 1
                return None
            if not meta.run_id and not is_sampled(meta.request_id, judging.sampling_rate):
                self.stats.unsampled += 1
                return None
        if isinstance(event, InferenceRequest):
            mark.hold(offset)
            replaced = self.pending.add(
                meta.request_id, PendingRequest(event, tp, offset, mark)
            )
            self.stats.sampled_requests += 1
            if replaced is not None:
                # The same request event twice (a producer retry before idempotence): keep the
                # later copy, finish the earlier one.
                self.stats.replaced_requests += 1
                replaced.watermark.release(replaced.offset)
            return None
        pending = self.pending.take(meta.request_id)
        if pending is None:
            # Its request expired, or was read before this worker's starting offset.
            self.stats.orphan_responses += 1
            return None
        if judging.budget.exhausted():
            judging.budget.skipped += 1
            self.stats.budget_skipped[judging.name] += 1
            pending.watermark.release(pending.offset)
            return None
        mark.hold(offset)
        self.stats.judge_triggers += 1
        job = JudgeJob(
            judging=judging,
            request=pending.request,
            response=event,
            traceparent=traceparent or meta.traceparent or None,
            holds=[Hold(pending.tp, pending.watermark, pending.offset), Hold(tp, mark, offset)],
        )
        return self.runner.submit(job)

    # -- dead letters ---------------------------------------------------------------------------

    def _dead_letter(
        self, tp: TP, mark: PartitionWatermark, offset: int, key: bytes | None, value: bytes | None,
        headers: HeadersArg, reason: str, detail: str
    ) -> None:
        self.stats.dead_letters[reason] += 1
        mark.hold(offset)
        task = asyncio.get_running_loop().create_task(
            self._send_dead_letter(tp, mark, offset, key, value, headers, reason, detail)
        )
        self._dead_letters.add(task)
        task.add_done_callback(self._dead_letters.discard)

    async def _send_dead_letter(
        self, tp: TP, mark: PartitionWatermark, offset: int, key: bytes | None, value: bytes | None,
        headers: HeadersArg, reason: str, detail: str
    ) -> None:
        backoff = Backoff(0.2, 10.0, Jitter.PROPORTIONAL)
        while True:
            try:
                await self.publisher.dead_letter(
                    topic=tp.topic, partition=tp.partition, offset=offset, key=key, value=value,
                    headers=headers, reason=reason, detail=detail,
                )
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cannot dead-letter %s[%d]@%d yet: %r", tp.topic, tp.partition, offset, exc)
                await asyncio.sleep(backoff.next())
        mark.release(offset)

    # -- housekeeping -----------------------------------------------------------------------------

    def release(self, holds: list[Hold]) -> None:
        for hold in holds:
            hold.watermark.release(hold.offset)

    def expire(self) -> int:
        """Finish requests whose response did not come in time; returns how many."""
        expired = self.pending.expired()
        for pending in expired:
            pending.watermark.release(pending.offset)
        self.stats.expired_requests += len(expired)
        return len(expired)

    def on_assigned(self, assigned: Iterable[TP], partition_count: int | None) -> None:
        """A rebalance finished: forget partitions that went elsewhere, rescale the budgets."""
        mine = [tp for tp in assigned if tp.topic == self.inference_topic]
        gone = self.watermarks.keep_only(mine)
        dropped = self.pending.drop_partitions(set(gone))
        if gone:
            log.info("partitions moved away: %s (%d pending requests left to their new owner)",
                     sorted(tp.partition for tp in gone), len(dropped))
        share = len(mine) / partition_count if partition_count else 1.0
        for judging in self.judging.values():
            judging.budget.share = min(1.0, share)

    async def drain_dead_letters(self, seconds: float) -> None:
        if self._dead_letters:
            await asyncio.wait(set(self._dead_letters), timeout=seconds)

    async def stop(self) -> None:
        for task in list(self._dead_letters):
            task.cancel()
        if self._dead_letters:
            await asyncio.gather(*self._dead_letters, return_exceptions=True)
