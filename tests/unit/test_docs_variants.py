"""The per-node variant example of docs/deployments.md loads and runs as it says (issue 12.6).

The example's YAML is read from the doc itself, put in a deployment of a flow that varies two
nodes (as prompt flow writes one), checked by the deployments loader and planned and run by the
flow runtime, as the gateway does at load.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from shared.deployments.loader import load_deployment
from shared.flow import FlowExecutor, load_flow

DOC = Path(__file__).resolve().parents[2] / "docs" / "deployments.md"

FLOW = """\
$schema: https://azuremlschemas.azureedge.net/promptflow/latest/Flow.schema.json
inputs:
  text:
    type: string
    default: the text
outputs:
  summary:
    type: string
    reference: ${summarize.output}
  answer:
    type: string
    reference: ${answer.output}
nodes:
- name: summarize
  use_variants: true
- name: answer
  use_variants: true
node_variants:
  summarize:
    default_variant_id: variant_0
    variants:
"""


def _variant(node: str, variant: str, inputs: str) -> str:
    return (f"      {variant}:\n        node:\n          type: prompt\n          source:\n            type: code\n"
            f"            path: {node}_{variant}.jinja2\n          inputs:\n            {inputs}\n")


def write_flow(folder: Path) -> Path:
    text = FLOW
    for variant in ("variant_0", "variant_1"):
        text += _variant("summarize", variant, "text: ${inputs.text}")
        (folder / f"summarize_{variant}.jinja2").write_text(f"summarize {variant}: {{{{text}}}}")
    text += "  answer:\n    default_variant_id: variant_0\n    variants:\n"
    for variant in ("variant_0", "variant_1", "variant_2"):
        text += _variant("answer", variant, "summary: ${summarize.output}")
        (folder / f"answer_{variant}.jinja2").write_text(f"answer {variant}")
    (folder / "flow.dag.yaml").write_text(text)
    return folder


def doc_example() -> dict:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)
    [block] = [b for b in blocks if "short-and-cheap" in b]
    return yaml.safe_load(block)


async def test_the_per_node_variant_example_of_the_doc_loads_and_runs_as_described(tmp_path: Path) -> None:
    flow_dir = write_flow(tmp_path)
    path = tmp_path / "example.yaml"
    path.write_text(yaml.safe_dump({"name": "example", "flow": ".", **doc_example()}))
    deployment = load_deployment(path)
    executor = FlowExecutor(load_flow(flow_dir), {})
    got = {}
    for variant in deployment.variants:
        result = await executor.run({}, variant=variant.id, node_variants=variant.nodes)
        got[variant.id] = (result.outputs, dict(result.node_variants))
    assert got == {
        "baseline": ({"summary": "summarize variant_0: the text", "answer": "answer variant_0"},
                     {"summarize": "variant_0", "answer": "variant_0"}),
        "short-and-cheap": ({"summary": "summarize variant_1: the text", "answer": "answer variant_2"},
                            {"summarize": "variant_1", "answer": "variant_2"}),
    }


async def test_explicit_nodes_leave_the_others_on_their_default_whatever_the_id(tmp_path: Path) -> None:
    executor = FlowExecutor(load_flow(write_flow(tmp_path)), {})
    # Named like a node variant, but pinned: only answer changes (the docs' rule for `nodes`).
    result = await executor.run({}, variant="variant_1", node_variants={"answer": "variant_2"})
    assert dict(result.node_variants) == {"summarize": "variant_0", "answer": "variant_2"}
