"""The processor's faust app: what it attaches to every event besides the intake."""

from __future__ import annotations

from pathlib import Path

from services.processor.faust_app import build_faust_app
from services.processor.settings import ProcessorSettings
from shared.settings import load_settings


def test_no_sensor_is_attached_to_every_event(tmp_path: Path) -> None:
    app = build_faust_app(load_settings(ProcessorSettings), "inference", lambda *record: None, tmp_path)
    dependencies = list(app.on_init_dependencies())  # what faust does on its first start
    assert dependencies  # faust's own services still start
    # faust's Monitor would time and count each event for views the processor never serves.
    assert list(app.sensors) == []
    assert app.monitor is not None  # faust's direct calls (commits, end offsets) still find it
