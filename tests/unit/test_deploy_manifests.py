"""The compose file and Kubernetes manifests, checked offline against the code they deploy.

Kubernetes objects are validated against the schemas kubernetes-validate ships for a pinned
version; every ``PROMPTPULSE_*`` variable they set must be a field of the settings class of the
service it is set on, and the values must load, so a renamed setting or a typo fails here
rather than being silently ignored in production (the settings classes ignore unknown names).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
import typing
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from services.aggregator.settings import AggregatorSettings
from services.gateway.settings import GatewaySettings
from services.llmsim.settings import LlmsimSettings
from services.processor.settings import ProcessorSettings
from shared.deployments import load_api_keys_file, load_connections, load_deployments
from shared.settings import ENV_PREFIX, NESTED_DELIMITER, ServiceSettings, load_settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "deploy" / "compose" / "docker-compose.yml"
K8S_DIR = REPO / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"

# The promptpulse subcommand a container runs -> the settings class it reads.
SETTINGS_OF_COMMAND: dict[str, type[BaseSettings]] = {
    "gateway": GatewaySettings,
    "processor": ProcessorSettings,
    "aggregator": AggregatorSettings,
    "llmsim": LlmsimSettings,
    "migrate": ServiceSettings,
    "topics": ServiceSettings,
}
LISTENERS = {"gateway", "processor", "aggregator", "llmsim"}


def _model_in(annotation: object) -> type[BaseModel] | None:
    """The pydantic model an annotation holds, looking through ``X | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [m for a in typing.get_args(annotation) if (m := _model_in(a)) is not None]
        return models[0] if len(models) == 1 else None
    return None


def env_names(model: type[BaseModel], parts: tuple[str, ...] = ()) -> set[str]:
    """Every environment variable a settings class reads: each field, and each nested field."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        path = (*parts, name)
        names.add(ENV_PREFIX + NESTED_DELIMITER.join(path).upper())
        nested = _model_in(field.annotation)
        if nested is not None:
            names |= env_names(nested, path)
    return names


def test_env_name_walk_finds_nested_fields_and_rejects_typos():
    gateway = env_names(GatewaySettings)
    assert "PROMPTPULSE_GATEWAY__PUBLISHER__SPOOL_DIR" in gateway
    assert "PROMPTPULSE_KAFKA__SASL_PASSWORD" in gateway
    assert "PROMPTPULSE_LLMSIM__LATENCY__TTFT_MS" in env_names(LlmsimSettings)
    assert "PROMPTPULSE_AGGREGATOR__API__COOKIE_SECURE" in env_names(AggregatorSettings)
    assert "PROMPTPULSE_GATEWAY__PORTT" not in gateway
    assert "PROMPTPULSE_PROCESSOR__PORT" not in gateway


# --- compose -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def _interpolate(value: object) -> str:
    """A compose value with ``${VAR:-default}`` taken as its default and ``${VAR:?msg}`` (a
    required secret) as a stand-in long enough for every key's minimum length."""
    text = str(value)
    text = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", text)
    return re.sub(r"\$\{[A-Z0-9_]+:\?[^}]*\}", "stand-in-secret-value-0123456789", text)


def _compose_command(service: dict) -> str | None:
    command = service.get("command")
    return command[0] if command else None


def test_compose_has_the_stack(compose):
    services = compose["services"]
    assert set(services) == {
        "kafka", "postgres", "migrate", "topics", "llmsim", "aggregator", "processor", "gateway"
    }
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:3.9.1"
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["llmsim"]["profiles"] == ["demo"]
    for name in SETTINGS_OF_COMMAND:
        service = services[name]
        assert _compose_command(service) == name
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (COMPOSE_FILE.parent / service["build"]["context"]).resolve() == REPO
        mounts = [m for m in service["volumes"] if m.startswith("../local:")]
        assert mounts and all(m.endswith(":ro") for m in mounts), name
    assert (REPO / "deploy" / "Dockerfile").is_file()


def test_compose_services_are_healthchecked_and_processor_scales(compose):
    services = compose["services"]
    for name in ("kafka", "postgres", *LISTENERS):
        assert services[name]["healthcheck"]["test"], name
    processor = services["processor"]
    # `--scale processor=3` needs no fixed name and no host port the replicas would fight over.
    assert "container_name" not in processor and "ports" not in processor
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


@pytest.mark.parametrize("name", sorted(SETTINGS_OF_COMMAND))
def test_compose_env_is_real_settings_that_load(compose, name, monkeypatch):
    env = compose["services"][name]["environment"]
    cls = SETTINGS_OF_COMMAND[name]
    unknown = {k for k in env if k.startswith(ENV_PREFIX)} - env_names(cls)
    assert not unknown, f"{name}: not settings of {cls.__name__}: {sorted(unknown)}"
    _assert_loads(cls, {k: _interpolate(v) for k, v in env.items()}, monkeypatch, name)


