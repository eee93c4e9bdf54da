"""Stall detection for the ingest: the aggregator's side of shared/stall.py.

The ingest loop's own safety net (consumer.py) only acts when the loop is idle, and it only knows
pauses. Whatever else keeps an assigned partition from being read while records wait is caught
from outside: per partition, the *intake position* (the next offset taken in, i.e. fetched and
handed to a batch; where it was positioned until then) against the end offset the broker
reports. Held on purpose, never a stall: a Postgres outage, a partition not positioned yet, and
the loop waiting for a batch to be written (or for positioning) while it takes nothing in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiokafka import TopicPartition

from services.aggregator.settings import AggregatorSettings
from shared.stall import Changes, EndOffsetProbe, Reading, StallReporter

if TYPE_CHECKING:
    from services.aggregator.ingest.consumer import Ingestor

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class IntakeHold:
    """What the ingest loop was doing, read by the stall watch at each look."""

    outage: bool  # Postgres away: every partition paused on purpose (/readyz says so)
    waiting: bool  # the loop waits right now for a batch write or for positioning
    waits: int  # such waits begun since start
    taken_in: int  # records taken in since start, every partition


def intake_watched(assigned: set[TopicPartition], unpositioned: set[TopicPartition]) -> list[TopicPartition]:
    """The partitions the watch looks at: positioned ones. One being positioned is held (its
    position is not known yet), and starts afresh once it is positioned."""
    return sorted(assigned - unpositioned)


def intake_held(hold: IntakeHold, last: IntakeHold | None) -> bool:
    """Whether intake is held on purpose at this look (no partition is stalled then, and every
    clock restarts): Postgres is away, or the loop waited for a batch write or for positioning
    (at this look or since the previous one) and took nothing in since the previous look.

    A wait alone does not excuse: under steady traffic the loop waits for nearly every write,
    and a partition that takes nothing in while the others do is stuck, not held back."""
    if hold.outage:
        return True
    if last is None:
        return hold.waiting
    waited = hold.waiting or hold.waits != last.waits
    return waited and hold.taken_in == last.taken_in


def intake_readings(
    positions: Mapping[TopicPartition, tuple[int | None, int]], ends: Mapping[tuple[str, int], int]
) -> dict[TopicPartition, Reading]:
    return {
        tp: Reading(position, seen, ends.get((tp.topic, tp.partition)))
        for tp, (position, seen) in positions.items()
    }


class IntakeWatch(StallReporter):
    """Looks at the ingest's intake every :attr:`interval` seconds, from its own task on the
    aggregator's event loop (``run()``), beside the loop it watches. End offsets come from a
    group-less client (shared.stall.EndOffsetProbe), made again until it starts."""

    def __init__(
        self,
        settings: AggregatorSettings,
        ingestor: Ingestor,
        *,
        probe_factory: Callable[[], EndOffsetProbe] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            settings.aggregator.stall_seconds, log, clock=clock, source="ingest",
            held_why="intake held on purpose (Postgres away, a batch being written, positioning)",
            state=ingestor.partition_state,
        )
        self._ingestor = ingestor
        client_id = f"{settings.group_id()}-stall-probe"
        self._new_probe = probe_factory or (lambda: EndOffsetProbe(settings, client_id))
        self._probe: EndOffsetProbe | None = None
        self._last_hold: IntakeHold | None = None

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.interval)
                try:
                    await self.check()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("stall check failed")
        finally:
            if self._probe is not None:
                await self._probe.stop()

    async def _end_offsets(self, tps: Iterable[TopicPartition]) -> dict[tuple[str, int], int]:
        if self._probe is None:
            probe = self._new_probe()
            await probe.start()  # raises if the broker cannot be reached: made again next look
            self._probe = probe
        return await self._probe.end_offsets(tps)

    async def check(self) -> Changes:
        positions = self._ingestor.intake_positions()
        ends = await self._probe_health.ask(lambda: self._end_offsets(positions)) or {}
        # Read after the offsets: a wait that began during the probe still restarts the clocks.
        hold = self._ingestor.intake_hold()
        held = intake_held(hold, self._last_hold)
        self._last_hold = hold
        return self.look(intake_readings(positions, ends), held=held)
