"""additional_includes resolved as prompt flow resolves them (issue 12.3)."""

from __future__ import annotations

import gc
import textwrap
from pathlib import Path

import pytest

from shared.flow import FlowError, FlowExecutor, load_flow

# As prompt flow's flow-with-additional-includes example writes it: node sources named by their
# file name only, the files themselves in a sibling folder listed under additional_includes.
DAG = """\
inputs:
  text:
    type: string
outputs:
  result:
    type: string
    reference: ${decorate.output}
  prompt:
    type: string
    reference: ${render.output}
nodes:
- name: decorate
  type: python
  source:
    type: code
    path: decorate.py
  inputs:
    text: ${inputs.text}
- name: render
  type: prompt
  source:
    type: code
    path: prompts/greeting.jinja2
  inputs:
    text: ${decorate.output}
additional_includes:
- ../common/decorate.py
- ../common/helpers.py
- ../common/prompts
"""

FILES = {
    "common/decorate.py": """\
        from pathlib import Path

        from promptflow.core import tool
        from helpers import shout

        @tool
        def decorate(text: str) -> str:
            # Files next to the module are the snapshot's, as under prompt flow.
            suffix = (Path(__file__).parent / "suffix.txt").read_text().strip()
            return shout(text) + suffix
        """,
    "common/helpers.py": "def shout(text):\n    return text.upper()\n",
    "common/prompts/greeting.jinja2": "Hello {{text}}",
    "flow/suffix.txt": "!",
    "flow/flow.dag.yaml": DAG,
}


def write(tmp_path: Path, files: dict[str, str] = FILES) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return tmp_path / "flow"


async def test_included_files_and_folders_serve_as_if_in_the_flow_folder(tmp_path: Path) -> None:
    flow = load_flow(write(tmp_path))
    result = await FlowExecutor(flow, {}).run({"text": "hi"})
    assert result.outputs == {"result": "HI!", "prompt": "Hello HI!"}
    assert flow.path == (tmp_path / "flow").resolve()


def test_a_missing_include_is_a_load_problem_naming_it(tmp_path: Path) -> None:
    files = dict(FILES, **{"flow/flow.dag.yaml": DAG + "- ../common/absent.py\n"})
    with pytest.raises(FlowError) as caught:
        load_flow(write(tmp_path, files))
    problem = caught.value.problems[0]
    assert (problem.node, problem.field) == (None, "additional_includes[3]")
    assert "'../common/absent.py' does not exist" in problem.reason


def test_the_snapshot_is_private_and_removed_with_the_flow(tmp_path: Path) -> None:
    flow = load_flow(write(tmp_path))
    snapshot = flow.nodes["decorate"].source.parent
    assert snapshot != flow.path and (snapshot / "helpers.py").is_file()
    assert snapshot.stat().st_mode & 0o077 == 0
    del flow
    gc.collect()
    assert not snapshot.exists()
