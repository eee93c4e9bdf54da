"""``POST /v1/responses``: OpenAI's Responses API, whole or streamed as typed events.

The answer is composed like a chat answer: ``instructions`` and system/developer items are the
context, the last user item the question. Streamed, it follows the official event order:
``response.created``, ``response.in_progress``, ``response.output_item.added``,
``response.content_part.added``, one ``response.output_text.delta`` per token,
``response.output_text.done``, ``response.content_part.done``, ``response.output_item.done``,
``response.completed`` (the whole response, with ``usage``); each event carries its ``type``
and a ``sequence_number``, and there is no ``[DONE]``. A forced tool (services/llmsim/tools.py)
answers with one ``function_call`` item. Faults: 429, 500 and hang as for chat; drift too.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from services.llmsim import latency, tokens
from services.llmsim.answers import compose_answer, degrade
from services.llmsim.completions import BadRequest, read_request
from services.llmsim.drift import variant_of
from services.llmsim.errors import openai_error
from services.llmsim.faults import (
    FAULT_HEADER,
    Fault,
    FaultHeaderError,
    HangEnd,
    Target,
    hang_ended,
    rate_limited,
    server_error,
    wait_while_connected,
)
from services.llmsim.keys import STATE
from services.llmsim.prompt import chat_view
from services.llmsim.state import SimulatorState, utc_now
from services.llmsim.streaming import pause
from services.llmsim.tools import call_arguments, forced_function
from shared import sse


class ResponsesRequest(BaseModel):
    """The fields llmsim reads; any other field is accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, min_length=1, max_length=256)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    stream: bool = False
    max_output_tokens: int | None = Field(None, ge=1)
    tools: list[Any] | None = None
    tool_choice: Any = None
    metadata: dict[str, Any] | None = None
    user: str | None = None


def _part_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "\n".join(p["text"] for p in content if isinstance(p, dict) and p.get("type") in ("input_text", "output_text",
                     "text") and isinstance(p.get("text"), str))


def input_messages(body: ResponsesRequest) -> list[tuple[str, str]]:
    """(role, text) of the instructions and every message item of ``input``."""
    texts: list[tuple[str, str]] = [("system", body.instructions)] if body.instructions else []
    if isinstance(body.input, str):
        return [*texts, ("user", body.input)]
    for item in body.input:
        if item.get("type", "message") == "message" and isinstance(item.get("role"), str):
            role = "system" if item["role"] == "developer" else item["role"]
            texts.append((role, _part_text(item.get("content"))))
    return texts


def _response(body: ResponsesRequest, response_id: str, created: int, status: str, output: list[dict[str, Any]],
              usage: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": response_id, "object": "response", "created_at": created, "status": status, "error": None,
        "incomplete_details": None, "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
        "model": body.model or "", "output": output, "parallel_tool_calls": True, "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None}, "store": False, "temperature": 1.0,
        "text": {"format": {"type": "text"}}, "tool_choice": body.tool_choice or "auto", "tools": body.tools or [],
        "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": body.user, "metadata": body.metadata or {},
    }


