"""Test doubles for the flow runtime's unit tests: a fake ``openai`` chat client and flow writers.

The fake answers with real ``openai`` response types (ChatCompletion, ChatCompletionChunk), so
the runtime reads exactly the shapes the real client returns. Integration tests use llmsim and
the real client instead.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from openai.types.chat import ChatCompletion, ChatCompletionChunk
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "flows"
STANDARD_FLOW = FIXTURES / "standard"
CHAT_FLOW = FIXTURES / "chat"


def last_user_message(request: dict[str, Any]) -> str:
    return [m["content"] for m in request["messages"] if m["role"] == "user"][-1]


class FakeStream:
    """An ``AsyncStream`` look-alike: chunks, then a usage chunk; records whether it was closed."""

    def __init__(self, fake: FakeChatClient, request: dict[str, Any], pieces: list[str]) -> None:
        self.fake = fake
        self.request = request
        self.pieces = pieces
        self.closed = False
        self.cancelled = False

    async def __aenter__(self) -> FakeStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.closed = True

    async def __aiter__(self) -> Any:
        model = self.request["model"]
        try:
            for index, piece in enumerate(self.pieces):
                if index == 1 and self.fake.gate is not None:
                    await self.fake.gate.wait()  # the test decides when the rest may come
                yield _chunk(model, {"content": piece}, None)
            yield _chunk(model, {}, "stop")
            if (self.request.get("stream_options") or {}).get("include_usage"):
                yield ChatCompletionChunk.model_validate(
                    {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
                     "choices": [], "usage": self.fake.usage_of(self.request)}
                )
        except asyncio.CancelledError:
            self.cancelled = True
            raise


def _chunk(model: str, delta: dict[str, Any], finish: str | None) -> ChatCompletionChunk:
    return ChatCompletionChunk.model_validate(
        {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    )


class FakeChatClient:
    """``client.chat.completions.create`` answering from ``answer(request)``.

    ``before_answer``: awaited on every call (tests use it to record events or hold calls).
    ``gate``: when set, a stream stops after its first piece until the event is set.
    """

    def __init__(
        self,
        answer: Callable[[dict[str, Any]], str] | str = "The answer [1].",
        *,
        before_answer: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
        error: Exception | None = None,
        gate: asyncio.Event | None = None,
    ) -> None:
        self.answer = answer if callable(answer) else (lambda _request, text=answer: text)
        self.before_answer = before_answer
        self.error = error
        self.gate = gate
        self.requests: list[dict[str, Any]] = []
        self.streams: list[FakeStream] = []
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))

    def usage_of(self, request: dict[str, Any]) -> dict[str, int]:
        prompt = sum(len(str(m["content"]).split()) for m in request["messages"])
        completion = len(self.answer(request).split())
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def _create(self, **request: Any) -> Any:
        self.requests.append(request)
        if self.before_answer is not None:
            await self.before_answer(request)
        if self.error is not None:
            raise self.error
        text = self.answer(request)
        if request.get("stream"):
            words = text.split(" ")
            pieces = [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
            stream = FakeStream(self, request, pieces)
            self.streams.append(stream)
            return stream
        return ChatCompletion.model_validate(
            {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": request["model"] + "-0613",
             "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
             "usage": self.usage_of(request)}
        )


def write_flow(folder: Path, dag: str, files: dict[str, str] | None = None) -> Path:
    """A flow folder from a flow.dag.yaml text and its files (dedented)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flow.dag.yaml").write_text(textwrap.dedent(dag), encoding="utf-8")
    for name, text in (files or {}).items():
        (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


def span_recorder() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


CHAT_TEMPLATE = """\
system:
You are terse.
user:
{{question}}
"""
