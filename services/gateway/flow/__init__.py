"""The gateway's flow runtime: prompt flow's ``flow.dag.yaml`` folders, loaded and run asynchronously.

- :func:`load_flow` reads and validates a flow folder (raises :class:`FlowError`).
- :class:`FlowExecutor` runs it: :meth:`FlowExecutor.run` to completion, or
  :meth:`FlowExecutor.stream` for the chat output's text deltas as the LLM writes them.
- :func:`build_clients` makes the ``openai`` clients for the flow's connections.

What of prompt flow's format is supported is listed in docs/flows.md.
"""

from services.gateway.flow.clients import build_clients
from services.gateway.flow.errors import (
    FlowError,
    FlowInputError,
    FlowProblem,
    LlmCallError,
    NodeExecutionError,
)
from services.gateway.flow.executor import FlowExecutor
from services.gateway.flow.loader import FLOW_FILE, flow_connections, load_flow
from services.gateway.flow.model import Flow, FlowInput, FlowOutput, Node
from services.gateway.flow.plan import select_variants
from services.gateway.flow.result import FlowResult, LlmCall, NodeRun
from services.gateway.flow.streaming import FlowStream

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
