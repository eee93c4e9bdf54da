"""Stall detection shared by the processor and the aggregator: which partitions took nothing in.

Why: a consumer can hold its partitions and take nothing in while every other signal looks fine
(seen once in the processor under heavy load: assigned, then 90 s without an event). Each
service watches its own intake and reports such a partition itself (a WARNING, HTTP 503 on
/healthz so the liveness probe restarts the pod, gauges on /metrics); see docs/processor.md and
docs/aggregator.md, "Stall detection".

What is shared here, because the logic is the same in both services:

- the decision (:class:`StallDetector`): pure, no I/O and no clock of its own, so it is
  unit-tested alone (tests/unit/test_processor_stall.py). Per assigned partition it gets the
  *intake position* (the next offset the service's intake will take in), a count of records
  taken in (re-deliveries included, so a re-read counts as movement) and the partition's end
  offset, plus whether intake is *held* on purpose at this look. A partition is stalled when
  records wait beyond the intake position and the intake has not moved for ``stall_seconds``;
  a caught-up partition never is, and while intake is held every clock restarts;
- :class:`StallReporter`, what both do with the answers: one WARNING per stall, one INFO when
  it clears, a count, and the rows /healthz and /metrics show;
- the one piece of I/O both need, :class:`EndOffsetProbe`: end offsets asked of the broker by a
  group-less client on the service's own event loop, never read from the consumer being
  watched (that consumer is the part that may be wedged, and its cached high watermark only
  moves when it fetches), with :class:`ProbeHealth` to say once that the broker cannot be
  asked, and once that it can again.

What counts as the intake position and as "held" is each service's own (the processor:
services/processor/stall.py; the aggregator: services/aggregator/ingest/stall.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import TopicPartition

from shared.kafka import SettingsLike, make_consumer
from shared.prometheus import Families

PROBE_TIMEOUT_SECONDS = 10.0

T = TypeVar("T")


def check_interval(stall_seconds: float) -> float:
    """How often to look: a quarter of the allowance, between 0.25 s and 5 s."""
    return min(5.0, max(0.25, stall_seconds / 4))


# -- the decision (pure) -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reading:
    """One look at one partition."""

    position: int | None  # intake position: the next offset to take in (None: unknown)
    seen: int  # records delivered to the intake so far, re-deliveries included
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
    released: list[Any]  # stalled partitions no longer watched (reassigned, or not positioned)


class StallDetector:
    """Decides, look after look, which partitions are stalled; no I/O, no clock of its own."""

    def __init__(self, stall_seconds: float) -> None:
        self.stall_seconds = stall_seconds
        self.partitions: dict[Any, Progress] = {}

    def update(self, readings: Mapping[Any, Reading], *, held: bool, now: float) -> Changes:
        """Apply one look at every watched partition (``readings``; one left out is forgotten).
        ``held``: intake is held back on purpose (back-pressure, an outage), so no partition
        counts as stalled and every clock restarts."""
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


def _by_partition(item: tuple[Any, Progress]) -> tuple[str, int]:
    return item[0].topic, item[0].partition


# -- what both services do with the answers (count, log, show) ----------------------------------


class StallReporter:
    """The detector, and the same report in both services: one WARNING when a partition stalls
    (with the service's own view of it, ``state``), one INFO when it clears, a count of stalls,
    and the rows /healthz and /metrics show. A service's watch gathers the readings and calls
    :meth:`look`."""

    def __init__(
        self,
        stall_seconds: float,
        logger: logging.Logger,
        *,
        clock: Callable[[], float],
        source: str,
        held_why: str,
        state: Callable[[Any], dict[str, Any]] | None = None,
    ) -> None:
        self.detector = StallDetector(stall_seconds)
        self.interval = check_interval(stall_seconds)
        self._log = logger
        self._clock = clock
        self._source = source  # whose view ``state`` gives, for the WARNING ("faust", "ingest")
        self._held_why = held_why  # why a stall cleared while intake was held
        self._state = state or (lambda tp: {})
        self._probe_health = ProbeHealth(logger)
        self.held = False  # intake was held on purpose at the last look
        self.stalls_total = 0
        self.checks = 0

    def look(self, readings: Mapping[Any, Reading], *, held: bool) -> Changes:
        self.held = held
        changes = self.detector.update(readings, held=held, now=self._clock())
        self.checks += 1
        self._report(changes)
        return changes

    def _report(self, changes: Changes) -> None:
        partitions = self.detector.partitions
        for tp in changes.stalled:
            self.stalls_total += 1
            progress = partitions[tp]
            self._log.warning(
                "intake stalled on %s[%d]: %d records wait beyond offset %s and nothing was taken "
                "in for %.0f s; /healthz reports 503 until intake moves (%s: %s)",
                tp.topic, tp.partition, progress.lag, progress.position,
                self._clock() - progress.since, self._source, self._state(tp),
            )
        for tp in changes.recovered:
            progress = partitions[tp]
            why = self._held_why if self.held else "intake moved"
            self._log.info(
                "intake no longer stalled on %s[%d]: %s (offset %s, lag %s)",
                tp.topic, tp.partition, why, progress.position, progress.lag,
            )
        for tp in changes.released:
            self._log.info(
                "stalled partition %s[%d] is no longer watched here (reassigned or repositioned)",
                tp.topic, tp.partition,
            )

    def stalled_rows(self) -> list[dict[str, Any]]:
        """The stalled partitions as /healthz lists them."""
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
            for tp, progress in sorted(self.detector.stalled().items(), key=_by_partition)
        ]

    def partition_rows(self) -> list[tuple[Any, Progress]]:
        """Every watched partition, for /metrics."""
        return sorted(self.detector.partitions.items(), key=_by_partition)

    def collect_metrics(self, out: Families, held_name: str, held_help: str) -> None:
        """The stall series of /metrics; the service names its held gauge (why it holds differs)."""
        rows = self.partition_rows()
        out.gauge("stalled_partitions", "Watched partitions with records waiting and no intake for "
                  "stall_seconds (0 when healthy).").add(sum(1 for _, progress in rows if progress.stalled))
        flag = out.gauge("partition_stalled", "1 while the partition is stalled, per watched partition.",
                         ["topic", "partition"])
        lag = out.gauge("intake_lag", "Records beyond the intake position, per watched partition (end "
                        "offset read from the broker).", ["topic", "partition"])
        for tp, progress in rows:
            flag.add(progress.stalled, topic=tp.topic, partition=tp.partition)
            if progress.lag is not None:
                lag.add(progress.lag, topic=tp.topic, partition=tp.partition)
        out.counter("intake_stalls_total", "Stalls detected (each counted once, when it starts).").add(
            self.stalls_total)
        out.gauge(held_name, held_help).add(self.held)


# -- the numbers (broker) ------------------------------------------------------------------------


class EndOffsetProbe:
    """End offsets from a group-less consumer of this event loop (it joins no group, so it
    cannot disturb the one being watched)."""

    def __init__(self, settings: SettingsLike, client_id: str) -> None:
        self._consumer = make_consumer(settings, group_id=None, client_id=client_id)
        self._consumer_started = False

    async def start(self) -> None:
        try:
            await self._consumer.start()
        except BaseException:
            await self._consumer.stop()  # a half-started client; build a new probe to try again
            raise
        self._consumer_started = True

    async def stop(self) -> None:
        if self._consumer_started:
            self._consumer_started = False
            await self._consumer.stop()

    async def end_offsets(self, tps: Iterable[Any]) -> dict[tuple[str, int], int]:
        wanted = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        if not wanted:
            return {}
        ends = await asyncio.wait_for(self._consumer.end_offsets(wanted), PROBE_TIMEOUT_SECONDS)
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}


class ProbeHealth:
    """One WARNING when the broker cannot be asked for offsets, one INFO when it can again
    (while it cannot, the detector decides nothing new on the missing numbers)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self.failing = False

    async def ask(self, question: Callable[[], Awaitable[T]]) -> T | None:
        """``question()``'s answer, or None when the broker cannot be asked (said once)."""
        try:
            answer = await question()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # broker unreachable: decide nothing new on missing numbers
            self.failed(exc)
            return None
        self.answered()
        return answer

    def answered(self) -> None:
        if self.failing:
            self.failing = False
            self._log.info("stall check: broker offsets readable again")

    def failed(self, exc: BaseException) -> None:
        if not self.failing:
            self.failing = True
            self._log.warning("stall check: cannot read offsets from the broker (%r); retrying", exc)
