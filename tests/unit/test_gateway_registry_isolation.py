"""The gateway's registry loads each deployment on its own and, on a reload, keeps a deployment
that no longer loads serving its last good version, even when its broken file no longer says
its name (no network: Python-only flows, so no LLM client is built)."""

from __future__ import annotations

from pathlib import Path

import yaml

from services.gateway.registry import STALE, UNAVAILABLE, load_registry
from services.gateway.settings import GatewaySettings
from tests.support.flow_fakes import write_flow
from tests.unit.test_flow_python_node import DAG

SHOUT = "from promptflow import tool\n\n\n@tool\ndef shout(text: str) -> str:\n    return text.upper()\n"


def folder_with(tmp_path: Path, files: dict[str, dict]) -> GatewaySettings:
    folder = tmp_path / "deployments"
    write_flow(folder / "flows" / "shout", DAG, {"shout.py": SHOUT})
    for name, body in files.items():
        (folder / name).write_text(yaml.safe_dump(body))
    return GatewaySettings(deployments_dir=folder)


async def test_a_file_broken_past_its_name_keeps_serving_under_the_name_it_served(tmp_path: Path) -> None:
    settings = folder_with(tmp_path, {"shop.yaml": {"name": "shop-bot", "flow": "flows/shout"},
                                      "other.yaml": {"name": "other", "flow": "flows/nowhere"}})
    first, _ = await load_registry(settings)
    assert sorted(first.deployments) == ["shop-bot"] and first.status("other") == UNAVAILABLE
    assert first.unavailable("other") is not None and first.unavailable("shop-bot") is None

    (settings.deployments_dir / "shop.yaml").write_text("name: shop-bot\nflow: [unclosed\n")
    second, retired = await load_registry(settings, previous=first)

    assert second.status("shop-bot") == STALE
    assert second.deployments["shop-bot"].executor is first.deployments["shop-bot"].executor  # the last good one
    assert sorted(second.failures) == ["other", "shop-bot"]  # not also under the file stem 'shop'
    assert "invalid YAML" in second.failures["shop-bot"].problems[0]
    assert second.status("shop") is None and retired == []
