"""Running one node of each type, given its resolved inputs.

Inputs that referenced a bypassed node arrive as :data:`BYPASSED`. As in prompt flow, a Python
function then gets its parameter's default if it has one and None otherwise; templates and model
parameters get None (an unset model parameter is simply not sent).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import Any

from jinja2 import TemplateError
from opentelemetry import trace

from shared.flow import llm, llm_params, telemetry
from shared.flow.errors import NodeExecutionError
from shared.flow.model import Node
from shared.flow.node_output import capture_node_output
from shared.flow.pf_tracing import trace_scope
from shared.flow.python_llm import node_llm_calls
from shared.flow.python_node import call_tool
from shared.flow.result import LlmCall
from shared.flow.template import ChatTemplateError, render_chat, render_prompt


class _Bypassed:
    def __repr__(self) -> str:
        return "BYPASSED"


BYPASSED: Any = _Bypassed()


def _template_values(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (None if v is BYPASSED else v) for k, v in values.items()}


async def run_python(
    node: Node,
    values: Mapping[str, Any],
    tracer: trace.Tracer,
    provider: trace.TracerProvider | None,
    *,
    record: Callable[[LlmCall], None],
    on_delta: Callable[[str], None] | None = None,
    request_id: str | None = None,
    capture_output: bool = True,
) -> Any:
    """``record`` gets one :class:`LlmCall` per model call the function made with the openai
    package, even when it then failed (the tokens were spent). When the function returns a
    generator, ``on_delta`` gets each text item as it is produced (the node streams live)."""
    assert node.tool is not None
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if value is BYPASSED:
            if node.tool.parameters.get(key, False):
                continue  # the function's own default applies
            value = None
        kwargs[key] = value
    attributes = {
        telemetry.OPERATION: "execute_tool",
        telemetry.TOOL_NAME: node.name,
        telemetry.TOOL_TYPE: "function",
        telemetry.NODE_NAME: node.name,
        "promptpulse.tool.function": node.tool.qualname,
    }
    if node.variant_id:
        attributes[telemetry.NODE_VARIANT] = node.variant_id
    with tracer.start_as_current_span(
        f"execute_tool {node.name}", attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            # Prints and log records go into this span (node_output.py), LLM calls become its children.
            # @trace functions it calls become children too (pf_tracing.py), values under the same rule.
            with (capture_node_output(span, request_id) if capture_output else nullcontext()), \
                    node_llm_calls(node.name, provider or trace.get_tracer_provider()) as calls, \
                    trace_scope(tracer, capture_output):
                return await call_tool(node.tool, kwargs, None if on_delta is None else _text_items(on_delta))
        except Exception as exc:
            error_type = type(exc).__name__
            telemetry.record_error(span, error_type, str(exc))
            raise NodeExecutionError(node.name, error_type, telemetry.redact(str(exc))) from exc
        finally:
            for call in calls:  # filled when the block above closed
                record(call)


def _text_items(on_delta: Callable[[str], None]) -> Callable[[Any], None]:
    def on_item(item: Any) -> None:
        if isinstance(item, str) and item:  # a generator of text streams; anything else arrives whole
            on_delta(item)

    return on_item


def run_prompt(node: Node, values: Mapping[str, Any], tracer: trace.Tracer) -> Any:
    attributes = {telemetry.NODE_NAME: node.name}
    if node.variant_id:
        attributes[telemetry.NODE_VARIANT] = node.variant_id
    with tracer.start_as_current_span(
        f"render_prompt {node.name}", attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            return render_prompt(node.template, _template_values(values))
        except TemplateError as exc:
            telemetry.record_error(span, type(exc).__name__, str(exc))
            raise NodeExecutionError(node.name, type(exc).__name__, telemetry.redact(str(exc))) from exc


async def run_llm(
    node: Node,
    values: Mapping[str, Any],
    params: Mapping[str, Any],
    client: Any,
    tracer: trace.Tracer,
    *,
    stream: bool,
    on_delta: Callable[[str], None] | None,
    extra_headers: Mapping[str, str] | None,
    record: Callable[[LlmCall], None],
) -> Any:
    """``params`` are the node's model parameters, references already resolved."""
    converted: dict[str, Any] = {}
    for key, value in params.items():
        try:
            result = llm_params.convert_param(key, None if value is BYPASSED else value, node.llm.api if node.llm else "chat")
        except llm_params.ParamError as exc:
            raise NodeExecutionError(node.name, "InvalidParameter", str(exc), field=key) from None
        if result is not llm_params.OMIT:
            converted[key] = result
    model = llm.choose_model(client, converted.pop("model", None), converted.pop("deployment_name", None))
    if not model:
        raise NodeExecutionError(node.name, "InvalidParameter", "the model (or deployment_name) resolved to nothing",
                                 field="model")
    api = node.llm.api if node.llm is not None else "chat"
    if api == "embedding":  # prompt flow's embedding tool: one text (or a list) in, its vector out
        return await _embedding(node, values, model, converted, client, tracer, extra_headers, record)
    completion = api == "completion"
    try:
        if completion:  # the legacy completions API takes the rendered template as one prompt
            payload: dict[str, Any] = {"prompt": str(render_prompt(node.template, _template_values(values)))}
        else:
            payload = {"messages": render_chat(node.template, _template_values(values))}
    except (TemplateError, ChatTemplateError) as exc:
        raise NodeExecutionError(node.name, type(exc).__name__, telemetry.redact(str(exc))) from exc
    text, call = await llm.model_call(
        llm.COMPLETION if completion else llm.CHAT, payload, node=node.name, client=client, model=model,
        params=converted, tracer=tracer, stream=stream, on_delta=on_delta, extra_headers=extra_headers,
        node_variant=node.variant_id,
    )
    record(call)
    return text


async def _embedding(
    node: Node, values: Mapping[str, Any], model: str, params: dict[str, Any], client: Any,
    tracer: trace.Tracer, extra_headers: Mapping[str, str] | None, record: Callable[[LlmCall], None],
) -> Any:
    text = values.get("input")
    if not (isinstance(text, str) or (isinstance(text, list) and text and all(isinstance(t, str) for t in text))):
        raise NodeExecutionError(node.name, "InvalidInput", f"input must be a text or a list of texts, not "
                                 f"{'nothing' if text in (None, BYPASSED) else type(text).__name__}", field="input")
    vector, call = await llm.model_call(
        llm.EMBEDDINGS, {"input": text}, node=node.name, client=client, model=model, params=params, tracer=tracer,
        extra_headers=extra_headers, node_variant=node.variant_id,
    )
    record(call)
    return vector
