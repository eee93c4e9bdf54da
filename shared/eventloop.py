"""The event loop every service runs on: uvloop unless ``PROMPTPULSE_EVENT_LOOP=asyncio``.

Why uvloop: each service spends much of its CPU in the loop's own machinery (callbacks,
futures, socket reads and writes: faust's per-event path, aiohttp's per-request path), which
uvloop runs in C on libuv. Measured on the processor's stream, fresh processes, paired
(docs/processor.md, "Session 9"): a do-nothing faust agent ~31% less CPU per event, sample-and-join
~20% less. Nothing in the services depends on which loop runs them; ``asyncio`` stays selectable
for a platform uvloop does not support and for telling a loop problem from ours.

A policy rather than ``uvloop.run``: ``asyncio.run`` and aiohttp's ``web.run_app`` (which the
services call, some in worker processes of their own) both make their loop through it.
"""

from __future__ import annotations

import asyncio
from typing import Literal

EventLoopName = Literal["uvloop", "asyncio"]


def use_event_loop(name: EventLoopName) -> None:
    """Make every loop this process creates from now on a ``name`` loop."""
    if name == "uvloop":
        import uvloop  # imported here: a process that asks for asyncio never needs it

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(None)  # asyncio's default policy


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: which of the two ``loop`` is (what tests/unit/test_entrypoint.py checks)."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


__all__ = ["EventLoopName", "loop_name", "use_event_loop"]
