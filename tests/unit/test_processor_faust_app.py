"""The processor's faust app: what it attaches to every event besides the intake, and how records reach it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from services.processor.faust_app import IntakeConsumer, build_faust_app
from services.processor.settings import ProcessorSettings
from shared.settings import load_settings


def test_no_sensor_is_attached_to_every_event(tmp_path: Path) -> None:
    app = build_faust_app(load_settings(ProcessorSettings), "inference", lambda *record: None, tmp_path)
    dependencies = list(app.on_init_dependencies())  # what faust does on its first start
    assert dependencies  # faust's own services still start
    # faust's Monitor would time and count each event for views the processor never serves.
    assert list(app.sensors) == []
    assert app.monitor is not None  # faust's direct calls (commits, end offsets) still find it


def test_the_intake_topic_reaches_the_handler_through_the_consumer_not_an_agent(tmp_path: Path) -> None:
    handler = lambda *record: None  # noqa: E731
    app = build_faust_app(load_settings(ProcessorSettings), "inference", handler, tmp_path)
    # faust's agent path (conductor, event, stream buffer, agent) is not used: its wait_first
    # alone made four tasks per record (docs/processor.md, "Session 11").
    assert not app.agents
    assert isinstance(app.consumer, IntakeConsumer)
    assert [topic.get_topic_name() for topic in app.topics] == ["inference"]  # still subscribed
    assert app.intake_topic == "inference" and app.intake_handler is handler


def test_a_rebalance_logs_no_missing_sensor_state(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = build_faust_app(load_settings(ProcessorSettings), "inference", lambda *record: None, tmp_path)
    list(app.on_init_dependencies())  # the Monitor removed, as at the first start
    with caplog.at_level(logging.WARNING):
        app.on_rebalance_start()
        app.on_rebalance_return()
        app.on_rebalance_end()
    assert not [r for r in caplog.records if "sensor state" in r.getMessage()]
    assert app.rebalancing is False and app.rebalancing_count == 1  # faust's own bookkeeping ran
