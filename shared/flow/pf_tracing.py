"""Stand-in for ``promptflow.tracing``: ``@trace`` makes a function call a span of the request's trace.

Flow code decorates its functions with ``@trace`` (sync, async, generator or async generator
functions, methods too). Inside a flow run, each call becomes a span ``{function qualname}``
(``promptpulse.trace.function``), a child of whatever span is current: the run's own span, or the
span of the traced function that called it, so nested calls nest. LLM calls made inside with the
``openai`` package are children of it (python_llm.py routes them to the run's tracer provider).
A generator's span lasts until the generator is exhausted or closed.

The call's inputs and output are recorded (``promptpulse.trace.inputs`` / ``.output``, JSON, key-
like tokens redacted, bounded) only where the run may keep texts: the same rule as captured prints
(node_output.py): never for a deployment with redaction fields, and only for a request whose texts
are kept (sampled for judging, or a batch run). Connections and model configurations appear as
their ``repr``, which masks keys. Outside a flow run (at import, in a unit test of the code) the
function runs unchanged. ``start_trace`` is accepted and does nothing: the gateway traces.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace as otel

from shared.flow import telemetry
from shared.logs import redact as redact_secrets

FUNCTION = "promptpulse.trace.function"
INPUTS = "promptpulse.trace.inputs"
OUTPUT = "promptpulse.trace.output"
MAX_CHARS = 4_000


@dataclass(frozen=True)
class TraceScope:
    """Where ``@trace`` spans of the running flow go, and whether they may hold its texts."""

    tracer: otel.Tracer
    record_values: bool


_scope: ContextVar[TraceScope | None] = ContextVar("promptpulse_trace_scope", default=None)


@contextmanager
def trace_scope(tracer: otel.Tracer, record_values: bool) -> Iterator[None]:
    token = _scope.set(TraceScope(tracer, record_values))
    try:
        yield
    finally:
        _scope.reset(token)


def _text(value: Any) -> str:
    try:
        text = json.dumps(value, default=repr, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    text = telemetry.redact(redact_secrets(text), limit=MAX_CHARS)
    return text


def _inputs(function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    try:
        bound = inspect.signature(function).bind_partial(*args, **kwargs)
    except (TypeError, ValueError):
        return {"args": list(args), **kwargs}
    return {k: v for k, v in bound.arguments.items() if k != "self"}


class _Call:
    """One traced call's span: started, made current around each step, ended once."""

    def __init__(self, scope: TraceScope, function: Callable[..., Any], name: str,
                 args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.scope = scope
        self.span = scope.tracer.start_span(name, attributes={FUNCTION: name})
        if scope.record_values:
            self.span.set_attribute(INPUTS, _text(_inputs(function, args, kwargs)))

    @contextmanager
    def current(self) -> Iterator[None]:
        with otel.use_span(self.span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            yield

    @contextmanager
    def ends_on_error(self) -> Iterator[None]:
        """A failure (or a consumer closing a generator early) ends the span, marked if it failed."""
        try:
            yield
        except BaseException as exc:
            if isinstance(exc, Exception):
                telemetry.record_error(self.span, type(exc).__name__, str(exc))
            self.end(has_output=False)
            raise

    def end(self, output: Any = None, *, has_output: bool = True) -> None:
        if self.scope.record_values and has_output:
            self.span.set_attribute(OUTPUT, _text(output))
        self.span.end()


def trace(func: Callable[..., Any] | None = None, **_options: Any) -> Any:
    """``@trace`` / ``@trace(...)``: the function's calls in a flow run are spans of its trace."""
    if func is None:
        return lambda f: trace(f)
    name = getattr(func, "__qualname__", getattr(func, "__name__", "function"))

    if inspect.isasyncgenfunction(func):
        @functools.wraps(func)
        def traced_async_gen(*args: Any, **kwargs: Any) -> Any:
            scope = _scope.get()
            if scope is None:
                return func(*args, **kwargs)
            # The span starts at the call, as the caller sees it, and lasts while the items are read.
            call = _Call(scope, func, name, args, kwargs)
            with call.current():
                return _async_items(call, func(*args, **kwargs))
        wrapper: Any = traced_async_gen
    elif inspect.iscoroutinefunction(func):
        @functools.wraps(func)
        async def traced_async(*args: Any, **kwargs: Any) -> Any:
            scope = _scope.get()
            if scope is None:
                return await func(*args, **kwargs)
            call = _Call(scope, func, name, args, kwargs)
            with call.ends_on_error(), call.current():
                result = await func(*args, **kwargs)
            call.end(result)
            return result
        wrapper = traced_async
    elif inspect.isgeneratorfunction(func):
        @functools.wraps(func)
        def traced_gen(*args: Any, **kwargs: Any) -> Any:
            scope = _scope.get()
            if scope is None:
                return func(*args, **kwargs)
            call = _Call(scope, func, name, args, kwargs)
            with call.current():
                return _items(call, func(*args, **kwargs))
        wrapper = traced_gen
    else:
        @functools.wraps(func)
        def traced(*args: Any, **kwargs: Any) -> Any:
            scope = _scope.get()
            if scope is None:
                return func(*args, **kwargs)
            call = _Call(scope, func, name, args, kwargs)
            with call.ends_on_error(), call.current():
                result = func(*args, **kwargs)
            if inspect.isgenerator(result) or inspect.isasyncgen(result):
                call.end("<generator>")  # its items are the caller's to read; the call itself is over
            else:
                call.end(result)
            return result
        wrapper = traced
    wrapper.__original_function = func  # where prompt flow's @trace keeps it
    return wrapper


def _items(call: _Call, inner: Any) -> Any:
    items: list[Any] = []
    try:
        with call.ends_on_error():
            while True:
                # Each step runs with the span current: the runtime may step the generator from a
                # different worker thread (and context) every time.
                with call.current():
                    try:
                        item = next(inner)
                    except StopIteration:
                        break
                items.append(item)
                yield item
    finally:
        inner.close()  # a consumer that stopped early closes what it was reading
    call.end(_joined(items))


async def _async_items(call: _Call, inner: Any) -> Any:
    items: list[Any] = []
    try:
        with call.ends_on_error():
            while True:
                with call.current():
                    try:
                        item = await inner.__anext__()
                    except StopAsyncIteration:
                        break
                items.append(item)
                yield item
    finally:
        await inner.aclose()  # a consumer that stopped early closes what it was reading
    call.end(_joined(items))


def _joined(items: list[Any]) -> Any:
    return "".join(items) if items and all(isinstance(i, str) for i in items) else items


def start_trace(*_args: Any, **_kwargs: Any) -> None:
    """prompt flow starts its local trace collector here; the gateway traces every request already."""
