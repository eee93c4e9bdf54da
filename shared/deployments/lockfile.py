"""The evaluator lock file: which version each evaluator label stands for.

``<deployment>.evaluators.lock`` lives next to the deployment file and is committed with it,
like a package lockfile. For each evaluator it records every label ever given and the version
(content hash) it named. Loading a deployment whose evaluator carries a recorded label with
different content fails, naming both versions: a label means one content, for ever, so figures
shown under a label are comparable. A label not recorded yet loads (the first run of a new
label), and ``python -m shared.deployments.lock DEPLOYMENTS_DIR`` (lock.py) records new labels (it never
rewrites a recorded one). The suffix is not ``.yaml`` so the loader never takes it for a
deployment.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml

from shared.deployments.errors import (
    DeploymentConfigError,
    Problem,
    display_path,
    read_yaml_mapping,
)
from shared.deployments.schema import Deployment

LOCK_SUFFIX = ".evaluators.lock"
_HEADER = (
    "# Evaluator label -> version (content hash). Commit this file with the deployment; a label\n"
    "# names one content for ever. Written by `python -m shared.deployments.lock`.\n"
)

Lock = dict[str, dict[str, str]]  # evaluator name -> label -> version


def lock_path(deployment_file: Path) -> Path:
    deployment_file = Path(deployment_file)
    return deployment_file.with_name(deployment_file.stem + LOCK_SUFFIX)


def read_lock(path: Path) -> Lock:
    """The lock file's records; a missing file records nothing."""
    if not path.exists():
        return {}
    shown = display_path(path)
    data = read_yaml_mapping(path, "evaluator lock file")
    evaluators = data.get("evaluators") or {}
    problems = [Problem(shown, str(k), "unknown field (expected only 'evaluators')") for k in data if k != "evaluators"]
    lock: Lock = {}
    if not isinstance(evaluators, dict):
        raise DeploymentConfigError([*problems, Problem(shown, "evaluators", "must be a mapping")])
    for name, labels in evaluators.items():
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            problems.append(Problem(shown, f"evaluators.{name}", "must map each label to a version string"))
            continue
        lock[str(name)] = {str(label): version for label, version in labels.items()}
    if problems:
        raise DeploymentConfigError(problems)
    return lock


def lock_problems(shown: str, deployment: Deployment, lock: Lock) -> list[Problem]:
    """A Problem for each evaluator whose label is recorded with another version."""
    if deployment.evaluation is None:
        return []
    found: list[Problem] = []
    for index, evaluator in enumerate(deployment.evaluation.evaluators):
        if evaluator.label is None or not evaluator.version:
            continue
        recorded = lock.get(evaluator.name, {}).get(evaluator.label)
        if recorded is not None and recorded != evaluator.version:
            found.append(Problem(
                shown, f"evaluation.evaluators[{index}].label",
                f"evaluator {evaluator.name!r} changed under label {evaluator.label!r} (locked as version "
                f"{recorded}, now {evaluator.version}): give the new content a new label, or restore it",
            ))
    return found


def update_lock(deployment_file: Path, deployment: Deployment) -> list[str]:
    """Record the labels of ``deployment`` not recorded yet; returns what was added.

    Raises DeploymentConfigError when a recorded label changed (the lock is never rewritten).
    """
    path = lock_path(deployment_file)
    lock = read_lock(path)
    problems = lock_problems(display_path(Path(deployment_file)), deployment, lock)
    if problems:
        raise DeploymentConfigError(problems)
    added: list[str] = []
    for evaluator in deployment.evaluation.evaluators if deployment.evaluation else []:
        if evaluator.label is None or not evaluator.version:
            continue
        labels = lock.setdefault(evaluator.name, {})
        if evaluator.label not in labels:
            labels[evaluator.label] = evaluator.version
            added.append(f"{evaluator.name}@{evaluator.label} = {evaluator.version}")
    if added:
        text = _HEADER + yaml.safe_dump({"evaluators": lock}, sort_keys=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(tmp, 0o644)  # committed with the deployment, read by every service: not secret
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return added
