"""Python nodes: prompt flow's @tool without prompt flow installed; sync and async tools."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from shared.flow import (
    FlowError,
    FlowExecutor,
    NodeExecutionError,
    load_flow,
    python_node,
)
from tests.support.flow_fakes import write_flow

DAG = """\
inputs:
  text:
    type: string
    default: hello
outputs:
  result:
    type: string
    reference: ${shout.output}
nodes:
- name: shout
  type: python
  source:
    type: code
    path: shout.py
  inputs:
    text: ${inputs.text}
"""


def flow_with_tool(tmp_path: Path, code: str, **extra: str) -> Path:
    return write_flow(tmp_path / "pyflow", DAG, {"shout.py": code, **extra})


def tool_problem(tmp_path: Path, code: str) -> str:
    with pytest.raises(FlowError) as caught:
        load_flow(flow_with_tool(tmp_path, code))
    assert (caught.value.flow, caught.value.node) == ("pyflow", "shout")
    return f"{caught.value.field}: {caught.value.problems[0].reason}"


def test_stand_in_is_used_while_importing_and_removed_afterwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Forced, so the test means the same on a machine where prompt flow happens to be installed.
    monkeypatch.setattr(python_node, "_promptflow_installed", lambda: False)
    monkeypatch.delitem(sys.modules, "promptflow", raising=False)
    monkeypatch.delitem(sys.modules, "promptflow.core", raising=False)
    code = """\
        from promptflow import tool
        from promptflow.core import tool as core_tool

        assert tool is core_tool

        @tool
        def shout(text: str) -> str:
            return text.upper()
        """
    load_flow(flow_with_tool(tmp_path, code))
    assert "promptflow" not in sys.modules
    assert "promptflow.core" not in sys.modules


async def test_sync_tool_runs_in_a_worker_thread(tmp_path: Path) -> None:
    code = """\
        import threading
        from promptflow.core import tool

        @tool
        def shout(text: str) -> str:
            return text.upper() + ("!" if threading.current_thread() is not threading.main_thread() else "?")
        """
    executor = FlowExecutor(load_flow(flow_with_tool(tmp_path, code)), {})
    assert (await executor.run({"text": "hi"})).outputs == {"result": "HI!"}


async def test_async_tool_is_awaited_and_decorator_with_arguments_works(tmp_path: Path) -> None:
    code = """\
        import asyncio
        from promptflow import tool

        @tool(name="Shouter", description="upper-cases")
        async def shout(text: str, suffix: str = "!") -> str:
            await asyncio.sleep(0)
            return text.upper() + suffix
        """
    executor = FlowExecutor(load_flow(flow_with_tool(tmp_path, code)), {})
    assert (await executor.run({})).outputs == {"result": "HELLO!"}


async def test_generator_output_is_collected(tmp_path: Path) -> None:
    code = """\
        from promptflow import tool

        @tool
        def shout(text: str):
            for word in text.split():
                yield word.upper() + " "
        """
    executor = FlowExecutor(load_flow(flow_with_tool(tmp_path, code)), {})
    assert (await executor.run({"text": "a b"})).outputs == {"result": "A B "}


async def test_sibling_module_import_works(tmp_path: Path) -> None:
    code = """\
        from promptflow import tool
        from helpers_for_shout import exclaim

        @tool
        def shout(text: str) -> str:
            return exclaim(text)
        """
    helper = "def exclaim(text):\n    return text + '!!'\n"
    executor = FlowExecutor(load_flow(flow_with_tool(tmp_path, code, **{"helpers_for_shout.py": helper})), {})
    assert (await executor.run({"text": "x"})).outputs == {"result": "x!!"}


async def test_tool_error_becomes_node_execution_error(tmp_path: Path) -> None:
    code = """\
        from promptflow import tool

        @tool
        def shout(text: str) -> str:
            raise ValueError("cannot shout " + text)
        """
    executor = FlowExecutor(load_flow(flow_with_tool(tmp_path, code)), {})
    with pytest.raises(NodeExecutionError) as caught:
        await executor.run({"text": "quietly"})
    assert (caught.value.node, caught.value.error_type) == ("shout", "ValueError")
    assert "cannot shout quietly" in caught.value.message


def test_module_without_tool_is_an_error(tmp_path: Path) -> None:
    assert "no function decorated with @tool" in tool_problem(tmp_path, "def shout(text):\n    return text\n")


def test_two_tools_is_an_error(tmp_path: Path) -> None:
    code = "from promptflow import tool\n\n@tool\ndef a(text): ...\n\n@tool\ndef b(text): ...\n"
    reason = tool_problem(tmp_path, code)
    assert reason.startswith("source.path:") and "2 functions decorated with @tool (a, b)" in reason


def test_import_failure_is_an_error_naming_the_cause(tmp_path: Path) -> None:
    reason = tool_problem(tmp_path, "import json\nraise RuntimeError('bad config')\n")
    assert reason.startswith("source.path:") and "RuntimeError: bad config" in reason


def test_missing_module_names_the_module_the_requirements_file_and_the_install_command(tmp_path: Path) -> None:
    # tool_problem checks the flow ('pyflow') and the node ('shout') are named too.
    reason = tool_problem(tmp_path, "import no_such_module_anywhere\n")
    assert "module 'no_such_module_anywhere' is not installed" in reason
    assert f"{tmp_path / 'pyflow' / 'requirements.txt'} (that file does not exist yet)" in reason
    assert "`promptpulse flows install`" in reason


def test_missing_module_names_the_requirements_file_the_flow_declares(tmp_path: Path) -> None:
    # prompt flow's environment.python_requirements_txt wins over a requirements.txt in the folder.
    dag = "environment:\n  python_requirements_txt: deps/reqs.txt\n" + DAG
    (tmp_path / "pyflow" / "deps").mkdir(parents=True)
    folder = write_flow(tmp_path / "pyflow", dag, {"shout.py": "import no_such_module_anywhere\n",
                                                   "deps/reqs.txt": "no-such-module-anywhere\n",
                                                   "requirements.txt": "other\n"})
    with pytest.raises(FlowError) as caught:
        load_flow(folder)
    reason = caught.value.problems[0].reason
    assert f"list its package in {folder / 'deps' / 'reqs.txt'} and run `promptpulse flows install`" in reason


def test_unknown_input_and_missing_parameter_are_errors(tmp_path: Path) -> None:
    code = "from promptflow import tool\n\n@tool\ndef shout(words: str, loud: bool) -> str:\n    return words\n"
    with pytest.raises(FlowError) as caught:
        load_flow(flow_with_tool(tmp_path, code))
    fields = {p.field: p.reason for p in caught.value.problems}
    assert "has no parameter 'text'" in fields["inputs.text"]
    assert "needs 'words', 'loud'" in fields["inputs"]


async def test_kwargs_tool_takes_any_input(tmp_path: Path) -> None:
    code = "from promptflow import tool\n\n@tool\ndef shout(**kwargs) -> str:\n    return kwargs['text'] * 2\n"
    executor = FlowExecutor(load_flow(flow_with_tool(tmp_path, code)), {})
    assert (await executor.run({"text": "ab"})).outputs == {"result": "abab"}


async def test_tool_changing_a_literal_input_does_not_change_the_next_run(tmp_path: Path) -> None:
    dag = DAG.replace("text: ${inputs.text}", "text: ${inputs.text}\n    seen: [1]")
    code = """\
        from promptflow import tool

        @tool
        def shout(text: str, seen: list) -> str:
            seen.append(2)
            return str(len(seen))
        """
    executor = FlowExecutor(load_flow(write_flow(tmp_path / "pyflow", dag, {"shout.py": code})), {})
    assert (await executor.run({})).outputs == {"result": "2"}
    assert (await executor.run({})).outputs == {"result": "2"}


async def test_tool_module_can_define_dataclasses(tmp_path: Path) -> None:
    # dataclasses look their module up in sys.modules while the module is being executed.
    code = """\
        from dataclasses import dataclass
        from promptflow import tool

        @dataclass
        class Loud:
            text: str

        @tool
        def shout(text: str) -> str:
            return Loud(text.upper()).text
        """
    executor = FlowExecutor(load_flow(flow_with_tool(tmp_path, code)), {})
    assert (await executor.run({"text": "dc"})).outputs == {"result": "DC"}