def _usage(prompt_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {"input_tokens": prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt_tokens + output_tokens}


def _message(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status == "completed" else []
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


async def responses(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        body: ResponsesRequest = await read_request(request, ResponsesRequest)
        pace = latency.with_header(state.latency, request.headers.get(latency.LATENCY_HEADER))
        fault = state.faults.choose(request.headers.get(FAULT_HEADER), body.model or "", Target.CHAT)
    except (BadRequest, FaultHeaderError, latency.LatencyHeaderError) as exc:
        state.counters["bad_requests"] += 1
        return openai_error(400, str(exc), param=getattr(exc, "param", None))
    state.counters["requests"] += 1
    state.counters["responses_requests"] += 1
    if fault is not None:
        state.counters[f"faults_{fault.value}"] += 1
    if fault is Fault.RATE_LIMIT:
        return rate_limited(state.section.faults.retry_after_seconds)
    if fault is Fault.SERVER_ERROR:
        return server_error()
    if fault is Fault.HANG:
        end = await wait_while_connected(request, state.stopping, state.section.faults.hang_cap_seconds)
        state.counters[f"hangs_ended_{end.value}"] += 1
        return hang_ended() if end is HangEnd.CAP else web.Response(status=499, text="client gone")

    texts = input_messages(body)
    prompt_tokens = tokens.count_prompt_tokens([t for _, t in texts])
    response_id, created = f"resp_{uuid.uuid4().hex}", int(time.time())
    headers = {"x-llmsim-mode": "chat", "x-request-id": uuid.uuid4().hex}
    function = forced_function(body.tools, body.tool_choice)
    if function is not None:
        question = next((t for role, t in reversed(texts) if role == "user"), "")
        arguments = call_arguments(question)
        call = {"type": "function_call", "id": f"fc_{uuid.uuid4().hex}", "call_id": f"call_{uuid.uuid4().hex[:24]}",
                "name": function, "arguments": arguments, "status": "completed"}
        whole = _response(body, response_id, created, "completed", [call],
                          _usage(prompt_tokens, tokens.count_tokens(arguments)))
        if not body.stream:
            return web.json_response(whole, headers=headers)
        events: list[tuple[str, dict[str, Any]]] = [("response.created", {"response": _response(body, response_id, created, "in_progress", [], None)}),
                  ("response.output_item.added", {"output_index": 0, "item": {**call, "arguments": ""}}),
                  ("response.function_call_arguments.delta", {"item_id": call["id"], "output_index": 0,
                                                               "delta": arguments}),
                  ("response.function_call_arguments.done", {"item_id": call["id"], "output_index": 0,
                                                              "arguments": arguments}),
                  ("response.output_item.done", {"output_index": 0, "item": call}),
                  ("response.completed", {"response": whole})]
        return await _send_events(request, headers, [_event(name, i, data) for i, (name, data) in enumerate(events)])

    variant = variant_of(request.headers, body.metadata, body.user)
    level = state.drift.level(variant, utc_now())
    view = chat_view(texts)
    text = degrade(compose_answer(view, state.section.answer_tokens), level, view.question)
    headers.update({"x-llmsim-variant": variant, "x-llmsim-drift-level": f"{level:g}"})
    cut = False
    if body.max_output_tokens is not None:
        text, cut = tokens.truncate(text, body.max_output_tokens)
    item_id = f"msg_{uuid.uuid4().hex}"
    status = "incomplete" if cut else "completed"
    whole = _response(body, response_id, created, status, [_message(item_id, text, "completed")],
                      _usage(prompt_tokens, tokens.count_tokens(text)))
    if cut:
        whole["incomplete_details"] = {"reason": "max_output_tokens"}
    if not body.stream:
        await pause(state, latency.first_token_delay(pace, state.rng) + tokens.count_tokens(text) / pace.tokens_per_second)
        return web.json_response(whole, headers=headers)
    return await _stream_text(request, state, pace, body, whole, item_id, text, headers)


def _event(name: str, sequence: int, data: dict[str, Any]) -> bytes:
    return sse.frame(json.dumps({"type": name, "sequence_number": sequence, **data}, separators=(",", ":")),
                     event=name)


async def _send_events(request: web.Request, headers: dict[str, str], events: list[bytes]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": sse.MEDIA_TYPE, "Cache-Control": "no-cache", **headers})
    await response.prepare(request)
    for event in events:
        await response.write(event)
    await response.write_eof()
    return response


async def _stream_text(request: web.Request, state: SimulatorState, pace: Any, body: ResponsesRequest,
                       whole: dict[str, Any], item_id: str, text: str, headers: dict[str, str]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": sse.MEDIA_TYPE, "Cache-Control": "no-cache", **headers})
    await response.prepare(request)
    state.streams_in_flight += 1
    sequence = 0

    async def send(name: str, data: dict[str, Any]) -> None:
        nonlocal sequence
        await response.write(_event(name, sequence, data))
        sequence += 1

    place = {"item_id": item_id, "output_index": 0, "content_index": 0}
    started = _response(body, whole["id"], whole["created_at"], "in_progress", [], None)
    loop = asyncio.get_running_loop()
    try:
        await send("response.created", {"response": started})
        await send("response.in_progress", {"response": started})
        if not await pause(state, latency.first_token_delay(pace, state.rng)):
            return response
        await send("response.output_item.added", {"output_index": 0, "item": _message(item_id, "", "in_progress")})
        await send("response.content_part.added", {**place, "part": {"type": "output_text", "text": "",
                                                                       "annotations": []}})
        due = loop.time()
        for piece in tokens.pieces(text):
            due += latency.token_delay(pace, state.rng) * max(1, tokens.count_tokens(piece))
            wait = due - loop.time()
            if wait >= 0.001 and not await pause(state, wait):
                return response
            await send("response.output_text.delta", {**place, "delta": piece, "logprobs": []})
        await send("response.output_text.done", {**place, "text": text, "logprobs": []})
        await send("response.content_part.done", {**place, "part": whole["output"][0]["content"][0]})
        await send("response.output_item.done", {"output_index": 0, "item": whole["output"][0]})
        final = "response.incomplete" if whole["status"] == "incomplete" else "response.completed"
        await send(final, {"response": whole})
        await response.write_eof()
    except ConnectionResetError:
        state.counters["streams_abandoned_by_client"] += 1
    finally:
        state.streams_in_flight -= 1
    return response
