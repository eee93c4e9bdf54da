"""`promptpulse flows install` against a real pip, offline: wheels built by the test, installed into
a throwaway environment that stands for the one the services run in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.wheels import make_wheel

NAMES_REQUIREMENTS = "environment:\n  python_requirements_txt: requirements.txt\n"
FLOW_DAG = """\
inputs:
  question: {type: string}
outputs:
  answer: {type: string, reference: "${echo.output}"}
nodes:
- name: echo
  type: python
  source: {type: code, path: echo.py}
  inputs: {text: "${inputs.question}"}
"""


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(arg) for arg in args], capture_output=True, text=True, timeout=240, check=False)


def _freeze(python: Path) -> list[str]:
    result = _run(python, "-m", "pip", "freeze", "--all")
    assert result.returncode == 0, result.stderr
    return sorted(result.stdout.splitlines())


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    folder = tmp_path / "wheels"
    folder.mkdir()
    make_wheel(folder, "ppbase", "1.0")
    make_wheel(folder, "ppbase", "2.0")
    make_wheel(folder, "ppflowdep", "1.0", requires=("ppbase>=1.0",))
    # The newest release needs a newer ppbase than the services run with: an unconstrained
    # resolver picks it and upgrades ppbase, which is exactly what the install must never do.
    make_wheel(folder, "ppflowdep", "1.1", requires=("ppbase>=2.0",))
    return folder


def _environment(tmp_path: Path, wheelhouse: Path, name: str) -> Path:
    """A throwaway environment holding ppbase 1.0, the stand-in for a package the services pin."""
    env = tmp_path / name
    created = _run(sys.executable, "-m", "venv", env)
    assert created.returncode == 0, created.stderr
    python = env / "bin" / "python"
    installed = _run(python, "-m", "pip", "install", "-q", "--no-index", "--find-links", wheelhouse, "ppbase==1.0")
    assert installed.returncode == 0, installed.stderr
    return python


def _deployments(tmp_path: Path, requirements: str) -> Path:
    flows = tmp_path / "flows"
    for flow, text in (("needs_dep", requirements), ("plain", None)):
        folder = flows / flow
        folder.mkdir(parents=True)
        (folder / "flow.dag.yaml").write_text((NAMES_REQUIREMENTS if text is not None else "") + FLOW_DAG)
        (folder / "echo.py").write_text("from promptflow import tool\n\n@tool\ndef echo(text: str) -> str:\n    return text\n")
        if text is not None:
            (folder / "requirements.txt").write_text(text)
    deployments = tmp_path / "deployments"
    deployments.mkdir()
    (deployments / "needs.yaml").write_text("flow: ../flows/needs_dep\n")
    (deployments / "plain.yaml").write_text("flow: ../flows/plain\n")
    return deployments


def _install(deployments: Path, python: Path, wheelhouse: Path) -> subprocess.CompletedProcess[str]:
    return _run(
        sys.executable, "-m", "services.cli", "flows", "install", deployments,
        "--python", python, "--no-index", "--find-links", wheelhouse,
    )


def test_install_adds_the_flows_packages_and_moves_no_pinned_version(tmp_path: Path, wheelhouse: Path) -> None:
    python = _environment(tmp_path, wheelhouse, "services-env")
    deployments = _deployments(tmp_path, "promptflow\npromptflow[azure]\npromptflow-tools  # tools\nppflowdep>=1.0\n")
    before = _freeze(python)

    result = _install(deployments, python, wheelhouse)

    assert result.returncode == 0, result.stdout + result.stderr
    after = _freeze(python)
    assert sorted(set(after) - set(before)) == ["ppflowdep==1.0"]  # the newest one that fits the pins
    assert set(before) <= set(after)  # nothing the services had was moved or removed
    assert not [line for line in after if line.lower().startswith("promptflow")]
    assert "provided by PromptPulse's stand-in" in result.stdout
    assert _run(python, "-m", "pip", "check").returncode == 0


def test_without_the_constraints_the_same_install_would_move_a_pinned_package(
    tmp_path: Path, wheelhouse: Path
) -> None:
    # The positive test above only means something if an unconstrained pip really upgrades ppbase.
    python = _environment(tmp_path, wheelhouse, "plain-env")
    result = _run(python, "-m", "pip", "install", "-q", "--no-index", "--find-links", wheelhouse, "ppflowdep>=1.0")
    assert result.returncode == 0, result.stderr
    assert "ppbase==2.0" in _freeze(python)


def test_a_flow_asking_for_another_pinned_version_is_refused_naming_everything(
    tmp_path: Path, wheelhouse: Path
) -> None:
    python = _environment(tmp_path, wheelhouse, "services-env")
    deployments = _deployments(tmp_path, "ppflowdep\nppbase>=2.0\n")
    before = _freeze(python)

    result = _install(deployments, python, wheelhouse)

    assert result.returncode == 2
    message = result.stderr
    assert "flow 'needs_dep'" in message and "requirements.txt:2" in message
    assert "ppbase>=2.0" in message and "ppbase==1.0" in message
    assert _freeze(python) == before  # nothing was installed


def test_a_conflict_deeper_in_the_tree_fails_and_changes_nothing(tmp_path: Path, wheelhouse: Path) -> None:
    python = _environment(tmp_path, wheelhouse, "services-env")
    deployments = _deployments(tmp_path, "ppflowdep==1.1\n")  # needs ppbase>=2.0 through its metadata
    before = _freeze(python)

    result = _install(deployments, python, wheelhouse)

    assert result.returncode == 1
    assert "within the services' pinned versions" in result.stderr and "needs_dep" in result.stderr
    assert _freeze(python) == before
