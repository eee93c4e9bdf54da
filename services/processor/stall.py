"""Stall detection: an assigned partition with records waiting that the intake stopped taking in.

Why: a worker can hold its partitions and consume nothing (seen once under heavy load: assigned,
then 90 s without an event) while every other signal looks fine. The judge queue is empty, no
call fails, no error is logged; outcomes simply stop. For on-call that silent stop is the worst
failure, so the worker checks for it itself and says so: a WARNING per stall, HTTP 503 on
/healthz (the Kubernetes liveness probe restarts the pod), and gauges on /metrics.

What counts (:class:`StallDetector`, pure so it is unit-tested alone): per assigned partition,
the *intake position* (one past the last offset the intake handled, i.e. what the stream has
taken in, not what has been judged) and the partition's end offset. A partition is stalled when
records wait beyond the intake position and the intake has not moved for ``stall_seconds``.
Never stalled:

- a caught-up partition (nothing waiting), however long it stays idle;
- any partition while the stream waits for room in the full judge queue: the judge concurrency
  cap, an open circuit breaker or slow judges hold intake back by design (back-pressure), and
  the clock restarts when the wait ends. A spent judge budget never holds intake at all (the
  request is skipped and finished).

Where the numbers come from (:class:`OffsetProbe`): end offsets are asked of the broker by a
group-less client of the worker's own event loop, not read from faust's consumer, because the
consumer (in its own thread) is the part that may be wedged, and its cached high watermark only
moves when it fetches. For a partition the intake has not read from since it was assigned, the
position is the group's committed offset (the beginning of the log when there is none, as
``auto_offset_reset=earliest`` does).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from services.processor.settings import ProcessorSettings
from shared.kafka import make_admin, make_consumer

log = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 10.0


def check_interval(stall_seconds: float) -> float:
    """How often to look: a quarter of the allowance, between 0.25 s and 5 s."""
    return min(5.0, max(0.25, stall_seconds / 4))


# -- the decision (pure) -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reading:
    """One look at one partition."""

    position: int | None  # intake position: the next offset to take in (None: unknown)
    seen: int  # events delivered to the intake so far, re-deliveries included
    end: int | None  # the partition's end offset (None: not known this time)


@dataclass(slots=True)
class Progress:
    """What the detector remembers of one assigned partition."""

    position: int | None
    seen: int
    end: int | None
    # The clock: from ``since``, records have waited and the intake has not moved. Errs late,
    # never early: a look only knows what changed since the previous one.
    since: float
    clock_running: bool = False
    stalled: bool = False

    @property
    def lag(self) -> int | None:
        """Records beyond the intake position (None while either number is unknown)."""
        if self.position is None or self.end is None:
            return None
        return max(0, self.end - self.position)


@dataclass(frozen=True, slots=True)
class Changes:
    stalled: list[Any]  # partitions that became stalled at this look
    recovered: list[Any]  # stalled partitions that moved again (or are held, or caught up)
    released: list[Any]  # stalled partitions no longer assigned to this worker


class StallDetector:
    """Decides, look after look, which partitions are stalled; no I/O, no clock of its own."""

    def __init__(self, stall_seconds: float) -> None:
        self.stall_seconds = stall_seconds
        self.partitions: dict[Any, Progress] = {}

    def update(self, readings: Mapping[Any, Reading], *, held: bool, now: float) -> Changes:
        """Apply one look at every assigned partition (``readings``). ``held``: the stream is
        waiting for the judge queue (back-pressure), so no partition counts as stalled."""
        released = [tp for tp, p in self.partitions.items() if tp not in readings and p.stalled]
        self.partitions = {tp: p for tp, p in self.partitions.items() if tp in readings}
        stalled: list[Any] = []
        recovered: list[Any] = []
        for tp, reading in readings.items():
            progress = self.partitions.get(tp)
            if progress is None:
                progress = self.partitions[tp] = Progress(
                    reading.position, reading.seen, reading.end, since=now
                )
            # A position not known this time (broker unreachable) keeps the last known one.
            position = reading.position if reading.position is not None else progress.position
            moved = (position, reading.seen) != (progress.position, progress.seen)
            progress.position, progress.seen = position, reading.seen
            if reading.end is not None:
                progress.end = reading.end  # unknown this time: the last known end still holds
            lag = progress.lag
            if moved or held or lag == 0:
                progress.since = now
                # Intake moved at or before this look, so the clock may run from here. Caught up
                # or held, it may not: records may arrive (or the wait end) just before the next
                # look, so the clock starts at the first look that sees records wait unexcused.
                progress.clock_running = moved and not held and bool(lag)
                if progress.stalled:
                    progress.stalled = False
                    recovered.append(tp)
            elif lag is None:
                pass  # not known: decide nothing
            elif not progress.clock_running:
                progress.clock_running = True
                progress.since = now
            elif not progress.stalled and now - progress.since >= self.stall_seconds:
                progress.stalled = True
                stalled.append(tp)
        return Changes(stalled, recovered, released)

    def stalled(self) -> dict[Any, Progress]:
        return {tp: p for tp, p in self.partitions.items() if p.stalled}


# -- the numbers (broker) ------------------------------------------------------------------------


class OffsetProbe:
    """End offsets and the group's committed offsets, from clients of this event loop."""

    def __init__(self, settings: ProcessorSettings) -> None:
        group = settings.group_id()
        self._group = group
        self._consumer = make_consumer(settings, group_id=None, client_id=f"{group}-stall-probe")
        self._admin = make_admin(settings, client_id=f"{group}-stall-probe")
        self._consumer_started = self._admin_started = False

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer_started = True
        await self._admin.start()
        self._admin_started = True

    async def stop(self) -> None:
        if self._admin_started:
            self._admin_started = False
            await self._admin.close()
        if self._consumer_started:
            self._consumer_started = False
            await self._consumer.stop()

    async def end_offsets(self, tps: Iterable[Any]) -> dict[tuple[str, int], int]:
        wanted = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        if not wanted:
            return {}
        ends = await asyncio.wait_for(self._consumer.end_offsets(wanted), PROBE_TIMEOUT_SECONDS)
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}

    async def start_positions(self, tps: Iterable[Any]) -> dict[tuple[str, int], int]:
        """Where the group reads a partition from: its committed offset, else the log's start."""
        wanted = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        if not wanted:
            return {}
        committed = await asyncio.wait_for(
            self._admin.list_consumer_group_offsets(self._group, partitions=wanted),
            PROBE_TIMEOUT_SECONDS,
        )
        found = {}
        missing = []
        for tp in wanted:
            meta = committed.get(tp)
            if meta is not None and meta.offset >= 0:
                found[(tp.topic, tp.partition)] = meta.offset
            else:
                missing.append(tp)
        if missing:
            starts = await asyncio.wait_for(
                self._consumer.beginning_offsets(missing), PROBE_TIMEOUT_SECONDS
            )
            found.update({(tp.topic, tp.partition): offset for tp, offset in starts.items()})
        return found


