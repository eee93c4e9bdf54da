"""The stall detector's decision (shared/stall.py, also used by the aggregator), and the
processor's glue (services/processor/stall.py) with a fake probe.

The detector is pure: it gets, per assigned partition, the intake position, the count of events
delivered and the end offset, plus whether the stream is waiting for the judge queue, and a
time. The integration tests (tests/integration/test_processor_stall.py) run it against Kafka.
"""

from __future__ import annotations

import logging
from collections import namedtuple
from typing import Any

import pytest

from services.processor.settings import ProcessorSettings
from services.processor.stall import StallWatch
from services.processor.watermark import Watermarks
from shared.settings import load_settings
from shared.stall import Reading, StallDetector, check_interval

pytestmark = pytest.mark.timeout(30)

TP = namedtuple("TP", "topic partition")
P0, P1 = TP("inference", 0), TP("inference", 1)


def test_a_caught_up_partition_is_never_stalled_however_long_it_idles() -> None:
    detector = StallDetector(stall_seconds=2)
    for now in range(0, 1000, 7):
        changes = detector.update({P0: Reading(50, 50, 50)}, held=False, now=now)
        assert changes.stalled == []
    assert detector.stalled() == {}


def test_records_waiting_without_intake_stall_once_then_recover_when_intake_moves() -> None:
    detector = StallDetector(stall_seconds=10)
    assert detector.update({P0: Reading(5, 5, 5)}, held=False, now=0).stalled == []
    # Records arrive at t=3; the intake does not move.
    assert detector.update({P0: Reading(5, 5, 9)}, held=False, now=3).stalled == []
    assert detector.update({P0: Reading(5, 5, 9)}, held=False, now=12.9).stalled == []  # 9.9 s
    changes = detector.update({P0: Reading(5, 5, 9)}, held=False, now=13)
    assert changes.stalled == [P0]
    assert detector.stalled()[P0].lag == 4
    # Reported once per stall, however many looks follow.
    for now in (14, 20, 100):
        changes = detector.update({P0: Reading(5, 5, 12)}, held=False, now=now)
        assert changes.stalled == [] and changes.recovered == []
    assert detector.stalled()[P0].lag == 7
    changes = detector.update({P0: Reading(6, 6, 12)}, held=False, now=101)
    assert changes.recovered == [P0]
    assert detector.stalled() == {}
    # A new stall needs a full stall_seconds again.
    assert detector.update({P0: Reading(6, 6, 12)}, held=False, now=110).stalled == []
    assert detector.update({P0: Reading(6, 6, 12)}, held=False, now=111).stalled == [P0]


def test_the_clock_starts_when_records_arrive_not_when_intake_last_moved() -> None:
    # Idle and caught up for an hour, then one record: a stall only stall_seconds later.
    detector = StallDetector(stall_seconds=10)
    detector.update({P0: Reading(5, 5, 5)}, held=False, now=0)
    detector.update({P0: Reading(5, 5, 5)}, held=False, now=3600)
    assert detector.update({P0: Reading(5, 5, 6)}, held=False, now=3601).stalled == []
    assert detector.update({P0: Reading(5, 5, 6)}, held=False, now=3609).stalled == []
    assert detector.update({P0: Reading(5, 5, 6)}, held=False, now=3611).stalled == [P0]


def test_back_pressure_from_judging_is_never_a_stall_and_restarts_the_clock() -> None:
    detector = StallDetector(stall_seconds=10)
    for now in range(0, 300, 5):
        assert detector.update({P0: Reading(5, 5, 500)}, held=True, now=now).stalled == []
    # The wait ends between the looks at 295 and 305 and intake still does not move: the clock
    # starts at the first look that sees no wait (the end of the wait is not known better).
    assert detector.update({P0: Reading(5, 5, 500)}, held=False, now=305).stalled == []
    assert detector.update({P0: Reading(5, 5, 500)}, held=False, now=314).stalled == []
    assert detector.update({P0: Reading(5, 5, 500)}, held=False, now=315).stalled == [P0]
    # A stall that turns into back-pressure is no longer reported.
    assert detector.update({P0: Reading(5, 5, 500)}, held=True, now=316).recovered == [P0]


def test_re_reading_handled_events_counts_as_intake() -> None:
    # After a re-seek the intake re-reads events it handled: the position stands, seen grows.
    detector = StallDetector(stall_seconds=10)
    detector.update({P0: Reading(100, 100, 200)}, held=False, now=0)
    for now, seen in ((8, 150), (16, 220), (24, 300)):
        assert detector.update({P0: Reading(100, seen, 200)}, held=False, now=now).stalled == []
    assert detector.update({P0: Reading(100, 300, 200)}, held=False, now=34).stalled == [P0]


def test_unknown_numbers_decide_nothing_and_the_last_known_ones_hold() -> None:
    detector = StallDetector(stall_seconds=10)
    # End never known: no decision either way.
    for now in range(0, 100, 10):
        assert detector.update({P0: Reading(5, 5, None)}, held=False, now=now).stalled == []
    # End known once, then the broker cannot be asked: records were waiting, so that holds.
    detector = StallDetector(stall_seconds=10)
    detector.update({P0: Reading(5, 5, 9)}, held=False, now=0)
    assert detector.update({P0: Reading(None, 5, None)}, held=False, now=5).stalled == []
    assert detector.update({P0: Reading(None, 5, None)}, held=False, now=10).stalled == [P0]
    assert detector.stalled()[P0].position == 5


