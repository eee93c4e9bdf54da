"""Literal Python node inputs converted to the function's annotated types, as prompt flow does."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.flow import FlowError, FlowExecutor, load_flow
from tests.support.flow_fakes import write_flow

# Literals written as prompt flow's examples write them: numbers and booleans as strings.
DAG = """\
inputs:
  text:
    type: string
outputs:
  result:
    type: object
    reference: ${typed.output}
nodes:
- name: typed
  type: python
  source:
    type: code
    path: typed.py
  inputs:
    text: ${inputs.text}
    max_tokens: "120"
    temperature: "0.2"
    echo: "False"
    stop: '["\\n", "END"]'
    options: '{"a": 1}'
    label: 42
    plain: "7"
    maybe: "3"
"""

CODE = """\
from typing import Dict, List, Optional

from promptflow.core import tool


@tool
def typed(text: str, max_tokens: int, temperature: float, echo: bool, stop: List[str], options: Dict,
          label: str, plain, maybe: Optional[int] = None) -> dict:
    values = dict(max_tokens=max_tokens, temperature=temperature, echo=echo, stop=stop, options=options,
                  label=label, plain=plain, maybe=maybe)
    return {k: [type(v).__name__, v] for k, v in values.items()}
"""


async def test_literals_take_the_annotated_types(tmp_path: Path) -> None:
    flow = load_flow(write_flow(tmp_path / "typed", DAG, {"typed.py": CODE}))
    result = await FlowExecutor(flow, {}).run({"text": "hi"})
    assert result.outputs["result"] == {
        "max_tokens": ["int", 120],
        "temperature": ["float", 0.2],
        "echo": ["bool", False],
        "stop": ["list", ["\n", "END"]],
        "options": ["dict", {"a": 1}],
        "label": ["str", "42"],
        "plain": ["str", "7"],  # no annotation: the literal as YAML read it
        "maybe": ["int", 3],
    }


def test_annotations_under_future_import_are_resolved(tmp_path: Path) -> None:
    code = "from __future__ import annotations\n" + CODE
    flow = load_flow(write_flow(tmp_path / "typed", DAG, {"typed.py": code}))
    assert flow.nodes["typed"].inputs["max_tokens"] == 120


def test_a_literal_that_cannot_be_converted_is_a_load_problem(tmp_path: Path) -> None:
    dag = DAG.replace('max_tokens: "120"', 'max_tokens: "many"').replace('echo: "False"', 'echo: "maybe"')
    with pytest.raises(FlowError) as caught:
        load_flow(write_flow(tmp_path / "typed", dag, {"typed.py": CODE}))
    found = {(p.node, p.field): p.reason for p in caught.value.problems}
    assert set(found) == {("typed", "inputs.max_tokens"), ("typed", "inputs.echo")}
    assert "'many'" in found[("typed", "inputs.max_tokens")] and "int" in found[("typed", "inputs.max_tokens")]
