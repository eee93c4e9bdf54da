"""connections.yaml: the connection types' client arguments, keys read from the environment (never
in a repr, never the environment's OPENAI key for a keyless connection), and every bad field named
with file and path, by the deployments loader too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.deployments import DeploymentConfigError
from shared.deployments.errors import display_path
from tests.unit.test_deployments import BASE, DEMO_DIR, make_folder, problems_of

REAL_CONNECTIONS = {
    "connections": {
        "openai": {"type": "openai", "api_key_env": "PP_TEST_OPENAI_KEY"},
        "azure": {
            "type": "azure_openai",
            "azure_endpoint": "https://res.openai.azure.com/",
            "api_version": "2024-10-21",
            "api_key_env": "PP_TEST_AZURE_KEY",
        },
        "vllm": {"type": "openai_compatible", "base_url": "http://127.0.0.1:8000/v1", "api_key_env": "PP_TEST_VLLM_KEY"},
        "local": {"type": "openai_compatible", "base_url": "http://127.0.0.1:8082/v1", "api_key": "none"},
    }
}
ENV = {"PP_TEST_OPENAI_KEY": "sk-openai-secret", "PP_TEST_AZURE_KEY": "azure-secret", "PP_TEST_VLLM_KEY": "vllm-secret"}


def connections_folder(tmp_path: Path, body: dict[str, Any] | str) -> Path:
    text = body if isinstance(body, str) else yaml.safe_dump(body)
    (tmp_path / "connections.yaml").write_text(text)
    return tmp_path


def test_demo_connection_is_llmsim_without_a_key():
    from shared.deployments import load_connections, openai_client_kwargs

    llmsim = load_connections(DEMO_DIR)["llmsim"]
    assert openai_client_kwargs(llmsim, environ={}) == {"api_key": "no-key", "base_url": "http://127.0.0.1:8082/v1"}


def test_client_kwargs_per_connection_type(tmp_path):
    from shared.deployments import load_connections, openai_client_kwargs

    connections = load_connections(connections_folder(tmp_path, REAL_CONNECTIONS))
    assert openai_client_kwargs(connections["openai"], ENV) == {"api_key": "sk-openai-secret"}
    assert openai_client_kwargs(connections["azure"], ENV) == {
        "api_key": "azure-secret",
        "azure_endpoint": "https://res.openai.azure.com",
        "api_version": "2024-10-21",
    }
    assert openai_client_kwargs(connections["vllm"], ENV) == {"api_key": "vllm-secret", "base_url": "http://127.0.0.1:8000/v1"}


def test_clients_are_built_for_openai_and_azure(tmp_path):
    import openai

    from shared.deployments import create_openai_client, load_connections

    connections = load_connections(connections_folder(tmp_path, REAL_CONNECTIONS))
    azure = create_openai_client(connections["azure"], ENV, max_retries=0)
    assert isinstance(azure, openai.AsyncAzureOpenAI)
    assert azure.api_key == "azure-secret" and azure.max_retries == 0
    assert str(azure.base_url).startswith("https://res.openai.azure.com/openai")
    vllm = create_openai_client(connections["vllm"], ENV)
    assert type(vllm) is openai.AsyncOpenAI
    assert str(vllm.base_url) == "http://127.0.0.1:8000/v1/"


def test_keyless_connection_never_sends_the_environment_openai_key(tmp_path, monkeypatch):
    from shared.deployments import create_openai_client, load_connections

    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-key-that-must-stay-home")
    local = load_connections(connections_folder(tmp_path, REAL_CONNECTIONS))["local"]
    assert create_openai_client(local).api_key == "no-key"


def test_missing_key_variable_names_connection_and_variable(tmp_path):
    from shared.deployments import ConnectionKeyMissingError, load_connections, openai_client_kwargs

    connections = load_connections(connections_folder(tmp_path, REAL_CONNECTIONS))
    with pytest.raises(ConnectionKeyMissingError, match="connection 'azure': environment variable PP_TEST_AZURE_KEY"):
        openai_client_kwargs(connections["azure"], {"PP_TEST_AZURE_KEY": "  "})


def test_resolved_key_stays_out_of_reprs(tmp_path):
    from shared.deployments import load_connections

    connection = load_connections(connections_folder(tmp_path, REAL_CONNECTIONS))["openai"]
    key = connection.resolve_api_key(ENV)
    assert key.get_secret_value() == "sk-openai-secret"
    assert "sk-openai-secret" not in repr(key) + str(key) + repr(connection)


def test_missing_connections_file_means_no_connections(tmp_path):
    from shared.deployments import load_connections

    assert load_connections(tmp_path) == {}


BAD_CONNECTIONS = [
    ("unknown type", {"type": "anthropic", "api_key": "none"}, "type", "is not one of"),
    ("azure without version", {"type": "azure_openai", "azure_endpoint": "https://x", "api_key_env": "K"}, "api_version", "required for type azure_openai"),
    ("azure without endpoint", {"type": "azure_openai", "api_version": "v", "api_key_env": "K"}, "azure_endpoint", "required for type azure_openai"),
    ("compatible without url", {"type": "openai_compatible", "api_key": "none"}, "base_url", "required for type openai_compatible"),
    ("no key at all", {"type": "openai_compatible", "base_url": "http://h/v1"}, "api_key_env", "api_key: none"),
    ("key and none", {"type": "openai_compatible", "base_url": "http://h/v1", "api_key": "none", "api_key_env": "K"}, "api_key", "not both"),
    ("key in file", {"type": "openai_compatible", "base_url": "http://h/v1", "api_key": "sk-123"}, "api_key", "is not one of 'none'"),
    ("keyless openai", {"type": "openai", "api_key": "none"}, "api_key", "does not apply to type openai"),
    ("url not http", {"type": "openai_compatible", "base_url": "localhost:8082", "api_key": "none"}, "base_url", "http://"),
    ("env name invalid", {"type": "openai", "api_key_env": "MY-KEY"}, "api_key_env", "must match"),
    ("version on openai", {"type": "openai", "api_key_env": "K", "api_version": "v1"}, "api_version", "does not apply"),
    ("unknown field", {"type": "openai", "api_key_env": "K", "organisation": "o"}, "organisation", "unknown field"),
]


@pytest.mark.parametrize(("spec", "field", "message"), [c[1:] for c in BAD_CONNECTIONS], ids=[c[0] for c in BAD_CONNECTIONS])
def test_bad_connection_is_named_with_file_and_path(tmp_path, spec, field, message):
    from shared.deployments import load_connections

    folder = connections_folder(tmp_path, {"connections": {"judge": spec}})
    with pytest.raises(DeploymentConfigError) as caught:
        load_connections(folder)
    prefix = f"{display_path(folder / 'connections.yaml')}: connections.judge.{field}: "
    assert any(line.startswith(prefix) and message in line for line in str(caught.value).splitlines()), str(caught.value)


def test_connections_file_with_unknown_top_level_key(tmp_path):
    from shared.deployments import load_connections

    folder = connections_folder(tmp_path, {"connection": {}})
    with pytest.raises(DeploymentConfigError, match="connections.yaml: connection: unknown field"):
        load_connections(folder)


def test_bad_connections_file_fails_load_deployments_too(tmp_path):
    folder = make_folder(tmp_path, BASE)
    (folder / "connections.yaml").write_text("connections:\n  judge:\n    type: openai\n")
    assert "connections.yaml: connections.judge.api_key_env: required for type openai" in problems_of(folder)
