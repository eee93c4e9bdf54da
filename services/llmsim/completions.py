"""``POST /v1/chat/completions``: read the request, decide chat or judge, inject faults, answer."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterable
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.llmsim import latency, tokens
from services.llmsim.answers import compose_answer, degrade
from services.llmsim.drift import variant_of
from services.llmsim.errors import openai_error
from services.llmsim.faults import (
    FAULT_HEADER,
    Fault,
    FaultHeaderError,
    HangEnd,
    Target,
    hang_ended,
    malformed_body,
    rate_limited,
    server_error,
    wait_while_connected,
)
from services.llmsim.judge import UNPARSEABLE_VERDICT, judge, read_judge_request, render
from services.llmsim.keys import STATE
from services.llmsim.prompt import chat_view, message_text
from services.llmsim.state import SimulatorState, utc_now
from services.llmsim.streaming import DONE, Completion, _event, pause, stream
from services.llmsim.tools import call_arguments, forced_function

MODE_HEADER = "x-llmsim-mode"
ECHO_HEADER = "x-llmsim-echo"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str = Field(min_length=1)
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"]


class ChatCompletionRequest(BaseModel):
    """The fields llmsim reads; any other OpenAI field is accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=8, description="choices: the same answer n times (one when streamed)")
    user: str | None = None
    metadata: dict[str, Any] | None = None
    response_format: ResponseFormat | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


_Body = TypeVar("_Body", bound=BaseModel)


