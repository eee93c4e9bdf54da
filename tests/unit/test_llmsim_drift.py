"""llmsim drift: schedule, control overrides, and which variant a request belongs to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.llmsim.drift import DriftBoard, variant_of
from services.llmsim.settings import DriftStep

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def board(*steps: DriftStep) -> DriftBoard:
    return DriftBoard(schedule=list(steps), started_at=T0)


def test_no_drift_by_default() -> None:
    assert board().level("a", T0 + timedelta(days=1)) == 0.0


def test_schedule_steps_start_after_seconds_or_at_a_time() -> None:
    drift = board(
        DriftStep(variant="b", level=0.5, after_seconds=60),
        DriftStep(variant="b", level=0.9, at=T0 + timedelta(minutes=5)),
        DriftStep(variant="*", level=0.2, after_seconds=120),
    )
    assert drift.level("b", T0 + timedelta(seconds=59)) == 0.0
    assert drift.level("b", T0 + timedelta(seconds=60)) == 0.5
    assert drift.level("a", T0 + timedelta(seconds=60)) == 0.0
    # The step that started last wins, whether it names the variant or all of them.
    assert drift.level("b", T0 + timedelta(seconds=121)) == 0.2
    assert drift.level("a", T0 + timedelta(seconds=121)) == 0.2
    assert drift.level("b", T0 + timedelta(minutes=5)) == 0.9


def test_overrides_beat_the_schedule_and_can_be_removed() -> None:
    drift = board(DriftStep(variant="b", level=0.5, after_seconds=0))
    drift.set_level("*", 0.3)
    assert drift.level("a", T0) == 0.3 and drift.level("b", T0) == 0.3
    drift.set_level("b", 0.0)
    assert drift.level("b", T0) == 0.0 and drift.level("a", T0) == 0.3
    drift.set_level("*", None)
    drift.set_level("b", None)
    assert drift.level("b", T0) == 0.5
    drift.set_level("a", 1.0)
    drift.clear()
    assert drift.level("a", T0) == 0.0


def test_snapshot_lists_levels_of_known_variants() -> None:
    drift = board(DriftStep(variant="b", level=0.5, after_seconds=0))
    drift.set_level("c", 1.0)
    snapshot = drift.snapshot(T0)
    assert snapshot["levels"] == {"b": 0.5, "c": 1.0, "default": 0.0}


def test_variant_comes_from_header_then_metadata_then_user() -> None:
    headers = {"x-promptpulse-variant": "h"}
    assert variant_of(headers, {"variant": "m"}, "variant=u") == "h"
    assert variant_of({}, {"variant": "m"}, "variant=u") == "m"
    assert variant_of({}, None, "session-1;variant=u") == "u"
    assert variant_of({}, None, "variant:u") == "u"
    assert variant_of({}, None, "covariant=x") == "default"
    assert variant_of({}, {"variant": 3}, None) == "default"
