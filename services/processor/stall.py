"""Stall detection: an assigned partition with records waiting that the intake stopped taking in.

Why: a worker can hold its partitions and consume nothing (seen once under heavy load: assigned,
then 90 s without an event) while every other signal looks fine. The judge queue is empty, no
call fails, no error is logged; outcomes simply stop. For on-call that silent stop is the worst
failure, so the worker checks for it itself and says so: a WARNING per stall, HTTP 503 on
/healthz (the Kubernetes liveness probe restarts the pod), and gauges on /metrics.

What counts (:class:`~shared.stall.StallDetector`, pure and shared with the aggregator, so it
is unit-tested alone): per assigned partition, the *intake position* (one past the last offset
the intake handled, i.e. what the stream has taken in, not what has been judged) and the
partition's end offset. A partition is stalled when records wait beyond the intake position and
the intake has not moved for ``stall_seconds``.
Never stalled:

- a caught-up partition (nothing waiting), however long it stays idle;
- any partition while the stream waits for room in the full judge queue: the judge concurrency
  cap, an open circuit breaker or slow judges hold intake back by design (back-pressure), and
  the clock restarts when the wait ends. A spent judge budget never holds intake at all (the
  request is skipped and finished).

Where the numbers come from (:class:`OffsetProbe`): end offsets are asked of the broker by a
group-less client of the worker's own event loop (:class:`~shared.stall.EndOffsetProbe`), not
read from faust's consumer, because the consumer (in its own thread) is the part that may be
wedged, and its cached high watermark only moves when it fetches. For a partition the intake has
not read from since it was assigned, the position is the group's committed offset (the
beginning of the log when there is none, as ``auto_offset_reset=earliest`` does).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import faust
from aiokafka import TopicPartition
from faust.types import TP

from services.processor.settings import ProcessorSettings
from services.processor.watermark import Watermarks
from shared.kafka import make_admin
from shared.stall import PROBE_TIMEOUT_SECONDS, Changes, EndOffsetProbe, Reading, StallReporter

log = logging.getLogger(__name__)


class OffsetProbe(EndOffsetProbe):
    """End offsets (shared.stall) and the group's committed offsets, from clients of this event
    loop."""

    def __init__(self, settings: ProcessorSettings) -> None:
        group = settings.group_id()
        super().__init__(settings, client_id=f"{group}-stall-probe")
        self._group = group
        self._admin = make_admin(settings, client_id=f"{group}-stall-probe")
        self._admin_started = False

    async def start(self) -> None:
        await super().start()
        await self._admin.start()
        self._admin_started = True

    async def stop(self) -> None:
        if self._admin_started:
            self._admin_started = False
            await self._admin.close()
        await super().stop()

    async def start_positions(self, tps: Iterable[TP]) -> dict[tuple[str, int], int]:
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


class StallWatch(StallReporter):
    """Looks at every assigned partition of the inference topic every :attr:`interval` seconds.
    The decision, the log lines and the rows shown are shared (:class:`~shared.stall.StallReporter`);
    what is read here is faust's: its assignment and the intake's watermarks."""

    def __init__(
        self,
        settings: ProcessorSettings,
        topic: str,
        *,
        assignment: Callable[[], Iterable[TP]],
        watermarks: Callable[[], Watermarks | None],
        held: Callable[[], bool],
        faust_state: Callable[[TP], dict[str, Any]] | None = None,
        probe: OffsetProbe | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            settings.processor.stall_seconds, log, clock=clock, source="faust",
            held_why="judging holds intake (back-pressure)", state=faust_state,
        )
        self.topic = topic
        self.probe = probe or OffsetProbe(settings)
        self._assignment = assignment
        self._watermarks = watermarks
        self._held = held

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
        positions: dict[TP, tuple[int | None, int]] = {}
        unread = []
        for tp in assigned:
            mark = marks.find(tp) if marks is not None else None
            if mark is not None and mark.next_offset is not None:
                positions[tp] = (mark.next_offset, mark.seen)
            else:
                unread.append(tp)

        async def offsets() -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
            return await self.probe.end_offsets(assigned), await self.probe.start_positions(unread)

        ends, starts = await self._probe_health.ask(offsets) or ({}, {})
        readings = {}
        for tp in assigned:
            key = (tp.topic, tp.partition)
            if tp in positions:
                position, seen = positions[tp]
            else:
                position, seen = starts.get(key), 0
            readings[tp] = Reading(position, seen, ends.get(key))
        # Read after the offsets: a wait that ended during the probe still resets the clocks.
        return self.look(readings, held=bool(self._held()))


def faust_diagnostics(app: faust.App) -> Callable[[TP], dict[str, Any]]:
    """faust's own view of a partition, for the stall WARNING: which of its switches is off.

    Reads private attributes of faust's consumer; diagnostic only, so anything missing is left
    out rather than failing the check.
    """

    def state(tp: TP) -> dict[str, Any]:
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
