"""``type: proxy`` deployments: what the schema accepts and refuses, and that every service's view of
the folder (the processor's and aggregator's check_flow=False included) loads one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.deployments import load_deployment_folder
from shared.deployments.schema import PROXY_COLUMNS
from tests.unit.test_deployments import BASE, make_folder

PROXY: dict[str, Any] = {
    "name": "assistant",
    "type": "proxy",
    "proxy": {"connection": "judge"},
    "variants": [{"id": "small", "weight": 3}, {"id": "large", "weight": 1, "model": "gpt-4o"}],
    "evaluation": {"metrics": ["relevance", "groundedness"], "judge": {"connection": "judge", "model": "m"}},
    "monitors": [{"id": "assistant-relevance", "metric": "relevance", "statistic": "average", "threshold": 3.5,
                  "window": "5m", "variant": "large"}],
}


def folder_with(tmp_path: Path, proxy: dict[str, Any]) -> Path:
    folder = make_folder(tmp_path, BASE)
    (folder / "assistant.yaml").write_text(yaml.safe_dump(proxy, sort_keys=False))
    return folder


@pytest.mark.parametrize("check_flow", [True, False])
def test_a_proxy_deployment_loads_beside_a_flow_in_every_service(tmp_path: Path, check_flow: bool) -> None:
    loaded = load_deployment_folder(folder_with(tmp_path, PROXY), check_flow=check_flow)
    assert loaded.problems == ()
    proxy = loaded.deployments["assistant"]
    assert proxy.is_proxy and proxy.flow is None and not loaded.deployments["shop"].is_proxy
    assert proxy.column_mapping == PROXY_COLUMNS  # what the judges read from a proxied call
    assert proxy.variant("large").model == "gpt-4o"
    assert proxy.proxy is not None and proxy.proxy.context == "system_message"


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"proxy": None}, "proxy", "required for type proxy"),
    ({"flow": "flows"}, "flow", "a proxy deployment runs no flow"),
    ({"proxy": {"connection": "nowhere"}}, "proxy.connection", "'nowhere' is not in connections.yaml"),
    ({"proxy": {"connection": "judge", "context": "the system"}}, "proxy.context", "is not system_message"),
    ({"proxy": {"connection": "judge", "max_body_bytes": 10}}, "proxy.max_body_bytes", "must be >= 1024"),
    ({"variants": [{"id": "a", "nodes": {"answer": "x"}}]}, "variants[0].nodes", "only for type flow"),
    ({"redaction": {"inputs": ["messages"]}}, "redaction.inputs[0]", "is not a recorded proxy field"),
])
def test_proxy_mistakes_are_named(tmp_path: Path, change: dict[str, Any], field: str, message: str) -> None:
    spec = {k: v for k, v in {**PROXY, **change}.items() if v is not None}
    if "variants" in change:
        spec["monitors"] = []
    loaded = load_deployment_folder(folder_with(tmp_path, spec))
    [broken] = loaded.broken
    assert broken.name == "assistant" and list(loaded.deployments) == ["shop"]
    assert any(p.field == field and message in p.message for p in broken.problems), broken


def test_a_flow_variant_cannot_name_a_model(tmp_path: Path) -> None:
    spec = {**BASE, "variants": [{"id": "variant_0", "model": "gpt-4o"}], "monitors": []}
    loaded = load_deployment_folder(make_folder(tmp_path, spec))
    [broken] = loaded.broken
    assert [p.field for p in broken.problems] == ["variants[0].model"]


def test_the_local_demo_proxy_gets_its_own_key(tmp_path: Path) -> None:
    from shared import demo_key
    from shared.apikeys import match_api_key
    from tests.unit.test_deployments import DEMO_DIR

    folder = tmp_path / "deployments"
    folder.mkdir()
    (folder / "connections.yaml").write_text((DEMO_DIR / "connections.yaml").read_text())
    spec = yaml.safe_load((DEMO_DIR / "demo-proxy.yaml").read_text())
    assert spec["api_keys_file"] == "../../../.local/keys/demo-proxy.yaml"  # beside demo.key
    spec["api_keys_file"] = str(tmp_path / "keys" / "demo-proxy.yaml")
    (folder / "demo-proxy.yaml").write_text(yaml.safe_dump(spec))

    made = demo_key.ensure_demo_key(folder, environ={}, name="demo-proxy")
    assert made is not None and made.created and made.key_file == tmp_path / "keys" / "demo-proxy.key"
    assert made.key_file.read_text().strip() == made.key and made.key_file.stat().st_mode & 0o777 == 0o600
    assert demo_key.ensure_demo_key(folder, environ={}) is None  # no "demo" deployment here
    chosen = demo_key.ensure_demo_key(folder, environ={demo_key.PROXY_ENV_VAR: "own-proxy-key"}, name="demo-proxy")
    assert chosen is not None and chosen.key == "own-proxy-key"
    loaded = load_deployment_folder(folder)
    proxy = loaded.deployments["demo-proxy"]
    assert proxy.is_proxy and match_api_key("own-proxy-key", proxy.api_keys) is not None