async def read_request(request: web.Request, model_class: type[_Body]) -> _Body:
    """The JSON body as ``model_class`` (every llmsim route's: chat, completions, embeddings)."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    try:
        parsed = model_class.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"])
        raise BadRequest(f"{param}: {first['msg']}", param) from None
    deployment = request.match_info.get("deployment")
    if getattr(parsed, "model", None) is None and deployment:
        # Azure OpenAI names the model by its deployment in the path; the body may omit it.
        parsed.model = deployment  # type: ignore[attr-defined]
    if getattr(parsed, "model", None) is None:
        raise BadRequest("model: Field required", "model")
    return parsed


def _flag(request: web.Request, name: str, default: bool) -> bool:
    value = request.headers.get(name, "").strip().lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise BadRequest(f"{name}: {value!r} is not one of 1, 0, true, false")


def _forced_mode(request: web.Request) -> str | None:
    value = request.headers.get(MODE_HEADER, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in ("chat", "judge"):
        raise BadRequest(f"{MODE_HEADER}: {value!r} is not one of auto, chat, judge")
    return value


def _chat_answer(
    state: SimulatorState,
    request: web.Request,
    chat: ChatCompletionRequest,
    texts: list[tuple[str, str]],
) -> tuple[str, dict[str, str]]:
    view = chat_view(texts)
    variant = variant_of(request.headers, chat.metadata, chat.user)
    level = state.drift.level(variant, utc_now())
    answer = degrade(compose_answer(view, state.section.answer_tokens), level, view.question)
    return answer, {"x-llmsim-variant": variant, "x-llmsim-drift-level": f"{level:g}"}


# "name": in a JSON object the prompt shows as the reply's shape ({"score": 5, "reason": ...}).
_EXAMPLE_OBJECT = re.compile(r"\{[^{}]{0,400}\}")
_EXAMPLE_KEY = re.compile(r'"([A-Za-z_][A-Za-z0-9_]{0,63})"\s*:')


def json_keys(texts: Iterable[str]) -> list[str]:
    """The fields of a JSON answer: those of the last example object in the prompt, else answer."""
    keys: list[str] = []
    for text in texts:
        for example in _EXAMPLE_OBJECT.findall(text):
            found = _EXAMPLE_KEY.findall(example)
            if found:
                keys = list(dict.fromkeys(found))
    return keys or ["answer"]


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        chat = await read_request(request, ChatCompletionRequest)
        if chat.stream and chat.n > 1:
            raise BadRequest("n: llmsim streams one choice; ask for several without stream", "n")
        pace = latency.with_header(state.latency, request.headers.get(latency.LATENCY_HEADER))
        forced = _forced_mode(request)
        echo = _flag(request, ECHO_HEADER, state.judge_echo)
        texts = [(m.role, message_text(m.content)) for m in chat.messages]
        wants_json = chat.response_format is not None and chat.response_format.type != "text"
        judged = None
        if forced != "chat":
            judged = read_judge_request(
                "\n\n".join(t for _, t in texts), wants_json=wants_json, forced=forced == "judge"
            )
        mode = Target.JUDGE if judged else Target.CHAT
        fault = state.faults.choose(request.headers.get(FAULT_HEADER), chat.model or "", mode)
    except (BadRequest, FaultHeaderError, latency.LatencyHeaderError) as exc:
        state.counters["bad_requests"] += 1
        return openai_error(400, str(exc), param=getattr(exc, "param", None))

    state.counters["requests"] += 1
    state.counters[f"{mode.value}_requests"] += 1
    if fault is not None:
        state.counters[f"faults_{fault.value}"] += 1
    if fault is Fault.RATE_LIMIT:
        return rate_limited(state.section.faults.retry_after_seconds)
    if fault is Fault.SERVER_ERROR:
        return server_error()
    if fault is Fault.HANG and not chat.stream:
        end = await wait_while_connected(
            request, state.stopping, state.section.faults.hang_cap_seconds
        )
        state.counters[f"hangs_ended_{end.value}"] += 1
        if end is HangEnd.CAP:
            return hang_ended()
        # Nobody reads this (nginx's "client closed request" code marks it in the access log).
        return web.Response(status=499, text="client gone")

    headers = {"x-llmsim-mode": mode.value, "x-request-id": uuid.uuid4().hex}
    function = forced_function(chat.tools, chat.tool_choice) if judged is None else None
    if function is not None:
        question = next((t for role, t in reversed(texts) if role == "user"), "")
        return await _tool_call(request, chat, function, call_arguments(question),
                                tokens.count_prompt_tokens([t for _, t in texts]), headers)
    if fault is Fault.UNPARSEABLE:
        content = UNPARSEABLE_VERDICT
    elif judged is not None:
        content = render(judge(judged), judged, echo=echo)
    else:
        content, drift_headers = _chat_answer(state, request, chat, texts)
        headers.update(drift_headers)
        if wants_json:
            content = json.dumps(dict.fromkeys(json_keys(t for _, t in texts), content))
    limit = chat.max_completion_tokens or chat.max_tokens
    cut = False
    if limit is not None:
        content, cut = tokens.truncate(content, limit)
    completion = Completion(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=chat.model or "",
        content=content,
        finish_reason="length" if cut else "stop",
        prompt_tokens=tokens.count_prompt_tokens([t for _, t in texts]),
        completion_tokens=tokens.count_tokens(content),
        choices=chat.n,
    )
    if chat.stream:
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        return await stream(
            request,
            state,
            completion,
            pace=pace,
            include_usage=include_usage,
            hang=fault is Fault.HANG,
            malformed=fault is Fault.MALFORMED,
            headers=headers,
        )
    if fault is Fault.MALFORMED:
        return malformed_body()
    delay = (
        latency.first_token_delay(pace, state.rng)
        + completion.completion_tokens / pace.tokens_per_second
    )
    await pause(state, delay)
    return web.json_response(completion.as_body(), headers=headers)


async def _tool_call(request: web.Request, chat: ChatCompletionRequest, function: str, arguments: str,
                     prompt_tokens: int, headers: dict[str, str]) -> web.StreamResponse:
    """An answer that is only a function call (services/llmsim/tools.py says when)."""
    call = {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": function, "arguments": arguments}}
    completion_tokens = tokens.count_tokens(arguments)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": chat.model or "",
            "system_fingerprint": "llmsim"}
    if not chat.stream:
        message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
        return web.json_response({**base, "object": "chat.completion", "usage": usage, "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}]}, headers=headers)
    include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
    chunk = {**base, "object": "chat.completion.chunk"}
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **headers})
    await response.prepare(request)
    delta = {"role": "assistant", "content": None, "tool_calls": [{"index": 0, **call}]}
    for choice in ({"index": 0, "delta": delta, "logprobs": None, "finish_reason": None},
                   {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}):
        await response.write(_event({**chunk, "choices": [choice]}))
    if include_usage:
        await response.write(_event({**chunk, "choices": [], "usage": usage}))
    await response.write(DONE)
    await response.write_eof()
    return response
