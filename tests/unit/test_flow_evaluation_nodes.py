"""Evaluation flows load: aggregation nodes are skipped per request (issue 12.3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.flow import FlowError, FlowExecutor, load_flow
from tests.support.flow_fakes import write_flow

# As prompt flow's evaluation examples write it: a per-line node, and an aggregation node over it.
EVAL_DAG = """\
$schema: https://azuremlschemas.azureedge.net/promptflow/latest/Flow.schema.json
inputs:
  groundtruth:
    type: string
  prediction:
    type: string
outputs:
  results:
    type: string
    reference: ${line_process.output}
nodes:
- name: line_process
  type: python
  source:
    type: code
    path: line_process.py
  inputs:
    groundtruth: ${inputs.groundtruth}
    prediction: ${inputs.prediction}
- name: aggregate
  type: python
  source:
    type: code
    path: aggregate.py
  inputs:
    processed_results: ${line_process.output}
  aggregation: true
"""

LINE = """\
from promptflow.core import tool


@tool
def line_process(groundtruth: str, prediction: str) -> str:
    return "Correct" if groundtruth.lower() == prediction.lower() else "Incorrect"
"""

AGGREGATE = """\
from typing import List

from promptflow import log_metric
from promptflow.core import tool, log_metric as core_log_metric

assert log_metric is core_log_metric


@tool
def aggregate(processed_results: List[str]):
    raise RuntimeError("an aggregation node must not run per request")
"""


def eval_flow(tmp_path: Path, dag: str = EVAL_DAG) -> Path:
    return write_flow(tmp_path / "eval", dag, {"line_process.py": LINE, "aggregate.py": AGGREGATE})


async def test_evaluation_flow_loads_and_runs_without_its_aggregation_node(tmp_path: Path) -> None:
    flow = load_flow(eval_flow(tmp_path))
    assert flow.aggregation_nodes == ("aggregate",)
    executor = FlowExecutor(flow, {})
    assert executor.plan().order == ("line_process",)
    result = await executor.run({"groundtruth": "A", "prediction": "a"})
    assert result.outputs == {"results": "Correct"}
    assert [n.name for n in result.nodes] == ["line_process"]


def test_a_flow_output_referencing_an_aggregation_node_is_a_load_problem(tmp_path: Path) -> None:
    dag = EVAL_DAG.replace("reference: ${line_process.output}", "reference: ${aggregate.output}")
    with pytest.raises(FlowError) as caught:
        load_flow(eval_flow(tmp_path, dag))
    problem = caught.value.problems[0]
    assert (problem.node, problem.field) == (None, "outputs.results.reference")
    assert "aggregation node" in problem.reason


def test_a_per_request_node_referencing_an_aggregation_node_is_a_load_problem(tmp_path: Path) -> None:
    dag = EVAL_DAG + """\
- name: after
  type: python
  source:
    type: code
    path: line_process.py
  inputs:
    groundtruth: ${aggregate.output}
    prediction: x
"""
    with pytest.raises(FlowError) as caught:
        load_flow(eval_flow(tmp_path, dag))
    problem = caught.value.problems[0]
    assert (problem.node, problem.field) == ("after", "inputs.groundtruth")
    assert "aggregation node" in problem.reason
