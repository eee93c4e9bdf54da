"""The gateway's flow runtime: prompt flow's ``flow.dag.yaml`` folders, loaded and run asynchronously.

- :func:`load_flow` reads and validates a flow folder (raises :class:`FlowError`).
- :class:`FlowExecutor` runs it: :meth:`FlowExecutor.run` to completion, or
  :meth:`FlowExecutor.stream` for the chat output's text deltas as the LLM writes them.
- :func:`build_clients` makes the LLM endpoints (plain aiohttp) for the flow's connections.

What of prompt flow's format is supported is listed in docs/flows.md.
"""

from shared.flow.clients import build_clients
from shared.flow.errors import (
    FlowError,
    FlowInputError,
    FlowProblem,
    LlmCallError,
    NodeExecutionError,
)
from shared.flow.executor import FlowExecutor
from shared.flow.loader import flow_connections, load_flow
from shared.flow.model import Flow, FlowInput, FlowOutput, Node
from shared.flow.node_loader import FLOW_FILE
from shared.flow.plan import select_variants
from shared.flow.result import FlowResult, LlmCall, NodeRun
from shared.flow.streaming import FlowStream

__all__ = [
    "FLOW_FILE",
    "Flow",
    "FlowError",
    "FlowExecutor",
    "FlowInput",
    "FlowInputError",
    "FlowOutput",
    "FlowProblem",
    "FlowResult",
    "FlowStream",
    "LlmCall",
    "LlmCallError",
    "Node",
    "NodeExecutionError",
    "NodeRun",
    "build_clients",
    "flow_connections",
    "load_flow",
    "select_variants",
]
