"""Loading the deployments folder: every ``*.yaml`` but ``connections.yaml`` is one deployment.

Validation happens in three layers, all reported with the file and the field path: the schema
(types, ranges, unknown keys), the cross-field rules of the schema models, and the checks
against things outside the file: the flow's ``flow.dag.yaml`` (variant ids, inputs and outputs
named by the column mapping and redaction), the connections file (the judge connection), and the
``api_keys_file``. Every problem of a file is collected before raising, so one start-up shows
everything to fix; folder.py reads the whole folder, one file at a time.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from shared.apikeys import ApiKeyRecord
from shared.deployments.base import BASE_DIR, COLUMNS, DEFAULT_VARIANT_ID, DEFER_CHECKS
from shared.deployments.connections import CONNECTIONS_FILE, Connection
from shared.deployments.errors import (
    DeploymentConfigError,
    Loc,
    Problem,
    display_path,
    problems_at,
    problems_from_validation,
    read_yaml_mapping,
)
from shared.deployments.lockfile import lock_path, lock_problems, read_lock
from shared.deployments.prompty_files import PromptyFormatError, is_prompty, prompty_interface
from shared.deployments.schema import Deployment

FLOW_FILE = "flow.dag.yaml"
FLEX_FLOW_FILE = "flow.flex.yaml"
DEPLOYMENT_SUFFIXES = (".yaml", ".yml")


def deployment_files(deployments_dir: Path) -> list[Path]:
    """The deployment files of a folder, sorted (hidden files and connections.yaml excluded)."""
    return sorted(
        path
        for path in Path(deployments_dir).iterdir()
        if path.is_file()
        and path.suffix in DEPLOYMENT_SUFFIXES
        and not path.name.startswith(".")
        and path.name != CONNECTIONS_FILE
    )


def load_deployment(
    path: Path,
    connections: Mapping[str, Connection] | None = None,
    *,
    check_flow: bool = True,
    connections_complete: bool = True,
) -> Deployment:
    """One deployment file, validated; raises :class:`DeploymentConfigError`.

    ``connections``: when given, the judge connection must be one of them
    (``connections_complete`` False: some entries of the file did not load). ``check_flow``: read
    the flow's flow.dag.yaml to check variant ids and column names; a service that never runs
    the flow (processor, aggregator) may turn it off if its mount lacks the flow folders.
    """
    path = Path(path)
    shown = display_path(path)
    data = read_yaml_mapping(path, "deployment file")
    data.setdefault("name", path.stem)
    try:
        deployment = Deployment.model_validate(
            data, context={DEFER_CHECKS: True, BASE_DIR: path.parent.resolve()}
        )
    except ValidationError as exc:
        raise DeploymentConfigError(problems_from_validation(shown, exc)) from None
    problems = problems_at(shown, deployment.all_problems())
    if connections is not None:
        problems += _connection_problems(shown, deployment, connections, connections_complete)
    if check_flow and deployment.flow is not None:
        problems += _flow_problems(shown, deployment)
    problems += _evaluator_lock_problems(path, shown, deployment)
    if deployment.api_keys_file is not None:
        try:
            from_file = load_api_keys_file(deployment.api_keys_file)
        except DeploymentConfigError as exc:
            problems += exc.problems
        else:
            deployment._inline_api_keys = list(deployment.api_keys)
            deployment.api_keys = [*deployment.api_keys, *from_file]
            problems += _duplicate_key_problems(shown, deployment.api_keys)
    if problems:
        raise DeploymentConfigError(problems)
    deployment._source = path
    return deployment


def _connection_problems(
    shown: str, deployment: Deployment, connections: Mapping[str, Connection], complete: bool
) -> list[Problem]:
    used: list[tuple[str, str]] = []  # (field, connection name)
    if deployment.evaluation is not None:
        used.append(("evaluation.judge.connection", deployment.evaluation.judge.connection))
        for index, evaluator in enumerate(deployment.evaluation.evaluators):
            if evaluator.judge is not None and evaluator.judge.connection is not None:
                used.append((f"evaluation.evaluators[{index}].judge.connection", evaluator.judge.connection))
    if deployment.proxy is not None:
        used.append(("proxy.connection", deployment.proxy.connection))
    problems: list[Problem] = []
    for where, name in used:
        if name in connections and connections[name].type == "custom":
            problems.append(Problem(shown, where, f"{name!r} is a custom connection, not an LLM endpoint"))
        elif name not in connections:
            known = ", ".join(sorted(connections)) or "none"
            hint = "" if complete else f"; {CONNECTIONS_FILE} has problems, see them"
            problems.append(Problem(shown, where, f"{name!r} is not in {CONNECTIONS_FILE} (known: {known}{hint})"))
    return problems


def _evaluator_lock_problems(path: Path, shown: str, deployment: Deployment) -> list[Problem]:
    try:
        return lock_problems(shown, deployment, read_lock(lock_path(path)))
    except DeploymentConfigError as exc:
        return list(exc.problems)


def _duplicate_key_problems(shown: str, keys: list[ApiKeyRecord]) -> list[Problem]:
    seen: set[str] = set()
    problems: list[Problem] = []
    for key in keys:
        if key.id in seen:
            problems.append(Problem(shown, "api_keys", f"key id {key.id!r} is in both api_keys and api_keys_file"))
        seen.add(key.id)
    return problems


def read_flow_interface(flow_dir: Path) -> tuple[set[str], set[str], dict[str, set[str]]]:
    """(input names, output names, node -> variant ids) of a flow.dag.yaml, lightly read.

    Only what the deployment refers to is read; the gateway's flow loader validates the rest.
    """
    flow_file = flow_dir / FLOW_FILE
    data = read_yaml_mapping(flow_file, "flow file")
    shown = display_path(flow_file)

    def mapping(key: str) -> dict[str, Any]:
        value = data.get(key) or {}
        if not isinstance(value, dict):
            raise DeploymentConfigError([Problem(shown, key, "must be a mapping")])
        return value

    node_variants: dict[str, set[str]] = {}
    for node, spec in mapping("node_variants").items():
        variants = spec.get("variants") if isinstance(spec, dict) else None
        if not isinstance(variants, dict):
            raise DeploymentConfigError([Problem(shown, f"node_variants.{node}.variants", "must be a mapping")])
        node_variants[str(node)] = {str(v) for v in variants}
    return set(mapping("inputs")), set(mapping("outputs")), node_variants


def _flex_problems(shown: str, deployment: Deployment) -> list[Problem] | None:
    """A flex flow's deployment (a flow.flex.yaml, or a folder with one and no flow.dag.yaml):
    variants are the deployment's own (each may give init values), none pins nodes. Its inputs
    come from its code, which the gateway's flow loader checks. None: not a flex flow."""
    flow = deployment.flow
    assert flow is not None  # only flow deployments get here
    flex = flow.is_file() and flow.name.endswith((".flex.yaml", ".flex.yml")) or (
        (flow / FLEX_FLOW_FILE).is_file() and not (flow / FLOW_FILE).is_file())
    if not flex:
        return None
    found: list[tuple[Loc, str]] = [
        (("variants", index, "nodes"), "a flex flow has no nodes: give the variant its own init values instead")
        for index, variant in enumerate(deployment.variants) if variant.nodes is not None
    ]
    return problems_at(shown, found)


