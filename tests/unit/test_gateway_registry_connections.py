"""The gateway's registry hands connections.yaml to each flow: a Python node's connection
parameter is checked at load and filled when it runs (no network: no llm node, no client)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.gateway.registry import UNAVAILABLE, load_registry
from services.gateway.settings import GatewaySettings
from tests.unit.test_flow_connection_inputs import CONNECTIONS, SECRET
from tests.unit.test_flow_connection_inputs import flow as write_connection_flow

# One node reading its connections' settings (never their secrets) back as the output.
CODE = """\
from promptflow.connections import AzureOpenAIConnection, CustomConnection, OpenAIConnection
from promptflow.core import tool


@tool
def use(text: str, custom: CustomConnection, llm: OpenAIConnection, azure: AzureOpenAIConnection) -> dict:
    return {"custom": custom.api_base, "llm": llm.base_url, "azure": azure.api_base,
            "key_matches": custom.api_key == "SECRET"}
""".replace("SECRET", SECRET)


async def test_deployed_python_node_gets_its_connections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_TEST_CUSTOM_KEY", SECRET)
    monkeypatch.setenv("FLOW_TEST_OPENAI_KEY", "sk-other")
    folder = tmp_path / "deployments"
    folder.mkdir()
    (folder / "connections.yaml").write_text(CONNECTIONS)
    good = write_connection_flow(tmp_path / "good", code=CODE)
    wrong = write_connection_flow(tmp_path / "wrong", code=CODE.replace("llm: OpenAIConnection",
                                                                          "llm: AzureOpenAIConnection"))
    for name, flow in (("good", good), ("wrong", wrong)):
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, "flow": str(flow)}))
    registry, _ = await load_registry(GatewaySettings(deployments_dir=folder))

    result = await registry.deployments["good"].executor.run({"text": "hi"})
    assert result.outputs["result"] == {"custom": "http://127.0.0.1:9/v1", "llm": "http://127.0.0.1:9/v1",
                                        "azure": "https://example.openai.azure.com", "key_matches": True}
    assert registry.status("wrong") == UNAVAILABLE
    problems = "\n".join(registry.failures["wrong"].problems)
    assert "node 'use'" in problems and "inputs.llm" in problems and "type openai_compatible" in problems
    assert SECRET not in problems