def test_compose_secrets_come_from_the_environment(compose):
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"KEY|PASSWORD|DATABASE_URL", key):
                assert "${" in str(value), f"{name}: {key} is a literal; take it from .env"


# --- kubernetes ----------------------------------------------------------------------------


def _k8s_documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                docs.append((path.name, doc))
    return docs


K8S_DOCS = _k8s_documents()


def _by_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for _, d in K8S_DOCS if d["kind"] == kind}


def _pod_specs() -> list[tuple[str, dict]]:
    specs = [(d["metadata"]["name"], d["spec"]["template"]["spec"]) for _, d in K8S_DOCS
             if d["kind"] in ("Deployment", "Job")]
    assert specs
    return specs


def _containers() -> list[tuple[str, dict]]:
    return [
        (workload, c)
        for workload, spec in _pod_specs()
        for c in [*spec.get("initContainers", []), *spec["containers"]]
    ]


def _container_env(container: dict) -> dict[str, str]:
    """The variables a container gets, with Secret and ConfigMap references resolved from the
    manifests themselves (so a reference to a missing key fails too)."""
    config_maps, secrets = _by_kind("ConfigMap"), _by_kind("Secret")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]]["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif ref := var["valueFrom"].get("secretKeyRef"):
            env[var["name"]] = secrets[ref["name"]]["stringData"][ref["key"]]
        else:
            ref = var["valueFrom"]["configMapKeyRef"]
            env[var["name"]] = config_maps[ref["name"]]["data"][ref["key"]]
    return env


@pytest.mark.parametrize(("file", "doc"), K8S_DOCS, ids=[f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in K8S_DOCS])
def test_k8s_manifest_is_valid(file, doc):
    assert kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_k8s_has_the_workloads():
    deployments = _by_kind("Deployment")
    assert set(deployments) == {"promptpulse-gateway", "promptpulse-processor", "promptpulse-aggregator"}
    assert {"promptpulse-gateway", "promptpulse-aggregator"} <= set(_by_kind("Service"))
    hpa = _by_kind("HorizontalPodAutoscaler")["promptpulse-gateway"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "promptpulse-gateway"
    }
    setup = [c["args"][0] for w, c in _containers() if w == "promptpulse-setup"]
    assert setup == ["migrate", "topics"]


def test_k8s_consumers_fit_the_partitions():
    for name in ("promptpulse-processor", "promptpulse-aggregator"):
        deployment = _by_kind("Deployment")[name]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        partitions = int(_container_env(container)["PROMPTPULSE_KAFKA__PARTITIONS"])
        assert 1 <= deployment["spec"]["replicas"] <= partitions, name


@pytest.mark.parametrize(
    ("command", "port", "liveness", "readiness"),
    [("gateway", 8080, "/healthz", "/readyz"), ("processor", 8083, "/healthz", "/healthz"),
     ("aggregator", 8081, "/healthz", "/readyz")],
)
def test_k8s_probes_hit_the_health_endpoints(command, port, liveness, readiness):
    (container,) = [c for _, c in _containers() if c["args"] == [command]]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("livenessProbe", liveness), ("readinessProbe", readiness)):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports.get(get["port"], get["port"]) == port
    assert int(_container_env(container)[f"PROMPTPULSE_{command.upper()}__PORT"]) == port


def test_k8s_env_is_real_settings_that_load(monkeypatch):
    for workload, container in _containers():
        command = container["args"][0]
        cls = SETTINGS_OF_COMMAND[command]
        env = _container_env(container)
        unknown = {k for k in env if k.startswith(ENV_PREFIX)} - env_names(cls)
        assert not unknown, f"{workload}/{container['name']}: not settings of {cls.__name__}: {sorted(unknown)}"
        _assert_loads(cls, env, monkeypatch, f"{workload}/{container['name']}")


def test_k8s_no_secret_in_a_config_map():
    secret_values = [
        line.strip()
        for secret in _by_kind("Secret").values()
        for value in secret["stringData"].values()
        for line in value.splitlines()
        if len(line.strip()) >= 8 and line.strip() != "api_keys: []"
    ]
    assert secret_values
    for name, config_map in _by_kind("ConfigMap").items():
        for key, value in config_map["data"].items():
            assert not re.search(r"KEY|PASSWORD|TOKEN|SECRET|DATABASE_URL", key), f"{name}: {key}"
            for secret in secret_values:
                assert secret not in value, f"{name}: {key} holds a Secret's value"
            assert not re.search(r"^\s*api_key:\s*(?!none\b)\S", value, re.M), f"{name}: {key} has an api_key"


