"""Reading an upstream SSE stream as it is relayed: events cut at blank lines, each read once.

:class:`EventSplitter` turns the bytes of each network read into whole events (a partial event
waits for the next read), so the relay forwards what arrived, event-aligned, without waiting
for the stream to end. :class:`StreamAccumulator` reads each event's JSON on the way through:
chat and completion chunks (text and tool-call deltas per choice, ``usage`` from the
``include_usage`` chunk) and the Responses API's typed events (``response.output_text.delta``,
the final ``response.completed``/``incomplete``/``failed`` with the whole response and its
usage). It says which text delta is the judged choice's (token chunks) and whether to drop an
event the client did not ask for (the usage chunk the proxy requested itself).
"""

from __future__ import annotations

import json
from typing import Any

from services.gateway.routes.proxy.mapping import (
    Choice,
    Usage,
    as_dict,
    as_int,
    response_choice,
    usage_of,
)
from shared.upstream import COMPLETIONS, RESPONSES

_FINAL_RESPONSE_EVENTS = {"response.completed", "response.incomplete", "response.failed"}


class EventSplitter:
    """Bytes in, whole SSE events (each with its terminating blank line) out."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[bytes]:
        if b"\r" in data:  # CRLF line ends: one spelling, so a blank line is always b"\n\n"
            data = data.replace(b"\r\n", b"\n")
        buffer = self._pending + data
        events = buffer.split(b"\n\n")
        self._pending = events.pop()
        return [event + b"\n\n" for event in events if event.strip()]

    def rest(self) -> bytes:
        """What is left when the stream ends (an event without its blank line)."""
        rest, self._pending = self._pending, b""
        return rest


def event_data(event: bytes) -> str | None:
    """The ``data`` of one event (its lines joined), None when it has none."""
    # The usual event, one ``data: `` line and the blank line (every chunk of OpenAI's streams):
    # sliced out, without splitting it into lines (~12 events per streamed answer).
    if event.startswith(b"data: ") and event.find(b"\n") == len(event) - 2 and event.endswith(b"\n\n"):
        return event[6:-2].decode("utf-8", errors="replace")
    lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines).decode("utf-8", errors="replace") if lines else None


class StreamAccumulator:
    """What one streamed answer said so far: every choice, usage, model, the final response."""

    def __init__(self, api: str, *, drop_usage_chunk: bool) -> None:
        self.api = api
        self.drop_usage_chunk = drop_usage_chunk
        self.choices: dict[int, Choice] = {}
        self._texts: dict[int, list[str]] = {}
        self._calls: dict[tuple[int, int], list[str]] = {}  # (choice, call index) -> [name, arguments]
        self.usage: Usage | None = None
        self.model: str | None = None
        self.final: dict[str, Any] | None = None  # Responses: the response of the last event
        self.unreadable = 0  # events whose data is not JSON, relayed as they are

    def feed(self, event: bytes) -> tuple[str | None, bool]:
        """(the judged choice's text delta in this event or None, whether to forward the event)."""
        data = event_data(event)
        if data is None or data == "[DONE]":
            return None, True
        try:
            chunk = json.loads(data)
        except ValueError:
            self.unreadable += 1
            return None, True
        if not isinstance(chunk, dict):
            return None, True
        if self.api == RESPONSES:
            return self._responses_event(chunk), True
        return self._chunk(chunk)

    def _responses_event(self, event: dict[str, Any]) -> str | None:
        kind = event.get("type")
        response = event.get("response")
        if isinstance(response, dict):
            if isinstance(response.get("model"), str):
                self.model = response["model"]
            if kind in _FINAL_RESPONSE_EVENTS:
                self.final = response
                self.usage = usage_of(RESPONSES, response.get("usage"))
        if kind == "response.output_text.delta" and isinstance(event.get("delta"), str):
            self._texts.setdefault(0, []).append(event["delta"])
            return str(event["delta"])
        return None

    def _chunk(self, chunk: dict[str, Any]) -> tuple[str | None, bool]:
        model = chunk.get("model")
        if isinstance(model, str) and model:
            self.model = model
        choices = chunk.get("choices")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage_of(self.api, usage)
            if self.drop_usage_chunk and not choices:
                return None, False  # asked for by the proxy, not by the client
        if not isinstance(choices, list):
            return None, True
        judged: str | None = None
        completions = self.api == COMPLETIONS
        for raw in choices:
            if not isinstance(raw, dict):
                continue
            index = as_int(raw.get("index"), 0)
            choice = self.choices.get(index)
            if choice is None:  # not setdefault(index, Choice()): a Choice per chunk, mostly thrown away
                choice = self.choices[index] = Choice()
            finish_reason = raw.get("finish_reason")
            if isinstance(finish_reason, str):
                choice.finish_reason = finish_reason
            if completions:
                text = raw.get("text")
            else:
                delta = as_dict(raw.get("delta"))
                text = delta.get("content")
                for call in delta.get("tool_calls") or []:
                    self._tool_call_delta(index, call)
            if isinstance(text, str) and text:
                self._texts.setdefault(index, []).append(text)
                if index == 0:
                    judged = text
        return judged, True

    def _tool_call_delta(self, choice: int, call: Any) -> None:
        if not isinstance(call, dict):
            return
        position = as_int(call.get("index"), 0)
        entry = self._calls.setdefault((choice, position), ["", ""])
        function = as_dict(call.get("function"))
        name, arguments = function.get("name"), function.get("arguments")
        if isinstance(name, str):
            entry[0] += name
        if isinstance(arguments, str):
            entry[1] += arguments

    def result(self) -> list[Choice]:
        """Every choice by index, as far as the stream went."""
        if self.api == RESPONSES and self.final is not None:
            return [response_choice(self.final)]
        indexes = sorted(set(self.choices) | set(self._texts) | {c for c, _ in self._calls})
        found: list[Choice] = []
        for index in indexes:
            choice = self.choices.get(index, Choice())
            texts = self._texts.get(index)
            choice.text = "".join(texts) if texts else None
            choice.tool_calls = [{"name": name, "arguments": arguments}
                                 for (c, _), (name, arguments) in sorted(self._calls.items()) if c == index]
            found.append(choice)
        return found
