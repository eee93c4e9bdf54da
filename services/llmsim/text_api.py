"""``POST /v1/completions`` (the legacy text completions API) and ``POST /v1/embeddings``.

Prompt flow's ``api: completion`` llm nodes, Python nodes calling ``client.completions.create``
and the ``promptflow.tools.embedding`` tool call these. The answer is composed as a chat answer
to the prompt as one user message; an embedding is a deterministic unit vector derived from a
hash of the input text, so equal texts get equal vectors. Faults and drift are chat-only.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from services.llmsim import latency, tokens
from services.llmsim.answers import compose_answer
from services.llmsim.completions import BadRequest, read_request
from services.llmsim.errors import openai_error
from services.llmsim.keys import STATE
from services.llmsim.prompt import chat_view
from services.llmsim.streaming import Completion, _event, pause, stream

EMBEDDING_DIMENSIONS = 1536  # text-embedding-ada-002's, the model prompt flow's examples name


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class TextCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, min_length=1, max_length=256)
    prompt: str | list[str]
    stream: bool = False
    stream_options: _StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=1, description="llmsim answers with one choice")


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, min_length=1, max_length=256)
    input: str | list[str] = Field(min_length=1)
    encoding_format: str = Field("float", pattern="^(float|base64)$")
    dimensions: int | None = Field(None, ge=1, le=EMBEDDING_DIMENSIONS)




@dataclass(frozen=True)
class TextCompletion(Completion):
    """A completion in the legacy API's shape: ``choices[].text`` instead of a message."""

    def as_body(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"text": self.content, "index": 0, "logprobs": None, "finish_reason": self.finish_reason}],
            "usage": self.usage(),
        }

    def chunk(self, delta: dict[str, Any], finish_reason: str | None, *, with_usage_field: bool) -> bytes:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"text": delta.get("content", ""), "index": 0, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if with_usage_field:
            body["usage"] = None
        return _event(body)

    def usage_chunk(self) -> bytes:
        return _event({"id": self.id, "object": "text_completion", "created": self.created,
                       "model": self.model, "choices": [], "usage": self.usage()})


async def completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        body: TextCompletionRequest = await read_request(request, TextCompletionRequest)
        pace = latency.with_header(state.latency, request.headers.get(latency.LATENCY_HEADER))
    except (BadRequest, latency.LatencyHeaderError) as exc:
        state.counters["bad_requests"] += 1
        return openai_error(400, str(exc), param=getattr(exc, "param", None))
    state.counters["requests"] += 1
    state.counters["completion_requests"] += 1
    prompt = body.prompt if isinstance(body.prompt, str) else "\n".join(body.prompt)
    content = compose_answer(chat_view([("user", prompt)]), state.section.answer_tokens)
    cut = False
    if body.max_tokens is not None:
        content, cut = tokens.truncate(content, body.max_tokens)
    completion = TextCompletion(
        id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=body.model or "", content=content,
        finish_reason="length" if cut else "stop", prompt_tokens=tokens.count_tokens(prompt),
        completion_tokens=tokens.count_tokens(content),
    )
    headers = {"x-llmsim-mode": "completion", "x-request-id": uuid.uuid4().hex}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await stream(request, state, completion, pace=pace, include_usage=include_usage, headers=headers)
    await pause(state, latency.first_token_delay(pace, state.rng) + completion.completion_tokens / pace.tokens_per_second)
    return web.json_response(completion.as_body(), headers=headers)


def embed(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A deterministic unit vector for ``text`` (SHA-256 in counter mode, centred, normalised)."""
    raw = b"".join(hashlib.sha256(f"{i}\0{text}".encode()).digest() for i in range(math.ceil(dimensions / 32)))
    values = [b / 255.0 - 0.5 for b in raw[:dimensions]]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":  # what the openai package asks for by default: little-endian float32
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


async def embeddings(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        body: EmbeddingRequest = await read_request(request, EmbeddingRequest)
    except BadRequest as exc:
        state.counters["bad_requests"] += 1
        return openai_error(400, str(exc), param=exc.param)
    state.counters["requests"] += 1
    state.counters["embedding_requests"] += 1
    texts = [body.input] if isinstance(body.input, str) else body.input
    dimensions = body.dimensions or EMBEDDING_DIMENSIONS
    data = [
        {"object": "embedding", "index": i, "embedding": _encoded(embed(text, dimensions), body.encoding_format)}
        for i, text in enumerate(texts)
    ]
    used = sum(tokens.count_tokens(text) for text in texts)
    return web.json_response({
        "object": "list", "data": data, "model": body.model,
        "usage": {"prompt_tokens": used, "total_tokens": used},
    })