def test_k8s_deployments_folder_loads(tmp_path):
    """The ConfigMaps, laid out as the gateway pod mounts them, are a deployments folder the
    loader accepts, with the key hashes file from its Secret."""
    (gateway_spec,) = [s for w, s in _pod_specs() if w == "promptpulse-gateway"]
    volumes = {v["name"]: v for v in gateway_spec["volumes"]}
    mounts = gateway_spec["containers"][0]["volumeMounts"]
    config_maps, secrets = _by_kind("ConfigMap"), _by_kind("Secret")
    for mount in mounts:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            files = config_maps[volume["configMap"]["name"]]["data"]
        elif "secret" in volume:
            files = secrets[volume["secret"]["secretName"]]["stringData"]
        else:
            continue
        folder = tmp_path / mount["mountPath"].lstrip("/")
        folder.mkdir(parents=True)
        for file_name, text in files.items():
            (folder / file_name).write_text(text, encoding="utf-8")
    deployments_dir = tmp_path / "etc/promptpulse/deployments"
    deployments = load_deployments(deployments_dir)
    assert set(deployments) == {"assistant"}
    assert "openai" in load_connections(deployments_dir)
    keys_file = deployments["assistant"].api_keys_file
    assert keys_file == Path("/etc/promptpulse/keys/assistant.yaml")
    assert load_api_keys_file(tmp_path / str(keys_file).lstrip("/")) == []


# --- deploy/local ----------------------------------------------------------------------------

LOCAL_STACK = REPO / "deploy" / "local" / "stack.sh"
QUERY_API_KEYS = {"PROMPTPULSE_API_READ_KEY", "PROMPTPULSE_API_ADMIN_KEY"}


def _local_env_names(name: str, tmp_path: Path, **extra: str) -> set[str]:
    """The PROMPTPULSE_* names `stack.sh up` starts ``name`` with (stack.sh env NAME)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env |= {"PROMPTPULSE_LOCAL_DIR": str(tmp_path / "local"), "PROMPTPULSE_VENV": sys.prefix, **extra}
    done = subprocess.run(["bash", str(LOCAL_STACK), "env", name], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "ppapi_" not in done.stdout and "secret-from-the-shell" not in done.stdout  # names only
    return set(done.stdout.split())


@pytest.mark.parametrize("exported", [False, True])
def test_local_stack_gives_the_query_api_keys_to_the_aggregator_only(tmp_path: Path, exported: bool) -> None:
    """Whether the keys were generated into .local/keys or exported in the caller's shell."""
    shell = {var: "secret-from-the-shell-" + var for var in QUERY_API_KEYS} if exported else {}
    assert QUERY_API_KEYS <= _local_env_names("aggregator", tmp_path, **shell)
    for name in ("llmsim", "processor", "gateway", "traffic"):
        assert not QUERY_API_KEYS & _local_env_names(name, tmp_path, **shell), name
    if not exported:
        keys = tmp_path / "local" / "keys"
        assert {p.name: p.stat().st_mode & 0o777 for p in keys.iterdir()} == {
            "api-read.key": 0o600, "api-admin.key": 0o600}


def test_local_stack_never_puts_a_query_api_key_on_a_command_line(tmp_path: Path) -> None:
    """Any local user reads command lines (ps); the keys must reach the aggregator by environment.
    An ``env`` first on PATH records the arguments it is run with."""
    bin_dir, record = tmp_path / "bin", tmp_path / "env-args"
    bin_dir.mkdir()
    spy = bin_dir / "env"
    spy.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{record}"\nexec /usr/bin/env "$@"\n')
    spy.chmod(0o755)
    shell = {var: "secret-from-the-shell-" + var for var in QUERY_API_KEYS}
    path = f"{bin_dir}:{os.environ.get('PATH', '')}"
    assert QUERY_API_KEYS <= _local_env_names("aggregator", tmp_path, PATH=path, **shell)
    assert record.exists()  # the spy ran: it would have seen a key passed as VAR=key
    assert "secret-from-the-shell" not in record.read_text()


# --- both ----------------------------------------------------------------------------------


def _assert_loads(cls: type[BaseSettings], env: dict[str, str], monkeypatch, where: str) -> None:
    """The values parse, and every listener binds all interfaces (the code's default is loopback)."""
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    settings = load_settings(cls)
    for section in LISTENERS:
        if section in type(settings).model_fields:
            assert getattr(settings, section).host == "0.0.0.0", f"{where}: {section} binds loopback"
