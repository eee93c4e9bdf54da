"""The deployments folder as every service reads it: one broken deployment never takes the others down.

:func:`load_deployment_folder` loads each deployment file on its own. A file with problems (bad
YAML, an unknown key, a reference its flow does not have, a judge connection that is missing
or itself broken) becomes a :class:`BrokenDeployment` carrying every problem of that file, and
the rest load as usual. Problems that belong to no single deployment (``connections.yaml``) are
reported beside them; a connection entry with problems costs only the deployments that use it.
Each service then serves what loaded and reports the rest: the gateway answers 503 for a broken
deployment, the processor does not judge it, the aggregator keeps its stored monitors.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from shared.deployments.base import NAME_PATTERN
from shared.deployments.connections import CONNECTIONS_FILE, Connection, read_connections_file
from shared.deployments.errors import DeploymentConfigError, Problem, display_path
from shared.deployments.loader import deployment_files, load_deployment
from shared.deployments.schema import Deployment


@dataclass(frozen=True)
class BrokenDeployment:
    """A deployment file that does not load, with every problem found in it."""

    name: str  # its ``name`` field when that much can be read, else the file name's stem
    file: Path
    problems: tuple[Problem, ...]

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


@dataclass(frozen=True)
class DeploymentFolder:
    """One read of the deployments folder: what loaded, what did not, and why."""

    folder: Path
    deployments: dict[str, Deployment]
    broken: tuple[BrokenDeployment, ...] = ()
    connections: dict[str, Connection] = field(default_factory=dict)
    folder_problems: tuple[Problem, ...] = ()  # connections.yaml: no single deployment's

    @property
    def problems(self) -> tuple[Problem, ...]:
        """Every problem of the folder, the shared ones first, then file by file."""
        return self.folder_problems + tuple(p for b in self.broken for p in b.problems)

    @property
    def broken_names(self) -> frozenset[str]:
        """Names of deployments that do not load (and that no loaded file serves instead)."""
        return frozenset(b.name for b in self.broken) - set(self.deployments)

    def raise_if_problems(self) -> None:
        if self.problems:
            raise DeploymentConfigError(self.problems)

    def log_problems(self, log: logging.Logger, consequence: str) -> None:
        """One error per broken deployment and one for the shared problems, each listing all.

        ``consequence``: what the service does about it ("answers 503", "not judged").
        """
        for broken in self.broken:
            log.error("deployment %r (%s) does not load, %s; the others are unaffected:\n%s",
                      broken.name, display_path(broken.file), consequence, broken)
        if self.folder_problems:
            log.error("%s has problems; deployments using an affected connection do not load:\n%s",
                      CONNECTIONS_FILE, "\n".join(str(p) for p in self.folder_problems))


def load_deployment_folder(deployments_dir: Path, *, check_flow: bool = True) -> DeploymentFolder:
    """Every deployment of the folder that loads, and each one that does not with its problems.

    Raises :class:`DeploymentConfigError` only when the folder itself does not exist: that is
    the service's setting, not one deployment's mistake.
    """
    folder = Path(deployments_dir)
    if not folder.is_dir():
        raise DeploymentConfigError(
            [Problem(display_path(folder), "", "deployments folder does not exist (PROMPTPULSE_DEPLOYMENTS_DIR)")]
        )
    connections, connection_problems = read_connections_file(folder / CONNECTIONS_FILE)
    deployments: dict[str, Deployment] = {}
    broken: list[BrokenDeployment] = []
    for path in deployment_files(folder):
        try:
            deployment = load_deployment(
                path, connections, check_flow=check_flow, connections_complete=not connection_problems
            )
        except DeploymentConfigError as exc:
            broken.append(BrokenDeployment(_declared_name(path), path, exc.problems))
            continue
        if deployment.name in deployments:
            other = deployments[deployment.name].source
            problem = Problem(display_path(path), "name",
                              f"{deployment.name!r} is also the name in {display_path(other) if other else '?'}")
            broken.append(BrokenDeployment(deployment.name, path, (problem,)))
            continue
        clash = _monitor_id_clashes(deployment, deployments.values())
        if clash:
            broken.append(BrokenDeployment(deployment.name, path, tuple(clash)))
            continue
        deployments[deployment.name] = deployment
    return DeploymentFolder(folder, deployments, tuple(broken), connections, tuple(connection_problems))


def load_deployments(deployments_dir: Path, *, check_flow: bool = True) -> dict[str, Deployment]:
    """Every deployment in the folder by name; raises :class:`DeploymentConfigError` listing
    every problem of every file when any file has one (tools and tests that want all or nothing)."""
    loaded = load_deployment_folder(deployments_dir, check_flow=check_flow)
    loaded.raise_if_problems()
    return loaded.deployments


def _declared_name(path: Path) -> str:
    # A broken file is reported under the name it would serve as, so a caller of that name gets
    # "unavailable" rather than "unknown"; when even the name cannot be read, the file stem
    # (the default name) is the best guess.
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return path.stem
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and re.match(NAME_PATTERN, name) else path.stem


def _monitor_id_clashes(deployment: Deployment, loaded: Iterable[Deployment]) -> list[Problem]:
    # Alerts are keyed by monitor id on the alerts topic, so ids are unique across deployments.
    # The file read later (in name order) is the one refused; the first keeps working.
    owners: Mapping[str, Deployment] = {m.id: d for d in loaded for m in d.monitors}
    shown = display_path(deployment.source) if deployment.source else deployment.name
    return [
        Problem(shown, f"monitors[{index}].id", f"{monitor.id!r} is also a monitor of deployment {owners[monitor.id].name!r}")
        for index, monitor in enumerate(deployment.monitors)
        if monitor.id in owners
    ]