def _flow_problems(shown: str, deployment: Deployment) -> list[Problem]:
    if deployment.flow is not None and is_prompty(deployment.flow):
        return _prompty_problems(shown, deployment)
    own_flow = problems_at(shown, [
        (("variants", index, "flow"), "only a prompty deployment's variants name their own flow file (a DAG "
         "flow's variants are its node_variants, a flex flow's their init values)")
        for index, variant in enumerate(deployment.variants) if variant.flow is not None])
    if own_flow:
        return own_flow
    flow_dir = deployment.flow
    assert flow_dir is not None  # the caller checks: only flow deployments have one
    flex = _flex_problems(shown, deployment)
    if flex is not None:
        return flex
    if deployment.init is not None or any(v.init is not None for v in deployment.variants):
        return [Problem(shown, "init" if deployment.init is not None else "variants", "init values are for a flex flow's entry class (flow.flex.yaml); "
                        f"{display_path(flow_dir)} is a DAG flow")]
    if not (flow_dir / FLOW_FILE).is_file():
        return [Problem(shown, "flow", f"{display_path(flow_dir)} has no {FLOW_FILE} (nor {FLEX_FLOW_FILE})")]
    try:
        inputs, outputs, node_variants = read_flow_interface(flow_dir)
    except DeploymentConfigError as exc:
        return list(exc.problems)
    found: list[tuple[Loc, str]] = []
    all_variant_ids = set().union(*node_variants.values()) if node_variants else set()
    for index, variant in enumerate(deployment.variants):
        if variant.nodes is not None:
            for node, node_variant in variant.nodes.items():
                if node not in node_variants:
                    found.append((("variants", index, "nodes", node), "is not a node with node_variants in the flow"))
                elif node_variant not in node_variants[node]:
                    found.append(
                        (("variants", index, "nodes", node), f"{node_variant!r} is not one of {sorted(node_variants[node])}")
                    )
        elif variant.id != DEFAULT_VARIANT_ID and variant.id not in all_variant_ids:
            found.append(
                (("variants", index, "id"), f"{variant.id!r} is not a variant id of the flow's node_variants "
                 f"(has: {sorted(all_variant_ids) or 'none'})")
            )
    return [*problems_at(shown, found), *_field_problems(shown, deployment, inputs, outputs)]


