"""Coalescing streamed tokens into token-chunk events, by count or by time.

An LLM streams one delta per token or so; one event per delta would make a long answer
thousands of events, and each event costs every hop (encode, Kafka, consumers) about the same
whatever its size. Buffering up to ``max_tokens`` tokens, or until the oldest buffered token is
``max_interval`` seconds old, makes it tens. The time rule is checked when a delta arrives (no
timer task per request): a stream that pauses holds its buffer until the next delta or the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.events.builders import next_meta
from shared.events.messages import EventMeta, TokenChunk


@dataclass(frozen=True, slots=True)
class CoalescedChunk:
    """Consecutive deltas of one streamed output, numbered for ordering and gap detection."""

    sequence: int
    token_offset: int
    token_count: int
    text: str

    def to_event(self, meta: EventMeta, output: str) -> TokenChunk:
        """A TokenChunk about the request ``meta`` describes, with a fresh event id and time."""
        return TokenChunk(
            meta=next_meta(meta),
            output=output,
            sequence=self.sequence,
            token_offset=self.token_offset,
            token_count=self.token_count,
            text=self.text,
        )


class TokenCoalescer:
    """Buffers one request's deltas; :meth:`add` and :meth:`flush` return chunks ready to publish."""

    def __init__(
        self,
        *,
        max_tokens: int = 32,
        max_interval: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if max_interval < 0:
            raise ValueError("max_interval must not be negative")
        self._max_tokens = max_tokens
        self._max_interval = max_interval
        self._clock = clock
        self._parts: list[str] = []
        self._tokens = 0
        self._first_at = 0.0
        self._sequence = 0
        self._offset = 0

    @property
    def buffered_tokens(self) -> int:
        return self._tokens

    def add(self, text: str, tokens: int = 1) -> CoalescedChunk | None:
        """Buffer a delta; returns a chunk when the buffer is full or old enough."""
        if tokens < 0:
            raise ValueError("tokens must not be negative")
        if not text and tokens == 0:
            return None
        now = self._clock()
        if not self._parts and self._tokens == 0:
            self._first_at = now
        self._parts.append(text)
        self._tokens += tokens
        if self._tokens >= self._max_tokens or now - self._first_at >= self._max_interval:
            return self.flush()
        return None

    def flush(self) -> CoalescedChunk | None:
        """Whatever is buffered as a chunk (None if nothing): call at the end of the stream."""
        if not self._parts:
            return None
        chunk = CoalescedChunk(self._sequence, self._offset, self._tokens, "".join(self._parts))
        self._sequence += 1
        self._offset += self._tokens
        self._parts.clear()
        self._tokens = 0
        return chunk
