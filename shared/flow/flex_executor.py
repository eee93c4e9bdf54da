"""Runs a flex flow: its entry called per request, the same interface as :class:`FlowExecutor`.

A class entry is instantiated once per deployment variant, when the executor is built, with that
variant's ``init`` (flex_init.py); a function entry is called as it is. A call is awaited when
async, else run in a worker thread (python_node.call_tool), so the event loop never blocks. A
returned generator (sync or async) streams: each text item is a delta as it is produced, and the
output is the items joined. The output is the returned mapping (a dataclass as its fields),
else ``{"output": value}`` as prompt flow names it.

One run is one ``invoke_workflow {flow}`` span; the entry's prints and logs are captured into it
and the ``@trace`` functions it calls are its children (pf_tracing.py), both only where the run
may keep texts; the ``openai`` calls it makes are counted with their usage (python_llm.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import Any

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from shared.flow import images, telemetry
from shared.flow.errors import FlowError, FlowProblem, NodeExecutionError
from shared.flow.flex import OUTPUT, FlexFlow, bind_flex_inputs
from shared.flow.flex_init import resolve_init
from shared.flow.model import PythonTool
from shared.flow.node_output import capture_node_output
from shared.flow.pf_tracing import trace_scope
from shared.flow.plan import DEFAULT_VARIANT, Plan
from shared.flow.python_llm import node_llm_calls, observe_openai_calls
from shared.flow.python_node import _materialize, call_tool
from shared.flow.result import FlowResult, LlmCall, NodeRun
from shared.flow.streaming import END, FlowStream

ENTRY = "promptpulse.flow.entry"
_NO_NODES = Plan(nodes={}, order=(), dependencies={}, node_variants={})


def _tool(call: Callable[..., Any], flow: FlexFlow) -> PythonTool:
    original = inspect.unwrap(call)
    is_async = inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(original)
    parameters = {spec.name: not spec.required for spec in flow.inputs.values()}
    return PythonTool(function=call, is_async=is_async, parameters=parameters, accepts_any=False)


class FlexExecutor:
    """Runs one flex flow many times concurrently.

    ``init``: deployment variant id -> that variant's init values (None: the flow's sample.init);
    not given, one variant ``default``. ``connections`` (connections.yaml entries) serve the model
    configurations and connections init values name; secrets are read from the environment here.
    """

    def __init__(
        self,
        flow: FlexFlow,
        init: Mapping[str, Mapping[str, Any] | None] | None = None,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        connections: Mapping[str, Any] | None = None,
        capture_output: bool = True,
    ) -> None:
        self.flow = flow
        self.tracer = telemetry.get_tracer(tracer_provider)
        self.tracer_provider = tracer_provider
        self.capture_output = capture_output
        self._tools: dict[str, PythonTool] = {}
        problems: list[FlowProblem] = []
        for variant, values in (init if init is not None else {DEFAULT_VARIANT: None}).items():
            where = "" if variant == DEFAULT_VARIANT else f"variants.{variant}."
            kwargs, found = resolve_init(flow, values, connections or {})
            problems += [FlowProblem(flow.name, None, where + field, reason) for field, reason in found]
            if found:
                continue
            if not flow.is_class:
                self._tools[variant] = _tool(flow.entry, flow)
                continue
            try:
                instance = flow.entry(**kwargs)
            except Exception as exc:  # the flow's own code: its failure is this deployment's load problem
                reason = telemetry.redact(f"{flow.entry.__name__}(...) raised {type(exc).__name__}: {exc}")
                problems.append(FlowProblem(flow.name, None, where + "init", reason))
                continue
            self._tools[variant] = _tool(instance.__call__, flow)
        if problems:
            raise FlowError(problems)
        observe_openai_calls()  # the entry may call a model itself (python_llm.py)

    def _tool_for(self, variant: str | None) -> PythonTool:
        if variant is None or (variant == DEFAULT_VARIANT and variant not in self._tools):
            return next(iter(self._tools.values()))
        tool = self._tools.get(variant)
        if tool is None:
            known = ", ".join(self._tools)
            raise FlowError.single(self.flow.name, None, "variant", f"no variant {variant!r} (variants: {known})")
        return tool

    def plan(self, variant: str | None = None, node_variants: Mapping[str, str] | None = None) -> Plan:
        """A flex flow has no nodes: checks the variant (FlowError if unknown) and pins no node."""
        self._tool_for(variant)
        if node_variants:
            raise FlowError.single(self.flow.name, None, "variant", "a flex flow has no nodes to pin variants of")
        return _NO_NODES

    async def run(self, inputs: Any, *, variant: str | None = None, node_variants: Mapping[str, str] | None = None,
                  llm_headers: Mapping[str, str] | None = None, request_id: str | None = None,
                  capture_output: bool = True) -> FlowResult:
        """Run to completion; raises FlowInputError, FlowError (unknown variant), NodeExecutionError.
        ``llm_headers`` are not sent: the entry makes its own calls."""
        self.plan(variant, node_variants)
        run = _FlexRun(self, bind_flex_inputs(self.flow, inputs), variant, stream=False, request_id=request_id,
                       capture_output=capture_output)
        return await run.execute()

    def stream(self, inputs: Any, *, variant: str | None = None, node_variants: Mapping[str, str] | None = None,
               llm_headers: Mapping[str, str] | None = None, request_id: str | None = None,
               capture_output: bool = True) -> FlowStream:
        """A run whose generator items arrive as deltas; input errors raise here."""
        self.plan(variant, node_variants)
        run = _FlexRun(self, bind_flex_inputs(self.flow, inputs), variant, stream=True, request_id=request_id,
                       capture_output=capture_output)
        return FlowStream(run)  # type: ignore[arg-type]  # the run interface FlowStream reads


class _FlexRun:
    """One call of the entry (what FlowStream reads: deltas, llm_calls, first_token_at, started)."""

    def __init__(self, executor: FlexExecutor, inputs: dict[str, Any], variant: str | None, *, stream: bool,
                 request_id: str | None, capture_output: bool) -> None:
        self.executor = executor
        self.flow = executor.flow
        self.tool = executor._tool_for(variant)
        self.inputs = inputs
        self.variant = variant
        self.request_id = request_id
        self.capture_output = capture_output and executor.capture_output
        self.llm_calls: list[LlmCall] = []
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        self.deltas: asyncio.Queue[Any] | None = asyncio.Queue() if stream else None
        self.streamed_output: str | None = OUTPUT if stream else None
        self.live_streamed = False

    def _on_item(self, item: Any) -> None:
        if self.deltas is None or not isinstance(item, str) or not item:
            return  # only text streams; anything else arrives whole in the outputs
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.live_streamed = True
        self.deltas.put_nowait(item)

    async def execute(self) -> FlowResult:
        attributes: dict[str, AttributeValue] = {
            telemetry.OPERATION: "invoke_workflow", telemetry.WORKFLOW_NAME: self.flow.name,
            telemetry.FLOW_VARIANT: self.variant or DEFAULT_VARIANT, telemetry.STREAMED: self.deltas is not None,
            ENTRY: self.flow.entry_text,
        }
        executor = self.executor
        try:
            with executor.tracer.start_as_current_span(
                f"invoke_workflow {self.flow.name}", attributes=attributes,
                record_exception=False, set_status_on_exception=False,
            ) as span:
                self.started = time.perf_counter()
                try:
                    value, single = await self._call(span)
                except asyncio.CancelledError:
                    span.set_attribute(telemetry.CANCELLED, True)
                    raise
                except Exception as exc:
                    error_type = type(exc).__name__
                    telemetry.record_error(span, error_type, str(exc))
                    error = NodeExecutionError(self.flow.entry_text, error_type, telemetry.redact(str(exc)))
                    error.llm_calls = list(self.llm_calls)
                    raise error from exc
                outputs = {k: v if isinstance(v, str) else images.to_output(v) for k, v in value.items()}
                if self.deltas is not None and not self.live_streamed and isinstance(outputs.get(OUTPUT), str):
                    self._on_item(outputs[OUTPUT])  # a value that was not a generator arrives as one delta
                ended = time.perf_counter()
                ttft = (self.first_token_at - self.started) * 1000 if self.first_token_at is not None else None
                entry = NodeRun(name=self.flow.entry_text, type="flex", status="completed", started_ms=0.0,
                                duration_ms=(ended - self.started) * 1000)
                return FlowResult(flow=self.flow.name, outputs=outputs, llm_calls=list(self.llm_calls),
                                  nodes=[entry], node_variants={}, duration_ms=(ended - self.started) * 1000,
                                  time_to_first_token_ms=ttft, streamed_output=self.streamed_output,
                                  single_output=single)
        finally:
            if self.deltas is not None:
                self.deltas.put_nowait(END)

    async def _call(self, span: trace.Span) -> tuple[dict[str, Any], bool]:
        provider = self.executor.tracer_provider or trace.get_tracer_provider()
        capture = self.capture_output
        calls: list[LlmCall] = []
        try:
            # Prints go into the run's span, @trace calls become its children, openai calls are counted.
            with (capture_node_output(span, self.request_id) if capture else nullcontext()), \
                    node_llm_calls(self.flow.entry_text, provider) as calls, \
                    trace_scope(self.executor.tracer, capture):
                value = await call_tool(self.tool, dict(self.inputs), self._on_item)
                if isinstance(value, dict):
                    # A mapping's generator values are read too (not streamed: prompt flow streams one
                    # field; ours streams a returned generator).
                    return {k: await _materialize(v) for k, v in value.items()}, False
                if dataclasses.is_dataclass(value) and not isinstance(value, type):
                    return dataclasses.asdict(value), False
                return {OUTPUT: value}, True
        finally:
            self.llm_calls.extend(calls)
