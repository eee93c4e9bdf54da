"""LLM nodes: one model call (chat, the legacy completions, embeddings) through the connection's endpoint.

The gateway and the processor hand llm nodes an :class:`~shared.flow.llm_http.LlmEndpoint` (plain
aiohttp, the proxy's path too); an ``openai`` client handed in directly (library use, tests that
record its transport) is called with its ``client.post``, anything else through ``create()``.
The node's model parameters are converted by llm_params.py. Streaming calls ask for
``stream_options.include_usage`` so the token usage is the endpoint's own count.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from shared.flow import telemetry
from shared.flow.errors import LlmCallError
from shared.flow.llm_http import LlmEndpoint
from shared.flow.result import LlmCall


def is_azure(client: Any) -> bool:
    if isinstance(client, LlmEndpoint):
        return client.is_azure
    try:
        from openai import AsyncAzureOpenAI
    except ImportError:  # pragma: no cover - openai is a dependency
        return False
    return isinstance(client, AsyncAzureOpenAI)


def choose_model(client: Any, model: str | None, deployment_name: str | None) -> str | None:
    # Prompt flow's convention: Azure OpenAI takes the deployment name, OpenAI the model name.
    if is_azure(client):
        return deployment_name or model
    return model or deployment_name


async def chat_completion(
    *,
    node: str,
    client: Any,
    model: str,
    messages: list[dict[str, Any]],
    params: Mapping[str, Any],
    tracer: trace.Tracer,
    stream: bool = False,
    on_delta: Callable[[str], None] | None = None,
    extra_headers: Mapping[str, str] | None = None,
    node_variant: str | None = None,
) -> tuple[str, LlmCall]:
    """One chat completion: (the answer's text, its usage record); raises LlmCallError.

    Streaming: ``on_delta`` receives each text delta as it arrives, and the span ends when the
    stream does. Cancelling the calling task closes the HTTP response, which ends the call.
    """
    return await model_call(
        CHAT, {"messages": messages}, node=node, client=client, model=model, params=params, tracer=tracer,
        stream=stream, on_delta=on_delta, extra_headers=extra_headers, node_variant=node_variant,
    )


async def model_call(
    api: Api,
    payload: Mapping[str, Any],
    *,
    node: str,
    client: Any,
    model: str,
    params: Mapping[str, Any],
    tracer: trace.Tracer,
    stream: bool = False,
    on_delta: Callable[[str], None] | None = None,
    extra_headers: Mapping[str, str] | None = None,
    node_variant: str | None = None,
) -> tuple[Any, LlmCall]:
    """One call of ``api`` (chat, the legacy text completions, embeddings) with ``payload`` (its
    messages, prompt or input): (its result, its usage record) in a ``{operation} {model}`` span."""
    request: dict[str, Any] = {"model": model, **payload, **params}
    if extra_headers:
        request["extra_headers"] = dict(extra_headers)
    with _call_span(api, client, model, node, params, tracer, stream, node_variant) as span:
        started = time.perf_counter()
        try:
            if stream:
                text, outcome = await _streamed(api, client, request, started, on_delta)
            else:
                text, outcome = await _whole(api, client, request)
        except asyncio.CancelledError:
            # The caller went away: not a failure of the LLM, so no error status.
            span.set_attribute(telemetry.CANCELLED, True)
            raise
        except LlmCallError as exc:
            telemetry.record_error(span, exc.error_type, exc.message)
            raise LlmCallError(node, exc.error_type, exc.message, status_code=exc.status_code) from exc
        except Exception as exc:
            error_type, message, status = _describe(exc)
            telemetry.record_error(span, error_type, message)
            raise LlmCallError(node, error_type, message, status_code=status) from exc
        duration_ms = (time.perf_counter() - started) * 1000
        usage = outcome["usage"]
        call = LlmCall(
            node=node,
            model=outcome["model"] or model,
            request_model=model,
            prompt_tokens=_tokens(usage, "prompt_tokens"),
            completion_tokens=_tokens(usage, "completion_tokens"),
            total_tokens=_tokens(usage, "total_tokens"),
            usage_reported=usage is not None,
            duration_ms=duration_ms,
            time_to_first_chunk_ms=outcome.get("ttfc_ms"),
            finish_reason=outcome["finish_reason"],
            streamed=stream,
        )
        if span.is_recording():
            # Set at once: the SDK takes its lock once, not per value.
            answered: dict[str, Any] = {telemetry.RESPONSE_MODEL: call.model}
            if outcome.get("id"):
                answered[telemetry.RESPONSE_ID] = outcome["id"]
            if call.finish_reason:
                answered[telemetry.FINISH_REASONS] = [call.finish_reason]
            if usage is not None:
                answered[telemetry.INPUT_TOKENS] = call.prompt_tokens
                answered[telemetry.OUTPUT_TOKENS] = call.completion_tokens
            if call.time_to_first_chunk_ms is not None:
                answered[telemetry.TIME_TO_FIRST_CHUNK] = round(call.time_to_first_chunk_ms, 3)
            span.set_attributes(answered)
        return text, call


def _call_span(api: Api, client: Any, model: str, node: str, params: Mapping[str, Any], tracer: trace.Tracer,
               stream: bool, node_variant: str | None) -> AbstractContextManager[trace.Span]:
    """The call's ``{operation} {model}`` CLIENT span; none under a span its trace does not record."""
    if telemetry.unrecorded_child(tracer):
        return telemetry.UNRECORDED
    provider = "azure.ai.openai" if is_azure(client) else "openai"
    attributes = {
        telemetry.OPERATION: api.operation,
        telemetry.PROVIDER: provider,
        telemetry.SYSTEM: provider,
        telemetry.REQUEST_MODEL: model,
        telemetry.NODE_NAME: node,
        telemetry.STREAMED: stream,
        **telemetry.request_attributes(dict(params)),
        **telemetry.server_attributes(client),
    }
    if node_variant:
        attributes[telemetry.NODE_VARIANT] = node_variant
    return tracer.start_as_current_span(
        f"{api.operation} {model}", kind=SpanKind.CLIENT, attributes=attributes, record_exception=False,
        set_status_on_exception=False,
    )


async def _whole(api: Api, client: Any, request: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    if isinstance(client, LlmEndpoint):
        body, headers = _body_and_headers(request)
        data = await client.post(api.path, body, headers=headers)
    elif _is_openai_client(client):
        body, options = _post_arguments(request)
        data = await client.post(api.path, body=body, cast_to=object, options=options)
    else:
        data = _as_dict(await api.portable(client).create(**request))
    outcome = {"usage": _usage(data), "model": _dict(data).get("model"), "id": _dict(data).get("id"),
               "finish_reason": None}
    if api is EMBEDDINGS:
        vectors = [_dict(item).get("embedding") for item in _list(data, "data")]
        if not vectors or not all(isinstance(v, list) for v in vectors):
            raise LlmCallError("", "EmptyResponse", "the embeddings response has no vectors")
        # One text in, one vector out, as prompt flow's embedding tool returns it.
        return (vectors[0] if isinstance(request.get("input"), str) else vectors), outcome
    choices = _list(data, "choices")
    if not choices:
        raise LlmCallError("", "EmptyResponse", "the completion has no choices")
    first = _dict(choices[0])
    outcome["finish_reason"] = first.get("finish_reason")
    return api.whole_text(first) or "", outcome


async def _streamed(
    api: Api, client: Any, request: dict[str, Any], started: float, on_delta: Callable[[str], None] | None
) -> tuple[str, dict[str, Any]]:
    parts: list[str] = []
    request = {**request, "stream": True, "stream_options": {"include_usage": True}}
    if isinstance(client, LlmEndpoint):
        body, headers = _body_and_headers(request)
        stream = await client.post(api.path, body, stream=True, headers=headers)
        as_dict = _dict
    elif _is_openai_client(client):
        body, options = _post_arguments(request)
        stream = await client.post(
            api.path, body=body, cast_to=object, options=options, stream=True, stream_cls=_stream_class()
        )
        as_dict = _dict
    else:
        stream = await api.portable(client).create(**request)
        as_dict = _as_dict
    # Runs once per token: plain locals and dict lookups, read the same way as _whole reads
    # a response (anything not a dict or list where one is expected counts as absent).
    ttfc_ms = model = ident = usage = finish_reason = None
    async with stream:
        async for item in stream:
            if ttfc_ms is None:
                ttfc_ms = (time.perf_counter() - started) * 1000
            chunk = as_dict(item)
            model = chunk.get("model") or model
            ident = chunk.get("id") or ident
            found = chunk.get("usage")
            if isinstance(found, dict):
                usage = found
            choices = chunk.get("choices")
            if not isinstance(choices, list):
                continue
            for choice in choices:
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue  # with n > 1, the first choice is the answer, as in prompt flow
                text = api.delta_text(choice)
                if text:
                    parts.append(text)
                    if on_delta is not None:
                        on_delta(text)
                if choice.get("finish_reason"):
                    finish_reason = choice["finish_reason"]
    return "".join(parts), {"usage": usage, "model": model, "id": ident, "finish_reason": finish_reason,
                            "ttfc_ms": ttfc_ms}


# ``chat.completions.create`` runs every request through openai's TypedDict transforms and every
# response (each streamed chunk too) through pydantic model construction: most of the CPU an LLM
# call cost the gateway. Every path here reads plain JSON instead; the gateway's, LlmEndpoint,
# skips the openai client altogether (bench/llm_call_path.py). An openai client handed in is
# called with ``client.post``, the package's documented way to send a plain body and read plain
# JSON (same transport, auth, retries, Azure URLs and SSE parsing as ``create()``).
@dataclass(frozen=True)
class Api:
    """One OpenAI endpoint an llm node can call: its span operation, path and answer's shape."""

    operation: str  # gen_ai.operation.name
    path: str
    portable: Callable[[Any], Any]  # the client's resource with create(), for other clients
    whole_text: Callable[[dict[str, Any]], Any]  # a choice's text in a whole answer
    delta_text: Callable[[dict[str, Any]], Any]  # a choice's text in a streamed chunk


CHAT = Api("chat", "/chat/completions", lambda c: c.chat.completions,
           lambda choice: _dict(choice.get("message")).get("content"),
           lambda choice: _dict(choice.get("delta")).get("content"))
# prompt flow's ``api: completion``: the legacy API, a prompt in and ``choices[].text`` out.
COMPLETION = Api("text_completion", "/completions", lambda c: c.completions,
                 lambda choice: choice.get("text"), lambda choice: choice.get("text"))
EMBEDDINGS = Api("embeddings", "/embeddings", lambda c: c.embeddings, lambda _: None, lambda _: None)
CHAT_PATH = CHAT.path
# What create() asks for; post()'s default would also offer an admin key, which an LLM call never needs.
_SECURITY = {"bearer_auth": True}


def _is_openai_client(client: Any) -> bool:
    # Anything else (a test double, another client) is called the portable way, through create().
    try:
        from openai import AsyncOpenAI
    except ImportError:  # pragma: no cover - openai is a dependency
        return False
    return isinstance(client, AsyncOpenAI)


def _stream_class() -> Any:
    from openai import AsyncStream

    return AsyncStream[object]  # object: the stream yields each event's JSON as it came


def _body_and_headers(request: dict[str, Any]) -> tuple[dict[str, Any], Mapping[str, str] | None]:
    body = dict(request)
    return body, body.pop("extra_headers", None)


def _post_arguments(request: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    body, headers = _body_and_headers(request)
    options: dict[str, Any] = {"security": _SECURITY}
    if headers:
        options["headers"] = headers
    return body, options


def _as_dict(value: Any) -> dict[str, Any]:
    """A response or chunk of the portable path as the fast path sees it: its JSON."""
    dump = getattr(value, "model_dump", None)
    return dump() if callable(dump) else _dict(value)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any, key: str) -> list[Any]:
    found = _dict(value).get(key)
    return found if isinstance(found, list) else []


def _usage(data: Any) -> dict[str, Any] | None:
    usage = _dict(data).get("usage")
    return usage if isinstance(usage, dict) else None


def _tokens(usage: dict[str, Any] | None, name: str) -> int:
    value = usage.get(name) if usage is not None else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _describe(exc: Exception) -> tuple[str, str, int | None]:
    """(error type, message, HTTP status) of a failed call, with nothing key-like in the message."""
    status = getattr(exc, "status_code", None)
    message = str(exc) or type(exc).__name__
    return type(exc).__name__, telemetry.redact(message), status if isinstance(status, int) else None
