"""The aggregator's side of stall detection (services/aggregator/ingest/stall.py): which
partitions are watched, when intake counts as held on purpose, and the watch with a fake broker
and a fake ingest. The decision itself is shared.stall's (tests/unit/test_processor_stall.py);
tests/integration/test_aggregator_stall.py runs it all against Kafka and Postgres.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiokafka import TopicPartition

from services.aggregator.api import prometheus
from services.aggregator.app import SETTINGS, STALLS, healthz
from services.aggregator.ingest.stall import (
    IntakeHold,
    IntakeWatch,
    intake_held,
    intake_readings,
    intake_watched,
)
from services.aggregator.settings import AggregatorSettings
from shared.prometheus import metrics_handler
from shared.settings import load_settings
from shared.stall import Reading
from tests.support.prometheus_text import value

pytestmark = pytest.mark.timeout(30)

P0, P1, P2 = (TopicPartition("inference", p) for p in range(3))


def hold(outage: bool = False, waiting: bool = False, waits: int = 0, taken_in: int = 0) -> IntakeHold:
    return IntakeHold(outage=outage, waiting=waiting, waits=waits, taken_in=taken_in)


def test_only_positioned_partitions_are_watched() -> None:
    assert intake_watched({P0, P1, P2}, {P1}) == [P0, P2]
    assert intake_watched({P0}, {P0, P1}) == []  # a revoked one left in unpositioned: ignored


def test_readings_pair_intake_positions_with_end_offsets() -> None:
    readings = intake_readings({P0: (5, 3), P1: (None, 0)}, {("inference", 0): 9})
    assert readings == {P0: Reading(5, 3, 9), P1: Reading(None, 0, None)}


def test_a_postgres_outage_always_holds_intake() -> None:
    assert intake_held(hold(outage=True), None)
    assert intake_held(hold(outage=True, taken_in=50), hold(taken_in=10))


def test_a_wait_for_the_write_path_holds_intake_only_if_nothing_was_taken_in_meanwhile() -> None:
    # First look: waiting right now.
    assert intake_held(hold(waiting=True, waits=1, taken_in=10), None)
    assert not intake_held(hold(waits=1, taken_in=10), None)
    last = hold(waits=1, taken_in=10)
    # Waiting now, or a wait began since the last look, and nothing came in since: held.
    assert intake_held(hold(waiting=True, waits=1, taken_in=10), last)
    assert intake_held(hold(waits=3, taken_in=10), last)
    # Records were taken in since the last look: the loop was free to take in every partition,
    # so one that did not move is not excused (steady traffic waits for nearly every write).
    assert not intake_held(hold(waiting=True, waits=2, taken_in=30), last)
    assert not intake_held(hold(waits=5, taken_in=11), last)
    # Idle (no wait, nothing taken in): not held; a caught-up partition is never stalled anyway,
    # and one with records waiting that the idle loop does not read is exactly a stall.
    assert not intake_held(hold(waits=1, taken_in=10), last)


# -- the watch, with a fake broker and a fake ingest ----------------------------------------------


class FakeProbe:
    def __init__(self, ends: dict[tuple[str, int], int], fail_start: bool = False) -> None:
        self.ends = ends
        self.fail_start = fail_start
        self.fail = False
        self.started = self.stopped = False

    async def start(self) -> None:
        if self.fail_start:
            raise ConnectionError("broker down")
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def end_offsets(self, tps: Any) -> dict[tuple[str, int], int]:
        if self.fail:
            raise ConnectionError("broker down")
        return {(tp.topic, tp.partition): self.ends[(tp.topic, tp.partition)] for tp in tps}


class FakeIngest:
    def __init__(self) -> None:
        self.positions: dict[TopicPartition, tuple[int | None, int]] = {}
        self.hold = hold()

    def intake_positions(self) -> dict[TopicPartition, tuple[int | None, int]]:
        return dict(self.positions)

    def intake_hold(self) -> IntakeHold:
        return self.hold

    def partition_state(self, tp: TopicPartition) -> dict[str, Any]:
        return {"paused": tp == P0}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def settings(stall_seconds: float = 2) -> AggregatorSettings:
    return load_settings(AggregatorSettings, aggregator={"stall_seconds": stall_seconds, "group_id": "g"})


LOGGER = "services.aggregator.ingest.stall"


def watch_of(*probes: FakeProbe, **positions: tuple[int, int]) -> tuple[FakeIngest, Clock, IntakeWatch]:
    """A watch over a fake ingest with ``positions`` (p0=(position, seen), ...), whose probes are
    made from ``probes`` in turn."""
    ingest, clock, queue = FakeIngest(), Clock(), list(probes)
    ingest.positions = {TopicPartition("inference", int(name[1:])): pos for name, pos in positions.items()}
    watch = IntakeWatch(settings(), ingest, probe_factory=lambda: queue.pop(0), clock=clock)  # type: ignore[arg-type]
    return ingest, clock, watch


async def looks(watch: IntakeWatch, clock: Clock, *times: float) -> None:
    for clock.now in times:
        await watch.check()


async def test_watch_reports_a_stall_once_shows_it_and_clears_it(caplog: pytest.LogCaptureFixture) -> None:
    probe = FakeProbe({("inference", 0): 10, ("inference", 1): 4})
    ingest, clock, watch = watch_of(probe, p0=(7, 7), p1=(4, 4))
    assert watch.interval == 0.5
    caplog.set_level(logging.INFO, logger=LOGGER)
    for clock.now in (0.0, 1.0, 2.0, 3.0, 4.0):
        ingest.hold = hold(taken_in=int(clock.now))  # other partitions keep moving
        await watch.check()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "inference[0]" in warnings[0] and "3 records" in warnings[0] and "beyond offset 7" in warnings[0]
    assert "ingest: {'paused': True}" in warnings[0]
    assert [(r["topic"], r["partition"], r["lag"]) for r in watch.stalled_rows()] == [("inference", 0, 3)]
    assert watch.stalls_total == 1 and probe.started

    # What /healthz answers, and /metrics shows.
    app = web.Application()
    app[SETTINGS] = settings()
    app[STALLS] = watch
    response = await healthz(make_mocked_request("GET", "/healthz", app=app))
    body = json.loads(response.text)
    assert response.status == 503 and body["status"] == "stalled" and body["stall_seconds"] == 2
    assert [r["partition"] for r in body["stalled_partitions"]] == [0]
    prometheus.setup(app)
    text = (await metrics_handler(make_mocked_request("GET", "/metrics", app=app))).body.decode()
    assert value(text, "promptpulse_aggregator_stalled_partitions") == 1
    assert value(text, "promptpulse_aggregator_partition_stalled", topic="inference", partition=0) == 1
    assert value(text, "promptpulse_aggregator_partition_stalled", topic="inference", partition=1) == 0
    assert value(text, "promptpulse_aggregator_intake_lag", topic="inference", partition=0) == 3
    assert value(text, "promptpulse_aggregator_intake_stalls_total") == 1
    assert value(text, "promptpulse_aggregator_intake_held") == 0

    ingest.positions[P0] = (10, 10)  # intake moved: cleared with an INFO line
    clock.now = 5.0
    await watch.check()
    assert watch.stalled_rows() == []
    assert any("no longer stalled on inference[0]: intake moved" in r.getMessage() for r in caplog.records)
    response = await healthz(make_mocked_request("GET", "/healthz", app=app))
    assert response.status == 200 and json.loads(response.text)["status"] == "ok"


async def test_an_outage_holds_every_partition_and_a_stall_clears_when_it_turns_into_one() -> None:
    ingest, clock, watch = watch_of(FakeProbe({("inference", 0): 10}), p0=(0, 0))
    ingest.hold = hold(outage=True)
    await looks(watch, clock, 0.0, 5.0, 50.0)
    assert watch.held and watch.stalled_rows() == []
    ingest.hold = hold()
    await looks(watch, clock, 51.0, 52.0, 53.0)
    assert [r["partition"] for r in watch.stalled_rows()] == [0]
    ingest.hold = hold(outage=True)
    await watch.check()
    assert watch.stalled_rows() == []


async def test_a_partition_that_is_positioned_again_is_forgotten_and_starts_afresh(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ingest, clock, watch = watch_of(FakeProbe({("inference", 0): 10}), p0=(0, 0))
    caplog.set_level(logging.INFO, logger=LOGGER)
    await looks(watch, clock, 0.0, 1.0, 2.0)
    assert watch.stalled_rows()
    ingest.positions = {}  # reassigned: being positioned
    await watch.check()
    assert watch.stalled_rows() == [] and watch.partition_rows() == []
    assert any("no longer watched" in r.getMessage() for r in caplog.records)
    ingest.positions = {P0: (0, 0)}  # positioned again at the same offset: a full allowance
    await looks(watch, clock, 3.0, 4.0)
    assert watch.stalled_rows() == []


async def test_a_probe_that_cannot_start_is_made_again_and_the_failure_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = FakeProbe({("inference", 0): 0})
    _, clock, watch = watch_of(FakeProbe({}, fail_start=True), FakeProbe({}, fail_start=True), good, p0=(0, 0))
    caplog.set_level(logging.INFO, logger=LOGGER)
    await looks(watch, clock, 0.0, 1.0, 2.0)  # never raises
    assert good.started
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot read offsets" in m for m in messages) == 1
    assert sum("offsets readable again" in m for m in messages) == 1
    assert {tp: p.lag for tp, p in watch.partition_rows()} == {P0: 0}


def test_stall_seconds_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMPTPULSE_AGGREGATOR__STALL_SECONDS", raising=False)
    assert load_settings(AggregatorSettings).aggregator.stall_seconds == 60.0
    monkeypatch.setenv("PROMPTPULSE_AGGREGATOR__STALL_SECONDS", "2.5")
    assert load_settings(AggregatorSettings).aggregator.stall_seconds == 2.5
