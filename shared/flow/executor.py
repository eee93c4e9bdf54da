"""Runs a loaded flow: the DAG for one set of inputs, independent nodes concurrently.

Typical use (the endpoint builds one executor per deployment at start-up)::

    executor = FlowExecutor(load_flow(folder), clients=build_clients(connections, ["llmsim"]))
    result = await executor.run({"question": "..."}, variant="variant_1")
    async with executor.stream(inputs, variant=variant) as stream:   # input errors raise here
        async for delta in stream:
            ...
        result = await stream.result()

Scheduling follows prompt flow's rules: a node starts once every node it references has
finished or been bypassed. A node with ``activate`` is bypassed when the condition is not met
(or its ``when`` node was bypassed); a node without ``activate`` is bypassed when every node it
references was bypassed. A bypassed node's output is None for the flow outputs that reference it.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from shared.flow import images, telemetry
from shared.flow.errors import FlowError, FlowProblem, NodeExecutionError
from shared.flow.inputs import bind_inputs
from shared.flow.model import Flow, Node
from shared.flow.nodes import BYPASSED, run_llm, run_prompt, run_python
from shared.flow.pf_connections import node_connections
from shared.flow.plan import DEFAULT_VARIANT, Plan, build_plan, select_variants
from shared.flow.python_llm import observe_openai_calls
from shared.flow.references import PropertyError, Reference, follow_path
from shared.flow.result import FlowResult, LlmCall, NodeRun
from shared.flow.streaming import END, FlowStream, streaming_target


class FlowExecutor:
    """Runs one flow many times concurrently; holds nothing per run.

    ``clients`` maps each connection name the flow's llm nodes use to the client they call: an
    LLM endpoint from :func:`build_clients` (what the gateway and the processor use), or an
    ``openai.AsyncOpenAI`` / ``AsyncAzureOpenAI`` client; the executor never builds clients or
    sees their keys.
    ``connections`` (name -> connections.yaml entry) serve Python nodes' connection parameters:
    each such node gets a prompt flow connection object, its secrets read from the environment
    here, once (pf_connections.py).
    """

    def __init__(
        self,
        flow: Flow,
        clients: Mapping[str, Any],
        *,
        tracer_provider: trace.TracerProvider | None = None,
        connections: Mapping[str, Any] | None = None,
        capture_output: bool = True,
    ) -> None:
        """``capture_output``: Python nodes' prints and log records go into their spans
        (node_output.py); off, they go to the process's streams and log as any code's do."""
        problems = [
            FlowProblem(flow.name, name, "connection", f"no client for connection {node.llm.connection!r}")
            for name in flow.node_order
            for node in flow.all_nodes(name)
            if node.llm is not None and node.llm.connection not in clients
        ]
        self._connection_objects, connection_problems = node_connections(flow, connections or {})
        problems += connection_problems
        if problems:
            raise FlowError(dict.fromkeys(problems))  # one problem per node, even with variants
        self.flow = flow
        self.clients = clients
        self.tracer = telemetry.get_tracer(tracer_provider)
        self.tracer_provider = tracer_provider  # None: the global provider, looked up per call
        self.capture_output = capture_output
        if any(node.type == "python" for name in flow.node_order for node in flow.all_nodes(name)):
            observe_openai_calls()  # a Python node may call a model itself (shared/flow/python_llm.py)
        self._plans: dict[tuple[tuple[str, str], ...], Plan] = {}

    def plan(self, variant: str | None = None, node_variants: Mapping[str, str] | None = None) -> Plan:
        """The concrete node graph for a variant choice; raises FlowError for unknown variant ids."""
        chosen = select_variants(self.flow, variant, node_variants)
        key = tuple(sorted(chosen.items()))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = build_plan(self.flow, chosen)
        return plan

    async def run(
        self,
        inputs: Any,
        *,
        variant: str | None = None,
        node_variants: Mapping[str, str] | None = None,
        llm_headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
        capture_output: bool = True,
    ) -> FlowResult:
        """Run to completion. Raises FlowInputError (bad inputs), FlowError (unknown variant),
        NodeExecutionError / LlmCallError (a node failed). Cancelling the caller cancels the run,
        including any LLM call in flight. ``capture_output`` False: this run's prints stay out of
        its spans even where the executor captures them (a request whose texts are not kept)."""
        bound = bind_inputs(self.flow, inputs)
        run = _Run(self, self.plan(variant, node_variants), bound, variant, stream=False, llm_headers=llm_headers,
                   request_id=request_id, capture_output=capture_output)
        return await run.execute()

    def stream(
        self,
        inputs: Any,
        *,
        variant: str | None = None,
        node_variants: Mapping[str, str] | None = None,
        llm_headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
        capture_output: bool = True,
    ) -> FlowStream:
        """A run whose chat output arrives as text deltas while the LLM writes it.

        Input and variant errors raise here, before anything is sent to a client. The run starts
        when iteration (or ``result()``) starts; closing the stream cancels it.
        """
        bound = bind_inputs(self.flow, inputs)
        run = _Run(self, self.plan(variant, node_variants), bound, variant, stream=True, llm_headers=llm_headers,
                   request_id=request_id, capture_output=capture_output)
        return FlowStream(run)


class _Run:
    """The state of one run."""

    def __init__(
        self,
        executor: FlowExecutor,
        plan: Plan,
        inputs: dict[str, Any],
        variant: str | None,
        *,
        stream: bool,
        llm_headers: Mapping[str, str] | None,
        request_id: str | None = None,
        capture_output: bool = True,
    ) -> None:
        self.executor = executor
        self.flow = executor.flow
        self.plan = plan
        self.inputs = inputs
        self.variant = variant
        self.llm_headers = llm_headers
        self.request_id = request_id  # on what a node prints or logs (node_output.py)
        self.capture_output = capture_output and executor.capture_output
        self.node_outputs: dict[str, Any] = {}
        self.bypassed: set[str] = set()
        self.llm_calls: list[LlmCall] = []
        self.node_runs: dict[str, NodeRun] = {}
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        self.deltas: asyncio.Queue[Any] | None = asyncio.Queue() if stream else None
        self.streamed_output, self.streaming_node = streaming_target(self.flow, plan) if stream else (None, None)
        self.live_streamed = False

    # ---- the run

    async def execute(self) -> FlowResult:
        tracer = self.executor.tracer
        try:
            with self._span(tracer) as span:
                self.started = time.perf_counter()
                try:
                    await self._schedule()
                    outputs = self._flow_outputs()
                except asyncio.CancelledError:
                    span.set_attribute(telemetry.CANCELLED, True)
                    raise
                except NodeExecutionError as exc:
                    # str(exc) names node, type and message: the text the client and the event get too.
                    telemetry.record_error(span, exc.error_type, str(exc))
                    exc.llm_calls = list(self.llm_calls)
                    raise
                except Exception as exc:
                    telemetry.record_error(span, type(exc).__name__, str(exc))
                    raise
                self._emit_unstreamed(outputs)
                return self._result(outputs)
        finally:
            if self.deltas is not None:
                self.deltas.put_nowait(END)

    def _span(self, tracer: trace.Tracer) -> AbstractContextManager[trace.Span]:
        """The run's ``invoke_workflow`` span; none under a span its trace does not record."""
        if telemetry.unrecorded_child(tracer):
            return telemetry.UNRECORDED
        attributes: dict[str, AttributeValue] = {
            telemetry.OPERATION: "invoke_workflow",
            telemetry.WORKFLOW_NAME: self.flow.name,
            telemetry.FLOW_VARIANT: self.variant or DEFAULT_VARIANT,
            telemetry.STREAMED: self.deltas is not None,
        }
        return tracer.start_as_current_span(
            f"invoke_workflow {self.flow.name}", attributes=attributes,
            record_exception=False, set_status_on_exception=False,
        )

    async def _schedule(self) -> None:
        pending = list(self.plan.order)
        running: dict[asyncio.Task[Any], str] = {}
        try:
            while pending or running:
                ready: list[str] = []
                progressed = True
                while progressed:  # bypassing one node can make the next ready at once
                    progressed = False
                    for name in list(pending):
                        if not self._ready(name):
                            continue
                        pending.remove(name)
                        progressed = True
                        if self._should_bypass(name):
                            self._bypass(name)
                        else:
                            ready.append(name)
                if len(ready) == 1 and not running:
                    # Nothing else can start before this node ends (a node becomes ready only when
                    # another finishes), so it runs in this task: one task and one wait less per
                    # node of a chain, which is every node of a one-node flow.
                    self.node_outputs[ready[0]] = await self._run_node(ready[0])
                    continue
                for name in ready:
                    running[asyncio.create_task(self._run_node(name), name=f"flow-node {name}")] = name
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    name = running.pop(task)
                    self.node_outputs[name] = task.result()
        finally:
            # A failed node or a cancelled run stops every node still running, LLM calls included.
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    def _ready(self, name: str) -> bool:
        return all(d in self.node_outputs or d in self.bypassed for d in self.plan.dependencies[name])

    def _should_bypass(self, name: str) -> bool:
        node = self.plan.nodes[name]
        if node.activate is not None:
            when = node.activate.when
            if when.node is not None and when.node in self.bypassed:
                return True
            return self._value(when, name, "activate.when") != node.activate.is_value
        referenced = [ref.node for field, ref in node.references() if ref.node is not None]
        return bool(referenced) and all(r in self.bypassed for r in referenced)

    def _bypass(self, name: str) -> None:
        self.bypassed.add(name)
        node = self.plan.nodes[name]
        self.node_runs[name] = NodeRun(name=name, type=node.type, status="bypassed", variant_id=node.variant_id)

    async def _run_node(self, name: str) -> Any:
        node = self.plan.nodes[name]
        started = time.perf_counter()
        values = {key: self._input_value(value, name, key) for key, value in node.inputs.items()}
        if node.type == "python":
            for key in node.connections:
                cls, arguments = self.executor._connection_objects[(name, node.variant_id, key)]
                values[key] = cls(**arguments)  # a fresh object: a node changing it changes no other run
            live = self.deltas is not None and node.name == self.streaming_node
            output = await run_python(
                node, values, self.executor.tracer, self.executor.tracer_provider, record=self.llm_calls.append,
                on_delta=self._on_delta if live else None, request_id=self.request_id,
                capture_output=self.capture_output,
            )
        elif node.type == "prompt":
            output = run_prompt(node, values, self.executor.tracer)
        else:
            output = await self._run_llm(node, values)
        self.node_runs[name] = NodeRun(
            name=name, type=node.type, status="completed", variant_id=node.variant_id,
            started_ms=(started - self.started) * 1000, duration_ms=(time.perf_counter() - started) * 1000,
        )
        return output

    async def _run_llm(self, node: Node, values: dict[str, Any]) -> Any:
        assert node.llm is not None
        settings = node.llm
        raw = {"model": settings.model, "deployment_name": settings.deployment_name, **settings.params}
        params = {k: self._input_value(v, node.name, k) for k, v in raw.items() if v is not None}
        live = self.deltas is not None and node.name == self.streaming_node
        return await run_llm(
            node, values, params, self.executor.clients[settings.connection], self.executor.tracer,
            stream=live, on_delta=self._on_delta if live else None, extra_headers=self.llm_headers,
            record=self.llm_calls.append,
        )

    def _on_delta(self, text: str) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.live_streamed = True
        assert self.deltas is not None
        self.deltas.put_nowait(text)

    # ---- values

    def _input_value(self, value: Any, node: str, field: str) -> Any:
        if isinstance(value, Reference):
            if value.node is not None and value.node in self.bypassed:
                return BYPASSED
            return self._value(value, node, f"inputs.{field}")
        if isinstance(value, dict | list):
            return copy.deepcopy(value)  # a tool changing its input must not change the flow
        return value

    def _value(self, ref: Reference, node: str | None, field: str) -> Any:
        if ref.is_input:
            return self.inputs[ref.name]
        try:
            return follow_path(self.node_outputs[ref.name], ref.path, ref.text)
        except PropertyError as exc:
            raise NodeExecutionError(node or ref.name, "InvalidReference", str(exc), field=field) from None

    def _flow_outputs(self) -> dict[str, Any]:
        outputs: dict[str, Any] = {}
        for output in self.flow.outputs.values():
            ref = output.reference
            if ref.node is not None and ref.node in self.bypassed:
                value = None
            else:
                value = self._value(ref, ref.node, f"outputs.{output.name}")
            outputs[output.name] = str(value) if isinstance(value, str) else images.to_output(value)
        return outputs

    def _emit_unstreamed(self, outputs: dict[str, Any]) -> None:
        # An output that no LLM streamed (a Python node's, or a bypassed LLM's) arrives whole.
        if self.deltas is None or self.streamed_output is None or self.live_streamed:
            return
        value = outputs.get(self.streamed_output)
        if isinstance(value, str) and value:
            self.first_token_at = time.perf_counter()
            self.deltas.put_nowait(value)

    def _result(self, outputs: dict[str, Any]) -> FlowResult:
        ended = time.perf_counter()
        ordered = [self.node_runs[n] for n in self.plan.order if n in self.node_runs]
        ttft = (self.first_token_at - self.started) * 1000 if self.first_token_at is not None else None
        return FlowResult(
            flow=self.flow.name,
            outputs=outputs,
            llm_calls=list(self.llm_calls),
            nodes=ordered,
            node_variants=dict(self.plan.node_variants),
            duration_ms=(ended - self.started) * 1000,
            time_to_first_token_ms=ttft,
            streamed_output=self.streamed_output,
            single_output=self.flow.single_output,
        )
