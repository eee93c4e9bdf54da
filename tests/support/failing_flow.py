"""A flow that fails after its answer has streamed, written as prompt flow writes one: an LLM node
answers, then a Python node reviewing the answer raises an error whose message holds a secret.

Used by the error tests of both score routes (the failure must reach the client named, redacted,
and after the first delta as a stream's error event).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from shared.apikeys import new_api_key_record

SECRET = "sk-test-0123456789abcdefSECRET"
# A flow as prompt flow writes it: an LLM node whose answer a Python node then reviews (and refuses).
REVIEWED_FLOW = """\
$schema: https://azuremlschemas.azureedge.net/promptflow/latest/Flow.schema.json
inputs:
  question:
    type: string
    default: What does the gateway do?
outputs:
  answer:
    type: string
    reference: ${answer.output}
  verdict:
    type: string
    reference: ${review.output}
nodes:
- name: answer
  type: llm
  source:
    type: code
    path: answer.jinja2
  inputs:
    model: llmsim-chat
    question: ${inputs.question}
  connection: llmsim
  api: chat
- name: review
  type: python
  source:
    type: code
    path: review.py
  inputs:
    answer: ${answer.output}
"""
REVIEW_PY = f"""\
from promptflow.core import tool


@tool
def review(answer: str) -> str:
    raise ValueError("the reviewer refused the answer with reviewer key {SECRET} at hand")
"""


def write_reviewed(folder: Path) -> str:
    flow = folder.parent / "reviewed-flow"
    flow.mkdir(parents=True)
    (flow / "flow.dag.yaml").write_text(REVIEWED_FLOW)
    (flow / "answer.jinja2").write_text("# system:\nAnswer briefly.\n# user:\n{{question}}\n")
    (flow / "review.py").write_text(REVIEW_PY)
    key, record = new_api_key_record("reviewed-key")
    body = {"name": "reviewed", "flow": str(flow), "api_keys": [record.model_dump(mode="json", exclude_none=True)]}
    (folder / "reviewed.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    return key
