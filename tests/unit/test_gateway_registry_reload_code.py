"""A reload (what SIGHUP runs) re-imports a deployed flow's edited Python code; the previous
runtime keeps its own code until it is retired."""

from __future__ import annotations

from pathlib import Path

import yaml

from services.gateway.registry import load_registry
from services.gateway.settings import GatewaySettings
from tests.support.flow_fakes import write_flow
from tests.unit.test_flow_python_node import DAG

SHOUT = "from promptflow import tool\nfrom words import END\n\n\n@tool\ndef shout(text: str) -> str:\n    return text.upper() + END\n"


async def test_reload_runs_the_edited_code_and_the_old_runtime_keeps_its_own(tmp_path: Path) -> None:
    folder = tmp_path / "deployments"
    flow = write_flow(folder / "flows" / "shout", DAG, {"shout.py": SHOUT, "words.py": "END = '!'\n"})
    (folder / "shop.yaml").write_text(yaml.safe_dump({"name": "shop", "flow": "flows/shout"}))
    settings = GatewaySettings(deployments_dir=folder)
    first, _ = await load_registry(settings)

    (flow / "words.py").write_text("END = '?'\n")
    (flow / "shout.py").write_text(SHOUT.replace("text.upper()", "text.lower()"))
    second, _ = await load_registry(settings, previous=first)

    assert (await second.deployments["shop"].executor.run({"text": "Hi"})).outputs == {"result": "hi?"}
    assert (await first.deployments["shop"].executor.run({"text": "Hi"})).outputs == {"result": "HI!"}
