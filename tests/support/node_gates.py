"""Handshakes between a test and the flow code it runs: a flow's Python node imports this module
and waits on a gate the test opens, so ordering is asserted without timing anything."""

from __future__ import annotations

import asyncio
import threading

THREAD_GATES: dict[str, threading.Event] = {}
ASYNC_GATES: dict[str, asyncio.Event] = {}
# How long a gated node waits before giving up: only so a broken test fails instead of hanging.
GIVE_UP_SECONDS = 20
