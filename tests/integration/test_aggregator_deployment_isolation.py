"""The aggregator with a deployment file that does not load (issue 12, point 2), on the real
PostgreSQL: the monitors stored from that file stay as they are (a typo never silences alerts),
the other files' monitors follow their files, and a deleted file takes its monitors with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.aggregator.db.migrate import migrate
from services.aggregator.db.pool import create_pool
from services.aggregator.monitors.service import MonitorService
from tests.integration.test_aggregator_monitors import AVERAGE, monitor_settings, write_deployments

pytestmark = pytest.mark.integration

OTHER = {**AVERAGE, "id": "other-avg"}


async def stored(pool) -> dict[str, tuple[str, float]]:
    rows = await pool.fetch("SELECT monitor_id, deployment, definition FROM monitors WHERE source = 'file'")
    return {r["monitor_id"]: (r["deployment"], yaml.safe_load(r["definition"])["threshold"]) for r in rows}


async def test_a_broken_file_keeps_its_stored_monitors_and_the_others_follow_their_files(
    fresh_database: str, tmp_path: Path,
) -> None:
    folder = write_deployments(tmp_path / "d", [AVERAGE])
    write_deployments(folder, [OTHER], name="other")
    await migrate(fresh_database)
    settings = monitor_settings(fresh_database, folder)
    pool = await create_pool(settings)
    try:
        service = MonitorService(settings, pool)
        await service.sync_files()
        assert await stored(pool) == {"rel-avg": ("demo", 3.5), "other-avg": ("other", 3.5)}

        other = yaml.safe_load((folder / "other.yaml").read_text())
        (folder / "other.yaml").write_text(yaml.safe_dump(other | {"monitorz": []}))  # a typo
        demo = yaml.safe_load((folder / "demo.yaml").read_text())
        demo["monitors"][0]["threshold"] = 4.0
        (folder / "demo.yaml").write_text(yaml.safe_dump(demo))
        await service.sync_files()
        assert await stored(pool) == {"rel-avg": ("demo", 4.0), "other-avg": ("other", 3.5)}

        (folder / "other.yaml").unlink()  # removed on purpose: its monitors go
        await service.sync_files()
        assert await stored(pool) == {"rel-avg": ("demo", 4.0)}
    finally:
        await pool.close()
