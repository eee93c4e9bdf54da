"""A gate every ``openai`` request made inside a block waits for, whichever client sends it.

A flex flow's entry builds its own ``openai`` client from a model configuration
(``OpenAI(base_url=model_config.base_url, ...)``, or through ``Prompty``), so no client handed out
by us can be gated the way llm nodes' clients are (their ``post``). What every client shares is
the openai package's base client: ``SyncAPIClient.request`` / ``AsyncAPIClient.request`` (one
call covers a request and its retries). They are wrapped once per process; a request checks a
context variable and, only inside :func:`openai_requests_gated`, first enters the gate (the
processor's judge slot). Everywhere else (the gateway's flows, the judges) nothing changes.

A sync entry runs in a worker thread (``asyncio.to_thread`` copies the context, so the variable is
seen there): its request enters the gate on the event loop the block was opened on and blocks
its own thread, never the loop, until it has a place.

Limits: a client of another SDK (``httpx`` by hand, ``requests``) is not gated; a streamed
response frees its place once its headers arrive; a request made by a thread the entry starts
itself without copying the context is not gated.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

Gate = Callable[[], AbstractAsyncContextManager[Any]]


@dataclass(frozen=True)
class _Gated:
    gate: Gate
    loop: asyncio.AbstractEventLoop


_current: ContextVar[_Gated | None] = ContextVar("promptpulse_openai_gate", default=None)
_wrapped = False
_wrap_lock = threading.Lock()


@contextmanager
def openai_requests_gated(gate: Gate) -> Iterator[None]:
    """While the block runs (and in threads it starts through ``asyncio.to_thread``), each
    ``openai`` request waits in ``gate()`` for as long as it is sent. Call it on the event loop."""
    _wrap_openai()
    token = _current.set(_Gated(gate, asyncio.get_running_loop()))
    try:
        yield
    finally:
        _current.reset(token)


def _wrap_openai() -> None:
    global _wrapped
    with _wrap_lock:
        if _wrapped:
            return
        from wrapt import wrap_function_wrapper

        wrap_function_wrapper("openai._base_client", "AsyncAPIClient.request", _async_request)
        wrap_function_wrapper("openai._base_client", "SyncAPIClient.request", _sync_request)
        _wrapped = True


async def _async_request(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    gated = _current.get()
    if gated is None:
        return await wrapped(*args, **kwargs)
    async with gated.gate():
        return await wrapped(*args, **kwargs)


def _sync_request(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    gated = _current.get()
    if gated is None:
        return wrapped(*args, **kwargs)
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is gated.loop:
        # A sync client called on the loop itself: waiting here would block the loop that must
        # free a place. It goes ungated (the entry already blocks the loop; prompt flow's own
        # sync entries run in threads here, see flex_executor).
        return wrapped(*args, **kwargs)
    manager = gated.gate()
    asyncio.run_coroutine_threadsafe(manager.__aenter__(), gated.loop).result()
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as exc:
        asyncio.run_coroutine_threadsafe(manager.__aexit__(type(exc), exc, exc.__traceback__), gated.loop).result()
        raise
    asyncio.run_coroutine_threadsafe(manager.__aexit__(None, None, None), gated.loop).result()
    return result


__all__ = ["Gate", "openai_requests_gated"]
