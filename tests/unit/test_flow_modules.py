"""Each load of a flow imports its Python code in a namespace of its own (shared/flow/modules.py)."""

from __future__ import annotations

import gc
import sys
import textwrap
from pathlib import Path

import pytest

from shared.flow import FlowError, FlowExecutor, load_flow, python_node
from tests.support.flow_fakes import write_flow as write_flat_flow


def write_flow(folder: Path, dag: str, files: dict[str, str]) -> Path:
    """write_flow with files in subfolders too."""
    write_flat_flow(folder, dag, {})
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return folder

DAG = """\
inputs:
  text:
    type: string
outputs:
  result:
    type: string
    reference: ${answer.output}
nodes:
- name: answer
  type: python
  source:
    type: code
    path: answer.py
  inputs:
    text: ${inputs.text}
"""

NODE = """\
    from promptflow.core import tool
    from utils import decorate
    import helpers.words as words

    @tool
    def answer(text: str) -> str:
        return decorate(text) + words.SUFFIX
    """


def two_flows(tmp_path: Path) -> tuple[Path, Path]:
    first = write_flow(tmp_path / "first", DAG, {
        "answer.py": NODE,
        "utils.py": "def decorate(text):\n    return 'first:' + text\n",
        "helpers/__init__.py": "",
        "helpers/words.py": "SUFFIX = '!'\n",
    })
    second = write_flow(tmp_path / "second", DAG, {
        "answer.py": NODE,
        "utils.py": "def decorate(text):\n    return 'second:' + text\n",
        "helpers/words.py": "SUFFIX = '?'\n",  # a folder without __init__.py: a namespace package
    })
    return first, second


async def run(folder: Path, text: str = "hi") -> str:
    result = await FlowExecutor(load_flow(folder), {}).run({"text": text})
    return str(result.outputs["result"])


async def test_two_flows_with_their_own_utils_each_see_their_own(tmp_path: Path) -> None:
    first, second = two_flows(tmp_path)
    assert await run(first) == "first:hi!"
    assert await run(second) == "second:hi?"
    # Plain names never enter sys.modules, so no third flow (or library) sees either.
    assert "utils" not in sys.modules or not str(getattr(sys.modules["utils"], "__file__", "")).startswith(
        str(tmp_path)
    )
    assert "helpers" not in sys.modules


async def test_a_reload_after_editing_a_file_runs_the_new_code_and_the_old_keeps_serving(tmp_path: Path) -> None:
    first, _ = two_flows(tmp_path)
    old = FlowExecutor(load_flow(first), {})
    (first / "utils.py").write_text("def decorate(text):\n    return 'edited:' + text\n")
    (first / "answer.py").write_text(
        "from promptflow.core import tool\nfrom utils import decorate\n\n"
        "@tool\ndef answer(text: str) -> str:\n    return decorate(text).upper()\n"
    )
    new = FlowExecutor(load_flow(first), {})
    assert (await new.run({"text": "hi"})).outputs["result"] == "EDITED:HI"
    assert (await old.run({"text": "hi"})).outputs["result"] == "first:hi!"


async def test_lazy_imports_inside_the_tool_resolve_in_the_flow_namespace(tmp_path: Path) -> None:
    first, second = two_flows(tmp_path)
    for folder in (first, second):
        (folder / "answer.py").write_text(
            "from promptflow.core import tool\n\n"
            "@tool\ndef answer(text: str) -> str:\n    import utils\n    return utils.decorate(text)\n"
        )
    assert await run(second) == "second:hi"
    assert await run(first) == "first:hi"


def test_a_promptflow_module_the_stand_in_lacks_is_not_sent_to_flows_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(python_node, "_promptflow_installed", lambda: False)
    folder = write_flow(tmp_path / "pf", DAG, {
        "answer.py": "from promptflow.azure import PFClient\nfrom promptflow.core import tool\n\n"
                     "@tool\ndef answer(text: str) -> str:\n    return text\n",
    })
    with pytest.raises(FlowError) as caught:
        load_flow(folder)
    reason = caught.value.problems[0].reason
    assert "'promptflow.azure' is not one PromptPulse's stand-in for prompt flow provides" in reason
    assert "flows install" not in reason


def test_a_dropped_flow_takes_its_modules_out_of_sys_modules(tmp_path: Path) -> None:
    first, _ = two_flows(tmp_path)
    flow = load_flow(first)
    package = flow.nodes["answer"].tool.function.__module__.partition(".")[0]
    assert f"{package}.utils" in sys.modules and f"{package}.helpers.words" in sys.modules
    del flow
    gc.collect()
    assert not [name for name in sys.modules if name.startswith(package)]
