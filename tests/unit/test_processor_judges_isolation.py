"""The processor's judges per deployment: one deployment whose judge cannot be set up is left
unjudged with its reason, and every other deployment is judged (issue 12, point 2)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from services.processor.evaluation.setup import build_judging
from services.processor.settings import ProcessorSection
from services.processor.stats import ProcessorStats
from shared.deployments import Connection, ConnectionKeyMissingError, load_deployments
from tests.unit.test_deployments import BASE, make_folder


def deployment(name: str, connection: str) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["name"] = name
    data["monitors"] = []
    data["evaluation"]["judge"]["connection"] = connection
    return data


def test_a_judge_that_cannot_be_set_up_costs_only_its_deployments(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, deployment("shop", "judge"))
    (folder / "connections.yaml").write_text(yaml.safe_dump({"connections": {
        "judge": {"type": "openai_compatible", "base_url": "http://127.0.0.1:8082/v1", "api_key": "none"},
        "keyless": {"type": "openai", "api_key_env": "PROMPTPULSE_TEST_UNSET_KEY"},
    }}))
    for name, connection in (("returns", "keyless"), ("refunds", "keyless")):
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(deployment(name, connection)))
    deployments = load_deployments(folder)
    connections = {name: Connection.model_validate({"name": name, **spec}) for name, spec in yaml.safe_load(
        (folder / "connections.yaml").read_text())["connections"].items()}
    built: list[str] = []

    def make_client(connection: Connection) -> object:
        if connection.name == "keyless":
            raise ConnectionKeyMissingError(f"connection {connection.name!r}: environment variable "
                                            "PROMPTPULSE_TEST_UNSET_KEY (its api_key_env) is not set or empty")
        built.append(connection.name)
        return object()

    judging, pool, unavailable = build_judging(deployments, connections, ProcessorSection(), ProcessorStats(),
                                               make_client=make_client)

    assert sorted(judging) == ["shop"] and built == ["judge"]
    assert sorted(unavailable) == ["refunds", "returns"]
    assert "PROMPTPULSE_TEST_UNSET_KEY" in unavailable["refunds"] and "keyless" in unavailable["returns"]
    # A connection missing from the file is a reason too, not a crash.
    judging, _, unavailable = build_judging(deployments, {"judge": connections["judge"]}, ProcessorSection(),
                                            ProcessorStats(), make_client=make_client)
    assert sorted(judging) == ["shop"]
    assert unavailable["returns"] == "judge connection 'keyless' is not in connections.yaml"