def test_partitions_are_judged_independently_and_forgotten_when_reassigned() -> None:
    detector = StallDetector(stall_seconds=10)
    detector.update({P0: Reading(5, 5, 9), P1: Reading(0, 0, 0)}, held=False, now=0)
    changes = detector.update({P0: Reading(5, 5, 9), P1: Reading(3, 3, 9)}, held=False, now=10)
    assert changes.stalled == [P0]  # P1 moved
    changes = detector.update({P1: Reading(3, 3, 9)}, held=False, now=11)
    assert changes.released == [P0] and P0 not in detector.partitions
    # Assigned again later: a fresh clock.
    assert detector.update({P0: Reading(5, 5, 9), P1: Reading(9, 9, 9)}, held=False, now=12).stalled == []


def test_check_interval_is_a_quarter_of_the_allowance_within_bounds() -> None:
    assert check_interval(60) == 5.0
    assert check_interval(2) == 0.5
    assert check_interval(0.1) == 0.25


def test_stall_seconds_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMPTPULSE_PROCESSOR__STALL_SECONDS", raising=False)
    assert load_settings(ProcessorSettings).processor.stall_seconds == 60.0
    monkeypatch.setenv("PROMPTPULSE_PROCESSOR__STALL_SECONDS", "2.5")
    assert load_settings(ProcessorSettings).processor.stall_seconds == 2.5


# -- the glue, with a fake broker ---------------------------------------------------------------


class FakeProbe:
    def __init__(self) -> None:
        self.ends: dict[tuple[str, int], int] = {}
        self.committed: dict[tuple[str, int], int] = {}
        self.fail = False
        self.asked_start: list[Any] = []

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def end_offsets(self, tps: Any) -> dict[tuple[str, int], int]:
        if self.fail:
            raise ConnectionError("broker down")
        return {(tp.topic, tp.partition): self.ends[(tp.topic, tp.partition)] for tp in tps}

    async def start_positions(self, tps: Any) -> dict[tuple[str, int], int]:
        tps = list(tps)
        self.asked_start += tps
        return {(tp.topic, tp.partition): self.committed.get((tp.topic, tp.partition), 0) for tp in tps}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_watch(probe: FakeProbe, marks: Watermarks, clock: Clock, held: list[bool]) -> StallWatch:
    settings = load_settings(ProcessorSettings, processor={"stall_seconds": 2})
    return StallWatch(
        settings, "inference",
        assignment=lambda: [P0, P1, TP("other", 0)],
        watermarks=lambda: marks,
        held=lambda: held[0],
        faust_state=lambda tp: {"paused": True},
        probe=probe,  # type: ignore[arg-type]
        clock=clock,
    )


async def test_watch_reads_intake_positions_and_logs_one_warning_per_stall(caplog: pytest.LogCaptureFixture) -> None:
    probe, marks, clock, held = FakeProbe(), Watermarks(), Clock(), [False]
    probe.ends = {("inference", 0): 10, ("inference", 1): 4}
    probe.committed = {("inference", 1): 4}  # never read here; the group committed 4: caught up
    mark = marks.get(P0)
    for offset in range(7):
        mark.see(offset)
    watch = make_watch(probe, marks, clock, held)
    caplog.set_level(logging.INFO, logger="services.processor.stall")
    await watch.check()
    assert probe.asked_start == [P1]  # the committed offset is asked only for the unread one
    assert {tp: p.lag for tp, p in watch.partition_rows()} == {P0: 3, P1: 0}  # "other" ignored
    for clock.now in (1.0, 2.0, 3.0, 4.0):
        await watch.check()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "inference[0]" in warnings[0].getMessage() and "3 records" in warnings[0].getMessage()
    assert "'paused': True" in warnings[0].getMessage()
    assert [(r["partition"], r["lag"]) for r in watch.stalled_rows()] == [(0, 3)]
    assert watch.stalls_total == 1
    # Intake moves: cleared, with an INFO line.
    mark.see(7)
    await watch.check()
    assert watch.stalled_rows() == []
    assert any("no longer stalled" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


async def test_watch_does_not_stall_while_judging_holds_intake_and_survives_a_broker_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    probe, marks, clock, held = FakeProbe(), Watermarks(), Clock(), [True]
    probe.ends = {("inference", 0): 10, ("inference", 1): 0}
    marks.get(P0).see(0)
    watch = make_watch(probe, marks, clock, held)
    for clock.now in (0.0, 5.0, 50.0):
        await watch.check()
    assert watch.held and watch.stalled_rows() == []
    held[0] = False
    probe.fail = True
    caplog.set_level(logging.INFO, logger="services.processor.stall")
    for clock.now in (51.0, 52.0, 53.0):
        await watch.check()  # does not raise; the last known end (10) still counts
    assert [r["partition"] for r in watch.stalled_rows()] == [0]
    outage = [r for r in caplog.records if "cannot read offsets" in r.getMessage()]
    assert len(outage) == 1
