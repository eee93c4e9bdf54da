"""A flow's Python requirements: which file lists them, what they ask for, and which of them
PromptPulse stands in for.

Prompt flow names the file in ``flow.dag.yaml`` (``environment.python_requirements_txt``); without
it, a ``requirements.txt`` in the flow folder is what prompt flow's own tooling installs. Nearly
every prompt flow example lists ``promptflow``, ``promptflow[azure]`` and ``promptflow-tools``:
the packages PromptPulse stands in for (``shared/flow/python_node.py``). The real ones pull in
pandas, pyarrow and a tracing stack of their own, so they are never installed for a flow; their
lines are reported as satisfied by the stand-ins (docs/flows.md, "Dependencies").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

FLOW_FILES = ("flow.dag.yaml", "flow.flex.yaml")
DEFAULT_REQUIREMENTS = "requirements.txt"
INSTALL_COMMAND = "promptpulse flows install"
STAND_IN_DISTRIBUTIONS = frozenset(
    {
        "promptflow",
        "promptflow-core",
        "promptflow-devkit",
        "promptflow-tracing",
        "promptflow-tools",
        "promptflow-azure",
    }
)


def requirements_file(flow_dir: Path) -> Path | None:
    """The requirements file of the flow in ``flow_dir``, or None when it has none.

    A file the flow names is returned even when it is missing, so the caller can say so.
    """
    for name in FLOW_FILES:
        flow_file = flow_dir / name
        if not flow_file.is_file():
            continue
        try:
            data = yaml.safe_load(flow_file.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError, OSError):
            break  # the flow loader reports a broken flow file; here it just names no file
        environment = data.get("environment") if isinstance(data, dict) else None
        named = environment.get("python_requirements_txt") if isinstance(environment, dict) else None
        if isinstance(named, str) and named.strip():
            return flow_dir / named.strip()
        break
    default = flow_dir / DEFAULT_REQUIREMENTS
    return default if default.is_file() else None


@dataclass(frozen=True)
class FlowRequirement:
    """One requirement line of one flow, with where it was written."""

    flow: str
    file: Path
    line: int
    requirement: Requirement

    @property
    def name(self) -> str:
        return canonicalize_name(self.requirement.name)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class FlowRequirements:
    """What a flow's requirements file asks for, split the way the installer needs it."""

    flow: str
    file: Path | None
    wanted: list[FlowRequirement] = field(default_factory=list)
    stood_in: list[FlowRequirement] = field(default_factory=list)  # satisfied by the stand-ins
    ignored: list[str] = field(default_factory=list)  # pip option lines, with why
    problems: list[str] = field(default_factory=list)


def read_flow_requirements(flow: str, flow_dir: Path) -> FlowRequirements:
    """Parse the requirements of ``flow`` (its folder ``flow_dir``), following ``-r`` includes."""
    file = requirements_file(flow_dir)
    found = FlowRequirements(flow, file)
    if file is not None:
        _read_file(found, file, seen=set())
    return found


def _read_file(found: FlowRequirements, file: Path, seen: set[Path]) -> None:
    resolved = file.resolve()
    if resolved in seen:
        return
    seen.add(resolved)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        found.problems.append(f"flow {found.flow!r}: cannot read {file}: {exc}")
        return
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r ", "--requirement ", "-r\t")):
            _read_file(found, file.parent / line.split(None, 1)[1].strip(), seen)
            continue
        if line.startswith("-"):
            # Index options belong to the machine's pip configuration, not to one flow: a flow
            # must not be able to point the services' environment at another package index.
            found.ignored.append(f"{file}:{number}: pip option {line.split()[0]!r} ignored")
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            found.problems.append(f"flow {found.flow!r}: {file}:{number}: not a requirement ({exc})")
            continue
        entry = FlowRequirement(found.flow, file, number, requirement)
        if entry.name in STAND_IN_DISTRIBUTIONS:
            found.stood_in.append(entry)
        elif requirement.url:
            found.problems.append(
                f"flow {found.flow!r}: {file}:{number}: direct URL requirements are not installed "
                "(publish the package to an index pip can reach)"
            )
        elif requirement.marker is None or requirement.marker.evaluate():
            found.wanted.append(entry)
