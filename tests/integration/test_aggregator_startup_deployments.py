"""The aggregator parses its deployments folder once at start-up, on the real PostgreSQL and
Kafka, and every part that reads the folder works from that one parse: the ingest's sampling
rates, the evaluator scales, the file monitors, the query API's deployments and the OTLP
assembly's sampling rates."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.aggregator.api.state import API
from services.aggregator.app import sampling_policy
from services.aggregator.appkeys import DEPLOYMENTS, POOL, QUERY_API
from shared.deployments import folder as deployment_folder
from shared.topics import delete_topics, ensure_topics
from tests.integration.test_aggregator_deployment_isolation import OTHER, stored
from tests.integration.test_aggregator_monitors import AVERAGE, monitor_settings, write_deployments
from tests.support.aggregator import CONSUMED, create_topics, running_aggregator

pytestmark = pytest.mark.integration


async def test_the_deployments_folder_is_parsed_once_and_each_part_gets_that_parse(
    fresh_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = write_deployments(tmp_path / "d", [AVERAGE])
    write_deployments(folder, [OTHER], name="other")
    settings = monitor_settings(fresh_database, folder)
    # One parse of the folder reads its connections file once (shared/deployments/folder.py).
    parses: list[Path] = []
    read = deployment_folder.read_connections_file

    def counted(path: Path):
        parses.append(path)
        return read(path)

    monkeypatch.setattr(deployment_folder, "read_connections_file", counted)
    topics = await create_topics(settings)
    await ensure_topics(settings, [topics.alerts])
    try:
        async with running_aggregator(settings) as app:
            assert len(parses) == 1, parses
            assert set(app[DEPLOYMENTS].deployments) == {"demo", "other"}
            assert sampling_policy(settings, app[DEPLOYMENTS]).rate("demo") == 0.5
            assert await stored(app[POOL]) == {"rel-avg": ("demo", 3.5), "other-avg": ("other", 3.5)}
            assert set(app[QUERY_API][API].deployments) == {"demo", "other"}
    finally:
        await delete_topics(settings, [*(getattr(topics, role) for role in CONSUMED), topics.alerts])
