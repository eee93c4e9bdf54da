"""Errors of the flow runtime, one type per audience.

- :class:`FlowError`: the flow definition is wrong (found at load time, or a variant selection
  that names no variant). For the operator: every problem names the flow, the node and the field.
- :class:`FlowInputError`: the inputs of one run are wrong. For the client: the endpoint answers
  400 with :attr:`FlowInputError.field`.
- :class:`NodeExecutionError` (and :class:`LlmCallError` for a failed LLM call): a run failed
  while executing a node. The endpoint answers 502 for LLM failures and 500 otherwise, naming
  :attr:`NodeExecutionError.error_type`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FlowProblem:
    """One thing wrong with a flow definition."""

    flow: str
    node: str | None
    field: str
    reason: str

    def __str__(self) -> str:
        where = f"flow {self.flow!r}"
        if self.node is not None:
            where += f": node {self.node!r}"
        if self.field:
            where += f": {self.field}"
        return f"{where}: {self.reason}"


class FlowError(ValueError):
    """A flow definition cannot be loaded or run as asked; lists every problem found."""

    def __init__(self, problems: Iterable[FlowProblem]) -> None:
        self.problems = tuple(problems)
        if not self.problems:
            raise ValueError("FlowError needs at least one problem")
        super().__init__("; ".join(str(p) for p in self.problems))

    @classmethod
    def single(cls, flow: str, node: str | None, field: str, reason: str) -> FlowError:
        return cls([FlowProblem(flow, node, field, reason)])

    @property
    def flow(self) -> str:
        return self.problems[0].flow

    @property
    def node(self) -> str | None:
        return self.problems[0].node

    @property
    def field(self) -> str:
        return self.problems[0].field


class FlowInputError(ValueError):
    """A run's input is missing or has the wrong type; ``field`` names it (``chat_history[2].inputs``)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"input {field!r}: {reason}" if field else reason)


class NodeExecutionError(RuntimeError):
    """A node failed during a run.

    ``error_type`` is safe to show to a client (an exception class name such as ``KeyError`` or
    ``RateLimitError``); ``message`` is for logs and the response event.
    """

    def __init__(self, node: str, error_type: str, message: str, *, field: str | None = None) -> None:
        self.node = node
        self.error_type = error_type
        self.message = message
        self.field = field
        # The run's LLM calls that finished before the failure: their tokens were spent all the same.
        self.llm_calls: list[Any] = []
        where = f"node {node!r}" + (f" input {field!r}" if field else "")
        super().__init__(f"{where}: {error_type}: {message}")


class LlmCallError(NodeExecutionError):
    """An LLM call failed (HTTP error, timeout, connection error, unreadable answer)."""

    def __init__(
        self, node: str, error_type: str, message: str, *, status_code: int | None = None
    ) -> None:
        super().__init__(node, error_type, message)
        self.status_code = status_code
