"""Server-sent events in the shape of OpenAI's chat completion chunks, paced by the latency model."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from services.llmsim import latency, tokens
from services.llmsim.faults import MALFORMED_EVENT, wait_while_connected
from services.llmsim.settings import LatencyModel
from services.llmsim.state import SimulatorState
from shared import sse

DONE = sse.frame("[DONE]")
# Below this, sleeping costs more than it simulates; the debt is carried to the next token.
_MIN_SLEEP_SECONDS = 0.001


@dataclass(frozen=True)
class Completion:
    """One finished simulated completion, ready to be sent whole or as a stream."""

    id: str
    created: int
    model: str
    content: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    choices: int = 1  # ``n``: the same answer this many times (whole answers only)

    def usage(self) -> dict[str, int]:
        completion = self.completion_tokens * self.choices
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def as_body(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "llmsim",
            "choices": [
                {
                    "index": index,
                    "message": {"role": "assistant", "content": self.content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                }
                for index in range(self.choices)
            ],
            "usage": self.usage(),
        }

    def chunk(
        self, delta: dict[str, Any], finish_reason: str | None, *, with_usage_field: bool
    ) -> bytes:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "llmsim",
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if with_usage_field:
            # OpenAI sends "usage": null on every chunk but the last when include_usage is set.
            body["usage"] = None
        return _event(body)

    def usage_chunk(self) -> bytes:
        return _event(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": "llmsim",
                "choices": [],
                "usage": self.usage(),
            }
        )


def _event(body: dict[str, Any]) -> bytes:
    # OpenAI's own spelling: compact, non-ASCII escaped, no event name (not sse.json_frame's).
    return sse.frame(json.dumps(body, separators=(",", ":")))


async def pause(state: SimulatorState, seconds: float) -> bool:
    """Sleep ``seconds`` unless the server starts stopping first; False when it does."""
    if seconds <= 0:
        return not state.stopping.is_set()
    try:
        await asyncio.wait_for(state.stopping.wait(), timeout=seconds)
        return False
    except TimeoutError:
        return True


async def stream(
    request: web.Request,
    state: SimulatorState,
    completion: Completion,
    *,
    pace: LatencyModel,
    include_usage: bool,
    hang: bool = False,
    malformed: bool = False,
    headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": sse.MEDIA_TYPE,
            "Cache-Control": "no-cache",
            **(headers or {}),
        }
    )
    await response.prepare(request)
    state.streams_in_flight += 1
    loop = asyncio.get_running_loop()
    try:
        if not await pause(state, latency.first_token_delay(pace, state.rng)):
            return response
        await response.write(
            completion.chunk(
                {"role": "assistant", "content": ""}, None, with_usage_field=include_usage
            )
        )
        if malformed:
            await response.write(MALFORMED_EVENT)
            await response.write(DONE)
            return response
        if hang:
            # The stream started (so time to first token is seen) and then never finishes.
            end = await wait_while_connected(
                request, state.stopping, state.section.faults.hang_cap_seconds
            )
            state.counters[f"hangs_ended_{end.value}"] += 1
            return response
        due = loop.time()
        for piece in tokens.pieces(completion.content):
            due += latency.token_delay(pace, state.rng) * max(1, tokens.count_tokens(piece))
            wait = due - loop.time()
            if wait >= _MIN_SLEEP_SECONDS and not await pause(state, wait):
                return response
            await response.write(
                completion.chunk({"content": piece}, None, with_usage_field=include_usage)
            )
        await response.write(
            completion.chunk({}, completion.finish_reason, with_usage_field=include_usage)
        )
        if include_usage:
            await response.write(completion.usage_chunk())
        await response.write(DONE)
        await response.write_eof()
    except ConnectionResetError:  # aiohttp's ClientConnectionResetError included
        state.counters["streams_abandoned_by_client"] += 1
    finally:
        state.streams_in_flight -= 1
    return response
