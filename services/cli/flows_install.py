"""``promptpulse flows install [DIR]``: install the Python requirements of every deployed flow.

One pip resolver run over every flow's requirements, constrained to the exact versions the
services run with (``pip freeze`` of the target environment), so a flow can never move a package
PromptPulse pins. A flow asking for a version of a pinned package that the pin does not satisfy
is refused before pip runs, naming the flow, the package and both versions; a conflict pip finds
further down the dependency tree fails the run with pip's own explanation and changes nothing.
The packages PromptPulse stands in for (``promptflow``, ``promptflow-tools``, ...) are never
installed (shared/flow/requirements.py says why).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from services.cli.config import EXIT_CHECK_FAILED, EXIT_NOT_FOUND, EXIT_USAGE, CliError
from shared.flow.requirements import (
    FLOW_FILES,
    FlowRequirement,
    FlowRequirements,
    read_flow_requirements,
)


def install(args: argparse.Namespace) -> int:
    """The ``flows install`` command (parsed by services/cli/flows.py)."""

    flows = deployed_flows(args.dir if args.dir is not None else _default_dir())
    read = [read_flow_requirements(name, folder) for name, folder in flows.items()]
    problems = [problem for found in read for problem in found.problems]
    if problems:
        raise CliError("; ".join(problems), code=EXIT_USAGE)
    _report(read)
    wanted = [entry for found in read for entry in found.wanted]
    if not wanted:
        print("nothing to install: no deployed flow needs a package beyond PromptPulse's")
        return 0
    pins = installed_versions(args.python)
    conflicts = pin_conflicts(wanted, pins, declared_ranges())
    if conflicts:
        raise CliError(
            "a flow asks for a version PromptPulse does not run with, so nothing was installed:\n  "
            + "\n  ".join(conflicts),
            code=EXIT_USAGE,
        )
    if args.dry_run:
        print(f"would install, constrained to {len(pins)} pinned packages: " + ", ".join(
            str(entry.requirement) for entry in wanted
        ))
        return 0
    _pip_install(args, wanted, pins)
    return 0


def _default_dir() -> Path:
    from shared.settings import ServiceSettings, load_settings

    return load_settings(ServiceSettings).deployments_dir


def deployed_flows(folder: Path) -> dict[str, Path]:
    """Flow name -> flow folder, for a deployments folder or a single flow folder.

    A flow is named by its folder; two deployed flows whose folders share a name (``v1/chat``,
    ``v2/chat``) are both kept, the second under its full path, so neither one's requirements
    are left out.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CliError(f"{folder} is not a folder", code=EXIT_NOT_FOUND)
    if any((folder / name).is_file() for name in FLOW_FILES):
        return {folder.resolve().name: folder.resolve()}
    from shared.deployments.loader import deployment_files

    flows: dict[str, Path] = {}
    for file in deployment_files(folder):
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            # The services report a broken deployment file; its flow cannot be found from here.
            print(f"warning: {file} skipped: {exc}", file=sys.stderr)
            continue
        flow = data.get("flow") if isinstance(data, dict) else None
        if not isinstance(flow, str):
            print(f"warning: {file} skipped: it names no flow", file=sys.stderr)
            continue
        path = (Path(flow) if Path(flow).is_absolute() else (file.parent / flow)).resolve()
        if path in flows.values():
            continue  # several deployments of one flow: its requirements once
        flows[path.name if path.name not in flows else str(path)] = path
    return flows


def installed_versions(python: str) -> dict[str, str]:
    """Canonical name -> exact version of every distribution in ``python``'s environment."""

    result = subprocess.run(
        [python, "-m", "pip", "freeze", "--all", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise CliError(f"`{python} -m pip freeze` failed: {result.stderr.strip()}", code=EXIT_USAGE)
    pins: dict[str, str] = {}
    for line in result.stdout.splitlines():
        name, sep, version = line.partition("==")
        if sep and name and not line.startswith("#"):
            pins[canonicalize_name(name.strip())] = version.strip()
    return pins


def declared_ranges() -> dict[str, str]:
    """Canonical name -> the range PromptPulse's own metadata declares, for messages."""
    try:
        requires = importlib.metadata.requires("promptpulse") or []
    except importlib.metadata.PackageNotFoundError:
        return {}
    ranges: dict[str, str] = {}
    for line in requires:
        requirement = Requirement(line)
        if requirement.marker is None or "extra" not in str(requirement.marker):
            ranges[canonicalize_name(requirement.name)] = str(requirement.specifier) or "any version"
    return ranges


def pin_conflicts(wanted: list[FlowRequirement], pins: dict[str, str], declared: dict[str, str]) -> list[str]:
    """One line per flow requirement that the environment's exact version does not satisfy."""

    conflicts = []
    for entry in wanted:
        pinned = pins.get(entry.name)
        if pinned is None or not entry.requirement.specifier:
            continue
        try:
            satisfied = entry.requirement.specifier.contains(Version(pinned), prereleases=True)
        except InvalidVersion:
            continue
        if not satisfied:
            declared_range = declared.get(entry.name)
            ours = f"=={pinned}" + (f" (PromptPulse requires {entry.name}{declared_range})" if declared_range else "")
            conflicts.append(
                f"flow {entry.flow!r} ({entry.where}) needs {entry.name}{entry.requirement.specifier}, "
                f"but the services run with {entry.name}{ours}"
            )
    return conflicts


def _report(read: list[FlowRequirements]) -> None:
    for found in read:
        if found.file is None:
            print(f"{found.flow}: no requirements file")
            continue
        for entry in found.stood_in:
            print(f"{found.flow}: {entry.requirement} is provided by PromptPulse's stand-in, not installed")
        for line in found.ignored:
            print(f"{found.flow}: {line}")
        if found.wanted:
            print(f"{found.flow}: " + ", ".join(str(entry.requirement) for entry in found.wanted))


def _pip_install(args: argparse.Namespace, wanted: list[FlowRequirement], pins: dict[str, str]) -> None:
    before = _pip_check(args.python)
    with tempfile.TemporaryDirectory(prefix="promptpulse-flows-") as scratch:
        requirements = Path(scratch) / "requirements.txt"
        constraints = Path(scratch) / "constraints.txt"
        requirements.write_text("".join(f"{entry.requirement}\n" for entry in wanted), encoding="utf-8")
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
        command = [args.python, "-m", "pip", "install", "-r", str(requirements), "-c", str(constraints)]
        if args.no_index:
            command.append("--no-index")
        if args.index_url:
            command += ["--index-url", args.index_url]
        for folder in args.find_links:
            command += ["--find-links", str(folder)]
        if subprocess.call(command) != 0:
            asking = sorted({f"{entry.flow} ({entry.file})" for entry in wanted})
            raise CliError(
                "pip could not install the flows' requirements within the services' pinned versions "
                "(its reason is above; nothing it refused was installed). Flows asking: " + ", ".join(asking),
                code=EXIT_CHECK_FAILED,
            )
    broken = sorted(set(_pip_check(args.python)) - set(before))
    if broken:
        raise CliError("installed, but `pip check` now reports: " + "; ".join(broken), code=EXIT_CHECK_FAILED)
    print(f"installed the requirements of {len({entry.flow for entry in wanted})} flow(s); pinned versions unchanged")


def _pip_check(python: str) -> list[str]:
    result = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True, check=False)
    return [] if result.returncode == 0 else result.stdout.strip().splitlines()