def _prompty_problems(shown: str, deployment: Deployment) -> list[Problem]:
    """A prompty deployment: each variant's .prompty file exists and reads; the column mapping and
    redaction name inputs and outputs of its prompty files (any variant's)."""
    found: list[tuple[Loc, str]] = []
    inputs: set[str] = set()
    outputs: set[str] = set()
    assert deployment.flow is not None  # the caller read its suffix
    files: list[tuple[Loc, Path]] = [(("flow",), deployment.flow)]
    files += [(("variants", i, "flow"), v.flow) for i, v in enumerate(deployment.variants) if v.flow is not None]
    for loc, path in files:
        if not is_prompty(path):
            found.append((loc, f"{display_path(path)} is not a .prompty file, as the deployment's flow is"))
            continue
        try:
            names = prompty_interface(path)
        except (OSError, PromptyFormatError) as exc:
            reason = "does not exist" if isinstance(exc, FileNotFoundError) else str(exc)
            found.append((loc, f"{display_path(path)} {reason}"))
            continue
        inputs |= names[0]
        outputs |= names[1]
    for index, variant in enumerate(deployment.variants):
        if variant.nodes is not None:
            found.append((("variants", index, "nodes"), "a prompty has no nodes: name another .prompty file in flow"))
    if found:
        return problems_at(shown, found)
    return _field_problems(shown, deployment, inputs, outputs)


def _field_problems(shown: str, deployment: Deployment, inputs: set[str], outputs: set[str]) -> list[Problem]:
    found: list[tuple[Loc, str]] = []
    for column in COLUMNS:
        where = deployment.column_mapping.source(column)
        if where is not None:
            side, name = where
            if name not in (inputs if side == "inputs" else outputs):
                found.append((("column_mapping", column), f"the flow has no {side[:-1]} {name!r}"))
    for index, evaluator in enumerate(deployment.evaluation.evaluators if deployment.evaluation else []):
        for name, reference in evaluator.columns.items():
            side_name, _, field = reference.partition(".")
            if field not in (inputs if side_name == "inputs" else outputs):
                found.append(
                    (("evaluation", "evaluators", index, "columns", name), f"the flow has no {side_name[:-1]} {field!r}")
                )
    for side, names, known in (
        ("inputs", deployment.redaction.inputs, inputs),
        ("outputs", deployment.redaction.outputs, outputs),
    ):
        for index, name in enumerate(names):
            if name not in known:
                found.append((("redaction", side, index), f"the flow has no {side[:-1]} {name!r}"))
    return problems_at(shown, found)


def load_api_keys_file(path: Path) -> list[ApiKeyRecord]:
    """Key records from an ``api_keys_file``; a missing file holds no keys (yet)."""
    path = Path(path)
    if not path.exists():
        return []
    shown = display_path(path)
    data = read_yaml_mapping(path, "API keys file")
    problems = [Problem(shown, str(k), "unknown field (expected only 'api_keys')") for k in data if k != "api_keys"]
    entries = data.get("api_keys") or []
    if not isinstance(entries, list):
        raise DeploymentConfigError([*problems, Problem(shown, "api_keys", "must be a list")])
    records: list[ApiKeyRecord] = []
    for index, entry in enumerate(entries):
        try:
            records.append(ApiKeyRecord.model_validate(entry))
        except ValidationError as exc:
            problems += problems_from_validation(shown, exc, ("api_keys", index))
    if problems:
        raise DeploymentConfigError(problems)
    return records


def save_api_keys_file(path: Path, records: Iterable[ApiKeyRecord]) -> None:
    """Write key records atomically, readable by the owner only (hashes, but still no one's business)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"api_keys": [r.model_dump(mode="json", exclude_none=True) for r in records]}
    text = "# API key hashes, written by `promptpulse keys`. Keys themselves are never stored.\n"
    text += yaml.safe_dump(body, sort_keys=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
