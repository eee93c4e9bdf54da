"""Fault injection: which request fails how, and the failing answers themselves.

A request's fault comes from, in order: the ``x-llmsim-fault`` header (``none`` forbids one), a
``fault=<kind>`` marker in the model name, the control API's queue of counted faults, and the
fault rates (the control API's, else the configured ones).
"""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass, field
from enum import StrEnum

from aiohttp import web

from services.llmsim.errors import openai_error
from services.llmsim.settings import FaultRates

FAULT_HEADER = "x-llmsim-fault"
NO_FAULT = "none"
# How often a hanging handler looks whether its client has gone.
_HANG_POLL_SECONDS = 0.2


class Fault(StrEnum):
    RATE_LIMIT = "429"
    SERVER_ERROR = "500"
    HANG = "hang"
    MALFORMED = "malformed"
    UNPARSEABLE = "unparseable"


class Target(StrEnum):
    """Which calls a queued fault may hit."""

    ANY = "any"
    CHAT = "chat"
    JUDGE = "judge"


_MODEL_MARKER = re.compile(r"fault[=:](" + "|".join(f.value for f in Fault) + r")\b", re.IGNORECASE)


class FaultHeaderError(ValueError):
    """The x-llmsim-fault header names no known fault."""


def configured_rates(rates: FaultRates) -> dict[Fault, float]:
    return {
        Fault.RATE_LIMIT: rates.rate_429,
        Fault.SERVER_ERROR: rates.rate_500,
        Fault.HANG: rates.rate_hang,
        Fault.MALFORMED: rates.rate_malformed,
        Fault.UNPARSEABLE: rates.rate_unparseable,
    }


@dataclass
class QueuedFault:
    fault: Fault
    remaining: int
    target: Target


@dataclass
class FaultBoard:
    configured: FaultRates
    rng: random.Random
    queue: list[QueuedFault] = field(default_factory=list)
    rate_override: dict[Fault, float] | None = None

    def rates(self) -> dict[Fault, float]:
        if self.rate_override is not None:
            return dict(self.rate_override)
        return configured_rates(self.configured)

    def enqueue(self, fault: Fault, count: int, target: Target) -> None:
        self.queue.append(QueuedFault(fault, count, target))

    def clear(self) -> None:
        self.queue.clear()
        self.rate_override = None

    def _take_queued(self, mode: Target) -> Fault | None:
        for entry in self.queue:
            if entry.target in (Target.ANY, mode):
                entry.remaining -= 1
                if entry.remaining <= 0:
                    self.queue.remove(entry)
                return entry.fault
        return None

    def _draw(self) -> Fault | None:
        draw = self.rng.random()
        cumulative = 0.0
        for fault, rate in self.rates().items():
            cumulative += rate
            if draw < cumulative:
                return fault
        return None

    def choose(self, header: str | None, model: str, mode: Target) -> Fault | None:
        """The fault this request suffers, or None; consumes one use of a queued fault."""
        if header is not None and header.strip():
            value = header.strip().lower()
            if value == NO_FAULT:
                return None
            try:
                return Fault(value)
            except ValueError:
                known = ", ".join([*(f.value for f in Fault), NO_FAULT])
                raise FaultHeaderError(
                    f"{FAULT_HEADER}: {header!r} is not one of {known}"
                ) from None
        marker = _MODEL_MARKER.search(model)
        if marker:
            return Fault(marker.group(1).lower())
        return self._take_queued(mode) or self._draw()

    def snapshot(self) -> dict[str, object]:
        return {
            "rates": {fault.value: rate for fault, rate in self.rates().items()},
            "rates_overridden": self.rate_override is not None,
            "queue": [
                {"fault": e.fault.value, "remaining": e.remaining, "target": e.target.value}
                for e in self.queue
            ],
        }


def rate_limited(retry_after_seconds: int) -> web.Response:
    return openai_error(
        429,
        "Rate limit reached (simulated by llmsim).",
        error_type="requests",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(retry_after_seconds)},
    )


def server_error() -> web.Response:
    return openai_error(
        500, "The server had an error (simulated by llmsim).", error_type="server_error"
    )


class HangEnd(StrEnum):
    CLIENT_GONE = "client_gone"
    STOPPING = "stopping"
    CAP = "cap"


async def wait_while_connected(
    request: web.Request, stopping: asyncio.Event, cap_seconds: float
) -> HangEnd:
    """Block until the client leaves, the server stops, or ``cap_seconds`` pass; say which."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cap_seconds
    while (remaining := deadline - loop.time()) > 0:
        transport = request.transport
        if transport is None or transport.is_closing():
            return HangEnd.CLIENT_GONE
        try:
            await asyncio.wait_for(stopping.wait(), timeout=min(_HANG_POLL_SECONDS, remaining))
            return HangEnd.STOPPING
        except TimeoutError:
            continue
    return HangEnd.CAP


def hang_ended() -> web.Response:
    return openai_error(504, "Simulated hang reached hang_cap_seconds.", error_type="server_error")


# Cut mid-string on purpose: a JSON decoder must fail on it, whatever it tolerates.
MALFORMED_BODY = '{"id": "chatcmpl-malformed", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "trunc'
MALFORMED_EVENT = b'data: {"id": "chatcmpl-malformed", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "trunc\n\n'


def malformed_body() -> web.Response:
    return web.Response(status=200, content_type="application/json", text=MALFORMED_BODY)