# -- the watch (glue: timer, logs, health) -------------------------------------------------------


class StallWatch:
    """Looks at every assigned partition of the inference topic every :attr:`interval` seconds."""

    def __init__(
        self,
        settings: ProcessorSettings,
        topic: str,
        *,
        assignment: Callable[[], Iterable[Any]],
        watermarks: Callable[[], Any],
        held: Callable[[], bool],
        faust_state: Callable[[Any], dict[str, Any]] | None = None,
        probe: OffsetProbe | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topic = topic
        self.detector = StallDetector(settings.processor.stall_seconds)
        self.interval = check_interval(settings.processor.stall_seconds)
        self.probe = probe or OffsetProbe(settings)
        self._assignment = assignment
        self._watermarks = watermarks
        self._held = held
        self._faust_state = faust_state or (lambda tp: {})
        self._clock = clock
        self.held = False  # the stream was waiting for the judge queue at the last look
        self.stalls_total = 0
        self.checks = 0
        self._probe_failing = False

    async def start(self) -> None:
        await self.probe.start()

    async def stop(self) -> None:
        await self.probe.stop()

    async def check(self) -> Changes:
        try:
            assignment = list(self._assignment())
        except Exception as exc:  # faust's consumer between lives (starting, restarting): skip
            log.debug("stall check skipped: assignment not readable (%r)", exc)
            return Changes([], [], [])
        assigned = sorted((tp for tp in assignment if tp.topic == self.topic), key=lambda tp: tp.partition)
        marks = self._watermarks()
        positions: dict[Any, tuple[int | None, int]] = {}
        unread = []
        for tp in assigned:
            mark = marks.find(tp) if marks is not None else None
            if mark is not None and mark.next_offset is not None:
                positions[tp] = (mark.next_offset, mark.seen)
            else:
                unread.append(tp)
        ends: dict[tuple[str, int], int] = {}
        starts: dict[tuple[str, int], int] = {}
        try:
            ends = await self.probe.end_offsets(assigned)
            starts = await self.probe.start_positions(unread)
            if self._probe_failing:
                self._probe_failing = False
                log.info("stall check: broker offsets readable again")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # broker unreachable: decide nothing new on missing numbers
            if not self._probe_failing:
                self._probe_failing = True
                log.warning("stall check: cannot read offsets from the broker (%r); retrying", exc)
        readings = {}
        for tp in assigned:
            key = (tp.topic, tp.partition)
            if tp in positions:
                position, seen = positions[tp]
            else:
                position, seen = starts.get(key), 0
            readings[tp] = Reading(position, seen, ends.get(key))
        # Read after the offsets: a wait that ended during the probe still resets the clocks.
        self.held = bool(self._held())
        changes = self.detector.update(readings, held=self.held, now=self._clock())
        self.checks += 1
        self._report(changes)
        return changes

    def _report(self, changes: Changes) -> None:
        partitions = self.detector.partitions
        for tp in changes.stalled:
            self.stalls_total += 1
            progress = partitions[tp]
            log.warning(
                "intake stalled on %s[%d]: %d records wait beyond offset %s and nothing was taken "
                "in for %.0f s; /healthz reports 503 until intake moves (faust: %s)",
                tp.topic, tp.partition, progress.lag, progress.position,
                self._clock() - progress.since, self._faust_state(tp),
            )
        for tp in changes.recovered:
            progress = partitions[tp]
            why = "judging holds intake (back-pressure)" if self.held else "intake moved"
            log.info(
                "intake no longer stalled on %s[%d]: %s (offset %s, lag %s)",
                tp.topic, tp.partition, why, progress.position, progress.lag,
            )
        for tp in changes.released:
            log.info("stalled partition %s[%d] was reassigned; no longer ours", tp.topic, tp.partition)

    # -- what /healthz and /metrics show --------------------------------------------------------

    def stalled_rows(self) -> list[dict[str, Any]]:
        now = self._clock()
        return [
            {
                "topic": tp.topic,
                "partition": tp.partition,
                "lag": progress.lag,
                "intake_position": progress.position,
                "end_offset": progress.end,
                "seconds_without_intake": round(now - progress.since, 1),
            }
            for tp, progress in sorted(self.detector.stalled().items(), key=lambda item: item[0].partition)
        ]

    def partition_rows(self) -> list[tuple[Any, Progress]]:
        return sorted(self.detector.partitions.items(), key=lambda item: item[0].partition)


def faust_diagnostics(app: Any) -> Callable[[Any], dict[str, Any]]:
    """faust's own view of a partition, for the stall WARNING: which of its switches is off.

    Reads private attributes of faust's consumer; diagnostic only, so anything missing is left
    out rather than failing the check.
    """

    def state(tp: Any) -> dict[str, Any]:
        found: dict[str, Any] = {}
        try:
            consumer = app.consumer
            found["rebalancing"] = bool(getattr(app, "rebalancing", False))
            found["flow_active"] = bool(getattr(consumer, "flow_active", True))
            found["flow_control_active"] = bool(app.flow_control.is_active())
            found["paused"] = tp in getattr(consumer, "_paused_partitions", ())
            found["buffer_full"] = tp in getattr(consumer, "_buffered_partitions", ())
            active = getattr(consumer, "_active_partitions", None)
            if active is not None:
                found["fetching"] = tp in active
        except Exception as exc:  # pragma: no cover - diagnostics must never break the check
            found["error"] = repr(exc)
        return found

    return state
