"""A production image leaves out the test tools (services/llmsim, services/demo; deploy/Dockerfile
without WITH_TEST_TOOLS=1). The import contracts in pyproject.toml check the static imports; this
checks what they cannot see: the imports made at run time, in a process where the test tools are
missing, as they are in such an image."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Run in a child process: it makes services.llmsim and services.demo unimportable, as in an image
# built without them, then loads every production service and runs the CLI's commands.
_WITHOUT_TEST_TOOLS = """
import importlib, importlib.abc, sys

class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[:2] in (["services", "llmsim"], ["services", "demo"]):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Missing())
for module in ("services.gateway.app", "services.gateway.__main__", "services.processor.app",
               "services.processor.__main__", "services.aggregator.app",
               "services.aggregator.__main__", "services.cli"):
    importlib.import_module(module)
from services.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _cli_without_test_tools(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _WITHOUT_TEST_TOOLS, *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_services_and_cli_run_without_the_test_tools() -> None:
    result = _cli_without_test_tools("--help")
    assert result.returncode == 0, result.stderr
    assert "gateway" in result.stdout and "keys" in result.stdout


def test_cli_names_a_missing_test_tool_instead_of_a_traceback() -> None:
    result = _cli_without_test_tools("llmsim")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "llmsim is not installed here" in result.stderr
