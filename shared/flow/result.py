"""What a flow run reports: outputs, one usage record per LLM call, and per-node timing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class LlmCall:
    """One LLM call: the token usage the endpoint reported, and its timing.

    ``usage_reported`` is False when the endpoint sent no usage (a server that ignores
    ``stream_options.include_usage``): the counts are then 0, not a guess.
    """

    node: str
    model: str  # the model the endpoint answered with, else the one requested
    request_model: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    usage_reported: bool
    duration_ms: float
    time_to_first_chunk_ms: float | None
    finish_reason: str | None
    streamed: bool


NodeStatus = Literal["completed", "bypassed"]


@dataclass(frozen=True)
class NodeRun:
    """One node of a run. A bypassed node (its ``activate`` condition unmet) has output None."""

    name: str
    type: str
    status: NodeStatus
    variant_id: str | None = None
    started_ms: float | None = None  # from the start of the run
    duration_ms: float | None = None


@dataclass
class FlowResult:
    """A finished run. ``time_to_first_token_ms`` is set for streamed runs that streamed text."""

    flow: str
    outputs: dict[str, Any]
    llm_calls: list[LlmCall]
    nodes: list[NodeRun]
    node_variants: dict[str, str]
    duration_ms: float
    time_to_first_token_ms: float | None = None
    streamed_output: str | None = None
    # A flex flow whose entry returned one value, not a mapping: ``outputs`` is {"output": value},
    # and prompt flow's /score answers with the value itself.
    single_output: bool = False

    def usage_by_model(self) -> dict[str, dict[str, int]]:
        """Token totals per model, the shape rollups and the response event want."""
        totals: dict[str, dict[str, int]] = {}
        for call in self.llm_calls:
            entry = totals.setdefault(call.model, {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
            entry["prompt_tokens"] += call.prompt_tokens
            entry["completion_tokens"] += call.completion_tokens
            entry["total_tokens"] += call.total_tokens
        return totals
